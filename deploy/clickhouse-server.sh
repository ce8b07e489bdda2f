#!/usr/bin/env bash
# Runs a private ClickHouse server (Debian's clickhouse-server package, ClickHouse 18.16) for
# Flywheel's server backend and its tests.
#
#   bash deploy/clickhouse-server.sh start|stop|status
#
# It is a separate instance, not the system service: its own config, data and logs under
# ${FLYWHEEL_DATA:-<repo>/.flywheel}/clickhouse-server, listening on 127.0.0.1 only.
#   CLICKHOUSE_HTTP_PORT (default 18123)  HTTP interface, what @clickhouse/client talks to
#   CLICKHOUSE_TCP_PORT  (default 19000)  native protocol (clickhouse-client)
#   CLICKHOUSE_INTERSERVER_PORT (default TCP port + 9)  replication's interserver HTTP, 127.0.0.1
#   ZOOKEEPER_PORT       (default 12181)  the ZooKeeper it uses (deploy/zookeeper.sh, same
#                                         FLYWHEEL_DATA), started and stopped with the server
# With ZooKeeper, Flywheel's tables are ReplicatedMergeTree (one replica): 18.16 deduplicates a
# re-sent identical INSERT block only there (schema.ts, "Exactly once into ClickHouse").
# Prints the URL to use as CLICKHOUSE_URL / FLYWHEEL_TEST_CLICKHOUSE_URL on start and status.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_NAME=clickhouse-server.sh
DATA_ROOT="${FLYWHEEL_DATA:-$REPO/.flywheel}"
HOME_DIR="$DATA_ROOT/clickhouse-server"
HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-18123}"
TCP_PORT="${CLICKHOUSE_TCP_PORT:-19000}"
# Replicated tables need it even with one replica: without it the replica never becomes active
# (no leader: no background merges, OPTIMIZE fails with "No active replicas").
INTERSERVER_PORT="${CLICKHOUSE_INTERSERVER_PORT:-$((TCP_PORT + 9))}"
PID_FILE="$HOME_DIR/clickhouse-server.pid"
PID_MATCH=clickhouse
LOG_DIR="$HOME_DIR/log"
URL="http://127.0.0.1:$HTTP_PORT"
SERVER_BIN=/usr/sbin/clickhouse-server
ZOOKEEPER_PORT="${ZOOKEEPER_PORT:-12181}"
export ZOOKEEPER_PORT FLYWHEEL_DATA="$DATA_ROOT"
ZOOKEEPER_SH="$(dirname "${BASH_SOURCE[0]}")/zookeeper.sh"
READY_TIMEOUT_S="${CLICKHOUSE_READY_TIMEOUT_S:-60}"

install_if_missing() {
  if [[ -x "$SERVER_BIN" ]]; then return; fi
  log "installing Debian's clickhouse-server (18.16)"
  bash "$(dirname "${BASH_SOURCE[0]}")/debian-packages.sh" clickhouse-server clickhouse-client
}

ping_ok() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 2 "$URL/ping" >/dev/null 2>&1
    return
  fi
  # No curl on this machine: bash's /dev/tcp speaks enough HTTP for /ping.
  local reply
  reply="$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$HTTP_PORT && printf 'GET /ping HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null)" || return 1
  [[ "$reply" == *"Ok."* ]]
}

# One instance per data directory: a start with another port must not report the old one.
check_port() {
  local recorded
  recorded="$(cat "$HOME_DIR/http_port" 2>/dev/null || echo "$HTTP_PORT")"
  [[ "$recorded" == "$HTTP_PORT" ]] ||
    die "the server for $HOME_DIR runs on HTTP port $recorded, not $HTTP_PORT; stop it first"
}

write_config() {
  mkdir -p "$HOME_DIR"/{data,tmp,user_files,format_schemas} "$LOG_DIR"
  # 18.16's stock config points at /var/lib/clickhouse and /var/log, listens on every interface
  # and opens the interserver port 9009; every path and port is ours here instead (the
  # interserver port too: replicated tables need one, on 127.0.0.1).
  # timezone UTC: DateTime is rendered/parsed in the server's zone; chdb (the embedded
  # backend) runs in UTC too, so both backends return the same strings.
  cat >"$HOME_DIR/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$LOG_DIR/clickhouse-server.log</log>
        <errorlog>$LOG_DIR/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$HTTP_PORT</http_port>
    <tcp_port>$TCP_PORT</tcp_port>
    <interserver_http_port>$INTERSERVER_PORT</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$HOME_DIR/data/</path>
    <tmp_path>$HOME_DIR/tmp/</tmp_path>
    <user_files_path>$HOME_DIR/user_files/</user_files_path>
    <format_schema_path>$HOME_DIR/format_schemas/</format_schema_path>
    <users_config>$HOME_DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <!-- Tests create and drop a database per run: no drop protection. -->
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>
    <!-- Block checksums of ReplicatedMergeTree inserts, so a re-sent identical block is dropped. -->
    <zookeeper>
        <node>
            <host>127.0.0.1</host>
            <port>$ZOOKEEPER_PORT</port>
        </node>
        <session_timeout_ms>30000</session_timeout_ms>
    </zookeeper>
</yandex>
EOF
  # One user, no password, reachable from loopback only.
  cat >"$HOME_DIR/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

start() {
  install_if_missing
  local pid
  if pid="$(running_pid)"; then
    check_port
    report_running "already running" "$pid" "$URL" ping_ok && return 0
    # Started by an earlier call that has not finished booting: fall through to the wait.
  else
    if ping_ok; then
      # Something else owns the port; starting a second server would fail to bind anyway.
      die "port $HTTP_PORT already answers /ping but not from our pid file; not starting another server"
    fi
    bash "$ZOOKEEPER_SH" start >/dev/null 9>&-
    write_config
    # Run in the foreground of a background job (not --daemon) so the pid we record is the
    # server itself; stdout/stderr go to a file for start-up failures that precede the logger.
    # cwd = HOME_DIR so nothing lands in the caller's directory; fd 9 (our lock) is not passed on.
    (cd "$HOME_DIR" && exec setsid "$SERVER_BIN" --config-file="$HOME_DIR/config.xml" \
      >>"$LOG_DIR/stdout.log" 2>&1 </dev/null 9>&-) &
    pid=$!
    echo "$pid" >"$PID_FILE"
    echo "$HTTP_PORT" >"$HOME_DIR/http_port"
    log "started pid $pid, waiting for $URL/ping"
  fi
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until ping_ok; do
    if ! alive "$pid"; then
      log "server exited during start-up; last log lines:"
      tail -n 30 "$LOG_DIR/stdout.log" "$LOG_DIR/clickhouse-server.err.log" >&2 2>/dev/null || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "not ready after ${READY_TIMEOUT_S}s; see $LOG_DIR"
      exit 1
    fi
    sleep 0.2
  done
  log "ready at $URL"
  echo "$URL"
}

# SIGTERM makes ClickHouse finish running queries and flush; give it time, then force.
stop() {
  stop_service 30
  bash "$ZOOKEEPER_SH" stop 9>&-
}

status() {
  local pid
  if pid="$(running_pid)"; then
    check_port
    report_running running "$pid" "$URL" ping_ok && return 0
    log "pid $pid alive but $URL/ping does not answer"
    exit 1
  fi
  log "not running"
  exit 3
}

# Serialise start/stop/status on this data directory: two concurrent starts would otherwise both
# launch a server, and the loser's pid could end up in the pid file.
case "${1:-}" in start | stop | status) lock "$HOME_DIR/.lock" ;; esac
run_command "$@"

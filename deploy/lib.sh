# shellcheck shell=bash
# What the service scripts (kafka.sh, registry.sh, clickhouse-server.sh) have in common: each
# runs one service as a plain local process and keeps its pid in a file. Sourced, not run:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# The sourcing script sets, before calling anything here:
#   LOG_NAME   prefix of its messages on stderr (the script's file name)
#   HOME_DIR   the service's state directory
#   PID_FILE   where the service's pid is kept
#   PID_MATCH  grep pattern the service's command line (arguments joined by spaces) must match
# spawn and await_ready also use LOG_FILE and READY_TIMEOUT_S, and await_ready calls the
# script's `answers TIMEOUT --pid PID` (deploy/wait-ready.mjs's exit codes).

log() { echo "$LOG_NAME: $*" >&2; }
die() { log "$*"; exit 1; }
# Maven 3.8 prints stray colour codes even with -B -q.
strip_ansi() { sed 's/\x1b\[[0-9;]*m//g'; }

# Takes an exclusive lock on the file $1 (creating its directory) as fd 9; it is held until
# `exec 9>&-` or until the script exits.
lock() {
  mkdir -p "$(dirname "$1")"
  exec 9>"$1"
  flock 9
}

# Alive = exists and is not a zombie (an init that does not reap would leave one behind).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo Z)"
  [[ "$state" != Z ]]
}

# Prints the pid from PID_FILE. The pid is only trusted when it is alive AND is our service
# (PID_MATCH): pids get reused.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$PID_MATCH" || return 1
  echo "$pid"
}

# If `$4...` succeeds: logs "$1 (pid $2) at $3", prints the address $3 (what start and status
# print on stdout) and returns 0. Otherwise returns 1.
report_running() {
  local state="$1" pid="$2" addr="$3"
  shift 3
  "$@" || return 1
  log "$state (pid $pid) at $addr"
  echo "$addr"
}

# spawn WHAT COMMAND...: runs COMMAND in the background in HOME_DIR, output appended to LOG_FILE,
# and returns once its pid is in PID_FILE.
# setsid: the service gets its own session, so Ctrl-C in the caller's terminal does not kill it
# mid-write; whoever started it stops it with `stop`. The inner shell records its own pid and
# then execs COMMAND, so the pid file names the service itself (the JVM). The redirections cover
# the whole subshell so no caller's pipe (e.g. `$(kafka.sh start)`) stays open.
spawn() {
  local what="$1" pid
  shift
  # A pid file left by a crash would be read as the new process's.
  rm -f "$PID_FILE"
  (cd "$HOME_DIR" && setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PID_FILE" "$@") \
    >>"$LOG_FILE" 2>&1 </dev/null &
  # Wait until the pid file exists (the inner shell writes it before exec).
  for _ in $(seq 50); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || die "$what did not record its pid; see $LOG_FILE"
}

# await_ready PID WHAT PATTERN: waits up to READY_TIMEOUT_S for the service to answer. When it
# does not, shows the lines of LOG_FILE matching PATTERN (grep -E) and its tail, and exits 1.
await_ready() {
  local pid="$1" what="$2" pattern="$3" status=0
  answers "$READY_TIMEOUT_S" --pid "$pid" || status=$?
  case "$status" in
    0) ;;
    2)
      rm -f "$PID_FILE"
      log "$what exited during start-up:"
      show_failure "$pattern"
      exit 1
      ;;
    *)
      log "$what (pid $pid) not ready after ${READY_TIMEOUT_S}s; still running:"
      show_failure "$pattern"
      exit 1
      ;;
  esac
}

show_failure() {
  grep -E "$1" "$LOG_FILE" 2>/dev/null | tail -n 5 >&2 || true
  echo "--- last lines of $LOG_FILE:" >&2
  tail -n 25 "$LOG_FILE" >&2 || true
}

# Sends SIGTERM, gives the service $1 seconds to exit, then sends SIGKILL.
stop_service() {
  local grace_s="$1" pid i
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$PID_FILE"
    return 0
  fi
  kill -TERM "$pid"
  for ((i = 0; i < grace_s * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "pid $pid ignored SIGTERM for ${grace_s}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

# Runs the script's start, stop or status function, as named by $1.
run_command() {
  case "${1:-}" in
    start | stop | status) "$1" ;;
    *)
      echo "usage: $0 {start|stop|status}" >&2
      exit 2
      ;;
  esac
}

#!/usr/bin/env bash
# Runs a command (normally the test suite) with Kafka, the schema registry and, when
# deploy/clickhouse-server.sh exists, a ClickHouse server available:
#
#   bash deploy/test-env.sh vitest run          (this is `npm test`)
#   bash deploy/test-env.sh vitest run tests/foo.test.ts
#
# A service that already answers (e.g. after `bash deploy/services.sh up`) or whose address is
# given (KAFKA_BROKERS, SCHEMA_REGISTRY_URL, FLYWHEEL_TEST_CLICKHOUSE_URL) is reused and left
# running. Any other service is started here, with its state in a fresh temporary data dir, and
# stopped again on exit (also on Ctrl-C / SIGTERM), so a run leaves nothing behind.
# The command sees KAFKA_BROKERS, SCHEMA_REGISTRY_URL and FLYWHEEL_TEST_CLICKHOUSE_URL (the last
# only when a ClickHouse server is available); it runs in the repo with node_modules/.bin first
# on PATH, and its exit code is this script's exit code.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$REPO/deploy"

log() { echo "test-env: $*" >&2; }

if [[ $# -eq 0 ]]; then
  echo "usage: $0 <command...>   e.g. $0 vitest run" >&2
  exit 2
fi

# Fail before starting anything when the command does not exist.
export PATH="$REPO/node_modules/.bin:$PATH"
if ! command -v "$1" >/dev/null; then
  echo "test-env: command not found: $1" >&2
  exit 127
fi

# kcat is the external Kafka client the tests read the accepted topic with. Installed only when
# missing: the Debian package check needs dpkg-query (and root to install), which a machine with
# kcat already on PATH may not have.
if ! command -v kcat >/dev/null; then
  bash "$DEPLOY/debian-packages.sh" kcat
fi

TMP_DATA=""     # created only if we start something
STARTED=()      # service scripts whose services we started (and so must stop)
STARTING=()     # pids of start jobs still running
CHILD=""        # pid of the command

cleanup() {
  local rc=$? s i
  trap - EXIT INT TERM
  # Start jobs still running (interrupted start-up): let them finish or die first, so the pid
  # files they write exist before we stop.
  for s in "${STARTING[@]}"; do wait "$s" 2>/dev/null || true; done
  # Stop in parallel too; the data dir goes only if every stop succeeded.
  local pids=() ok=1
  for s in "${STARTED[@]}"; do
    FLYWHEEL_DATA="$TMP_DATA" bash "$s" stop >/dev/null 2>&1 &
    pids+=("$!")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[i]}" || { ok=0; log "could not stop $(basename "${STARTED[i]}" .sh)"; }
  done
  if [[ -n "$TMP_DATA" ]]; then
    if ((ok)); then rm -rf "$TMP_DATA"; else log "its data is left in $TMP_DATA"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT

# Forward Ctrl-C / SIGTERM to the command, then let the EXIT trap stop the services. A
# background command of a script ignores SIGINT unless it resets it (node does), hence the
# SIGTERM after a grace period.
on_signal() {
  local sig="$1" code="$2" i
  if [[ -n "$CHILD" ]] && kill -s "$sig" "$CHILD" 2>/dev/null; then
    for ((i = 0; i < 100; i++)); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  exit "$code"
}
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

answers() { node "$DEPLOY/wait-ready.mjs" "$@" --timeout 0; }

# Starts a service in the background (services start in parallel), state in TMP_DATA.
declare -A JOB_OUT JOB_PID
start_bg() {
  local name="$1" script="$2"
  if [[ -z "$TMP_DATA" ]]; then
    TMP_DATA="$(mktemp -d "${TMPDIR:-/tmp}/flywheel-test.XXXXXX")"
  fi
  STARTED+=("$script")
  JOB_OUT[$name]="$TMP_DATA/$name.start.out"
  FLYWHEEL_DATA="$TMP_DATA" bash "$script" start >"${JOB_OUT[$name]}" 2>&1 &
  JOB_PID[$name]=$!
  STARTING+=("$!")
}

# use_service NAME VAR SCRIPT ADDR WHAT PROBE [PATH]: uses the service at $VAR when VAR is set.
# Otherwise VAR becomes ADDR, and the WHAT there is reused if it answers (wait-ready.mjs PROBE
# on ADDR+PATH), or deploy/SCRIPT starts one.
use_service() {
  local name="$1" var="$2" script="$3" addr="$4" what="$5" probe="$6" path="${7:-}"
  if [[ -n "${!var:-}" ]]; then
    log "$name: using $var=${!var}"
    return
  fi
  printf -v "$var" '%s' "$addr"
  if answers "$probe" "$addr$path"; then
    log "$name: reusing the $what at $addr"
  else
    start_bg "$name" "$DEPLOY/$script"
  fi
}

use_service kafka KAFKA_BROKERS kafka.sh "127.0.0.1:${KAFKA_PORT:-19092}" broker kafka
use_service registry SCHEMA_REGISTRY_URL registry.sh \
  "http://127.0.0.1:${REGISTRY_PORT:-18081}/apis/ccompat/v7" registry http /subjects
# ClickHouse server: optional; without it the tests that need one skip themselves.
if [[ -n "${FLYWHEEL_TEST_CLICKHOUSE_URL:-}" || -f "$DEPLOY/clickhouse-server.sh" ]]; then
  use_service clickhouse FLYWHEEL_TEST_CLICKHOUSE_URL clickhouse-server.sh \
    "http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-18123}" server http /ping
fi

# Wait for the parallel starts; all must succeed.
failed=0
for name in "${!JOB_PID[@]}"; do
  if wait "${JOB_PID[$name]}"; then
    log "$name: started at $(tail -n 1 "${JOB_OUT[$name]}") (temporary, stopped on exit)"
  else
    log "$name: failed to start:"
    sed 's/^/    /' "${JOB_OUT[$name]}" >&2
    failed=1
  fi
done
STARTING=()
((failed == 0)) || exit 1

export KAFKA_BROKERS SCHEMA_REGISTRY_URL
[[ -n "${FLYWHEEL_TEST_CLICKHOUSE_URL:-}" ]] && export FLYWHEEL_TEST_CLICKHOUSE_URL

# Like npx for the repo's own binaries, without npx's registry fallback for unknown names.
cd "$REPO"
# In the background so a SIGTERM to this script is handled (forwarded) at once; `<&0` keeps
# stdin, which background commands would otherwise lose.
"$@" <&0 &
CHILD=$!
rc=0
wait "$CHILD" || rc=$?
CHILD=""
exit "$rc"

#!/usr/bin/env bash
# Starts/stops the services Flywheel needs for development: Kafka (deploy/kafka.sh) and the
# schema registry (deploy/registry.sh), with state in ${FLYWHEEL_DATA:-<repo>/.flywheel}.
#
#   bash deploy/services.sh up|down|status
#
# A service is skipped when its address is already given from outside: Kafka when
# KAFKA_BROKERS is set, the registry when SCHEMA_REGISTRY_URL is set (you run those yourself).
# Prints one line per service: name, address, and where it came from.
set -euo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

line() { printf '%-9s %-45s %s\n' "$1" "$2" "$3"; }

up() {
  local addr
  if [[ -n "${KAFKA_BROKERS:-}" ]]; then
    line kafka "$KAFKA_BROKERS" "(KAFKA_BROKERS, external)"
  else
    addr="$(bash "$DEPLOY/kafka.sh" start)"
    line kafka "$addr" "export KAFKA_BROKERS=$addr"
  fi
  if [[ -n "${SCHEMA_REGISTRY_URL:-}" ]]; then
    line registry "$SCHEMA_REGISTRY_URL" "(SCHEMA_REGISTRY_URL, external)"
  else
    addr="$(bash "$DEPLOY/registry.sh" start)"
    line registry "$addr" "export SCHEMA_REGISTRY_URL=$addr"
  fi
}

down() {
  # Reverse order of `up`; external services are not ours to stop.
  [[ -n "${SCHEMA_REGISTRY_URL:-}" ]] || bash "$DEPLOY/registry.sh" stop
  [[ -n "${KAFKA_BROKERS:-}" ]] || bash "$DEPLOY/kafka.sh" stop
}

# Exits 0 only when every managed service is up.
status() {
  local rc=0 addr
  if [[ -n "${KAFKA_BROKERS:-}" ]]; then
    line kafka "$KAFKA_BROKERS" "(KAFKA_BROKERS, external, not checked)"
  elif addr="$(bash "$DEPLOY/kafka.sh" status 2>/dev/null)"; then
    line kafka "$addr" "running"
  else
    line kafka "127.0.0.1:${KAFKA_PORT:-19092}" "NOT RUNNING"
    rc=1
  fi
  if [[ -n "${SCHEMA_REGISTRY_URL:-}" ]]; then
    line registry "$SCHEMA_REGISTRY_URL" "(SCHEMA_REGISTRY_URL, external, not checked)"
  elif addr="$(bash "$DEPLOY/registry.sh" status 2>/dev/null)"; then
    line registry "$addr" "running"
  else
    line registry "http://127.0.0.1:${REGISTRY_PORT:-18081}/apis/ccompat/v7" "NOT RUNNING"
    rc=1
  fi
  return "$rc"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *)
    echo "usage: $0 {up|down|status}" >&2
    exit 2
    ;;
esac

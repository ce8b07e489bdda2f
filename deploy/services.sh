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

# up_one NAME VAR: starts deploy/NAME.sh unless the variable VAR gives the service's address.
up_one() {
  local name="$1" var="$2" addr
  if [[ -n "${!var:-}" ]]; then
    line "$name" "${!var}" "($var, external)"
  else
    addr="$(bash "$DEPLOY/$name.sh" start)"
    line "$name" "$addr" "export $var=$addr"
  fi
}

up() {
  up_one kafka KAFKA_BROKERS
  up_one registry SCHEMA_REGISTRY_URL
}

down() {
  # Reverse order of `up`; external services are not ours to stop.
  [[ -n "${SCHEMA_REGISTRY_URL:-}" ]] || bash "$DEPLOY/registry.sh" stop
  [[ -n "${KAFKA_BROKERS:-}" ]] || bash "$DEPLOY/kafka.sh" stop
}

# status_one NAME VAR DEFAULT_ADDR: returns 1 when deploy/NAME.sh manages the service (VAR is
# not set) and it is not running; DEFAULT_ADDR is where it would be.
status_one() {
  local name="$1" var="$2" default_addr="$3" addr
  if [[ -n "${!var:-}" ]]; then
    line "$name" "${!var}" "($var, external, not checked)"
  elif addr="$(bash "$DEPLOY/$name.sh" status 2>/dev/null)"; then
    line "$name" "$addr" "running"
  else
    line "$name" "$default_addr" "NOT RUNNING"
    return 1
  fi
}

# Exits 0 only when every managed service is up.
status() {
  local rc=0
  status_one kafka KAFKA_BROKERS "127.0.0.1:${KAFKA_PORT:-19092}" || rc=1
  status_one registry SCHEMA_REGISTRY_URL "http://127.0.0.1:${REGISTRY_PORT:-18081}/apis/ccompat/v7" || rc=1
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

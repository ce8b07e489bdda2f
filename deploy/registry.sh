#!/usr/bin/env bash
# Runs a private Apicurio Registry for Flywheel's development and tests. Flywheel talks to it
# only through its Confluent-compatible API (@confluentinc/schemaregistry), at
#   http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7
# Confluent's own registry is not on Maven Central; Apicurio's ready-to-run bundle is
# (io.apicurio:apicurio-registry-app:<version>:tar.gz:all, unpacked once by
# deploy/registry/pom.xml into <repo>/.cache/registry/<version>).
#
#   bash deploy/registry.sh start|stop|status
#
#   REGISTRY_PORT             (default 18081)  HTTP on 127.0.0.1
#   REGISTRY_VERSION          (default 3.3.3, see below)
#   REGISTRY_JAVA             java binary to use (default: the first Java new enough, see below)
#   FLYWHEEL_DATA             (default <repo>/.flywheel)  pid and log in $FLYWHEEL_DATA/registry
#   REGISTRY_HEAP_OPTS        (default -Xms64m -Xmx512m)
#   REGISTRY_READY_TIMEOUT_S  (default 90)
#   REGISTRY_DEFAULT_COMPATIBILITY (default BACKWARD, Confluent's default; NONE disables checks)
#   REGISTRY_STORAGE          (default file)  file: H2 database in $FLYWHEEL_DATA/registry/db,
#                             so schemas survive restarts like the Kafka data does; mem: in memory
# Why not in memory by default: records kept in Kafka carry schema ids; a registry that forgets
# them (or hands the same ids to other schemas after a restart) makes old records undecodable.
# start and status print the Confluent-compatible base URL (SCHEMA_REGISTRY_URL) on stdout.
#
# Version choice: 3.3.3 is the newest 3.x bundle on Maven Central and the more faithful
# Confluent API (3.0.9, for one, answers PUT /config without the level the Confluent client
# reads back, and ignores the default-compatibility setting below). It is compiled for Java 21
# (on 17: UnsupportedClassVersionError), so it runs on the Temurin 25 JDK under /usr/lib/jvm or
# any other Java 21+ found. Central has no 3.1.x/3.2.x bundle; when no Java 21+ exists and
# REGISTRY_VERSION is not set, we fall back to 3.0.9, which runs on Java 17.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_NAME=registry.sh
PORT="${REGISTRY_PORT:-18081}"
BASE="http://127.0.0.1:$PORT"
URL="$BASE/apis/ccompat/v7"
DATA_ROOT="${FLYWHEEL_DATA:-$REPO/.flywheel}"
HOME_DIR="$DATA_ROOT/registry"
PID_FILE="$HOME_DIR/registry.pid"
LOG_FILE="$HOME_DIR/registry.log"
PID_MATCH="-Dflywheel.registry.home=$HOME_DIR "
CACHE="$REPO/.cache/registry"
READY_TIMEOUT_S="${REGISTRY_READY_TIMEOUT_S:-90}"
# Confluent's registry defaults to BACKWARD; Apicurio's to no rule. Match Confluent so schema
# evolution behaves here as it will in production.
COMPATIBILITY="${REGISTRY_DEFAULT_COMPATIBILITY:-BACKWARD}"
STORAGE="${REGISTRY_STORAGE:-file}"
DEFAULT_VERSION=3.3.3
FALLBACK_VERSION=3.0.9 # last bundle on Central that runs on Java 17
MAVEN_CENTRAL="${MAVEN_CENTRAL:-https://repo.maven.apache.org/maven2}"

java_major() { "$1" -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n 1; }

# Prints the first java binary whose major version is >= $1 (only REGISTRY_JAVA if it is set).
find_java() {
  local min="$1" j m candidates
  if [[ -n "${REGISTRY_JAVA:-}" ]]; then
    candidates=("$REGISTRY_JAVA")
  else
    candidates=(/usr/lib/jvm/temurin-25-jdk-amd64/bin/java ${JAVA_HOME:+"$JAVA_HOME/bin/java"}
      "$(command -v java || true)" /usr/lib/jvm/*/bin/java)
  fi
  for j in "${candidates[@]}"; do
    [[ -n "$j" && -x "$j" ]] || continue
    m="$(java_major "$j")"
    [[ "$m" =~ ^[0-9]+$ ]] && ((m >= min)) && { echo "$j"; return 0; }
  done
  return 1
}

# Sets VERSION and JAVA.
choose_runtime() {
  VERSION="${REGISTRY_VERSION:-$DEFAULT_VERSION}"
  local need=21
  [[ "$VERSION" == 3.0.* || "$VERSION" == 3.1.* ]] && need=17
  if JAVA="$(find_java "$need")"; then return 0; fi
  if [[ -z "${REGISTRY_VERSION:-}" ]]; then
    log "no Java 21+ found for Apicurio $VERSION; falling back to $FALLBACK_VERSION on Java 17"
    VERSION="$FALLBACK_VERSION"
    JAVA="$(find_java 17)" && return 0
  fi
  die "Apicurio Registry $VERSION needs Java $need+ (set REGISTRY_JAVA${REGISTRY_JAVA:+; $REGISTRY_JAVA is older})"
}

# Bundles differ in layout: 3.3 has quarkus-run.jar at the top (fast-jar), 3.0 a legacy
# *-runner.jar, others a quarkus-app/ directory.
bundle_jar() {
  local j
  for j in "$1/quarkus-run.jar" "$1/quarkus-app/quarkus-run.jar" "$1"/*-runner.jar; do
    [[ -f "$j" ]] && { echo "$j"; return 0; }
  done
  return 1
}

fetch_bundle() {
  local dir="$CACHE/$VERSION"
  [[ -f "$dir/.complete" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found; it is needed once to fetch Apicurio Registry"
  # Two callers (e.g. parallel test runs) must not unpack into the same directory at once.
  lock "$CACHE/.lock"
  if [[ ! -f "$dir/.complete" ]]; then
    log "fetching Apicurio Registry $VERSION (~160 MB) from Maven Central into $dir (once)"
    local tmp="$CACHE/$VERSION.tmp.$$"
    rm -rf "$tmp" "$tmp.markers"
    if ! (cd "$REPO/deploy/registry" && mvn -B -q dependency:unpack \
      -Dapicurio.version="$VERSION" -Dregistry.dir="$tmp") 2>&1 | strip_ansi >&2; then
      # Some bundles' parent POMs are missing on Central (3.0.9's is), so Maven cannot resolve
      # them; the tarball itself is there, so fetch it directly.
      local tgz="$MAVEN_CENTRAL/io/apicurio/apicurio-registry-app/$VERSION/apicurio-registry-app-$VERSION-all.tar.gz"
      log "mvn could not resolve it; downloading $tgz"
      rm -rf "$tmp" "$tmp.markers"
      mkdir -p "$tmp"
      curl -fsSL "$tgz" | tar -xz -C "$tmp" ||
        { rm -rf "$tmp"; die "could not fetch Apicurio Registry $VERSION"; }
    fi
    bundle_jar "$tmp" >/dev/null ||
      { rm -rf "$tmp" "$tmp.markers"; die "unexpected bundle layout in Apicurio $VERSION (no runnable jar)"; }
    touch "$tmp/.complete"
    rm -rf "$dir" "$tmp.markers" "$CACHE/mvn-target"
    mv "$tmp" "$dir"
  fi
  exec 9>&-
}

answers() { node "$REPO/deploy/wait-ready.mjs" http "$URL/subjects" --timeout "${1:-0}" "${@:2}"; }

start() {
  local pid
  if pid="$(running_pid)"; then
    report_running "already running" "$pid" "$URL" answers 0 && return 0
    # Started by an earlier call that has not finished booting: fall through to the wait.
  else
    if answers 0; then
      die "something already answers on $URL but it is not ours ($PID_FILE); not starting another"
    fi
    choose_runtime
    fetch_bundle
    local jar
    jar="$(bundle_jar "$CACHE/$VERSION")"
    mkdir -p "$HOME_DIR/tmp"
    local db_url
    case "$STORAGE" in
      file) db_url="jdbc:h2:file:$HOME_DIR/db/registry" ;;
      mem) db_url="jdbc:h2:mem:registry" ;;
      *) die "REGISTRY_STORAGE must be file or mem, not '$STORAGE'" ;;
    esac
    echo "--- start $(date -u +%FT%TZ) Apicurio $VERSION on $JAVA (Java $(java_major "$JAVA"))" >>"$LOG_FILE"
    # -Dflywheel.registry.home only tags the process so running_pid can recognise it.
    # Deletion is enabled so tests can clean up subjects (Confluent allows it; Apicurio's
    # default refuses). Access log off and a sane date format: the stock format prints
    # "2026-11+00-25". A small connection pool (default 20..100) for a single user. The management interface (health, metrics) would bind 0.0.0.0:9000,
    # clashing with anything else on 9000: loopback and a free port instead. SerialGC: the registry is tiny and the box has 2 cores.
    spawn registry "$JAVA" ${REGISTRY_HEAP_OPTS:--Xms64m -Xmx512m} -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
      -Djava.io.tmpdir="$HOME_DIR/tmp" -Dflywheel.registry.home="$HOME_DIR" \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$PORT" \
      -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port=0 \
      -Dquarkus.banner.enabled=false -Dquarkus.http.access-log.enabled=false \
      -Dquarkus.log.console.format='%d{yyyy-MM-dd HH:mm:ss} %p [%c{3.}] %m%n' \
      -Dquarkus.log.level=WARN '-Dquarkus.log.category."io.quarkus".level=INFO' \
      '-Dquarkus.log.category."io.apicurio".level=WARN' \
      -Dapicurio.datasource.url="$db_url" -Dapicurio.datasource.jdbc.initial-size=2 \
      -Dapicurio.datasource.jdbc.min-size=2 -Dapicurio.datasource.jdbc.max-size=20 \
      -Dapicurio.rules.global.compatibility="$COMPATIBILITY" \
      -Dapicurio.rest.deletion.group.enabled=true \
      -Dapicurio.rest.deletion.artifact.enabled=true \
      -Dapicurio.rest.deletion.artifact-version.enabled=true \
      -Dapicurio.rest.artifact.deletion.enabled=true \
      -jar "$jar"
    pid="$(cat "$PID_FILE")"
    log "started Apicurio $VERSION pid $pid, waiting for $URL (up to ${READY_TIMEOUT_S}s)"
  fi
  await_ready "$pid" registry 'ERROR|Exception|Caused by'
  log "ready at $URL"
  echo "$URL"
}

stop() { stop_service 20; }

status() {
  local pid
  if pid="$(running_pid)"; then
    report_running running "$pid" "$URL" answers 3 && return 0
    log "pid $pid alive but $URL does not answer"
    exit 1
  fi
  log "not running"
  exit 1
}

run_command "$@"

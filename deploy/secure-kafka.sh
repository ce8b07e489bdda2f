#!/usr/bin/env bash
# A private Kafka broker with a SASL_SSL listener, for trying and testing Flywheel's secured
# connections: deploy/kafka.sh's broker (same jars, KRaft, one node) plus
#   - a CA and a broker certificate for 127.0.0.1 / localhost, made with openssl (once per data dir),
#   - a SASL_SSL listener offering SCRAM-SHA-512 and SCRAM-SHA-256,
#   - SCRAM users created when the storage is formatted (`StorageTool format --add-scram`).
# Its PLAINTEXT listener stays, on loopback, for kafka.sh's readiness check; clients use SASL_SSL.
#
#   bash deploy/secure-kafka.sh start|stop|status
#   set -a; source <(bash deploy/secure-kafka.sh start); set +a   # then: flywheel run …
#
# Its own variables, so a shell set up for the shared broker (FLYWHEEL_DATA, KAFKA_PORT) cannot
# point it at that broker's directory or ports:
#   SECURE_KAFKA_DATA             (default <repo>/.flywheel/secure-kafka) state, certificates, passwords
#   SECURE_KAFKA_PORT             (default 19192)  PLAINTEXT on 127.0.0.1
#   SECURE_KAFKA_CONTROLLER_PORT  (default 19193)
#   SECURE_KAFKA_SASL_SSL_PORT    (default 19194)  SASL_SSL on 127.0.0.1 — what clients use
#   SECURE_KAFKA_USER             (default flywheel) the SCRAM user; its password is generated once
#                                 into $SECURE_KAFKA_DATA/tls/<user>.password
# start and status print the client's environment (KAFKA_BROKERS, KAFKA_SECURITY_PROTOCOL,
# KAFKA_SASL_*, KAFKA_SSL_CA_FILE) as VAR=value lines on stdout; the password as a *_FILE path.
# Never the shared broker: its own ports and data directory (change both together).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FLYWHEEL_DATA="${SECURE_KAFKA_DATA:-$REPO/.flywheel/secure-kafka}"
export KAFKA_PORT="${SECURE_KAFKA_PORT:-19192}"
export KAFKA_CONTROLLER_PORT="${SECURE_KAFKA_CONTROLLER_PORT:-19193}"
SASL_SSL_PORT="${SECURE_KAFKA_SASL_SSL_PORT:-19194}"
USER_NAME="${SECURE_KAFKA_USER:-flywheel}"
TLS="$FLYWHEEL_DATA/tls"

log() { echo "secure-kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[[ "$FLYWHEEL_DATA" != "$REPO/.flywheel" ]] || die "SECURE_KAFKA_DATA is the shared broker's data root; give this broker its own"

# Certificates and passwords, once per data directory (a restarted broker keeps its identity).
make_secrets() {
  [[ -f "$TLS/.complete" ]] && return 0
  # openssl makes the test CA and the broker certificate (Debian's base images usually carry it).
  command -v openssl >/dev/null || bash "$REPO/deploy/debian-packages.sh" openssl
  rm -rf "$TLS"
  mkdir -p "$TLS"
  chmod 700 "$TLS"
  # P-256 keys: quick to make, and every TLS stack here (Java 17, Node) speaks them.
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout "$TLS/ca.key" -out "$TLS/ca.pem" -subj "/CN=Flywheel test CA" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$TLS/broker.key" -out "$TLS/broker.csr" -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$TLS/broker.ext"
  openssl x509 -req -in "$TLS/broker.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 3650 -extfile "$TLS/broker.ext" -out "$TLS/broker.pem" 2>/dev/null
  # The keystore password guards a file only this user can read; it need not be strong.
  openssl rand -hex 16 >"$TLS/keystore.password"
  openssl pkcs12 -export -in "$TLS/broker.pem" -inkey "$TLS/broker.key" -certfile "$TLS/ca.pem" \
    -name broker -out "$TLS/broker.p12" -passout "file:$TLS/keystore.password"
  # No trailing newline: the file is the password (KAFKA_SASL_PASSWORD_FILE strips one anyway).
  printf '%s' "$(openssl rand -hex 24)" >"$TLS/$USER_NAME.password"
  chmod 600 "$TLS"/*
  touch "$TLS/.complete"
}

write_extras() {
  local store_pw user_pw
  store_pw="$(cat "$TLS/keystore.password")"
  user_pw="$(cat "$TLS/$USER_NAME.password")"
  mkdir -p "$FLYWHEEL_DATA"
  cat >"$FLYWHEEL_DATA/sasl-ssl.properties" <<EOF
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/broker.p12
ssl.keystore.password=$store_pw
ssl.key.password=$store_pw
ssl.client.auth=none
EOF
  # Read by kafka.sh only when it formats a fresh data directory: the users exist from the start.
  printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$USER_NAME,password=$user_pw]" \
    --add-scram "SCRAM-SHA-256=[name=$USER_NAME,password=$user_pw]" >"$FLYWHEEL_DATA/format-args"
  chmod 600 "$FLYWHEEL_DATA/sasl-ssl.properties" "$FLYWHEEL_DATA/format-args"
}

client_env() {
  cat <<EOF
KAFKA_BROKERS=127.0.0.1:$SASL_SSL_PORT
KAFKA_SECURITY_PROTOCOL=SASL_SSL
KAFKA_SASL_MECHANISM=SCRAM-SHA-512
KAFKA_SASL_USERNAME=$USER_NAME
KAFKA_SASL_PASSWORD_FILE=$TLS/$USER_NAME.password
KAFKA_SSL_CA_FILE=$TLS/ca.pem
EOF
}

kafka() { KAFKA_EXTRA_PROPERTIES="$FLYWHEEL_DATA/sasl-ssl.properties" KAFKA_FORMAT_ARGS_FILE="$FLYWHEEL_DATA/format-args" bash "$REPO/deploy/kafka.sh" "$@"; }

case "${1:-}" in
  start)
    make_secrets
    write_extras
    kafka start >/dev/null
    client_env
    ;;
  status)
    kafka status >/dev/null
    client_env
    ;;
  stop) kafka stop ;;
  *) die "usage: secure-kafka.sh start|stop|status" ;;
esac

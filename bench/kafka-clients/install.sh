#!/usr/bin/env bash
# Installs what only the Kafka client benchmark needs into bench/kafka-clients/node_modules
# (gitignored): Node 24 (the npm `node` package puts its binary in node_modules/.bin) and
# @platformatic/kafka, which needs Node >= 22.22 or >= 24.6. kafkajs comes from the project.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
npm ci --no-audit --no-fund
./node_modules/.bin/node -e 'import("@platformatic/kafka").then(() => console.log(`kafka-clients bench: Node ${process.version}, @platformatic/kafka ready`))'

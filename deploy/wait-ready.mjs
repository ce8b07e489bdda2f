#!/usr/bin/env node
// Readiness probe for the deploy/ scripts: asks the service itself instead of sleeping.
//
//   node deploy/wait-ready.mjs kafka <host:port[,host:port]> [--timeout S] [--pid N]
//   node deploy/wait-ready.mjs http  <url>                   [--timeout S] [--pid N]
//
// kafka: an admin client must get cluster metadata (describeCluster) with a controller and at
//        least one broker, i.e. the KRaft node has finished starting.
// http:  GET <url> must answer 200.
// Retries until it succeeds or --timeout seconds (default 60) pass. With --pid it gives up as
// soon as that process is gone (the server died during start-up; no point waiting).
// Exit codes: 0 ready, 1 timed out, 2 the --pid process exited, 64 usage error.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const usage = () => {
  console.error('usage: wait-ready.mjs {kafka <brokers>|http <url>} [--timeout S] [--pid N]');
  process.exit(64);
};

const [mode, target, ...rest] = process.argv.slice(2);
if (!mode || !target) usage();
let timeoutS = 60;
let pid;
for (let i = 0; i < rest.length; i += 2) {
  if (rest[i] === '--timeout') timeoutS = Number(rest[i + 1]);
  else if (rest[i] === '--pid') pid = Number(rest[i + 1]);
  else usage();
}
if (!Number.isFinite(timeoutS) || (pid !== undefined && !Number.isInteger(pid))) usage();

const deadline = Date.now() + timeoutS * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const alive = () => {
  if (pid === undefined) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
};

async function probeKafka() {
  // Resolve kafkajs from the repo, wherever this script is run from.
  const require = createRequire(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json'));
  const { Kafka, logLevel } = require('kafkajs');
  const kafka = new Kafka({
    clientId: 'flywheel-wait-ready',
    brokers: target.split(','),
    logLevel: logLevel.NOTHING, // refused connections are the expected state while booting
    connectionTimeout: 1000,
    requestTimeout: 3000,
    retry: { retries: 0 },
  });
  return async () => {
    const admin = kafka.admin();
    try {
      await admin.connect();
      const cluster = await admin.describeCluster();
      return cluster.brokers.length > 0 && cluster.controller !== null && cluster.controller !== -1;
    } finally {
      await admin.disconnect().catch(() => {});
    }
  };
}

async function probeHttp() {
  return async () => {
    const res = await fetch(target, { signal: AbortSignal.timeout(3000) });
    await res.arrayBuffer().catch(() => {});
    return res.status === 200;
  };
}

const probe = mode === 'kafka' ? await probeKafka() : mode === 'http' ? await probeHttp() : usage();

for (;;) {
  try {
    if (await probe()) process.exit(0);
  } catch {
    // not up yet
  }
  if (!alive()) process.exit(2);
  if (Date.now() >= deadline) process.exit(1);
  await sleep(250);
}

/**
 * The Kafka client figures of `npm run bench`: `@platformatic/kafka` against kafkajs on the same
 * topic, the same records (100,000 values of 345 bytes, 3 partitions) and the same broker —
 * produce, consume, and transactional consume → produce — so Flywheel picks its client by a
 * figure (issue #8, "The Kafka client").
 *
 * Each measurement runs in a child process of its own, pinned with `taskset -c 1` when present:
 * kafkajs under the project's Node (20) and under Node 24, @platformatic/kafka under Node 24 (it
 * needs ≥ 22.22 or ≥ 24.6; `bash bench/kafka-clients/install.sh` puts Node 24 and the client in
 * bench/kafka-clients/node_modules, and this runs it when they are missing). Every child warms up
 * on a small topic first; passes interleave the clients in a rotating order; a figure is the
 * median of the passes. Every pass is verified, or the bench fails: a produced topic holds
 * exactly N records, a consumer counted N, and a transactional run's output, read
 * read_committed to its end, holds every input value exactly once with the group's offsets
 * committed at the input's end.
 *
 *   const rows = await benchKafkaClients({ records: 20_000, passes: 3 });
 *   // [{ figure: 'Kafka transactional consume → produce', flywheel: 9_100, anchor: 'kafkajs 2.2.4, Node 24', anchorValue: 4_300, … }, …]
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Admin, Kafka } from 'kafkajs';
import { connectionsFromEnv } from '../../streams/connections.ts';
import { createKafka } from '../../streams/kafka.ts';
import { ensureTopics, topicOffsets } from '../../streams/topics.ts';
import { median, type BenchRow } from '../row.ts';
import { indexOf, record } from './records.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const NODE_24 = join(HERE, 'node_modules', '.bin', 'node');
const PLATFORMATIC = join(HERE, 'node_modules', '@platformatic', 'kafka', 'package.json');

export interface KafkaClientsOptions {
  /** Records per measured topic (FLYWHEEL_BENCH_KAFKA_RECORDS, default 100,000). */
  records?: number;
  /** Measured passes per client and operation; the figure is their median (FLYWHEEL_BENCH_KAFKA_PASSES, default 3). */
  passes?: number;
  /** Records each child runs through first, on a warm-up topic (default records / 5). */
  warmRecords?: number;
  partitions?: number;
  /** Both clients' first retry delay, doubling after (FLYWHEEL_BENCH_KAFKA_RETRY_MS, default kafkajs's 300). */
  retryMs?: number;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

type Op = 'produce' | 'consume' | 'transact';
const OPS: readonly Op[] = ['produce', 'consume', 'transact'];

interface Side {
  /** Short label, also part of topic and group names. */
  id: string;
  label: string;
  node: string;
  worker: string;
  /** Merged into each job (e.g. the transaction scope). */
  extra?: Record<string, unknown>;
  /** The operations this side runs (default all). */
  ops?: readonly Op[];
}

interface Result {
  client: string;
  node: string;
  op: Op;
  records: number;
  seconds: number;
  transactions?: number;
  /** @platformatic/kafka only: operations retried, by operation id. */
  retried?: Record<string, number>;
}

export async function benchKafkaClients(options: KafkaClientsOptions = {}): Promise<BenchRow[]> {
  const records = options.records ?? Number(process.env.FLYWHEEL_BENCH_KAFKA_RECORDS ?? 100_000);
  const passes = options.passes ?? Number(process.env.FLYWHEEL_BENCH_KAFKA_PASSES ?? 3);
  const warmRecords = options.warmRecords ?? Math.max(1000, Math.round(records / 5));
  const partitions = options.partitions ?? 3;
  const retryMs = options.retryMs ?? Number(process.env.FLYWHEEL_BENCH_KAFKA_RETRY_MS ?? 300);
  const log = options.log ?? ((line: string) => process.stderr.write(`kafka-clients: ${line}\n`));
  if (!Number.isInteger(records) || records < 1000) throw new Error(`kafka-clients bench: records must be an integer ≥ 1000, got ${records}`);
  if (!Number.isInteger(passes) || passes < 1) throw new Error(`kafka-clients bench: passes must be an integer ≥ 1, got ${passes}`);

  ensureInstalled(log);
  const node24 = execFileSync(NODE_24, ['-p', 'process.version']).toString().trim();
  const sides: Side[] = [
    { id: 'kjs-project', label: `kafkajs 2.2.4, Node ${process.version}`, node: process.execPath, worker: 'kafkajs-worker.mjs' },
    { id: 'kjs24', label: `kafkajs 2.2.4, Node ${node24}`, node: NODE_24, worker: 'kafkajs-worker.mjs' },
    { id: 'plt24', label: `@platformatic/kafka ${platformaticVersion()}, Node ${node24}`, node: NODE_24, worker: 'platformatic-worker.mjs', extra: { scope: 'partition' } },
    { id: 'plt24-fetch', label: `@platformatic/kafka ${platformaticVersion()}, Node ${node24}, one transaction per fetch`, node: NODE_24, worker: 'platformatic-worker.mjs', extra: { scope: 'fetch' }, ops: ['transact'] },
  ];
  const connections = connectionsFromEnv();
  const kafka = createKafka(connections, 'flywheel-bench-kafka-clients');
  const admin = kafka.admin();
  await admin.connect();
  const prefix = `bench-kc-${randomUUID().slice(0, 8)}`;
  const topic = (name: string) => `${prefix}-${name}`;
  const created: string[] = [];
  /** Created in one go before anything is timed; a loaded broker sometimes fails a creation, so it is retried. */
  const create = async (names: string[]) => {
    for (let attempt = 1; ; attempt++) {
      try {
        await ensureTopics(admin, names.map((name) => ({ topic: name, numPartitions: partitions, replicationFactor: 1 })));
        break;
      } catch (err) {
        if (attempt >= 5) throw err;
        log(`creating topics failed (${(err as Error).message}), retrying`);
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
    created.push(...names);
  };
  const results = new Map<string, Result[]>();
  const input = topic('input');
  const warmInput = topic('warm-input');
  const scratch = topic('warm-produce');
  const runs: Array<{ pass: number; op: Op; side: Side; job: Record<string, unknown> }> = [];
  for (let pass = 0; pass < passes; pass++) {
    // Rotate who goes first, so no side always runs right after the same neighbour.
    const order = sides.map((_, i) => sides[(i + pass) % sides.length]!);
    for (const op of OPS) {
      for (const side of order) {
        if (side.ops !== undefined && !side.ops.includes(op)) continue;
        const tag = `${side.id}-${op}-${pass}`;
        const job: Record<string, unknown> = {
          op,
          brokers: connections.kafkaBrokers,
          partitions,
          records,
          warmRecords,
          retryMs,
          groupId: `${prefix}-${tag}`,
          topic: op === 'produce' ? topic(`produced-${tag}`) : input,
          warmTopic: op === 'produce' ? scratch : warmInput,
          ...(op === 'transact' ? { outputTopic: topic(`output-${tag}`), warmOutputTopic: topic(`warm-output-${tag}`) } : {}),
          ...side.extra,
        };
        runs.push({ pass, op, side, job });
      }
    }
  }
  try {
    const perRun = runs.flatMap(({ op, job }) => [...(op === 'produce' ? [job.topic as string] : []), ...(op === 'transact' ? [job.outputTopic as string, job.warmOutputTopic as string] : [])]);
    for (const names of chunks([input, warmInput, scratch, ...perRun], 20)) await create(names);
    log(`filling ${input} (${records} records) and ${warmInput} (${warmRecords})`);
    await fill(kafka, input, records, partitions);
    await fill(kafka, warmInput, warmRecords, partitions);
    await expectRecords(admin, input, records);

    for (const { pass, op, side, job } of runs) {
      const result = await runChild(side, job);
      await verify(kafka, admin, result, job, records, log);
      const key = `${side.id}:${op}`;
      results.set(key, [...(results.get(key) ?? []), result]);
      const retried = result.retried && Object.keys(result.retried).length > 0 ? ` retried ${JSON.stringify(result.retried)}` : '';
      log(`pass ${pass + 1}/${passes} ${op.padEnd(8)} ${side.label.padEnd(40)} ${Math.round(rate(result)).toLocaleString('en-US')} msgs/s${result.transactions ? ` (${result.transactions} transactions)` : ''}${retried} ✓ verified`);
    }
  } finally {
    await admin.deleteTopics({ topics: created }).catch(() => undefined);
    await admin.disconnect();
  }
  return rows(results, sides, records, passes, retryMs);
}

const FIGURES: Record<Op, string> = {
  produce: 'Kafka produce (acks=all, idempotent, 1000-record sends)',
  consume: 'Kafka consume from the beginning, count only',
  transact: 'Kafka transactional consume → produce, offsets in the transaction',
};

function rows(results: Map<string, Result[]>, sides: Side[], records: number, passes: number, retryMs: number): BenchRow[] {
  const [kjsProject, kjs24, plt24, plt24Fetch] = sides as [Side, Side, Side, Side];
  const figure = (side: Side, op: Op) => median(results.get(`${side.id}:${op}`)!.map(rate));
  const perTxn = (side: Side) => {
    const runs = results.get(`${side.id}:transact`)!;
    return Math.round(runs.reduce((s, r) => s + r.records, 0) / runs.reduce((s, r) => s + (r.transactions ?? 1), 0));
  };
  const spread = (side: Side, op: Op) => {
    const rates = results.get(`${side.id}:${op}`)!.map(rate);
    return `${Math.round(Math.min(...rates))}–${Math.round(Math.max(...rates))}`;
  };
  const all = (op: Op) =>
    sides
      .filter((side) => results.has(`${side.id}:${op}`))
      .map((side) => `${side.label}${op === 'transact' ? ` (${perTxn(side)} records per transaction)` : ''}: ${Math.round(figure(side, op))} (${spread(side, op)})`)
      .join('; ');
  const base = `median of ${passes} passes, ${records} records of 345 B, 3 partitions, client pinned to core 1, retries after ${retryMs} ms doubling`;
  const row = (op: Op, what: string, candidate: Side, anchor: Side): BenchRow => ({
    figure: `${FIGURES[op]}: ${what}`,
    unit: 'msgs/s',
    flywheel: Math.round(figure(candidate, op)),
    anchor: anchor.label,
    anchorValue: Math.round(figure(anchor, op)),
    target: '> 1 to switch',
    note: `${candidate.label} vs ${anchor.label}; ${base}; all: ${all(op)}`,
  });
  const out: BenchRow[] = [];
  for (const op of OPS) {
    out.push(row(op, 'client alone (same Node)', plt24, kjs24));
    out.push(row(op, 'the switch (client + runtime)', plt24, kjsProject));
  }
  out.push(row('transact', 'one transaction per fetch (KIP-447) vs Flywheel\'s per-partition tasks', plt24Fetch, kjsProject));
  return out;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function rate(r: Result): number {
  return r.records / r.seconds;
}


function ensureInstalled(log: (line: string) => void): void {
  if (existsSync(NODE_24) && existsSync(PLATFORMATIC)) return;
  log('Node 24 or @platformatic/kafka missing: running bench/kafka-clients/install.sh');
  const run = spawnSync('bash', [join(HERE, 'install.sh')], { stdio: 'inherit' });
  if (run.status !== 0) throw new Error(`bench/kafka-clients/install.sh failed (exit ${run.status}); run it by hand to see why`);
}

function platformaticVersion(): string {
  return execFileSync(NODE_24, ['-p', `require(${JSON.stringify(PLATFORMATIC)}).version`]).toString().trim();
}

let tasksetPresent: boolean | undefined;

/** The side's worker on `job`, pinned to core 1 when taskset exists; its one JSON line back. */
function runChild(side: Side, job: Record<string, unknown>, timeoutMs = 600_000): Promise<Result> {
  tasksetPresent ??= spawnSync('taskset', ['-c', '1', 'true']).status === 0;
  const argv = [side.node, join(HERE, side.worker), JSON.stringify(job)];
  const [command, ...args] = tasksetPresent ? ['taskset', '-c', '1', ...argv] : argv;
  return new Promise((resolve, reject) => {
    const child = spawn(command!, args, { cwd: HERE, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => void (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const last = stdout.trim().split('\n').pop() ?? '';
      if (code !== 0 || !last.startsWith('{')) {
        reject(new Error(`${side.label} ${String(job.op)} exited ${code}: ${stderr.trim().slice(-2000) || stdout.trim().slice(-2000)}`));
        return;
      }
      resolve(JSON.parse(last) as Result);
    });
  });
}

async function fill(kafka: Kafka, topic: string, n: number, partitions: number): Promise<void> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    for (let from = 0; from < n; from += 5000) {
      const messages = [];
      for (let i = from; i < Math.min(n, from + 5000); i++) messages.push(record(i, partitions));
      await producer.send({ topic, acks: -1, messages });
    }
  } finally {
    await producer.disconnect();
  }
}

/** A non-transactional topic's offsets count its records: exactly n, no duplicate, none lost. */
async function expectRecords(admin: Admin, topic: string, n: number): Promise<void> {
  const offsets = await topicOffsets(admin, topic);
  const total = offsets.reduce((sum, o) => sum + Number(o.high) - Number(o.low), 0);
  if (total !== n) throw new Error(`${topic} holds ${total} records, expected ${n}`);
}

async function verify(kafka: Kafka, admin: Admin, result: Result, job: Record<string, unknown>, n: number, log: (line: string) => void): Promise<void> {
  const what = `${result.client} (${result.node}) ${result.op}`;
  if (result.records !== n) throw new Error(`${what}: handled ${result.records} records, expected ${n}`);
  if (result.op === 'produce') return expectRecords(admin, job.topic as string, n);
  if (result.op === 'consume') return;
  const seen = await readCommitted(kafka, job.outputTopic as string);
  const counts = new Uint8Array(n);
  let total = 0;
  for (const i of seen) {
    total++;
    if (!(i >= 0 && i < n)) throw new Error(`${what}: output holds a record with index ${i}, not an input record`);
    counts[i]!++;
  }
  const missing = counts.reduce((m, c) => m + (c === 0 ? 1 : 0), 0);
  if (total !== n || missing > 0) throw new Error(`${what}: read_committed output holds ${total} records (${missing} inputs missing), expected each of ${n} once`);
  // The offsets went into the transactions: the group's committed positions are the input's end.
  const ends = await topicOffsets(admin, job.topic as string);
  const [committed] = await admin.fetchOffsets({ groupId: `${String(job.groupId)}-run`, topics: [job.topic as string] });
  for (const end of ends) {
    const at = committed?.partitions.find((p) => p.partition === end.partition)?.offset;
    if (at !== end.high) throw new Error(`${what}: group committed offset ${at} for partition ${end.partition}, expected the input's end ${end.high}`);
  }
  log(`  verified ${what}: ${total} records read_committed, each input once; offsets committed at the input's end`);
}

/**
 * Every record index in `topic`, read read_committed from the beginning to its end, so
 * duplicates past the N-th record are seen too. A partition's end is reached when a fetch
 * returned records (or transaction markers) up to the broker's high watermark: a read_committed
 * fetch stops at the last stable offset, so this also waits for the markers of the last
 * transactions, which the coordinator writes after EndTxn has answered. (The admin's offsets
 * are themselves read_committed, and kafkajs's lastOffset() of an empty batch is the high
 * watermark's, so neither can say "the end" here.) Nothing writes to `topic` any more.
 */
async function readCommitted(kafka: Kafka, topic: string): Promise<number[]> {
  const admin = kafka.admin();
  await admin.connect();
  const partitions = (await topicOffsets(admin, topic)).map((o) => o.partition);
  await admin.disconnect();
  const pending = new Set(partitions);
  const indices: number[] = [];
  const groupId = `flywheel-bench-verify-${randomUUID()}`;
  const consumer = kafka.consumer({ groupId, readUncommitted: false, maxWaitTimeInMs: 200 });
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
    // firstOffset is null for a batch that fetched nothing at all; then lastOffset is not a position.
    const fetched = payload.firstOffset !== null && payload.firstOffset !== undefined;
    if (payload.highWatermark === '0' || (fetched && BigInt(payload.lastOffset) >= BigInt(payload.highWatermark) - 1n)) pending.delete(payload.partition);
    if (pending.size === 0) finish();
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) if (m.value !== null) indices.push(indexOf(m.value));
      },
    });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      done,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`verifying ${topic}: partitions [${[...pending].join(', ')}] not read to their high watermark in 120 s`)), 120_000))),
    ]).finally(() => clearTimeout(timer));
  } finally {
    await consumer.disconnect();
    const cleanup = kafka.admin();
    await cleanup.connect();
    await cleanup.deleteGroups([groupId]).catch(() => undefined);
    await cleanup.disconnect();
  }
  return indices;
}

/**
 * The bench's Kafka side: the topic every consuming figure reads, and the anchors they are
 * divided by — a bare kafkajs consumer that only counts and, when Maven can fetch it, Kafka's
 * own Java `ConsumerPerformance` — plus kafkajs with the project's serde on the same topic.
 *
 * Every consumer here is timed the same way as a pipeline worker: from its first fetch request
 * (kafkajs's FETCH_START, right after the group join) until it has handled the N-th record —
 * the group join is left out of every figure alike (start-up is measured on its own, in
 * bench/latency.ts); the rate from subscribe, join included, is kept for the notes.
 *
 *   const topic = await produceBenchTopic(kafka, registry, 'bench-ab12cd34', 100_000);
 *   const rate = await bareConsumerPass(kafka, topic.name, topic.records);   // records/s
 */
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Kafka, KafkaMessage, Message } from 'kafkajs';
import type { SchemaRegistryClient } from '@confluentinc/schemaregistry';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { toDecision } from '../lib/decision.ts';
import { newSample } from '../lib/envelope.ts';
import { decisionSerde, rolloutSerde, type TopicSerde } from '../streams/serde.ts';
import { ensureTopics } from '../streams/topics.ts';

const execFileAsync = promisify(execFile);
export const REPO = new URL('..', import.meta.url).pathname;

/** Epoch milliseconds with sub-millisecond precision, comparable between processes. */
export const now = (): number => performance.timeOrigin + performance.now();

/** The same partition count and fetch size as deploy/pipeline.json's source. */
export const PARTITIONS = 3;
const FETCH_BYTES_PER_PARTITION = 1_048_576;

export interface BenchTopic {
  name: string;
  records: number;
  /** Mean size of a record's value (registry wire format), bytes. */
  meanBytes: number;
  /** Seconds the produce took (not a figure: producing is not what is measured). */
  produceSeconds: number;
}

/**
 * Synthetic rollouts (cli/synthetic.ts, 4 samples per prompt, with its duplicates and invalid
 * ones) encoded once in the registry wire format and sent keyed by group, as `flywheel produce`
 * does. `runId` (default 'synthetic', as the issue's ~345-byte records) makes ids differ between topics; `createdAtShiftMs` moves every created_at (a later
 * backlog, days newer than the first).
 */
export async function produceBenchTopic(
  kafka: Kafka,
  registry: SchemaRegistryClient,
  name: string,
  records: number,
  options: { runId?: string; createdAtShiftMs?: number; create?: boolean } = {},
): Promise<BenchTopic> {
  if (options.create !== false) {
    const admin = kafka.admin();
    await admin.connect();
    try {
      await ensureTopics(admin, [{ topic: name, numPartitions: PARTITIONS, replicationFactor: -1 }]);
    } finally {
      await admin.disconnect();
    }
  }
  const serde = await rolloutSerde(registry, name);
  const data = syntheticRollouts({ groups: Math.ceil(records / 4), samplesPerGroup: 4, runId: options.runId ?? 'synthetic', garbage: 0 });
  const rollouts = data.rollouts.slice(0, records).map((r) => ({ ...r, created_at: r.created_at + (options.createdAtShiftMs ?? 0) }));
  const values = await Promise.all(rollouts.map((r) => serde.serialize(r)));
  const start = now();
  await sendAll(kafka, name, rollouts.map((r, i) => ({ key: r.group_id, value: values[i]! })));
  return {
    name,
    records: rollouts.length,
    meanBytes: Math.round(values.reduce((sum, v) => sum + v.length, 0) / values.length),
    produceSeconds: (now() - start) / 1000,
  };
}

/** Idempotent producer, 1000 records per send, several sends in flight per call. */
export async function sendAll(kafka: Kafka, topic: string, messages: Message[]): Promise<void> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += 1000) await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 1000) });
  } finally {
    await producer.disconnect();
  }
}

/** records/s from the first fetch (the figure), and from subscribe (group join included). */
export interface ConsumeRate {
  rate: number;
  withStart: number;
}

/**
 * Consumes `topic` from the beginning with a fresh group, calling `handle` per fetched batch,
 * until `records` records were handled.
 */
async function timedConsume(kafka: Kafka, topic: string, records: number, handle: (messages: KafkaMessage[]) => Promise<void> | void): Promise<ConsumeRate> {
  const consumer = kafka.consumer({ groupId: `bench-reader-${randomUUID()}`, readUncommitted: false, maxBytesPerPartition: FETCH_BYTES_PER_PARTITION });
  await consumer.connect();
  let count = 0;
  let firstFetch: number | undefined;
  consumer.on(consumer.events.FETCH_START, () => void (firstFetch ??= now()));
  let done!: (t: number) => void;
  const finished = new Promise<number>((resolve) => (done = resolve));
  const timeout = setTimeout(() => done(Number.NaN), 60_000 + records * 5);
  try {
    const start = now();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: PARTITIONS,
      eachBatch: async ({ batch }) => {
        await handle(batch.messages);
        count += batch.messages.length;
        if (count >= records) done(now());
      },
    });
    const end = await finished;
    if (Number.isNaN(end)) throw new Error(`consuming ${topic}: ${count} of ${records} records before the timeout`);
    return { rate: records / ((end - firstFetch!) / 1000), withStart: records / ((end - start) / 1000) };
  } finally {
    clearTimeout(timeout);
    await consumer.disconnect();
  }
}

/** The anchor: a kafkajs consumer (eachBatch) that only counts. */
export function bareConsumerPass(kafka: Kafka, topic: string, records: number): Promise<ConsumeRate> {
  return timedConsume(kafka, topic, records, () => undefined);
}

/**
 * kafkajs + the project's serde: per record, decode the rollout and encode a decision about it
 * (as `encodeOutputs` does for the decisions topic), on the synchronous batch path when the
 * serde has one (`prepare` + `decode` / `encode`), else through its promises.
 */
export async function serdeConsumerPass(kafka: Kafka, registry: SchemaRegistryClient, topic: string, records: number): Promise<ConsumeRate & { path: string }> {
  const rollouts = await rolloutSerde(registry, topic);
  const decisions = await decisionSerde(registry, `${topic}.bench-decisions`);
  const context = { configHash: 'bench', pipelineRun: 'bench' };
  const fast = batchPath(rollouts) && batchPath(decisions);
  const embed = fast && decisions.headFingerprint !== undefined && decisions.headFingerprint === rollouts.fingerprint;
  let sink = 0;
  const rates = await timedConsume(kafka, topic, records, async (messages) => {
    if (fast) {
      await rollouts.prepare(messages.map((m) => m.value));
      for (const m of messages) {
        const rollout = rollouts.decode(m.value!);
        const decision = toDecision(newSample(rollout, { topic, partition: 0, offset: m.offset }, m.value!, m.key), context);
        // As encodeOutputs does: a rollout written with the reader's schema is embedded as it came.
        const body = embed ? rollouts.readerBody(m.value!) : undefined;
        sink += (body === undefined ? decisions.encode(decision) : decisions.encodeWithHead(decision, body)).length;
      }
    } else {
      for (const m of messages) {
        const rollout = await rollouts.deserialize(m.value!);
        sink += (await decisions.serialize(toDecision(newSample(rollout, { topic, partition: 0, offset: m.offset }, m.value!, m.key), context))).length;
      }
    }
  });
  if (sink === 0) throw new Error('the serde pass encoded nothing');
  return { ...rates, path: fast ? `prepare + decode/encode (sync)${embed ? ', rollout bytes embedded' : ''}` : 'deserialize/serialize (promises)' };
}

interface BatchSerde<T> {
  prepare(payloads: Iterable<Buffer | null | undefined>): Promise<void>;
  decode(payload: Buffer): T;
  encode(value: T): Buffer;
}

/** Whether the serde has the synchronous batch path (the promise path is the fallback). */
function batchPath<T>(serde: TopicSerde<T>): serde is TopicSerde<T> & BatchSerde<T> {
  const s = serde as Partial<BatchSerde<T>>;
  return typeof s.prepare === 'function' && typeof s.decode === 'function' && typeof s.encode === 'function';
}

const TOOLS_POM = join(REPO, 'bench/kafka-tools/pom.xml');
const TOOLS_LIB = join(REPO, '.cache/kafka-tools/lib');

/**
 * Kafka's own perf consumer (org.apache.kafka:kafka-tools, the broker's version), fetched once
 * with Maven into .cache/kafka-tools/lib. Returns its fetch.nMsg.sec (records over its fetch
 * time: the group join left out, as in the other figures), or a reason it could not run.
 */
export async function javaConsumerPerformance(brokers: string[], topic: string, records: number): Promise<ConsumeRate | { unavailable: string }> {
  try {
    await fetchKafkaTools();
  } catch (err) {
    return { unavailable: (err as Error).message };
  }
  try {
    const { stdout } = await execFileAsync(
      process.env.KAFKA_JAVA ?? 'java',
      ['-Xmx512m', '-cp', `${TOOLS_LIB}/*`, 'org.apache.kafka.tools.ConsumerPerformance', '--bootstrap-server', brokers.join(','), '--topic', topic, '--messages', String(records), '--group', `bench-java-${randomUUID()}`, '--timeout', '60000'],
      { timeout: 120_000 + records, maxBuffer: 1 << 20 },
    );
    // Header then one CSV line: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, …
    const lines = stdout.trim().split('\n');
    const header = lines.findIndex((l) => l.includes('nMsg.sec'));
    const columns = lines[header]!.split(',').map((c) => c.trim());
    const values = lines[header + 1]!.split(',').map((c) => c.trim());
    const consumed = Number(values[columns.indexOf('data.consumed.in.nMsg')]);
    if (consumed < records) return { unavailable: `ConsumerPerformance read ${consumed} of ${records} records` };
    return { rate: Number(values[columns.indexOf('fetch.nMsg.sec')]), withStart: Number(values[columns.indexOf('nMsg.sec')]) };
  } catch (err) {
    return { unavailable: `ConsumerPerformance failed: ${(err as Error).message.split('\n')[0]}` };
  }
}

async function fetchKafkaTools(): Promise<void> {
  const want = createHash('sha256').update(readFileSync(TOOLS_POM)).digest('hex');
  const marker = join(TOOLS_LIB, '.complete');
  if (existsSync(marker) && readFileSync(marker, 'utf8').trim() === want) return;
  const tmp = `${TOOLS_LIB}.tmp.${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  process.stderr.write('[bench] fetching org.apache.kafka:kafka-tools from Maven Central into .cache/kafka-tools/lib (once)\n');
  try {
    await execFileAsync('mvn', ['-B', '-q', 'dependency:copy-dependencies', '-DincludeScope=runtime', `-DoutputDirectory=${tmp}`], { cwd: join(REPO, 'bench/kafka-tools'), timeout: 600_000 });
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`mvn could not fetch kafka-tools: ${(err as Error).message.split('\n')[0]}`);
  }
  writeFileSync(join(tmp, '.complete'), want);
  rmSync(TOOLS_LIB, { recursive: true, force: true });
  renameSync(tmp, TOOLS_LIB);
}


export { median } from './row.ts';

export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

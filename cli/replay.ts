import { createHash } from 'node:crypto';
import type { Admin } from 'kafkajs';
import { withOverrides, type PipelineConfig } from '../pipeline/config.ts';
import { startPipeline } from '../pipeline/run.ts';
import type { ClickHouseStore } from '../sinks/clickhouse/store.ts';
import type { Connections } from '../streams/connections.ts';
import { createKafka } from '../streams/kafka.ts';
import { topicCatalog, topicOffsets, topicOffsetsAt } from '../streams/topics.ts';
import { formatTable } from '../lib/table.ts';

export interface ReplayOptions {
  /** The new run's name: labels its rows, names its topics (`<source prefix>.replay.<run>.*`) and consumer group. */
  run: string;
  /** The prefix whose rollouts topic is replayed; default: the config's. */
  sourcePrefix?: string;
  /** Where to start and stop: "earliest", "latest", an ISO time, an offset for every partition, or "p:offset,p:offset". */
  from: string;
  to: string;
  store: ClickHouseStore;
  /** Called with (processed, total) as the replay goes. */
  onProgress?: (done: number, total: number) => void;
}

export interface ReplayResult {
  run: string;
  inputTopic: string;
  records: number;
  /** sha256 over the run's decisions in input order: equal hashes, equal decisions. */
  decisionHash: string;
}

/**
 * `flywheel replay`: reruns a range of a rollouts topic through a config as a named run. Its
 * outputs are kept apart from the live run: run-scoped topics, and the run name on every
 * ClickHouse row (the same store, so `flywheel compare` can put the runs side by side). A run
 * name is used once: its consumer group remembers what it has replayed.
 */
export async function replay(config: PipelineConfig, connections: Connections, options: ReplayOptions): Promise<ReplayResult> {
  const sourcePrefix = options.sourcePrefix ?? config.topics.prefix;
  const inputTopic = topicCatalog(sourcePrefix).rollouts;
  const kafka = createKafka(connections, `flywheel-replay-${options.run}`);
  const admin = kafka.admin();
  await admin.connect();
  let range: Map<number, { from: bigint; to: bigint }>;
  try {
    const from = await resolvePosition(admin, inputTopic, options.from);
    const to = await resolvePosition(admin, inputTopic, options.to);
    range = new Map([...from].map(([p, start]) => [p, { from: start, to: to.get(p) ?? start }]));
  } finally {
    await admin.disconnect();
  }
  const total = [...range.values()].reduce((sum, r) => sum + Number(r.to > r.from ? r.to - r.from : 0n), 0);
  const replayConfig = withOverrides(config, {
    name: `replay-${options.run}`,
    run: options.run,
    topics: { prefix: `${sourcePrefix}.replay.${options.run}`, partitions: range.size },
  });
  let rangeDone!: () => void;
  const done = new Promise<void>((resolve) => (rangeDone = resolve));
  const pipeline = await startPipeline(replayConfig, connections, { store: options.store, inputTopic, range, onRangeDone: () => rangeDone() });
  const progress = setInterval(() => options.onProgress?.(pipeline.progress.processed, total), 1000);
  try {
    await Promise.race([done, pipeline.stopped]);
    // The sink is a separate consumer: wait until it has stored what the processor decided.
    const deadline = Date.now() + 120_000;
    while (pipeline.progress.stored.samples + pipeline.progress.stored.dead_letters < pipeline.progress.processed) {
      if (Date.now() > deadline) throw new Error('replay: the ClickHouse sink did not catch up within 120 s');
      await new Promise((r) => setTimeout(r, 200));
    }
    options.onProgress?.(pipeline.progress.processed, total);
  } finally {
    clearInterval(progress);
    await pipeline.stop();
  }
  return { run: options.run, inputTopic, records: pipeline.progress.processed, decisionHash: await decisionHash(options.store, options.run) };
}

/** Offsets per partition for a position spec (see ReplayOptions.from). */
async function resolvePosition(admin: Admin, topic: string, spec: string): Promise<Map<number, bigint>> {
  const offsets = await topicOffsets(admin, topic);
  if (spec === 'earliest') return new Map(offsets.map((o) => [o.partition, BigInt(o.low)]));
  if (spec === 'latest') return new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
  if (/^\d+$/.test(spec)) return new Map(offsets.map((o) => [o.partition, BigInt(spec)]));
  if (/^\d+:\d+(,\d+:\d+)*$/.test(spec)) {
    const given = new Map(spec.split(',').map((pair) => pair.split(':').map(Number) as [number, number]));
    return new Map(offsets.map((o) => [o.partition, BigInt(given.get(o.partition) ?? Number(o.low))]));
  }
  const time = Date.parse(spec);
  if (Number.isNaN(time)) throw new Error(`replay: "${spec}" is not earliest, latest, an offset, p:offset pairs or a time`);
  const byTime = await topicOffsetsAt(admin, topic, time);
  return new Map(byTime.map((o) => [o.partition, BigInt(o.offset)]));
}

/** A hash of a run's decisions (ids, verdicts, reasons, scores) in input order. */
export async function decisionHash(store: ClickHouseStore, run: string): Promise<string> {
  const rows = await store.query(
    `SELECT id, decision, reasons, score_names, score_values, duplicate_of FROM samples
     WHERE pipeline_run = {run:String} ORDER BY source_partition, source_offset`,
    { run },
  );
  return createHash('sha256').update(rows.map((r) => JSON.stringify(r)).join('\n')).digest('hex');
}

export function formatReplay(result: ReplayResult): string {
  return formatTable([{ run: result.run, input: result.inputTopic, records: result.records, decision_hash: result.decisionHash.slice(0, 16) }]);
}

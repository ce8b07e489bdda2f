/**
 * Latency of deploy/pipeline.json, in two figures:
 *
 * 1. Produce → visible: a fresh worker; rollouts sent at half the pipeline's maximum rate
 *    (measured in the same run), paced every 10 ms in whole prompt groups; a read_committed
 *    consumer on the accepted topic. A record's latency is the time from just before its send() until the
 *    reader holds it (accepted records are keyed by group id, so a record is matched to its
 *    group's send). p50 and p99 over every accepted record (the synthetic data's fates say how
 *    many to expect). The note splits each latency at the accepted record's Kafka timestamp (set
 *    by the worker's producer as it sends the record in its transaction): send → the worker
 *    produced it (fetch, decide, the transaction's first requests) and produced → the reader
 *    holds it (the rest of the commit, the coordinator's markers, the reader's fetch). The
 *    reader's fetch does not wait for its maxWaitTimeInMs: the broker answers a waiting
 *    read_committed fetch as soon as a commit marker moves the partition's stable offset.
 * 2. Start-up stall: a worker of the group that processed the bench topic (its changelog holds
 *    the exact-dedupe index of every record) starts on a backlog of as many new rollouts, 8 days
 *    newer (past the index's 7-day TTL, so restoring is followed by eviction). Timed: spawn →
 *    first decision committed, ready → first decision, and the largest gap between two commits
 *    while it drains the backlog (30 s at most).
 *
 *   const rows = await benchLatency({ kafka, registry, prefix, dataDir, topic, pipelineRate });
 */
import { randomUUID } from 'node:crypto';
import type { Kafka, Message } from 'kafkajs';
import type { SchemaRegistryClient } from '@confluentinc/schemaregistry';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { rolloutSerde } from '../streams/serde.ts';
import { now, percentile, produceBenchTopic, type BenchTopic } from './kafka.ts';
import { benchConfig, PIPELINE_CONFIG, timeoutFor, type PipelineJob } from './pipeline.ts';
import type { BenchRow } from './row.ts';
import { BenchWorker } from './workers.ts';

export interface LatencyOptions {
  kafka: Kafka;
  registry: SchemaRegistryClient;
  prefix: string;
  dataDir: string;
  /** The bench topic; the stall figure needs a group that processed it. */
  topic: BenchTopic;
  /** deploy/pipeline.json's processed records/s from this run (undefined: not measured). */
  pipelineRate: number | undefined;
  /** The job whose group processed `topic` (main's pipeline section); else one is run here first. */
  processedBy?: PipelineJob;
}

const DAY_MS = 24 * 3600 * 1000;

export async function benchLatency(options: LatencyOptions): Promise<BenchRow[]> {
  const rows = await produceToVisible(options);
  rows.push(...(await startupStall(options)));
  return rows;
}

export async function produceToVisible({ kafka, registry, prefix, dataDir, topic, pipelineRate }: LatencyOptions): Promise<BenchRow[]> {
  const rate = pipelineRate === undefined ? 200 : Math.max(20, pipelineRate / 2);
  const job: PipelineJob = { label: 'latency', configFile: PIPELINE_CONFIG, prefix, dataDir };
  const config = benchConfig(job);
  const name = (config.topics as { prefix: string }).prefix;
  const worker = await BenchWorker.spawn('latency', { config, clickhouseUrl: undefined, expect: 0 });
  const reader = kafka.consumer({ groupId: `bench-latency-${randomUUID()}`, readUncommitted: false, maxWaitTimeInMs: 100 });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  try {
    worker.go();
    await worker.ready;
    const serde = await rolloutSerde(registry, `${name}.rollouts`);
    // At most 15 s of load, and no more records than the bench's size.
    const count = Math.max(400, Math.min(topic.records, Math.round(rate * 15)));
    const warm = syntheticRollouts({ groups: 50, runId: `${name}-warm`, garbage: 0, invalidRate: 0 });
    const load = syntheticRollouts({ groups: Math.ceil(count / 4), runId: `${name}-load`, garbage: 0 });
    const expected = [...load.fates.values()].filter((f) => f === 'accept').length;
    const groups = new Map<string, Message[]>();
    for (const r of load.rollouts) {
      const list = groups.get(r.group_id) ?? [];
      list.push({ key: r.group_id, value: await serde.serialize(r) });
      groups.set(r.group_id, list);
    }
    await producer.connect();
    const sentAt = new Map<string, number>();
    const latencies: number[] = [];
    const toProduced: number[] = [];
    const producedToSeen: number[] = [];
    let seen!: () => void;
    const allSeen = new Promise<void>((resolve) => (seen = resolve));
    await reader.connect();
    await reader.subscribe({ topic: `${name}.accepted`, fromBeginning: true });
    await reader.run({
      eachBatch: async ({ batch }) => {
        const t = now();
        for (const m of batch.messages) {
          const sent = sentAt.get(m.key!.toString());
          if (sent === undefined) continue;
          latencies.push(t - sent);
          toProduced.push(Number(m.timestamp) - sent);
          producedToSeen.push(t - Number(m.timestamp));
          if (latencies.length >= expected) seen();
        }
      },
    });
    // Warm-up: the worker has joined, fenced its partitions and JIT-compiled the hot path.
    await producer.send({ topic: serde.topic, messages: await Promise.all(warm.rollouts.map(async (r) => ({ key: r.group_id, value: await serde.serialize(r) }))) });
    await worker.processedAt(warm.rollouts.length, 120_000);

    // Paced: every 10 ms, the groups the schedule has reached go in one send (a slow send
    // makes the next one bigger, so the offered rate holds).
    const start = now();
    let sent = 0;
    const pending = [...groups];
    while (pending.length > 0) {
      const due = Math.min(load.rollouts.length, Math.floor(((now() - start) / 1000) * rate));
      const batch: Message[] = [];
      const t = now();
      while (pending.length > 0 && sent + batch.length < due) {
        const [key, messages] = pending.shift()!;
        sentAt.set(key, t);
        batch.push(...messages);
      }
      if (batch.length > 0) await producer.send({ topic: serde.topic, messages: batch });
      sent += batch.length;
      await new Promise((r) => setTimeout(r, 10));
    }
    const sendSeconds = (now() - start) / 1000;
    const timeout = setTimeout(() => seen(), 60_000);
    await allSeen;
    clearTimeout(timeout);
    const split = (values: number[]) => `p50 ${Math.round(percentile(values, 50))}, p99 ${Math.round(percentile(values, 99))} ms`;
    const note = `${Math.round(rate)} records/s offered (${Math.round(sent / sendSeconds)} sent) for ${sendSeconds.toFixed(1)} s; ${latencies.length} of ${expected} accepted records seen; read_committed; send → worker produced ${split(toProduced)}, produced → seen ${split(producedToSeen)}`;
    return [
      { figure: 'pipeline.json: produce → accepted visible, p50', unit: 'ms', flywheel: percentile(latencies, 50), anchor: '', anchorValue: null, note },
      { figure: 'pipeline.json: produce → accepted visible, p99', unit: 'ms', flywheel: percentile(latencies, 99), anchor: '', anchorValue: null, target: '≤ 100 ms', note: `at half the max load measured above${pipelineRate === undefined ? ' (not measured: 200/s used)' : ''}` },
    ];
  } finally {
    await reader.disconnect().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
    await worker.stop();
  }
}

async function startupStall(options: LatencyOptions): Promise<BenchRow[]> {
  const { kafka, registry, prefix, dataDir, topic } = options;
  const job: PipelineJob = options.processedBy ?? { label: 'stall', configFile: PIPELINE_CONFIG, prefix, dataDir };
  const config = benchConfig(job);
  if (options.processedBy === undefined) {
    // Make the restore state first: this group processes the bench topic once.
    const first = await BenchWorker.spawn('stall-state', { config, inputTopic: topic.name, expect: 0 });
    try {
      first.go();
      await first.processedAt(topic.records, timeoutFor(topic.records));
    } finally {
      await first.stop();
    }
  }
  const backlog = await produceBenchTopic(kafka, registry, `${prefix}.backlog`, topic.records, { runId: `${prefix}-backlog`, createdAtShiftMs: 8 * DAY_MS });
  const worker = await BenchWorker.spawn('stall', { config, inputTopic: backlog.name, expect: 0 });
  try {
    worker.go();
    const ready = await worker.ready;
    const first = await worker.processedAt(1, timeoutFor(backlog.records));
    // Drain (30 s at most): the largest pause between two commits is the stall, if any.
    await worker.until(() => worker.processed >= backlog.records, 30_000, () => 'the backlog to drain').catch(() => undefined);
    let gap = 0;
    for (let i = 1; i < worker.commits.length; i++) gap = Math.max(gap, worker.commits[i]!.t - worker.commits[i - 1]!.t);
    const note = `${backlog.records} new records, 8 days newer, state of ${topic.records} restored; ${worker.processed} processed while watched`;
    return [
      { figure: 'start-up: worker spawn → first decision committed', unit: 'ms', flywheel: first - worker.spawnedAt, anchor: '', anchorValue: null, note: `process start ${Math.round(ready - worker.spawnedAt)} ms of it; ${note}` },
      { figure: 'start-up: pipeline ready → first decision committed', unit: 'ms', flywheel: first - ready, anchor: '', anchorValue: null, target: 'no multi-second stall', note: 'join, fence, restore, first batch' },
      { figure: 'start-up: largest gap between commits draining the backlog', unit: 'ms', flywheel: gap, anchor: '', anchorValue: null, target: 'no multi-second stall', note: 'TTL eviction after the restore is in here' },
    ];
  } finally {
    await worker.stop();
  }
}

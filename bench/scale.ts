/**
 * Scale-out: 1, then 2 workers of one consumer group (deploy/pipeline.json, exactly-once)
 * against a ClickHouse server, on the bench topic from the beginning. The workers are spawned
 * and load everything first, then start their pipelines at the same moment; the group's rate
 * is the records committed after every worker sends fetches (the group has settled) ÷ the
 * time from then to the commit that makes the workers' processed records sum to N; per worker
 * it is that ÷ the number of workers. Each run is its own group, database and
 * output topics.
 *
 * What 2 cores limit: with the bench pinned to core 1 (broker and registry on core 0), both
 * workers share one core, so 2 workers can only show what a second process costs, not a second
 * core's gain; unpinned they share both cores with the broker, the registry and ClickHouse.
 * The topic has 3 partitions, so 2 workers split them 2 + 1 and the one with two bounds the time.
 *
 *   const rows = await benchScale({ kafka, prefix, dataDir, topic, clickhouseUrl, anchorValue });
 */
import type { Kafka } from 'kafkajs';
import { openStore } from '../sinks/clickhouse/store.ts';
import type { BenchTopic } from './kafka.ts';
import { benchConfig, catchUpTimeout, PIPELINE_CONFIG, timeoutFor } from './pipeline.ts';
import type { BenchRow } from './row.ts';
import { BenchWorker } from './workers.ts';

export interface ScaleOptions {
  kafka: Kafka;
  prefix: string;
  dataDir: string;
  topic: BenchTopic;
  clickhouseUrl: string;
  /** The bare consumer's records/s in this run (the rows' anchor). */
  anchorValue: number;
  /** Whether the bench is pinned to one core (it changes what the figure says). */
  pinned: boolean;
}

export async function benchScale(options: ScaleOptions): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const perWorker: number[] = [];
  for (const count of [1, 2]) {
    const { rate, stored, split } = await runGroup(options, count);
    perWorker.push(rate / count);
    rows.push({
      figure: `scale-out: ${count} worker${count > 1 ? 's' : ''}, ClickHouse server, per worker`,
      unit: 'records/s',
      flywheel: rate / count,
      anchor: 'bare kafkajs consumer',
      anchorValue: options.anchorValue,
      note: `group ${Math.round(rate)}/s decided + committed, ${Number.isFinite(stored) ? `${Math.round(stored)}/s stored` : 'sink did not catch up'}; partitions per worker ${split}`,
    });
  }
  const limit = options.pinned
    ? 'bench pinned to core 1: both workers share one core, so this shows the cost of a second process, not a second core'
    : 'not pinned: 2 workers, the broker, the registry and ClickHouse share 2 cores';
  rows.push({ figure: 'scale-out: 2 workers ÷ 1 worker, group throughput', unit: '×', flywheel: (2 * perWorker[1]!) / perWorker[0]!, anchor: '', anchorValue: null, note: `${limit}; 3 partitions split 2 + 1` });
  return rows;
}

async function runGroup(options: ScaleOptions, count: number): Promise<{ rate: number; stored: number; split: string }> {
  const { topic, clickhouseUrl } = options;
  const job = { label: `scale-${count}`, configFile: PIPELINE_CONFIG, prefix: options.prefix, dataDir: options.dataDir, clickhouseUrl };
  const config = benchConfig(job);
  const workers = await Promise.all(Array.from({ length: count }, (_, i) => BenchWorker.spawn(`scale-${count}.${i}`, { config, inputTopic: topic.name, clickhouseUrl, expect: 0 })));
  try {
    for (const w of workers) w.go();
    const ready = Math.min(...(await Promise.all(workers.map((w) => w.ready))));
    const timeout = timeoutFor(topic.records);
    const sum = (of: (w: BenchWorker) => number) => workers.reduce((s, w) => s + of(w), 0);
    // Any worker's report may complete the sum; any worker's failure fails the run.
    const reach = (what: 'processed' | 'stored', ms: number) =>
      Promise.race(workers.map((w) => w.until(() => sum((x) => x[what]) >= topic.records, ms, () => `${topic.records} records ${what} by the group (${sum((x) => x[what])} so far)`))).then(() =>
        // The report that completed the sum is the latest of them all.
        Math.max(...workers.map((w) => (what === 'processed' ? w.commits : w.stores).at(-1)?.t ?? 0)),
      );
    const started = Date.now();
    const processed = await reach('processed', timeout);
    let stored = Number.NaN;
    try {
      stored = await reach('stored', catchUpTimeout(Date.now() - started));
    } catch (err) {
      process.stderr.write(`[bench] scale-${count}: ${(err as Error).message}\n`);
    }
    // Who did how much: with 3 partitions, 2 workers split them 2 + 1.
    const split = workers.map((w) => `${Math.round((100 * w.processed) / Math.max(1, sum((x) => x.processed)))} %`).join(' / ');
    // The clock starts once every worker fetches (each has joined and holds partitions: the
    // group is settled), over the records committed after that; if one never got partitions
    // before the end, from the first worker's first fetch.
    const fetches = workers.map((w) => w.firstFetch);
    const settled = fetches.every((t) => t !== undefined);
    const known = fetches.filter((t): t is number => t !== undefined);
    const start = known.length === 0 ? ready : settled ? Math.max(...known) : Math.min(...known);
    const before = sum((w) => w.commits.filter((c) => c.t <= start).at(-1)?.processed ?? 0);
    const after = topic.records - before;
    return {
      rate: after / ((processed - start) / 1000),
      stored: after / ((stored - start) / 1000),
      split: `${split} of the records${settled ? `; clock from when all ${count} fetch (${before} records before)` : '; a worker never got partitions: clock from the first fetch'}`,
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    const database = (config.clickhouse as { database?: string }).database;
    if (database !== undefined) {
      const store = await openStore({ url: clickhouseUrl, database: 'default' });
      await store.command(`DROP DATABASE IF EXISTS ${database}`).catch(() => undefined);
      await store.close();
    }
  }
}

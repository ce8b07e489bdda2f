/**
 * A pipeline worker over the bench topic, timed: deploy/pipeline.json (exactly-once) or the
 * demo's operator set, from the beginning of the topic, in a worker process of its own
 * (bench/worker.ts). It does all its work: decode, validate, decide, commit (one Kafka
 * transaction per batch with outputs, changelog and offsets) and store (its ClickHouse sink).
 *
 * - processed: records/s from the worker's first commit until the commit that makes
 *   progress.processed reach N, over the records after the first commit (start-up — join,
 *   fencing, restore, the first batch — left out, as the anchor's join and first fetch are).
 *   Also kept: the rate from startPipeline() resolved, start-up included.
 * - stored: from the same first commit until the sink has inserted N rows (samples + dead
 *   letters).
 * - GC: the worker's GcWindow over the same window (bench/profile.ts).
 *
 *   const run = await runPipeline({ label: 'pipeline.json', configFile: EXAMPLE_CONFIG, topic, prefix, dataDir });
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { featureSize } from '../operators/features.ts';
import { loadConfig } from '../pipeline/config.ts';
import { linearModelOnnx } from '../trainers/onnx-model.ts';
import { prng } from '../cli/synthetic.ts';
import type { BenchTopic } from './kafka.ts';
import type { GcReport } from './profile.ts';
import { BenchWorker } from './workers.ts';

export const PIPELINE_CONFIG = new URL('../deploy/pipeline.json', import.meta.url).pathname;
export const DEMO_CONFIG = new URL('../deploy/flywheel-demo.json', import.meta.url).pathname;

export interface PipelineJob {
  /** Names the run (and its topics, group and store directory). */
  label: string;
  configFile: string;
  /** Unique per bench run: the pipeline's topics are `<prefix>-<label>.*`. */
  prefix: string;
  /** Where the embedded store and model files of this run go. */
  dataDir: string;
  /** A ClickHouse server instead of the embedded store (database `<prefix>_<label>`). */
  clickhouseUrl?: string;
}

export interface PipelineMeasurement {
  records: number;
  /** records/s, decided and committed, after the first commit. */
  processedRate: number;
  /** records/s until the ClickHouse sink had stored every record; NaN if it did not in time. */
  storedRate: number;
  /** records/s from startPipeline() resolved to the N-th record: start-up included. */
  withStartRate: number;
  /** ms from spawn to ready, and ready to the first commit. */
  startMs: number;
  firstCommitMs: number;
  gc: GcReport;
  store: 'embedded' | 'server';
}

/** The raw config of `job` with the bench's names, store and (for onnx-score) a model file. */
export function benchConfig(job: PipelineJob): Record<string, unknown> {
  const raw = JSON.parse(readFileSync(job.configFile, 'utf8')) as Record<string, unknown>;
  const name = `${job.prefix}-${job.label}`.replace(/[^A-Za-z0-9._-]/g, '-');
  const dir = join(job.dataDir, job.label);
  mkdirSync(dir, { recursive: true });
  const operators = (raw.operators as Array<Record<string, unknown>>).map((op) => (op.type === 'onnx-score' ? { ...op, model: { ...(op.model as object), path: scorerFile(job.configFile, dir) } } : op));
  return {
    ...raw,
    name: 'bench',
    run: name,
    topics: { ...(raw.topics as object), prefix: name },
    operators,
    clickhouse: { path: join(dir, 'clickhouse'), ...(job.clickhouseUrl === undefined ? {} : { database: name.replace(/[^A-Za-z0-9_]/g, '_') }) },
  };
}

/**
 * A logistic scorer over the config's feature layout with small seeded weights, written as
 * ONNX (as the demo starts from its own v0 scorer; no model hub).
 */
function scorerFile(configFile: string, dir: string): string {
  const features = loadConfig(configFile).features;
  const size = featureSize(features);
  const random = prng(3);
  const weights = Float32Array.from({ length: size }, () => (random() - 0.5) * 0.02);
  const path = join(dir, 'scorer-bench.onnx');
  writeFileSync(path, linearModelOnnx({ weights, bias: 0.1, inputDim: size, output: 'logistic', version: 'bench' }));
  return path;
}

export function timeoutFor(records: number): number {
  return 120_000 + records * 20;
}

export async function runPipeline(job: PipelineJob, topic: BenchTopic): Promise<PipelineMeasurement> {
  const worker = await BenchWorker.spawn(job.label, { config: benchConfig(job), inputTopic: topic.name, clickhouseUrl: job.clickhouseUrl, expect: topic.records });
  try {
    worker.go();
    const ready = await worker.ready;
    const timeout = timeoutFor(topic.records);
    const processed = await worker.processedAt(topic.records, timeout);
    const gc = await worker.gcReport(10_000);
    let stored = Number.NaN;
    try {
      stored = await worker.storedAt(topic.records, timeout);
    } catch (err) {
      process.stderr.write(`[bench] ${job.label}: the ClickHouse sink did not catch up: ${(err as Error).message.split('\n')[0]}\n`);
    }
    const first = worker.commits[0]!;
    return {
      records: topic.records,
      processedRate: (topic.records - first.processed) / ((processed - first.t) / 1000),
      withStartRate: topic.records / ((processed - ready) / 1000),
      storedRate: (topic.records - first.processed) / ((stored - first.t) / 1000),
      startMs: ready - worker.spawnedAt,
      firstCommitMs: first.t - ready,
      gc,
      store: job.clickhouseUrl === undefined ? 'embedded' : 'server',
    };
  } finally {
    await worker.stop();
  }
}

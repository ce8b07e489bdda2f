/**
 * A pipeline worker over the bench topic, timed: deploy/pipeline.json (exactly-once) or the
 * demo's operator set, from the beginning of the topic, in a worker process of its own
 * (bench/worker.ts). It does all its work: decode, validate, decide, commit (one Kafka
 * transaction per batch with outputs, changelog and offsets) and store (its ClickHouse sink).
 *
 * - processed: N ÷ the time from the processor's first fetch request (its group joined; the
 *   anchor's clock starts there too) to the commit that makes progress.processed reach N. The
 *   group join is left out; what the processor does on its first batch of a partition (fence,
 *   read offsets, restore the changelog) is in. Also kept: the rate from startPipeline()
 *   resolved, start-up included.
 * - stored: from the same first fetch until the sink has inserted N rows (samples + dead letters).
 * - GC: the worker's GcWindow over first fetch → N processed (bench/profile.ts).
 *
 *   const run = await runPipeline({ label: 'pipeline.json', configFile: EXAMPLE_CONFIG, topic, prefix, dataDir });
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { featureSize } from '../contracts/features.ts';
import { loadConfig } from '../pipeline/config.ts';
import { linearModelOnnx } from '../contracts/onnx-codec.ts';
import { prng } from '../cli/synthetic.ts';
import type { BenchTopic } from './kafka.ts';
import type { GcReport } from './profile.ts';
import { BenchWorker } from './workers.ts';
import { bundledTextModel } from '../pipeline/text-models.ts';

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
  /** records/s, decided and committed, from the first fetch. */
  processedRate: number;
  /** records/s until the ClickHouse sink had stored every record; NaN if it did not in time. */
  storedRate: number;
  /** records/s from startPipeline() resolved to the N-th record: start-up included. */
  withStartRate: number;
  /** Where the figures' clock started. */
  clock: string;
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
  const operators = (raw.operators as Array<Record<string, unknown>>).map((op) =>
    op.type === 'onnx-score'
      ? { ...op, model: { ...(op.model as object), path: scorerFile(job.configFile, dir) } }
      : // The demo's sentence encoder (models/setup.sh), by its absolute directory.
        op.type === 'semantic-dedupe' && (op.encoder as { kind?: string }).kind === 'text'
        ? { ...op, encoder: { ...(op.encoder as object), dir: bundledTextModel() } }
        : op,
  );
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

/** How long the sink may take to catch up once processing is done: it follows, it does not lead. */
export function catchUpTimeout(processingMs: number): number {
  return 60_000 + 3 * processingMs;
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
      stored = await worker.storedAt(topic.records, catchUpTimeout(processed - ready));
    } catch (err) {
      process.stderr.write(`[bench] ${job.label}: the ClickHouse sink did not catch up: ${(err as Error).message}\n`);
    }
    const first = worker.commits[0]!;
    const start = worker.firstFetch ?? ready;
    return {
      records: topic.records,
      processedRate: topic.records / ((processed - start) / 1000),
      withStartRate: topic.records / ((processed - ready) / 1000),
      storedRate: topic.records / ((stored - start) / 1000),
      clock: worker.firstFetch === undefined ? 'from ready (no first-fetch report: join included)' : 'from first fetch',
      startMs: ready - worker.spawnedAt,
      firstCommitMs: first.t - ready,
      gc,
      store: job.clickhouseUrl === undefined ? 'embedded' : 'server',
    };
  } finally {
    await worker.stop();
  }
}

/**
 * One pipeline worker for the bench, in a process of its own (as `flywheel run` runs one), so
 * that its heap, GC and JIT are its own and it inherits the bench's CPU pinning. Driven over
 * the IPC channel by bench/workers.ts:
 *
 *   child → { type: 'loaded' }                       modules imported, config validated
 *   parent → { type: 'go' }                          start the pipeline now
 *   child → { type: 'ready', t }                     startPipeline resolved
 *   child → { type: 'fetching', t }                  the processor's consumer sends its first fetch (group joined)
 *   child → { type: 'commit', t, processed }         after every committed transaction
 *   child → { type: 'stored', t, stored }            after every ClickHouse insert (samples + dead letters)
 *   child → { type: 'gc', report }                   once `processed` reached job.expect (window: first fetch → then)
 *   parent → { type: 'stop' }  child → { type: 'stopped' }, exits
 *
 * Times are epoch ms (performance.timeOrigin + now), comparable with the parent's.
 *
 *   node --import tsx bench/worker.ts '{"config":{…},"inputTopic":"bench-1.input","expect":100000}'
 */
// First, as pipeline/run.ts does: kafkajs must load with the linear producer grouping.
import '../streams/kafkajs-producer.ts';
import { join } from 'node:path';
import { Kafka, type ConsumerConfig, type ProducerConfig } from 'kafkajs';
import { parseConfig } from '../pipeline/config.ts';
import { startPipeline, type PipelineProgress } from '../pipeline/run.ts';
import { connectionsFromEnv } from '../streams/connections.ts';
import { now } from './kafka.ts';
import { CpuWindow, GcWindow, HeapWindow } from './profile.ts';

export interface WorkerJob {
  /** A pipeline config as JSON (the file's content with the bench's overrides). */
  config: unknown;
  inputTopic?: string;
  /** A ClickHouse server's URL; absent: the config's embedded store. */
  clickhouseUrl?: string;
  /** Processed records at which the GC window closes (0: no GC report). */
  expect: number;
}

export type WorkerMessage =
  | { type: 'loaded' }
  | { type: 'ready'; t: number }
  | { type: 'fetching'; t: number }
  | { type: 'commit'; t: number; processed: number }
  | { type: 'stored'; t: number; stored: number }
  | { type: 'gc'; report: import('./profile.ts').GcReport }
  | { type: 'failed'; error: string }
  | { type: 'stopped' };

const send = (message: WorkerMessage) => process.send?.(message);
const job = JSON.parse(process.argv[2]!) as WorkerJob;
const config = parseConfig(job.config, 'bench worker job');
const connections = { ...connectionsFromEnv(), clickhouseUrl: job.clickhouseUrl };
const gc = new GcWindow();
/**
 * FLYWHEEL_BENCH_CPU_PROFILE=<dir>: a CPU profile of the same window as the GC report (first
 * fetch → job.expect processed), written to <dir>/<run>.cpuprofile, its self time by package
 * and file printed on stderr (FLYWHEEL_BENCH_VERBOSE=1 shows it).
 */
const cpuDir = process.env.FLYWHEEL_BENCH_CPU_PROFILE;
let cpu: Promise<CpuWindow> | undefined;
/** FLYWHEEL_BENCH_HEAP_PROFILE=<dir>: likewise, where the window allocates (bytes per function, collected objects included). */
const heapDir = process.env.FLYWHEEL_BENCH_HEAP_PROFILE;
let heap: Promise<HeapWindow> | undefined;

/** Calls `changed` after every write of `object[key]` (the pipeline only ever adds to it). */
function watch<T extends object>(object: T, key: keyof T & string, changed: (value: number) => void): void {
  let value = object[key] as number;
  Object.defineProperty(object, key, {
    enumerable: true,
    configurable: true,
    get: () => value,
    set: (next: number) => {
      value = next;
      changed(next);
    },
  });
}

/**
 * The moment the processor's consumer, having joined its group, sends its first fetch: where
 * the anchor's clock starts too (bench/kafka.ts). kafkajs gives no other handle on a consumer
 * the pipeline creates inside, so every consumer made in this process is looked at here, and
 * the processor's is known by its group id (`<prefix>.<name>`, as pipeline/run.ts names it).
 * Should the pipeline stop creating it this way, no 'fetching' report comes and the bench says so.
 */
const processorGroup = `${config.topics.prefix}.${config.name}`;
let fetching = false;
const makeConsumer = Kafka.prototype.consumer;
Kafka.prototype.consumer = function (this: Kafka, options: ConsumerConfig) {
  const consumer = makeConsumer.call(this, options);
  if (options.groupId === processorGroup) {
    consumer.on(consumer.events.FETCH_START, () => {
      if (fetching) return;
      fetching = true;
      if (job.expect > 0) {
        gc.open();
        if (cpuDir) cpu = CpuWindow.start();
        if (heapDir) heap = HeapWindow.start();
      }
      send({ type: 'fetching', t: now() });
    });
  }
  return consumer;
};

/**
 * FLYWHEEL_BENCH_TRACE=1: a line on stderr per committed batch and per sink INSERT (with its
 * time since ready), and every 5 s each producer request type's count and mean / max duration
 * (kafkajs REQUEST events): where a record's latency goes (FLYWHEEL_BENCH_VERBOSE=1 shows it).
 */
const trace = process.env.FLYWHEEL_BENCH_TRACE === '1';
if (trace) {
  const requests = new Map<string, { count: number; ms: number; max: number }>();
  const makeProducer = Kafka.prototype.producer;
  Kafka.prototype.producer = function (this: Kafka, options?: ProducerConfig) {
    const producer = makeProducer.call(this, options);
    producer.on(producer.events.REQUEST, ({ payload }) => {
      const r = requests.get(payload.apiName) ?? { count: 0, ms: 0, max: 0 };
      r.count++;
      r.ms += payload.duration;
      r.max = Math.max(r.max, payload.duration);
      requests.set(payload.apiName, r);
    });
    return producer;
  };
  setInterval(() => {
    const line = [...requests].map(([api, r]) => `${api} ${r.count}× mean ${(r.ms / r.count).toFixed(1)} max ${r.max} ms`).join(' | ');
    process.stderr.write(`requests: ${line}\n`);
  }, 5000).unref();
}
process.on('message', (message: { type: string }) => {
  if (message.type === 'go') void run();
});
// The bench went away (Ctrl-C, crash): a worker must not outlive it.
process.on('disconnect', () => process.exit(1));
send({ type: 'loaded' });

async function writeProfile(window: Promise<CpuWindow>): Promise<void> {
  const file = join(cpuDir!, `${config.run}.cpuprofile`);
  const { top } = await (await window).stop(file);
  process.stderr.write(`cpu profile ${file}; self time:\n${top.slice(0, 40).map((t) => `  ${(t.share * 100).toFixed(1).padStart(5)} %  ${t.where}`).join('\n')}\n`);
}

async function writeHeapProfile(window: Promise<HeapWindow>): Promise<void> {
  const file = join(heapDir!, `${config.run}.heapprofile`);
  const { totalBytes, top } = await (await window).stop(file);
  process.stderr.write(`heap profile ${file}; ${Math.round(totalBytes / job.expect)} bytes sampled per record; allocated by:\n${top.slice(0, 40).map((t) => `  ${(t.share * 100).toFixed(1).padStart(5)} %  ${t.where}`).join('\n')}\n`);
}

async function run(): Promise<void> {
  try {
    const pipeline = await startPipeline(config, connections, { inputTopic: job.inputTopic });
    const progress: PipelineProgress = pipeline.progress;
    if (trace) {
      const t0 = now();
      const log = (line: string) => process.stderr.write(`${(now() - t0).toFixed(1)} ms: ${line}\n`);
      pipeline.events.on('batch.commit', ({ payload: p }) => log(`p${p.partition} committed ${p.records} records, ${p.outputs} outputs in ${p.durationMs.toFixed(1)} ms (transaction ${p.commitMs.toFixed(1)} ms)`));
      pipeline.events.on('sink.insert', ({ payload: p }) => log(`sink ${p.table}: ${p.rows} rows in ${p.durationMs.toFixed(1)} ms`));
    }
    let reported = job.expect <= 0;
    watch(progress, 'processed', (processed) => {
      send({ type: 'commit', t: now(), processed });
      if (reported || processed < job.expect) return;
      reported = true;
      // Opened at the first fetch (at ready, should no fetch report come).
      send({ type: 'gc', report: gc.close(processed) });
      if (cpu !== undefined) void writeProfile(cpu);
      if (heap !== undefined) void writeHeapProfile(heap);
    });
    const stored = () => send({ type: 'stored', t: now(), stored: progress.stored.samples + progress.stored.dead_letters });
    watch(progress.stored, 'samples', stored);
    watch(progress.stored, 'dead_letters', stored);
    if (!fetching) gc.open();
    send({ type: 'ready', t: now() });
    process.on('message', (message: { type: string }) => {
      if (message.type === 'stop') void pipeline.stop();
    });
    await pipeline.stopped;
    send({ type: 'stopped' });
    process.exit(0);
  } catch (err) {
    send({ type: 'failed', error: (err as Error).stack ?? String(err) });
    process.exit(1);
  }
}

/**
 * `npm run bench`: every throughput figure as a ratio against an anchor measured in the same
 * run on the same topic or data — absolute times do not hold on a shared 2-core machine,
 * ratios do. Speed targets live here, never in tests.
 *
 *   npm run bench                          100,000 rollouts, every section
 *   npm run bench -- --records 5000        a quick run (harness check, not figures)
 *   npm run bench -- --only kafka,pipeline --no-pin
 *   npm run bench -- --only efficacy [--quick]   bench/efficacy/main.ts (not in the default run)
 *
 * Sections (in run order): kafka (bare consumer anchor, Java ConsumerPerformance, kafkajs +
 * serde), pipeline (deploy/pipeline.json), demo (deploy/flywheel-demo.json's operator set),
 * latency (bench/latency.ts), scale (bench/scale.ts), modules (bench/serde.ts, minhash.ts,
 * scoring.ts, sink.ts), restore (bench/restore.ts: changelog restore vs a bare consumer), clients (bench/kafka-clients: @platformatic/kafka vs kafkajs), inprocess. The anchor passes are interleaved with the measured ones
 * (anchor, serde, anchor, pipeline, anchor, demo, anchor); ratios use their median.
 * The table is printed and written to .flywheel/bench-<timestamp>.json.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { formatTable } from '../lib/table.ts';
import { connectionsFromEnv } from '../streams/connections.ts';
import { createKafka } from '../streams/kafka.ts';
import { registryClient } from '../streams/serde.ts';
import { bareConsumerPass, PARTITIONS, javaConsumerPerformance, median, produceBenchTopic, REPO, serdeConsumerPass, type BenchTopic } from './kafka.ts';
import { pinForBench } from './pin.ts';
import { DEMO_CONFIG, PIPELINE_CONFIG, runPipeline, type PipelineJob, type PipelineMeasurement } from './pipeline.ts';
import { ratio, type BenchRow } from './row.ts';

const SECTIONS = ['kafka', 'pipeline', 'demo', 'latency', 'scale', 'restore', 'modules', 'clients', 'inprocess', 'efficacy'] as const;
/** Sections run only when --only names them: efficacy measures selection quality, not speed, and takes minutes. */
const OPT_IN: ReadonlySet<Section> = new Set(['efficacy']);
type Section = (typeof SECTIONS)[number];

const { values: args } = parseArgs({
  options: {
    records: { type: 'string', default: process.env.FLYWHEEL_BENCH_RECORDS ?? '100000' },
    only: { type: 'string' },
    skip: { type: 'string' },
    'no-pin': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(`usage: npm run bench -- [--records N] [--only ${SECTIONS.join(',')}] [--skip …] [--no-pin] [--quick (efficacy)]`);
  process.exit(0);
}
const records = Number(args.records);
if (!Number.isInteger(records) || records < 100) throw new Error(`--records must be an integer ≥ 100, got ${args.records}`);
const sectionList = (value: string | undefined, flag: string): Set<Section> | undefined => {
  if (value === undefined) return undefined;
  const names = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) if (!SECTIONS.includes(n as Section)) throw new Error(`${flag}: unknown section ${n} (sections: ${SECTIONS.join(', ')})`);
  return new Set(names as Section[]);
};
const only = sectionList(args.only, '--only');
const skip = sectionList(args.skip, '--skip') ?? new Set();
const wanted = (s: Section) => (only === undefined ? !OPT_IN.has(s) : only.has(s)) && !skip.has(s);

const connections = connectionsFromEnv();
const kafka = createKafka(connections, 'flywheel-bench');
const registry = registryClient(connections);
const prefix = `bench-${new Date().toISOString().replace(/[-:.TZ]/g, '').slice(4, 14)}-${randomUUID().slice(0, 4)}`;
const dataDir = mkdtempSync(join(tmpdir(), 'flywheel-bench-'));
const serverUrl = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL || process.env.CLICKHOUSE_URL || undefined;

const rows: BenchRow[] = [];
const lines: string[] = [];
const say = (line: string) => {
  lines.push(line);
  process.stderr.write(`[bench] ${line}\n`);
};
/** Where the run is (stderr only, not in the report). */
const progress = (line: string) => process.stderr.write(`[bench] ${new Date().toISOString().slice(11, 19)} ${line}\n`);

const port = (address: string | undefined, fallback: number) => Number(/:(\d+)(\/|$)/.exec(address ?? '')?.[1] ?? fallback);
const pins = await pinForBench({ kafkaPort: port(connections.kafkaBrokers[0], 19092), registryPort: port(connections.schemaRegistryUrl.replace(/^https?:\/\//, ''), 18081), enabled: !args['no-pin'] });
say(`pinning: ${pins.summary}`);
const cleanup = async () => {
  await pins.restore();
  rmSync(dataDir, { recursive: true, force: true });
};
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void cleanup().finally(() => process.exit(130)));
}

try {
  await main();
} finally {
  await cleanup();
}

async function main(): Promise<void> {
  const needsTopic = (['kafka', 'pipeline', 'demo', 'latency', 'scale'] as const).some(wanted);
  let topic: BenchTopic | undefined;
  if (needsTopic) {
    topic = await produceBenchTopic(kafka, registry, `${prefix}.input`, records);
    say(`topic ${topic.name}: ${topic.records} synthetic rollouts, ${topic.meanBytes} bytes each on average (registry wire format), ${PARTITIONS} partitions`);
  }

  // The anchor, interleaved with what it anchors: a pass before and after each measured one.
  const anchorPasses: number[] = [];
  const anchor = async () => {
    anchorPasses.push((await bareConsumerPass(kafka, topic!.name, topic!.records)).rate);
  };
  const anchorValue = () => median(anchorPasses);
  const BARE = 'bare kafkajs consumer';
  const deferred: Array<() => BenchRow> = [];

  if (topic !== undefined) {
    // Warm-up (JIT, connections, the broker's page cache): not counted.
    await bareConsumerPass(kafka, topic.name, topic.records);
    await anchor();
  }

  if (wanted('kafka') && topic !== undefined) {
    progress('kafkajs + serde pass');
    // Warmed up like the anchor (JIT, compiled schemas), then measured.
    await serdeConsumerPass(kafka, registry, topic.name, topic.records);
    const serde = await serdeConsumerPass(kafka, registry, topic.name, topic.records);
    await anchor();
    deferred.push(() => ({ figure: 'kafkajs + serde decode + encode of a decision', unit: 'records/s', flywheel: serde.rate, anchor: BARE, anchorValue: anchorValue(), target: '≥ 0.8', note: `${serde.path}; ${Math.round(serde.withStart)}/s with start-up` }));
    progress('Java ConsumerPerformance');
    const java = await javaConsumerPerformance(connections.kafkaBrokers, topic.name, topic.records);
    if ('rate' in java) deferred.push(() => ({ figure: "Kafka's Java ConsumerPerformance (second anchor)", unit: 'records/s', flywheel: java.rate, anchor: BARE, anchorValue: anchorValue(), note: `kafka-tools 3.9.1, fetch.nMsg.sec; ${Math.round(java.withStart)}/s with start-up (nMsg.sec)` }));
    else say(`not available: Java ConsumerPerformance: ${java.unavailable}`);
  }

  let pipelineRate: number | undefined;
  let processedBy: PipelineJob | undefined;
  for (const [section, label, configFile, target] of [
    ['pipeline', 'pipeline.json', PIPELINE_CONFIG, '≥ 0.5'],
    ['demo', 'flywheel-demo.json', DEMO_CONFIG, '≥ 0.25'],
  ] as const) {
    if (!wanted(section) || topic === undefined) continue;
    let m: PipelineMeasurement;
    const job: PipelineJob = { label, configFile, prefix, dataDir };
    progress(`${label} worker`);
    try {
      m = await runPipeline(job, topic);
    } catch (err) {
      say(`failed: ${label}: ${(err as Error).message}`);
      continue;
    }
    await anchor();
    if (section === 'pipeline') {
      pipelineRate = m.processedRate;
      processedBy = job;
    }
    const where = `worker process, ${m.store} ClickHouse; ${m.clock}; first commit ${Math.round(m.firstCommitMs)} ms after ready; ${Math.round(m.withStartRate)}/s with start-up`;
    deferred.push(
      () => ({ figure: `${label}: decided + committed (exactly-once)`, unit: 'records/s', flywheel: m.processedRate, anchor: BARE, anchorValue: anchorValue(), target, note: where }),
      () => ({ figure: `${label}: … and stored (ClickHouse sink caught up)`, unit: 'records/s', flywheel: m.storedRate, anchor: BARE, anchorValue: anchorValue(), note: 'samples + dead letters inserted = N' }),
      () => ({ figure: `${label}: GC share of wall time`, unit: '%', flywheel: 100 * m.gc.gcShare, anchor: '', anchorValue: null, target: '< 5 %', note: `${m.gc.collections} collections, ${Math.round(m.gc.gcMs)} ms of ${Math.round(m.gc.wallMs)} ms (perf_hooks gc entries)` }),
      () => ({ figure: `${label}: JS heap allocated per record`, unit: 'bytes', flywheel: m.gc.allocatedBytes / m.gc.records, anchor: '', anchorValue: null, note: 'v8.GCProfiler used-heap deltas between GCs; Buffers off-heap not counted' }),
    );
  }

  if (topic !== undefined) {
    deferred.unshift(() => ({
      figure: 'bare kafkajs consumer that only counts (anchor)',
      unit: 'records/s',
      flywheel: anchorValue(),
      anchor: BARE,
      anchorValue: anchorValue(),
      note: `median of ${anchorPasses.length} passes: ${anchorPasses.map((p) => Math.round(p)).join(', ')}`,
    }));
  }
  rows.push(...deferred.map((row) => row()));

  if (wanted('latency') && topic !== undefined) {
    await section('latency', async () => {
      const { benchLatency } = await import('./latency.ts');
      return benchLatency({ kafka, registry, prefix, dataDir, topic: topic!, pipelineRate, processedBy });
    });
  }
  if (wanted('scale') && topic !== undefined) {
    await section('scale', async () => {
      if (serverUrl === undefined) throw new Error('no ClickHouse server: set FLYWHEEL_TEST_CLICKHOUSE_URL or CLICKHOUSE_URL (npm run bench starts one through deploy/test-env.sh)');
      const { benchScale } = await import('./scale.ts');
      return benchScale({ kafka, prefix, dataDir, topic: topic!, clickhouseUrl: serverUrl, anchorValue: anchorValue(), pinned: pins.pinned });
    });
  }
  if (wanted('restore')) {
    await section('bench/restore.ts', async () => (await import('./restore.ts')).benchRestore({ entries: records }));
  }
  if (wanted('modules')) {
    for (const [file, fn] of [
      ['serde.ts', 'benchSerde'],
      ['minhash.ts', 'benchMinHash'],
      ['semantic-index.ts', 'benchSemanticIndex'],
      ['scoring.ts', 'benchScoring'],
      ['text-models.ts', 'benchTextModels'],
      ['sink.ts', 'benchSink'],
    ] as const) {
      await section(`bench/${file}`, () => moduleRows(file, fn));
    }
  }
  if (wanted('clients')) {
    // @platformatic/kafka vs kafkajs (produce, consume, transactional), each in its own child process.
    await section('bench/kafka-clients', async () => (await import('./kafka-clients/index.ts')).benchKafkaClients({ records }));
  }
  if (wanted('inprocess')) {
    await section('in-process', async () => (await import('./inprocess.ts')).benchInProcess(Math.min(records, 20_000)));
  }
  if (wanted('efficacy')) {
    // Prints its per-round tables; the rows here are precision against the static threshold.
    await section('bench/efficacy', async () => {
      const { benchEfficacy, fullSize, quickSize } = await import('./efficacy/main.ts');
      return benchEfficacy(args.quick ? quickSize : fullSize);
    });
  }
  report(topic);
}


/** Runs a section; its failure is a line of the report, not the end of the run. */
async function section(name: string, work: () => Promise<BenchRow[]>): Promise<void> {
  progress(name);
  try {
    rows.push(...(await work()));
  } catch (err) {
    say(`${(err as Error).message.startsWith('not available') ? '' : 'not available: '}${name}: ${(err as Error).message}`);
  }
}

/** Another engineer's bench module, imported only now so a missing one is a line, not a crash. */
async function moduleRows(file: string, fn: string): Promise<BenchRow[]> {
  let module: Record<string, unknown>;
  try {
    module = (await import(`./${file}`)) as Record<string, unknown>;
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new Error(code === 'ERR_MODULE_NOT_FOUND' && (err as Error).message.includes(file) ? `not available: bench/${file} does not exist yet` : `not available: bench/${file} does not load: ${(err as Error).message.split('\n')[0]}`);
  }
  const run = module[fn];
  if (typeof run !== 'function') throw new Error(`not available: bench/${file} exports no ${fn}()`);
  return (await (run as () => Promise<BenchRow[]>)()) ?? [];
}

function round(value: number | null): number | string {
  if (value === null) return '';
  if (!Number.isFinite(value)) return 'n/a';
  if (Math.abs(value) >= 100) return Math.round(value);
  return Number(value.toPrecision(3));
}

function report(topic: BenchTopic | undefined): void {
  const table = rows.map((r) => ({
    figure: r.figure,
    unit: r.unit,
    flywheel: round(r.flywheel),
    anchor: r.anchor,
    'anchor value': round(r.anchorValue),
    ratio: round(ratio(r)),
    target: r.target ?? '',
    note: r.note ?? '',
  }));
  console.log(`\nFlywheel bench ${prefix}: ${records} records${topic ? ` on ${topic.name}` : ''}; ${pins.summary}`);
  console.log(formatTable(table));
  for (const line of lines.filter((l) => l.startsWith('not available') || l.startsWith('failed'))) console.log(line);
  const dir = join(REPO, '.flywheel');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    `${JSON.stringify({ prefix, records, topic, pinning: pins.summary, node: process.version, at: new Date().toISOString(), rows: rows.map((r) => ({ ...r, ratio: ratio(r) })), notes: lines }, null, 2)}\n`,
  );
  console.log(`\nwritten to ${file}`);
}

/**
 * Model scoring in process, on the demo's feature layout (deploy/flywheel-demo.json's
 * `features`, defaults filled as the pipeline fills them) and ~93-character synthetic rollouts
 * (cli/synthetic.ts):
 *
 * - featurize: `featurize` on rollout objects built fresh for every pass (it caches per rollout
 *   object; a pass over objects it has seen would time look-ups). No anchor: the issue's bound
 *   is ≥ 100,000 rows/s per core. The same on `featureDefaults` (1024 buckets, char 3-grams) as
 *   a second row; then both through `featurizeInto` one reused row (what onnx-score does: no
 *   vector allocated or cached per rollout).
 * - onnx-score: the operator (featurize into its batch buffer, micro-batches of 64, one
 *   `session.run` per batch, scored envelopes out) over fresh envelopes, against the anchor:
 *   bare `session.run` of onnxruntime-node on a pre-built 64-row tensor of the same model
 *   (contracts/onnx-codec.ts's linear scorer, a second session made with the same options),
 *   timed for the same number of rows. Target: ratio ≥ 0.5.
 *
 * Warm-up passes first, then interleaved passes; each figure is the median pass.
 *
 *   const rows = await benchScoring();        // BenchRow[]
 *   node --import tsx bench/scoring.ts        // prints them
 */
import { pathToFileURL } from 'node:url';
import { Tensor } from 'onnxruntime-node';
import { count, from, lastValueFrom } from 'rxjs';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { formatTable } from '../lib/table.ts';
import { newSample, type Envelope } from '../lib/envelope.ts';
import { featureDefaults, featureSize, featurize, featurizeInto, type FeatureConfig } from '../contracts/features.ts';
import { ModelHolder } from '../lib/model-holder.ts';
import { createSession, onnxModelDefaults, OnnxScoringModel } from '../pipeline/onnx-models.ts';
import { onnxScore, onnxScoreDefaults } from '../operators/score/onnx-score.ts';
import { loadConfig } from '../pipeline/config.ts';
import type { Rollout } from '../contracts/records.ts';
import { linearModelOnnx } from '../contracts/onnx-codec.ts';
import { median, ratio, type BenchRow } from './row.ts';

const DEMO_CONFIG = new URL('../deploy/flywheel-demo.json', import.meta.url).pathname;
const BATCH = 64;
/** Batches per slice: each side runs this many, then the other. */
const SLICE = 10;

export interface ScoringBenchOptions {
  rows?: number;
  passes?: number;
}

export async function benchScoring(options: ScoringBenchOptions = {}): Promise<BenchRow[]> {
  const rows = options.rows ?? 20_000;
  const passes = options.passes ?? 7;
  const features = loadConfig(DEMO_CONFIG).features;
  const rollouts = syntheticRollouts({ groups: Math.ceil(rows / 4), samplesPerGroup: 4, invalidRate: 0, garbage: 0 }).rollouts.slice(0, rows);
  // Fresh objects per pass, made outside the timed part: featurize caches per rollout object.
  const fresh = (from: number, to: number) => rollouts.slice(from, to).map((r): Rollout => ({ ...r }));

  // featurize first, before any ONNX session exists, so the process's CPU time is featurize's
  // (and its GC's) alone: "per core" is rows per CPU-second; the wall-clock rate is noted.
  // `into`: featurizeInto one reused row, the scorer's path (no vector allocated or cached).
  const featurizePass = (config: FeatureConfig, into: boolean) => {
    const batch = fresh(0, rows);
    const row = new Float32Array(featureSize(config));
    const cpu = process.cpuUsage();
    const start = process.hrtime.bigint();
    if (into) for (const r of batch) featurizeInto(r, config, row, 0);
    else for (const r of batch) featurize(r, config);
    const wall = rate(batch.length, start);
    const used = process.cpuUsage(cpu);
    return { cpu: batch.length / ((used.user + used.system) / 1e6), wall };
  };
  type Measured = Array<{ cpu: number; wall: number }>;
  const featurized = { demo: [] as Measured, defaults: [] as Measured, demoInto: [] as Measured, defaultsInto: [] as Measured };
  for (let pass = -2; pass < passes; pass++) {
    const demo = featurizePass(features, false);
    const defaults = featurizePass(featureDefaults, false);
    const demoInto = featurizePass(features, true);
    const defaultsInto = featurizePass(featureDefaults, true);
    if (pass < 0) continue; // warm-up: JIT
    featurized.demo.push(demo);
    featurized.defaults.push(defaults);
    featurized.demoInto.push(demoInto);
    featurized.defaultsInto.push(defaultsInto);
  }

  const width = featureSize(features);
  const bytes = linearModelOnnx({ weights: Float32Array.from({ length: width }, (_, i) => ((i % 7) - 3) / 100), bias: 0, inputDim: width, output: 'logistic', version: 'bench' });
  const holder = new ModelHolder(await OnnxScoringModel.load(bytes, 'bench'));
  const { session } = await createSession(bytes, onnxModelDefaults.executionProviders);
  const tensorData = new Float32Array(BATCH * width);
  fresh(0, BATCH).forEach((r, i) => featurizeInto(r, features, tensorData, i * width));
  const tensor = new Tensor('float32', tensorData, [BATCH, width]);

  // The two sides alternate in slices of SLICE batches, so both see the same load on a shared
  // machine; a pass is one sweep over all rows, each side's rate its rows over its summed time.
  const slices = Math.max(1, Math.floor(rows / (SLICE * BATCH)));
  const sliceRows = SLICE * BATCH;
  const scoring = { anchor: [] as number[], operator: [] as number[] };
  for (let pass = -2; pass < passes; pass++) {
    let anchorNs = 0n;
    let operatorNs = 0n;
    for (let slice = 0; slice < slices; slice++) {
      let start = process.hrtime.bigint();
      for (let i = 0; i < SLICE; i++) await session.run({ [onnxModelDefaults.inputName]: tensor });
      anchorNs += process.hrtime.bigint() - start;

      const envelopes: Envelope[] = fresh(slice * sliceRows, (slice + 1) * sliceRows).map((r, i) => newSample(r, { topic: 'bench', partition: 0, offset: String(i) }, Buffer.alloc(0), null));
      start = process.hrtime.bigint();
      // A latency no slice reaches: batches are cut by size, as under load.
      const out = await lastValueFrom(from(envelopes).pipe(onnxScore({ ...onnxScoreDefaults, features, maxBatch: BATCH, latencyMs: 600_000 }, holder), count()));
      operatorNs += process.hrtime.bigint() - start;
      if (out !== envelopes.length) throw new Error(`onnx-score bench: ${out} envelopes out for ${envelopes.length} in`);
    }
    if (pass < 0) continue; // warm-up: JIT, session arena
    scoring.anchor.push((slices * sliceRows) / (Number(anchorNs) / 1e9));
    scoring.operator.push((slices * sliceRows) / (Number(operatorNs) / 1e9));
  }
  await holder.current().dispose?.();
  await session.release();

  const layout = (f: FeatureConfig) => `${f.dims} buckets, word ${f.wordNgrams.join('/') || 'no'} grams, char ${f.charNgrams.join('/') || 'no'} grams, ${featureSize(f)} values`;
  const featurizeRow = (figure: string, f: FeatureConfig, measured: Array<{ cpu: number; wall: number }>, extra = ''): BenchRow => ({
    figure,
    unit: 'rows/s per core',
    flywheel: median(measured.map((m) => m.cpu)),
    anchor: '',
    anchorValue: null,
    target: '≥ 100,000',
    note: `${layout(f)}; rows per CPU-second, wall clock ${Math.round(median(measured.map((m) => m.wall)))}/s${extra}`,
  });
  return [
    featurizeRow('featurize, demo layout (fresh rollout objects)', features, featurized.demo, `; ~93-char synthetic rollouts; median of ${passes} passes of ${rows}`),
    featurizeRow('featurize, default layout (fresh rollout objects)', featureDefaults, featurized.defaults),
    featurizeRow('featurizeInto a reused row (the scorer\'s path), demo layout', features, featurized.demoInto),
    featurizeRow('featurizeInto a reused row (the scorer\'s path), default layout', featureDefaults, featurized.defaultsInto),
    {
      figure: 'onnx-score operator (featurize + micro-batches of 64 + score)',
      unit: 'rows/s',
      flywheel: median(scoring.operator),
      anchor: 'bare session.run, pre-built 64-row tensor, same model',
      anchorValue: median(scoring.anchor),
      target: '≥ 0.5',
      note: `demo layout (${width} inputs), linear scorer from contracts/onnx-codec.ts, CPU; sides alternate every ${SLICE} batches; anchor passes ${scoring.anchor.map((p) => Math.round(p)).join(', ')}`,
    },
  ];
}

function rate(rows: number, start: bigint): number {
  return rows / (Number(process.hrtime.bigint() - start) / 1e9);
}


if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const rows = await benchScoring();
  process.stdout.write(
    `${formatTable(
      rows.map((r) => ({
        figure: r.figure,
        value: `${Math.round(r.flywheel)} ${r.unit}`,
        anchor: r.anchor,
        'anchor value': r.anchorValue === null ? '' : Math.round(r.anchorValue),
        ratio: ratio(r)?.toFixed(2) ?? '',
        target: r.target ?? '',
        note: r.note ?? '',
      })),
    )}\n`,
  );
}

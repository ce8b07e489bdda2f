/**
 * The in-process figures `npm run bench` printed before it measured against anchors: pure work
 * without services, each a row with no anchor (its throughput is the figure). Each step gets
 * rollout objects of its own, so no step times another's caches (featurize caches per rollout
 * object: onnx-score on the objects featurize already saw would time lookups).
 *
 *   const rows = await benchInProcess(20_000);
 */
import { from, lastValueFrom, toArray } from 'rxjs';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { newSample, type Envelope } from '../lib/envelope.ts';
import { ErrorMemory } from '../lib/error-memory.ts';
import { featureDefaults, featureSize, featurize } from '../contracts/features.ts';
import { ModelHolder } from '../lib/model-holder.ts';
import { OnnxScoringModel } from '../pipeline/onnx-models.ts';
import { nearDedupe, nearDedupeDefaults, nearDedupeStore } from '../operators/dedupe/near-dedupe.ts';
import { onnxScore, onnxScoreDefaults } from '../operators/score/onnx-score.ts';
import { AnnouncedVersions } from '../operators/filter/staleness-filter.ts';
import { EXAMPLE_CONFIG, loadConfig } from '../pipeline/config.ts';
import { buildCurators, declaredStores } from '../pipeline/curators.ts';
import type { Rollout } from '../contracts/records.ts';
import { PartitionState } from '../streams/state-store.ts';
import { linearModelOnnx } from '../contracts/onnx-codec.ts';
import type { BenchRow } from './row.ts';

export async function benchInProcess(records: number): Promise<BenchRow[]> {
  const fresh = (): Rollout[] => syntheticRollouts({ groups: Math.ceil(records / 4), samplesPerGroup: 4, invalidRate: 0, garbage: 0 }).rollouts.slice(0, records);
  const envelopesOf = (rollouts: Rollout[]): Envelope[] => rollouts.map((rollout, i) => newSample(rollout, { topic: 'bench', partition: 0, offset: String(i) }, Buffer.alloc(0), null));
  const rows: BenchRow[] = [];
  const measure = async (figure: string, n: number, work: () => Promise<unknown> | unknown, note: string): Promise<void> => {
    const start = performance.now();
    await work();
    rows.push({ figure, unit: 'records/s', flywheel: n / ((performance.now() - start) / 1000), anchor: '', anchorValue: null, note });
  };

  const config = loadConfig(EXAMPLE_CONFIG);
  const resources = { versions: new AnnouncedVersions(), files: { evalIndexes: new Map(), models: new Map(), encoders: new Map() }, errorMemory: new ErrorMemory(1000), features: featureDefaults };
  const chain = envelopesOf(fresh());
  await measure(
    'in-process: deploy/pipeline.json operator chain',
    chain.length,
    async () => {
      const state = new PartitionState(0, declaredStores(config.operators).map((s) => s.name));
      await lastValueFrom(from(chain).pipe(buildCurators(config.operators, state, resources), toArray()));
    },
    'validate, rule-score, exact-dedupe, threshold; no Kafka, no serde',
  );

  const near = envelopesOf(fresh());
  let changes = 0;
  let indexChars = 0;
  await measure(
    'in-process: near-dedupe (group scope) with its state store',
    near.length,
    async () => {
      const state = new PartitionState(0, [nearDedupeStore.name]);
      await lastValueFrom(from(near).pipe(nearDedupe({ ...nearDedupeDefaults, minShingles: 3 }, state.store(nearDedupeStore.name)), toArray()));
      const pending = state.pendingChanges();
      changes = pending.length;
      indexChars = pending.reduce((sum, c) => sum + c.key.length + (c.value?.length ?? 0), 0);
    },
    '128 permutations, word 3-shingles',
  );
  rows.push({ figure: 'in-process: near-dedupe changelog records per sample', unit: 'records', flywheel: changes / near.length, anchor: '', anchorValue: null, target: '≤ 2', note: `${Math.round(indexChars / near.length)} chars of keys+values per sample` });

  const size = featureSize(featureDefaults);
  const model = await OnnxScoringModel.load(linearModelOnnx({ weights: new Float32Array(size).fill(0.01), bias: 0, inputDim: size, output: 'logistic', version: 'bench' }));
  const scored = envelopesOf(fresh());
  await measure(
    'in-process: onnx-score (featurize + micro-batches of 64 + session.run)',
    scored.length,
    () => lastValueFrom(from(scored).pipe(onnxScore({ ...onnxScoreDefaults, latencyMs: 1000 }, new ModelHolder(model)), toArray())),
    'fresh rollout objects: no featurize cache hits',
  );
  const plain = fresh();
  await measure('in-process: featurize alone', plain.length, () => plain.forEach((r) => featurize(r, featureDefaults)), `${featureDefaults.dims} hashed buckets + numeric tail; fresh objects`);
  return rows;
}

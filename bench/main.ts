/**
 * `npm run bench`: throughput and memory figures of the hot paths, printed, not asserted —
 * speed targets belong here, not in tests. Pure in-process work (no services): the operator
 * chain of the example pipeline, MinHash sketching, near-dedupe with its index, ONNX scoring in
 * micro-batches, and the memory an index entry costs.
 */
import { from, lastValueFrom, toArray } from 'rxjs';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { formatTable } from '../cli/table.ts';
import { newSample, type Envelope } from '../operators/envelope.ts';
import { featureDefaults, featurize } from '../operators/features.ts';
import { minHashDefaults, sketchOf } from '../operators/minhash.ts';
import { ModelHolder, OnnxScoringModel } from '../operators/model-holder.ts';
import { nearDedupe, nearDedupeDefaults, nearDedupeStore } from '../operators/near-dedupe.ts';
import { onnxScore, onnxScoreDefaults } from '../operators/onnx-score.ts';
import { EXAMPLE_CONFIG, loadConfig } from '../pipeline/config.ts';
import { buildCurators, declaredStores } from '../pipeline/curators.ts';
import { ErrorMemory } from '../operators/error-memory.ts';
import { AnnouncedVersions } from '../operators/staleness-filter.ts';
import { PartitionState } from '../streams/state-store.ts';
import { featureSize } from '../operators/features.ts';
import { linearModelOnnx } from '../trainers/onnx-model.ts';

const data = syntheticRollouts({ groups: 5000, samplesPerGroup: 4, invalidRate: 0, garbage: 0 });
const envelopes: Envelope[] = data.rollouts.map((rollout, i) => newSample(rollout, { topic: 'bench', partition: 0, offset: String(i) }, Buffer.alloc(0), null));
const rows: Array<Record<string, string | number>> = [];

async function measure(name: string, records: number, work: () => Promise<unknown> | unknown): Promise<void> {
  global.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const start = process.hrtime.bigint();
  await work();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  rows.push({ benchmark: name, records, seconds: Number(seconds.toFixed(3)), 'records/s': Math.round(records / seconds), 'heap Δ MB': Number(((process.memoryUsage().heapUsed - heapBefore) / 2 ** 20).toFixed(1)) });
}

const config = loadConfig(EXAMPLE_CONFIG);
const resources = {
  versions: new AnnouncedVersions(),
  files: { evalIndexes: new Map(), models: new Map(), encoders: new Map() },
  errorMemory: new ErrorMemory(1000),
  features: featureDefaults,
};
await measure('example chain (validate, rule-score, exact-dedupe, threshold)', envelopes.length, async () => {
  const state = new PartitionState(0, declaredStores(config.operators).map((s) => s.name));
  await lastValueFrom(from(envelopes).pipe(buildCurators(config.operators, state, resources), toArray()));
});

await measure('MinHash sketch (128 permutations, word 3-shingles)', envelopes.length, () => {
  for (const r of data.rollouts) sketchOf(r.response ?? '', minHashDefaults);
});

let indexChars = 0;
await measure('near-dedupe, group scope, index in a state store', envelopes.length, async () => {
  const state = new PartitionState(0, [nearDedupeStore.name]);
  await lastValueFrom(from(envelopes).pipe(nearDedupe({ ...nearDedupeDefaults, minShingles: 3 }, state.store(nearDedupeStore.name)), toArray()));
  indexChars = state.pendingChanges().reduce((sum, c) => sum + c.key.length + (c.value?.length ?? 0), 0);
});

await measure('featurize (1024 hashed buckets + numeric tail)', envelopes.length, () => {
  for (const r of data.rollouts) featurize(r, featureDefaults);
});

const size = featureSize(featureDefaults);
const model = await OnnxScoringModel.load(linearModelOnnx({ weights: new Float32Array(size).fill(0.01), bias: 0, inputDim: size, output: 'logistic', version: 'bench' }));
await measure('onnx-score, CPU, micro-batches of 64', envelopes.length, async () => {
  await lastValueFrom(from(envelopes).pipe(onnxScore({ ...onnxScoreDefaults, latencyMs: 1000 }, new ModelHolder(model)), toArray()));
});

console.log(formatTable(rows));
console.log(`\nnear-dedupe state for ${envelopes.length} samples: ${(indexChars / 2 ** 20).toFixed(1)} MiB of keys and values (${Math.round(indexChars / envelopes.length)} chars per sample)`);

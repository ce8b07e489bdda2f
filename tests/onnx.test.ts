import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { lastValueFrom, Subject, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prng, syntheticRollouts } from '../cli/synthetic.ts';
import type { Envelope, Sample } from '../lib/envelope.ts';
import { ErrorMemory } from '../lib/error-memory.ts';
import { featureDefaults, featureSize, featurize, type FeatureConfig } from '../contracts/features.ts';
import { ModelHolder, type ScoringModel } from '../lib/model-holder.ts';
import { OnnxScoringModel } from '../pipeline/onnx-models.ts';
import { onnxScore, onnxScoreDefaults, type OnnxScoreConfig } from '../operators/score/onnx-score.ts';
import { parseConfig } from '../pipeline/config.ts';
import { loadOperatorFiles, type OperatorFiles } from '../pipeline/curators.ts';
import { hotSwap, onModelUpdate, type ModelUpdateOutcome } from '../pipeline/hot-swap.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import type { Decision, ModelUpdate, Rollout } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, modelUpdateSerde, registryClient, rolloutSerde, type TopicSerde } from '../streams/serde.ts';
import { linearModelOnnx, onnxMetadata, projectionEncoderOnnx } from '../contracts/onnx-codec.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';
import { writeScorer } from './helpers/models.ts';

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

const features: FeatureConfig = { ...featureDefaults, dims: 64, rewardNames: ['correct'] };
const D = featureSize(features);

function randomVector(seed: number, n: number, scale = 1): Float32Array {
  const next = prng(seed);
  return Float32Array.from({ length: n }, () => (next() * 2 - 1) * scale);
}

interface Linear {
  weights: Float32Array;
  bias: number;
}

function linear(seed: number): Linear {
  return { weights: randomVector(seed, D, 0.5), bias: (seed % 7) / 10 - 0.3 };
}

/** What the ONNX logistic model must compute, in plain TypeScript. */
function expectedScore(model: Linear, x: Float32Array): number {
  let z = model.bias;
  x.forEach((v, i) => (z += v * model.weights[i]!));
  return 1 / (1 + Math.exp(-z));
}

async function load(model: Linear, version: string): Promise<OnnxScoringModel> {
  return OnnxScoringModel.load(linearModelOnnx({ ...model, inputDim: D, output: 'logistic', version }));
}

/** A real ONNX model that counts its batches: it wraps the model, it does not replace it. */
function counting(model: ScoringModel): ScoringModel & { batches: number[]; dispose(): Promise<void> } {
  const batches: number[] = [];
  return {
    version: model.version,
    batches,
    scoreRows: (input, rows, width) => (batches.push(rows), model.scoreRows(input, rows, width)),
    score: (f) => (batches.push(f.length), model.score(f)),
    dispose: () => model.dispose?.() ?? Promise.resolve(),
  };
}

const config = (overrides: Partial<OnnxScoreConfig> = {}): OnnxScoreConfig => ({ ...onnxScoreDefaults, features, ...overrides });

function texts(n: number, prefix = 'q'): Sample[] {
  return Array.from({ length: n }, (_, i) => sample({ id: `${prefix}${i}`, prompt: `What is ${i} + ${i}?`, response: `It is ${2 * i}. Answer: ${2 * i}`, rewards: { correct: i % 2 }, token_count: 3 + i }));
}

describe('linearModelOnnx', () => {
  it('scores like x·w + b through a sigmoid, for a batch of rows', async () => {
    const model = linear(1);
    const session = await InferenceSession.create(linearModelOnnx({ ...model, inputDim: D, output: 'logistic' }));
    const rows = [randomVector(11, D), randomVector(12, D), new Float32Array(D)];
    const input = new Float32Array(rows.length * D);
    rows.forEach((r, i) => input.set(r, i * D));
    const { score } = await session.run({ features: new Tensor('float32', input, [rows.length, D]) });
    expect(score!.dims).toEqual([3, 1]);
    rows.forEach((r, i) => expect((score!.data as Float32Array)[i]).toBeCloseTo(expectedScore(model, r), 5));
    await session.release();
  });

  it('gives the raw x·w + b for a linear output', async () => {
    const session = await InferenceSession.create(linearModelOnnx({ weights: Float32Array.of(2, -1), bias: 0.5, inputDim: 2, output: 'linear' }));
    const { score } = await session.run({ features: new Tensor('float32', Float32Array.of(3, 4), [1, 2]) });
    expect(Array.from(score!.data as Float32Array)).toEqual([2.5]);
    await session.release();
  });

  it('stores the version as metadata and refuses a weight count that does not match', () => {
    const bytes = linearModelOnnx({ weights: new Float32Array(3), bias: 0, inputDim: 3, output: 'linear', version: 'm-7' });
    expect(onnxMetadata(bytes)).toEqual({ version: 'm-7' });
    expect(() => linearModelOnnx({ weights: new Float32Array(2), bias: 0, inputDim: 3, output: 'linear' })).toThrow('2 weights for inputDim 3');
  });
});

describe('projectionEncoderOnnx', () => {
  it('projects and l2-normalises each row, leaving a zero row at zero', async () => {
    const [inDim, outDim] = [5, 3];
    const matrix = randomVector(3, inDim * outDim);
    const session = await InferenceSession.create(projectionEncoderOnnx({ matrix, inputDim: inDim, outputDim: outDim }));
    const x = randomVector(4, inDim);
    const input = new Float32Array(2 * inDim);
    input.set(x);
    const { embedding } = await session.run({ features: new Tensor('float32', input, [2, inDim]) });
    const projected = Array.from({ length: outDim }, (_, j) => x.reduce((s, v, i) => s + v * matrix[i * outDim + j]!, 0));
    const norm = Math.hypot(...projected);
    const data = Array.from(embedding!.data as Float32Array);
    projected.forEach((p, j) => expect(data[j]).toBeCloseTo(p / norm, 5));
    expect(data.slice(outDim)).toEqual([0, 0, 0]);
    await session.release();
  });
});

describe('OnnxScoringModel', () => {
  it('loads from a file, takes the version from metadata, and scores feature vectors', async () => {
    const model = linear(2);
    const path = join(mkdtempSync(join(tmpdir(), 'flywheel-onnx-')), 'scorer.onnx');
    writeFileSync(path, linearModelOnnx({ ...model, inputDim: D, output: 'logistic', version: 'from-metadata' }));
    const scorer = await OnnxScoringModel.load(path);
    expect(scorer.version).toBe('from-metadata');
    expect(scorer.executionProvider).toBe('cpu');
    const x = featurize(sample().rollout, features);
    const [score] = await scorer.score([x]);
    expect(score).toBeCloseTo(expectedScore(model, x), 5);
    expect(await scorer.score([])).toHaveLength(0);
    await scorer.dispose();
    await expect(scorer.score([x])).rejects.toThrow('was released');
  });

  it('refuses a model without any version', async () => {
    await expect(OnnxScoringModel.load(linearModelOnnx({ ...linear(3), inputDim: D, output: 'logistic' }))).rejects.toThrow('no version');
  });

  it('falls back to the CPU when a GPU provider is configured but not available', async () => {
    const scorer = await OnnxScoringModel.load(linearModelOnnx({ ...linear(4), inputDim: D, output: 'logistic' }), 'v', { executionProviders: ['cuda'] });
    expect(scorer.executionProvider).toBe('cpu');
    expect(scorer.fallbackReason).toContain('cuda unavailable');
    expect(await scorer.score([new Float32Array(D)])).toHaveLength(1);
    await scorer.dispose();
  });
});

describe('ModelHolder', () => {
  it('disposes an idle model at once on swap', async () => {
    const [a, b] = await Promise.all([load(linear(5), 'a'), load(linear(6), 'b')]);
    const holder = new ModelHolder(a);
    await holder.swap(b);
    expect(holder.current()).toBe(b);
    await expect(a.score([new Float32Array(D)])).rejects.toThrow('was released');
    await b.dispose();
  });

  it('keeps a leased model until its batch is done, and never disposes one swapped back in', async () => {
    const [a, b] = await Promise.all([load(linear(7), 'a'), load(linear(8), 'b')]);
    const holder = new ModelHolder(a);
    const lease = holder.acquire();
    let drained = false;
    const swapped = holder.swap(b).then(() => (drained = true));
    expect(lease.model).toBe(a);
    expect(await lease.model.score([new Float32Array(D)])).toHaveLength(1);
    expect(drained).toBe(false);
    lease.release();
    lease.release(); // a second release must not count twice
    await swapped;
    await expect(a.score([new Float32Array(D)])).rejects.toThrow('was released');

    const c = await load(linear(9), 'c');
    const leaseB = holder.acquire();
    const away = holder.swap(c);
    const back = holder.swap(b);
    leaseB.release();
    await Promise.all([away, back]);
    expect(holder.current()).toBe(b);
    expect(await b.score([new Float32Array(D)])).toHaveLength(1);
    await Promise.all([b.dispose(), c.dispose()]);
  });
});

describe('onnxScore', () => {
  it('writes the model score and version, equal to the TypeScript computation', async () => {
    const model = linear(10);
    const holder = new ModelHolder(await load(model, 'v1'));
    const input = texts(5);
    const out = samplesOf(await through(onnxScore(config({ name: 'quality' }), holder), input));
    expect(out.map((s) => s.rollout.id)).toEqual(input.map((s) => s.rollout.id));
    for (const s of out) {
      expect(s.scorerVersion).toBe('v1');
      expect(s.scores.quality).toBeCloseTo(expectedScore(model, featurize(s.rollout, features)), 5);
    }
    await holder.current().dispose?.();
  });

  it('batches at most maxBatch envelopes, flushes a finite input at completion, and keeps order across ticks and dead letters', async () => {
    const scorer = counting(await load(linear(11), 'v1'));
    const dead: Envelope = { kind: 'dead', source: { topic: 't', partition: 0, offset: 'x' }, payload: null, key: null, stage: 'decode', reason: 'bad' };
    const [s0, s1, s2, s3, s4, s5, s6] = texts(7);
    const input: Envelope[] = [s0!, s1!, dead, s2!, { kind: 'tick', now: 1 }, s3!, s4!, s5!, s6!];
    // A latency far beyond the test's time: only size, the tick and completion can flush.
    const out = await through(onnxScore(config({ maxBatch: 3, latencyMs: 600_000 }), new ModelHolder(scorer)), input);
    expect(out.map((e) => (e.kind === 'sample' ? e.rollout.id : e.kind))).toEqual(['q0', 'q1', 'dead', 'q2', 'tick', 'q3', 'q4', 'q5', 'q6']);
    // [q0 q1 dead] by size, [q2 tick] by the tick, [q3 q4 q5] by size, [q6] at completion.
    expect(scorer.batches).toEqual([2, 1, 3, 1]);
    expect(samplesOf(out).every((s) => s.scorerVersion === 'v1')).toBe(true);
    await scorer.dispose();
  });

  it('flushes a partial batch after latencyMs without completion or tick', async () => {
    const holder = new ModelHolder(await load(linear(12), 'v1'));
    const input = new Subject<Envelope>();
    const received: Envelope[] = [];
    const subscription = input.pipe(onnxScore(config({ maxBatch: 100, latencyMs: 10 }), holder)).subscribe((e) => received.push(e));
    for (const s of texts(2)) input.next(s);
    expect(received).toHaveLength(0);
    await expect.poll(() => received.length, { timeout: 2000 }).toBe(2);
    subscription.unsubscribe();
    await holder.current().dispose?.();
  });

  it('passes empty input and ticks-only input without calling the model', async () => {
    const scorer = counting(await load(linear(13), 'v1'));
    const holder = new ModelHolder(scorer);
    expect(await through(onnxScore(config(), holder), [])).toEqual([]);
    const ticks: Envelope[] = [{ kind: 'tick', now: 1 }, { kind: 'tick', now: 2 }];
    expect(await through(onnxScore(config(), holder), ticks)).toEqual(ticks);
    expect(scorer.batches).toEqual([]);
    await scorer.dispose();
  });

  it('dead-letters only the sample whose features cannot be computed, and can skip rejected samples', async () => {
    const holder = new ModelHolder(await load(linear(14), 'v1'));
    const bad = sample({ id: 'bad', rewards: { correct: Number.NaN } });
    const rejected = sample({ id: 'rejected' }, { reasons: ['duplicate'] });
    const out = await through(onnxScore(config({ skipRejected: true }), holder), [bad, rejected, sample({ id: 'good' })]);
    expect(out[0]).toMatchObject({ kind: 'dead', stage: 'onnx-score', reason: 'features: reward correct is not finite (NaN)' });
    expect(out[1]).toMatchObject({ kind: 'sample', scorerVersion: null, scores: {} });
    expect(out[2]).toMatchObject({ kind: 'sample', scorerVersion: 'v1' });
    await holder.current().dispose?.();
  });

  it('errors the stream when the model fails, so the batch is retried rather than lost', async () => {
    // Trained on other features: onnxruntime rejects the input width.
    const wrong = await OnnxScoringModel.load(linearModelOnnx({ weights: new Float32Array(3), bias: 0, inputDim: 3, output: 'logistic' }), 'wrong');
    await expect(through(onnxScore(config(), new ModelHolder(wrong)), texts(2))).rejects.toThrow('invalid dimensions');
    await wrong.dispose();
  });

  it('swaps models mid-stream without dropping or double-scoring a record, each score from the version it names', async () => {
    const specs = new Map(['a', 'b', 'c', 'd', 'e'].map((v, i) => [v, linear(20 + i)] as const));
    const models = new Map(await Promise.all([...specs].map(async ([v, m]) => [v, await load(m, v)] as const)));
    const holder = new ModelHolder(models.get('a')!);
    const input = new Subject<Envelope>();
    const result = lastValueFrom(input.pipe(onnxScore(config({ maxBatch: 7, latencyMs: 5 }), holder), toArray()));
    const sent = texts(120, 's');
    const swaps: Array<Promise<void>> = [];
    const next = prng(99);
    for (const [i, s] of sent.entries()) {
      input.next(s);
      if (i % 25 === 24) swaps.push(holder.swap(models.get('abcde'[(i + 1) / 25]!)!));
      if (next() < 0.2) input.next({ kind: 'tick', now: i });
      if (next() < 0.1) await new Promise((resolve) => setTimeout(resolve, 3));
    }
    input.complete();
    const out = samplesOf(await result);
    await Promise.all(swaps);
    expect(out.map((s) => s.rollout.id)).toEqual(sent.map((s) => s.rollout.id));
    const versions = new Set<string>();
    for (const s of out) {
      versions.add(s.scorerVersion!);
      expect(s.scores.model).toBeCloseTo(expectedScore(specs.get(s.scorerVersion!)!, featurize(s.rollout, features)), 5);
    }
    expect(versions).toEqual(new Set(specs.keys()));
    // Only the current model is still alive once every batch has finished.
    for (const [v, m] of models) {
      if (m === holder.current()) expect(await m.score([new Float32Array(D)])).toHaveLength(1);
      else await expect(m.score([new Float32Array(D)]), v).rejects.toThrow('was released');
    }
    await holder.current().dispose?.();
  });

  it('lets a batch in flight finish on the old model and disposes that model only afterwards', async () => {
    const [a, b] = await Promise.all([load(linear(30), 'a'), load(linear(31), 'b')]);
    const holder = new ModelHolder(a);
    const input = new Subject<Envelope>();
    const result = lastValueFrom(input.pipe(onnxScore(config({ maxBatch: 4, latencyMs: 600_000 }), holder), toArray()));
    const [first, second] = [texts(4, 'first'), texts(4, 'second')];
    for (const s of first) input.next(s); // a full batch: it starts scoring on "a" at once
    let drained = false;
    const swapped = holder.swap(b).then(() => (drained = true));
    expect(drained).toBe(false);
    for (const s of second) input.next(s);
    input.complete();
    const out = samplesOf(await result);
    await swapped;
    expect(out.map((s) => [s.rollout.id.replace(/\d+$/, ''), s.scorerVersion])).toEqual([...first.map(() => ['first', 'a']), ...second.map(() => ['second', 'b'])]);
    await expect(a.score([new Float32Array(D)])).rejects.toThrow('was released');
    await b.dispose();
  });
});

describe('OnnxScoringModel.scoreRows and mismatch', () => {
  it('scores the first rows of a larger reused buffer in place', async () => {
    const model = linear(40);
    const scorer = await load(model, 'v');
    const rows = [randomVector(41, D), randomVector(42, D)];
    const buffer = new Float32Array(5 * D).fill(Number.NaN); // rows beyond the second must not be read
    rows.forEach((r, i) => buffer.set(r, i * D));
    const scores = await scorer.scoreRows(buffer, 2, D);
    expect(scores).toHaveLength(2);
    rows.forEach((r, i) => expect(scores[i]).toBeCloseTo(expectedScore(model, r), 5));
    await expect(scorer.scoreRows(buffer, 6, D)).rejects.toThrow('the buffer has');
    await scorer.dispose();
  });

  it('says why a model cannot take the layout: declared width, missing output, failing dry run', async () => {
    const right = await load(linear(43), 'right');
    expect(right.inputWidth).toBe(D);
    expect(await right.mismatch(D)).toBeNull();
    expect(await right.mismatch(D + 1)).toBe(`model right takes ${D} features, the layout has ${D + 1}`);
    const encoder = await OnnxScoringModel.load(projectionEncoderOnnx({ matrix: new Float32Array(D * 2), inputDim: D, outputDim: 2 }), 'enc');
    expect(await encoder.mismatch(D)).toContain('has no output "score"');
    const renamed = await OnnxScoringModel.load(linearModelOnnx({ ...linear(44), inputDim: D, output: 'logistic' }), 'renamed', { inputName: 'x' });
    expect(await renamed.mismatch(D)).toContain('has no input "x"');
    await Promise.all([right, encoder, renamed].map((m) => m.dispose()));
  });
});

describe('loadOperatorFiles', () => {
  it('refuses to start an onnx-score whose model does not fit the feature layout, naming the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flywheel-start-model-'));
    try {
      const path = join(dir, 'narrow.onnx');
      writeFileSync(path, linearModelOnnx({ weights: new Float32Array(3), bias: 0, inputDim: 3, output: 'logistic', version: 'narrow' }));
      const config = parseConfig({ name: 'start-width', features, operators: [{ type: 'onnx-score', name: 'model', model: { name: 'scorer', path } }], clickhouse: { path: join(dir, 'ch') } });
      await expect(loadOperatorFiles(config.operators, config.features, () => undefined)).rejects.toThrow(`onnx-score "model": the model at ${path} does not fit the feature layout: model narrow takes 3 features`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('hotSwap', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-hot-swap-'));
  const pipelineConfig = parseConfig({
    name: 'hot-swap-unit',
    features,
    operators: [{ type: 'onnx-score', name: 'model', model: { name: 'scorer', path: join(dir, 'unused.onnx') } }],
    clickhouse: { path: join(dir, 'clickhouse') },
  });
  const artifact = (name: string, bytes: Uint8Array) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return { artifact: path, checksum: sha256(bytes) };
  };
  const update = (version: string, file: { artifact: string; checksum: string }): ModelUpdate => ({ model: 'scorer', version, ...file, metrics: {}, at: Date.now() });

  it('keeps the current model, and the memory its errors, for a model of the wrong width, a wrong checksum, an artifact that does not load or is missing', async () => {
    const v1 = await load(linear(50), 'v1');
    const holder = new ModelHolder(v1);
    const files: OperatorFiles = { evalIndexes: new Map(), models: new Map([[0, holder]]), encoders: new Map() };
    const memory = new ErrorMemory(10);
    const good = artifact('v2.onnx', linearModelOnnx({ ...linear(51), inputDim: D, output: 'logistic' }));
    const outcomes: ModelUpdateOutcome[] = [];
    const off = onModelUpdate((o) => outcomes.push(o));
    const cases: Array<[ModelUpdate, string]> = [
      [update('narrow', artifact('narrow.onnx', linearModelOnnx({ weights: new Float32Array(3), bias: 0, inputDim: 3, output: 'logistic' }))), `model narrow takes 3 features, the layout has ${D}`],
      [update('forged', { artifact: good.artifact, checksum: '0'.repeat(64) }), `does not match the announced ${'0'.repeat(64)}`],
      [update('garbage', artifact('garbage.onnx', new TextEncoder().encode('not an onnx model'))), 'protobuf'],
      [update('gone', { artifact: join(dir, 'missing.onnx'), checksum: '' }), 'ENOENT'],
    ];
    for (const [u, reason] of cases) {
      const outcome = await hotSwap(u, pipelineConfig, files, memory);
      expect(outcome, u.version).toMatchObject({ kind: 'kept', version: u.version, current: ['v1'] });
      expect(outcome?.kind === 'kept' && outcome.reason, u.version).toContain(reason);
      expect(holder.current()).toBe(v1);
      expect(memory.toJSON().retiredBelow).toBeNull();
    }
    expect(outcomes.map((o) => o.kind)).toEqual(['kept', 'kept', 'kept', 'kept']);
    expect(await v1.scoreRows(new Float32Array(D), 1, D)).toHaveLength(1);

    // A model that fits is swapped in, the old one released once idle, older errors retired.
    expect(await hotSwap(update('v2', good), pipelineConfig, files, memory)).toEqual({ kind: 'swapped', model: 'scorer', version: 'v2', operators: 1 });
    expect(holder.current().version).toBe('v2');
    expect(memory.toJSON().retiredBelow).toBe('v2');
    await expect.poll(() => v1.scoreRows(new Float32Array(D), 1, D).then(() => 'alive', (e: Error) => e.message)).toBe('model v1 was released');
    expect(await hotSwap({ ...update('other', good), model: 'another-model' }, pipelineConfig, files, memory)).toBeNull();
    off();
    await holder.current().dispose?.();
  });
});

/**
 * The same on the real services: after a model that does not fit the feature layout is
 * announced, the running pipeline keeps scoring with the model it had and decides the records
 * that follow; a model that fits is still swapped in afterwards.
 */
describe('a live pipeline refuses a model that does not fit', () => {
  const prefix = uniquePrefix('hot-swap');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-hot-swap-e2e-'));
  const kafka = testKafka('hot-swap');
  const v1 = writeScorer(dir, features, 'v1', { 'reward:correct': 4 }, 1);
  const v2 = writeScorer(dir, features, 'v2', { 'reward:correct': 4 }, -2);
  const narrow = join(dir, 'narrow.onnx');
  writeFileSync(narrow, linearModelOnnx({ weights: new Float32Array(3), bias: 0, inputDim: 3, output: 'logistic', version: 'narrow' }));
  const garbage = join(dir, 'garbage.onnx');
  writeFileSync(garbage, 'not an onnx model');
  let pipeline: RunningPipeline;
  let rollouts: TopicSerde<Rollout>;
  let decisions: TopicSerde<Decision>;
  const decided = new Map<string, Decision>();
  const outcomes: ModelUpdateOutcome[] = [];
  let off = () => {};

  const decide = async (batch: Rollout[]) => {
    await produceRollouts(kafka, rollouts, batch);
    const messages = await consumeTopic(kafka, pipeline.catalog.decisions, (m) => m.length >= decided.size + batch.length, { settleMs: 500 });
    for (const d of await Promise.all(messages.map((m) => decisions.deserialize(m.value!)))) decided.set(d.rollout.id, d);
    return batch.map((r) => decided.get(r.id)!);
  };
  const announce = async (...updates: ModelUpdate[]) => {
    const serde = await modelUpdateSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.modelUpdates);
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic: pipeline.catalog.modelUpdates, messages: await Promise.all(updates.map(async (u) => ({ key: u.model, value: await serde.serialize(u) }))) });
    await producer.disconnect();
  };
  const announced = (version: string, path: string, checksum = sha256(readFileSync(path))): ModelUpdate => ({ model: 'scorer', version, artifact: path, checksum, metrics: {}, at: Date.now() });
  const scoredBy = (d: Decision, bias: number) => expect(d.scores.model).toBeCloseTo(1 / (1 + Math.exp(-(4 * d.rollout.rewards.correct! + bias))), 5);
  const batch = (i: number) => syntheticRollouts({ groups: 20, runId: `${prefix}-b${i}`, seed: 300 + i, duplicateRate: 0, invalidRate: 0, garbage: 0 }).rollouts;

  beforeAll(async () => {
    off = onModelUpdate((o) => outcomes.push(o));
    const config = parseConfig({
      name: 'hot-swap',
      run: prefix,
      topics: { prefix, partitions: 3 },
      source: { tickMs: 300 },
      features,
      operators: [{ type: 'validate' }, { type: 'onnx-score', model: { name: 'scorer', path: v1 } }],
      clickhouse: { path: join(dir, 'clickhouse') },
    });
    pipeline = await startPipeline(config, connections);
    const registry = registryClient(connections.schemaRegistryUrl);
    rollouts = await rolloutSerde(registry, pipeline.catalog.rollouts);
    decisions = await decisionSerde(registry, pipeline.catalog.decisions);
  }, 120_000);

  afterAll(async () => {
    off();
    await pipeline?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps scoring with v1 after a wrong-width, a wrong-checksum and an unloadable model, then swaps to a v2 that fits', async () => {
    expect((await decide(batch(0))).every((d) => d.scorer_version === 'v1')).toBe(true);
    await announce(announced('narrow', narrow), announced('forged', v2, 'f'.repeat(64)), announced('garbage', garbage));
    await waitUntil(() => outcomes.filter((o) => o.model === 'scorer').length >= 3, () => `3 model-update outcomes, got ${JSON.stringify(outcomes)}`, 60_000);
    expect(outcomes.map((o) => [o.kind, o.version])).toEqual([['kept', 'narrow'], ['kept', 'forged'], ['kept', 'garbage']]);
    expect(outcomes[0]).toMatchObject({ reason: `model narrow takes 3 features, the layout has ${D}`, current: ['v1'] });
    expect(pipeline.scorerVersion('scorer')).toBe('v1');

    // Records after the refused announcements are decided, scored by v1.
    const after = await decide(batch(1));
    expect(after).toHaveLength(batch(1).length);
    for (const d of after) {
      expect(d.scorer_version).toBe('v1');
      scoredBy(d, 1);
    }

    await announce(announced('v2', v2));
    await waitUntil(() => outcomes.some((o) => o.kind === 'swapped' && o.version === 'v2'), 'v2 to be swapped in', 60_000);
    const later = await decide(batch(2));
    for (const d of later) {
      expect(d.scorer_version).toBe('v2');
      scoredBy(d, -2);
    }
  });
});

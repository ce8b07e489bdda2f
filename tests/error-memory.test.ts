import { describe, expect, it } from 'vitest';
import { proseCorpus } from '../bench/prose-corpus.ts';
import { prng } from '../cli/synthetic.ts';
import { featureDefaults, featurize, type FeatureConfig } from '../contracts/features.ts';
import type { Envelope, Sample } from '../lib/envelope.ts';
import { errorCompensate, errorCompensateDefaults, similarityOf, type ErrorCompensateConfig, type SimilarityKind } from '../operators/score/error-compensate.ts';
import { decodeVector, encodeVector, ErrorMemory, naturalOrder, type ErrorEntry, type Vector } from '../lib/error-memory.ts';
import { rollout, sample, samplesOf, through } from './helpers/envelopes.ts';
import { linearModelOnnx } from '../contracts/onnx-codec.ts';
import { parseConfig } from '../pipeline/config.ts';
import { retireErrors } from '../pipeline/feedback.ts';
import { OnnxScoringModel } from '../pipeline/onnx-models.ts';

const vec = (...xs: number[]): Vector => Float32Array.from(xs);
const entry = (key: Vector, error: number, modelVersion = 'v1', at = 0): ErrorEntry => ({ key, error, modelVersion, at });

describe('ErrorMemory', () => {
  it('returns no correction when empty, for a zero vector, or when nothing is similar enough', () => {
    const memory = new ErrorMemory(4);
    expect(memory.compensation(vec(1, 0), 3, 0.5)).toEqual({ correction: 0, neighbours: 0 });
    memory.add(entry(vec(1, 0), 0.3));
    expect(memory.compensation(vec(0, 0), 3, 0.5)).toEqual({ correction: 0, neighbours: 0 });
    expect(memory.compensation(vec(0, 1), 3, 0.5)).toEqual({ correction: 0, neighbours: 0 });
    // Opposite directions never count, whatever minSimilarity says.
    expect(memory.compensation(vec(-1, 0), 3, -1)).toEqual({ correction: 0, neighbours: 0 });
  });

  it('averages the k most similar errors weighted by cosine similarity', () => {
    const memory = new ErrorMemory(8);
    memory.add(entry(vec(1, 0), 0.4)); // similarity 1 to (1, 0)
    memory.add(entry(vec(3, 4), -0.2)); // 0.6
    memory.add(entry(vec(0, 1), 1)); // 0: excluded
    memory.add(entry(vec(4, 3), 0.1)); // 0.8
    const two = memory.compensation(vec(2, 0), 2, 0.1);
    expect(two.neighbours).toBe(2);
    expect(two.correction).toBeCloseTo((1 * 0.4 + 0.8 * 0.1) / 1.8, 6);
    const all = memory.compensation(vec(1, 0), 10, 0.1);
    expect(all.neighbours).toBe(3);
    expect(all.correction).toBeCloseTo((0.4 + 0.8 * 0.1 + 0.6 * -0.2) / 2.4, 6);
    expect(memory.compensation(vec(1, 0), 10, 0.7).neighbours).toBe(2);
  });

  it('prefers the most recent of equally similar errors', () => {
    const memory = new ErrorMemory(8);
    memory.add(entry(vec(1, 1), -1));
    memory.add(entry(vec(2, 2), 1));
    expect(memory.compensation(vec(1, 1), 1, 0.5).correction).toBeCloseTo(1, 6);
  });

  it('evicts the oldest entry at capacity', () => {
    const memory = new ErrorMemory(2);
    memory.add(entry(vec(1, 0), 0.5));
    memory.add(entry(vec(0, 1), 0.2));
    memory.add(entry(vec(0, 1), 0.4));
    expect(memory.size).toBe(2);
    expect(memory.compensation(vec(1, 0), 5, 0.5)).toEqual({ correction: 0, neighbours: 0 });
    expect(memory.compensation(vec(0, 1), 5, 0.5).correction).toBeCloseTo(0.3, 6);
  });

  it('copies keys, and refuses non-finite errors and vectors of another dimension', () => {
    const memory = new ErrorMemory(2);
    const key = vec(1, 0);
    memory.add(entry(key, 0.5));
    key[0] = 0;
    key[1] = 1;
    expect(memory.compensation(vec(1, 0), 1, 0.5).neighbours).toBe(1);
    expect(() => memory.add(entry(vec(1, 0), Number.NaN))).toThrow(/finite/);
    expect(() => memory.compensation(vec(1, 0, 0), 1, 0.5)).toThrow(/dimensions/);
    expect(() => new ErrorMemory(0)).toThrow(/capacity/);
  });

  it('retires errors of older versions, including ones that arrive later', () => {
    const memory = new ErrorMemory(8);
    memory.add(entry(vec(1, 0), 0.5, 'v9'));
    memory.add(entry(vec(1, 0), 0.1, 'v10'));
    memory.add(entry(vec(1, 0), 0.3, 'v11'));
    expect(memory.retire('v10')).toBe(1);
    expect(memory.size).toBe(2);
    expect(memory.add(entry(vec(1, 0), 0.9, 'v9'))).toBe(false);
    expect(memory.add(entry(vec(1, 0), 0.2, 'v10'))).toBe(true);
    // Retiring an older version than before changes nothing.
    expect(memory.retire('v2')).toBe(0);
    expect(memory.compensation(vec(1, 0), 10, 0.5)).toEqual({ correction: expect.closeTo(0.2, 6), neighbours: 3 });
  });

  it('orders versions naturally', () => {
    expect(['v10', 'v9', 'v10b', '2024-01-02', 'v1'].sort(naturalOrder)).toEqual(['2024-01-02', 'v1', 'v9', 'v10', 'v10b']);
  });

  it('restores from JSON with the same entries, order, capacity and retirement', () => {
    const memory = new ErrorMemory(3);
    for (let i = 0; i < 5; i++) memory.add(entry(vec(1, i / 10, -0.5), i / 10, `v${i}`, 1000 + i));
    memory.retire('v3');
    const restored = ErrorMemory.fromJSON(JSON.parse(JSON.stringify(memory)));
    expect(restored.toJSON()).toEqual(memory.toJSON());
    expect(decodeVector(encodeVector(vec(0.1, -2.5, 1e-8)))).toEqual(vec(0.1, -2.5, 1e-8));
    // Mostly zeros (hashed text features): the sparse form, shorter, the same values back.
    const sparse = new Float32Array(1030);
    sparse[3] = 0.25;
    sparse[700] = -1e-7;
    sparse[1029] = 6.5;
    const text = encodeVector(sparse);
    expect(text.startsWith('~')).toBe(true);
    expect(text.length).toBeLessThan(40);
    expect(decodeVector(text)).toEqual(sparse);
    // A dense text written before the sparse form existed reads as before.
    expect(decodeVector(Buffer.from(Float32Array.of(1, 0, -2).buffer).toString('base64'))).toEqual(vec(1, 0, -2));
    expect(() => decodeVector('~' + Buffer.from([2, 0, 0, 0, 5, 0, 0, 0, 0, 0]).toString('base64'))).toThrow(/index 5 outside its length 2/);
    expect(() => decodeVector('~AAA=')).toThrow(/not a length and whole/);
    expect(restored.compensation(vec(1, 0.35, -0.5), 2, 0)).toEqual(memory.compensation(vec(1, 0.35, -0.5), 2, 0));
    expect(restored.add(entry(vec(1, 0, 0), 1, 'v2'))).toBe(false);
    restored.add(entry(vec(0, 1, 0), 1, 'v5'));
    restored.add(entry(vec(0, 1, 0), 1, 'v5'));
    expect(restored.size).toBe(3);
    expect(restored.toJSON().entries.map((e) => e.modelVersion)).toEqual(['v4', 'v5', 'v5']);
  });
});

describe('ErrorMemory similarity and per-error retirement', () => {
  it('compares only the first dims values with a sliced cosine, z-scored values with standardized', () => {
    const memory = new ErrorMemory(8);
    // Same text block (first two values), very different tails; and the reverse.
    memory.add(entry(vec(1, 0, 5), 0.5));
    memory.add(entry(vec(0, 1, 100), -0.5));
    const query = vec(1, 0, 100);
    expect(memory.compensation(query, 1, 0.1, { kind: 'cosine', dims: 2 }).correction).toBeCloseTo(0.5, 6);
    // Over the whole vector the tail decides: (0, 1, 100) is the nearer one.
    expect(memory.compensation(query, 1, 0.1, { kind: 'cosine' }).correction).toBeCloseTo(-0.5, 6);
    expect(similarityOf('text', 2)).toEqual({ kind: 'cosine', dims: 2 });

    // Standardized: the tail's scale no longer dominates; constant dimensions are left out.
    const z = new ErrorMemory(8);
    z.add(entry(vec(1, 0, 7, 1000), 0.4));
    z.add(entry(vec(0, 1, 7, 1001), -0.4));
    z.add(entry(vec(1, 0, 7, 1001), 0.2));
    z.add(entry(vec(0, 1, 7, 1000), -0.2));
    const near = z.compensation(vec(1, 0, 7, 1000), 1, 0.1, { kind: 'standardized' });
    expect(near).toEqual({ correction: expect.closeTo(0.4, 6), neighbours: 1 });
    expect(new ErrorMemory(2).compensation(vec(1, 0), 1, 0, { kind: 'standardized' }).neighbours).toBe(0);
  });

  it('reassess keeps the errors the new model still makes, with their new residual, retires the fixed to 0 and drops the unlabelled', async () => {
    const memory = new ErrorMemory(8);
    memory.add({ key: vec(1, 0), error: -0.6, label: 0, modelVersion: 'v1', at: 1 }); // new model: 0.5 → still off by 0.5
    memory.add({ key: vec(0, 1), error: 0.7, label: 1, modelVersion: 'v1', at: 2 }); // new model: 0.9 → fixed
    memory.add({ key: vec(1, 1), error: 0.3, modelVersion: 'v1', at: 3 }); // no label: cannot be asked
    memory.add({ key: vec(2, 0), error: 0.1, label: 1, modelVersion: 'v3', at: 4 }); // newer than the swap: untouched
    const asked: Vector[][] = [];
    const outcome = memory.reassess(
      'v2',
      async (keys) => {
        asked.push(keys);
        memory.add({ key: vec(5, 5), error: 0.2, label: 1, modelVersion: 'v2', at: 5 }); // arrives while scoring
        return keys.map((k) => (k[0] === 1 ? 0.5 : 0.9));
      },
      0.25,
    );
    // Labels of older versions still in flight are refused from the start.
    expect(memory.add({ key: vec(1, 0), error: 1, label: 1, modelVersion: 'v1', at: 6 })).toBe(false);
    expect(await outcome).toEqual({ kept: 1, fixed: 1, dropped: 1 });
    expect(asked).toEqual([[vec(1, 0), vec(0, 1)]]);
    expect(memory.toJSON().entries.map(({ error, modelVersion, at }) => ({ error, modelVersion, at }))).toEqual([
      { error: -0.5, modelVersion: 'v2', at: 1 },
      { error: 0, modelVersion: 'v2', at: 2 },
      { error: 0.1, modelVersion: 'v3', at: 4 },
      { error: 0.2, modelVersion: 'v2', at: 5 },
    ]);
    expect(memory.toJSON().retiredBelow).toBe('v2');
    // Labels survive the JSON round trip.
    expect(ErrorMemory.fromJSON(memory.toJSON()).toJSON()).toEqual(memory.toJSON());
  });

  it('reassess retires them all and rethrows when the model cannot score', async () => {
    const memory = new ErrorMemory(4);
    memory.add({ key: vec(1, 0), error: -0.6, label: 0, modelVersion: 'v1', at: 1 });
    await expect(memory.reassess('v2', () => Promise.reject(new Error('released')), 0.25)).rejects.toThrow('released');
    expect(memory.size).toBe(0);
    await expect(memory.reassess('v3', async () => [], 0.25)).resolves.toEqual({ kept: 0, fixed: 0, dropped: 0 });
  });
});

describe('ErrorMemory.assess: the memory checks its corrections against the errors that follow', () => {
  const random = prng(17);
  const noise = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const centres = [vec(1, 0, 0), vec(0, 1, 0), vec(0, 0, 1)];
  const lookup = { k: 8, minSimilarity: 0.5, similarity: { kind: 'cosine' } as const };
  /** 400 errors, each decided at step i and added at step i + 10 (the label delay). */
  const feed = (memory: ErrorMemory, errorOf: (cluster: number) => number) => {
    for (let i = 0; i < 400; i++) {
      const cluster = i % 3;
      const key = Float32Array.from(centres[cluster]!, (c) => c + 0.2 * Math.abs(noise()));
      memory.add({ key, error: errorOf(cluster), modelVersion: 'v1', at: i }, i + 10);
    }
  };

  it('keeps the gain near 1 where neighbours share a bias, takes it toward 0 where errors are noise', () => {
    const biased = new ErrorMemory(200);
    const a = biased.assess(lookup);
    expect(a.gain).toBe(1);
    feed(biased, (cluster) => [0.3, -0.3, 0][cluster]! + 0.05 * noise());
    expect(a.evidence).toBeGreaterThan(100);
    expect(a.gain).toBeGreaterThan(0.9);

    // A calibrated scorer judged by 0/1 labels: label − score is ±0.5 whatever the neighbours say.
    const noisy = new ErrorMemory(200);
    const b = noisy.assess(lookup);
    feed(noisy, () => (random() < 0.5 ? 0.5 : -0.5));
    expect(b.gain).toBeLessThan(0.25);
    // The same lookup is one assessment; it survives a snapshot.
    expect(noisy.assess({ ...lookup })).toBe(b);
    const restored = ErrorMemory.fromJSON(JSON.parse(JSON.stringify(noisy)));
    expect(restored.assess(lookup).gain).toBeCloseTo(b.gain, 12);
  });

  it('judges a correction as of the decision: errors added after it do not count', () => {
    const memory = new ErrorMemory(8);
    const a = memory.assess(lookup);
    memory.add({ key: vec(1, 0, 0), error: 0.4, modelVersion: 'v1', at: 0 }, 100);
    // Decided at 50, before the first error was added: there was nothing to correct with.
    memory.add({ key: vec(1, 0, 0), error: -0.4, modelVersion: 'v1', at: 50 }, 120);
    expect(a.evidence).toBe(0);
    // Decided at 110: the first error (0.4) was there and predicted the wrong sign.
    memory.add({ key: vec(1, 0, 0), error: -0.4, modelVersion: 'v1', at: 110 }, 130);
    expect(a.evidence).toBe(1);
    expect(a.gain).toBeLessThan(1);
  });

  it('shrinkage pulls a mean resting on few or distant neighbours toward 0', () => {
    const memory = new ErrorMemory(8);
    memory.add(entry(vec(1, 0), 0.4));
    expect(memory.compensation(vec(1, 0), 4, 0.1, { kind: 'cosine' }, 1).correction).toBeCloseTo(0.2, 6);
    memory.add(entry(vec(1, 0), 0.4));
    memory.add(entry(vec(1, 0), 0.4));
    expect(memory.compensation(vec(1, 0), 4, 0.1, { kind: 'cosine' }, 1).correction).toBeCloseTo(0.3, 6);
  });
});

describe('retireErrors: what a model swap does to the memory', () => {
  const operators = (compensate: boolean) =>
    parseConfig({
      name: 'retire',
      topics: { prefix: 'retire' },
      operators: [{ type: 'onnx-score', name: 'model', model: { name: 'scorer', path: 'unused.onnx' } }, ...(compensate ? [{ type: 'error-compensate', score: 'model' }] : [])],
    }).operators;
  const filled = () => {
    const memory = new ErrorMemory(4);
    memory.add({ key: vec(0.9, 0, 0), error: -0.95, label: 0, modelVersion: 'v1', at: 1 });
    memory.add({ key: vec(0.1, 0, 0), error: -0.8, label: 0, modelVersion: 'v1', at: 2 });
    return memory;
  };

  it('re-scores the stored errors with the swapped-in ONNX model of the compensated score', async () => {
    // v2 scores x[0]: still 0.9 off on the first key, only 0.1 on the second.
    const v2 = await OnnxScoringModel.load(linearModelOnnx({ weights: Float32Array.of(1, 0, 0), bias: 0, inputDim: 3, output: 'linear' }), 'v2');
    try {
      const memory = filled();
      await retireErrors(memory, operators(true), 'v2', [{ name: 'model', model: v2 }]);
      expect(memory.toJSON().entries.map((e) => [e.error, e.modelVersion])).toEqual([
        [expect.closeTo(-0.9, 6), 'v2'],
        [0, 'v2'],
      ]);
      // No error-compensate, or the swapped model is not the compensated score's: all retired.
      for (const [ops, name] of [[operators(false), 'model'], [operators(true), 'other']] as const) {
        const wholesale = filled();
        await retireErrors(wholesale, ops, 'v2', [{ name, model: v2 }]);
        expect(wholesale.size).toBe(0);
      }
    } finally {
      await v2.dispose();
    }
  });
});

describe('errorCompensate', () => {
  const config: ErrorCompensateConfig = { ...errorCompensateDefaults, score: 'model', k: 4, minSimilarity: 0.5, similarity: 'whole' };

  it('scales corrections by the memory\'s measured gain, and not without calibrate', async () => {
    const memory = new ErrorMemory(64);
    const input = [withVector('a', 0.5, [1, 0])];
    // k 1: a correction is the latest error on the key.
    const config1 = { ...config, k: 1 };
    const correctionOf = async (c: ErrorCompensateConfig) => samplesOf(await through(errorCompensate(c, memory, vectorOf, 2), input))[0]!.scores['model.correction']!;
    // Built first, so the memory assesses this lookup from the first error on.
    const calibrated = errorCompensate(config1, memory, vectorOf, 2);
    // Errors alternating in sign on the same key: each one's correction predicted the opposite.
    for (let i = 0; i < 40; i++) memory.add({ key: vec(1, 0), error: i % 2 === 0 ? 0.3 : -0.3, modelVersion: 'v1', at: 2 * i }, 2 * i + 1);
    const plain = await correctionOf({ ...config1, calibrate: false });
    const gain = memory.assess({ k: 1, minSimilarity: 0.5, similarity: { kind: 'cosine' }, shrinkage: 0 }).gain;
    expect(plain).toBeCloseTo(-0.3, 6);
    expect(gain).toBeLessThan(0.5);
    expect(samplesOf(await through(calibrated, input))[0]!.scores['model.correction']).toBeCloseTo(plain * gain, 9);
    expect(await correctionOf(config1)).toBeCloseTo(plain * gain, 9);
  });
  const withVector = (id: string, score: number | undefined, vector: number[] | undefined) =>
    sample({ id, tags: vector === undefined ? {} : { v: vector.join(',') } }, { scores: score === undefined ? {} : { model: score } });
  const vectorOf = (s: Sample): Vector => {
    const text = s.rollout.tags['v'];
    if (text === undefined) throw new Error('no feature vector');
    return Float32Array.from(text.split(',').map(Number));
  };

  it('writes the raw score, the correction and the clamped corrected score', async () => {
    const memory = new ErrorMemory(4);
    memory.add(entry(vec(1, 0), -0.3));
    memory.add(entry(vec(0, 1), 0.5));
    const input = [withVector('a', 0.9, [1, 0]), withVector('b', 0.7, [0, 1]), withVector('c', 0.4, [-1, -1])];
    const out = samplesOf(await through(errorCompensate(config, memory, vectorOf, 2), input));
    expect(out[0]!.scores).toEqual({ 'model.raw': 0.9, 'model.correction': -0.3, model: expect.closeTo(0.6, 6) });
    expect(out[1]!.scores).toEqual({ 'model.raw': 0.7, 'model.correction': 0.5, model: 1 });
    expect(out[2]!.scores).toEqual({ 'model.raw': 0.4, 'model.correction': 0, model: 0.4 });
  });

  it('passes samples without the score and other envelopes unchanged; dead-letters a sample it cannot embed', async () => {
    const memory = new ErrorMemory(4);
    const unscored = withVector('u', undefined, undefined);
    const out = await through(errorCompensate(config, memory, vectorOf, 2), [{ kind: 'tick', now: 1 }, unscored, withVector('x', 0.5, undefined)]);
    expect(out[0]).toEqual({ kind: 'tick', now: 1 });
    expect(out[1]).toBe(unscored);
    expect(out[2]).toMatchObject({ kind: 'dead', stage: 'error-compensate', reason: 'no feature vector' });
    expect(await through(errorCompensate(config, memory, vectorOf, 2), [])).toEqual([]);
  });
});

/**
 * The requirement: under a shift in the scorer's bias, compensated scores recover faster than
 * raw ones; after a model update that fixes the bias and retire(), corrections vanish.
 *
 * One sample per step from three clusters (vector = cluster centre + noise), true quality q.
 * Scorer v1 predicts q + noise, plus +DELTA on cluster 0 from step SHIFT on. The label (q) of a
 * step arrives LABEL_DELAY steps later and goes into the memory. At UPDATE, scorer v2 (no bias)
 * takes over and the pipeline calls retire('v2').
 */
describe('error compensation under a scorer bias shift', () => {
  const DIM = 16;
  const DELTA = 0.25;
  const LABEL_DELAY = 30;
  const SHIFT = 600;
  const UPDATE = 1200;
  const STEPS = 1500;
  const random = prng(7);
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const centres = [0, 1, 2].map(() => Array.from({ length: DIM }, gaussian));

  interface Step {
    t: number;
    cluster: number;
    vector: Vector;
    quality: number;
    version: string;
    raw: number;
    compensated: number;
    correction: number;
  }

  async function simulate(options: { retire: boolean }): Promise<Step[]> {
    const run = prng(11); // the same stream for every run
    const noise = () => Math.sqrt(-2 * Math.log(1 - run())) * Math.cos(2 * Math.PI * run());
    const memory = new ErrorMemory(3 * LABEL_DELAY);
    const vectors = new Map<string, Vector>();
    const compensate = errorCompensate({ ...errorCompensateDefaults, score: 'model', k: 8, minSimilarity: 0.7, similarity: 'whole' }, memory, (s) => vectors.get(s.rollout.id)!, DIM);
    const steps: Step[] = [];
    for (let t = 0; t < STEPS; t++) {
      const labelled = steps[t - LABEL_DELAY];
      // Decided at step labelled.t, added at step t: the memory's self-assessment sees the label delay.
      if (labelled !== undefined) memory.add({ key: labelled.vector, error: labelled.quality - labelled.raw, modelVersion: labelled.version, at: labelled.t }, t);
      if (t === UPDATE && options.retire) memory.retire('v2');

      const cluster = Math.floor(run() * 3);
      const vector = Float32Array.from(centres[cluster]!, (c) => c + 0.3 * noise());
      const quality = 0.2 + 0.6 * run();
      const version = t < UPDATE ? 'v1' : 'v2';
      const bias = version === 'v1' && t >= SHIFT && cluster === 0 ? DELTA : 0;
      const raw = Math.min(1, Math.max(0, quality + bias + 0.03 * noise()));
      const id = `s${t}`;
      vectors.set(id, vector);
      const input: Envelope[] = [sample({ id }, { scores: { model: raw }, scorerVersion: version })];
      const [out] = samplesOf(await through(compensate, input));
      steps.push({ t, cluster, vector, quality, version, raw, compensated: out!.scores['model']!, correction: out!.scores['model.correction']! });
    }
    return steps;
  }

  const mae = (steps: Step[], from: number, to: number, pick: (s: Step) => number, cluster?: number) => {
    const window = steps.filter((s) => s.t >= from && s.t < to && (cluster === undefined || s.cluster === cluster));
    return window.reduce((sum, s) => sum + Math.abs(pick(s) - s.quality), 0) / window.length;
  };
  const raw = (s: Step) => s.raw;
  const compensated = (s: Step) => s.compensated;

  it('recovers within a few label delays of the shift while the raw scores stay off', async () => {
    const steps = await simulate({ retire: true });
    const before = mae(steps, SHIFT - 300, SHIFT, compensated, 0);
    expect(before).toBeLessThan(0.05);
    expect(mae(steps, SHIFT - 300, SHIFT, raw, 0)).toBeLessThan(0.05);

    // Until the first labels of the shifted scorer arrive, nothing can be corrected.
    expect(mae(steps, SHIFT, SHIFT + LABEL_DELAY, compensated, 0)).toBeGreaterThan(DELTA - 0.05);
    // Within four label delays the compensated error is back near its pre-shift level…
    for (let w = SHIFT + 4 * LABEL_DELAY; w < UPDATE; w += LABEL_DELAY) {
      expect(mae(steps, w, w + LABEL_DELAY, compensated, 0)).toBeLessThan(before + 0.03);
      // …while the raw error stays at the bias.
      expect(mae(steps, w, w + LABEL_DELAY, raw, 0)).toBeGreaterThan(DELTA - 0.05);
    }
    // Over all clusters too, and the unshifted clusters are not disturbed.
    expect(mae(steps, SHIFT + 4 * LABEL_DELAY, UPDATE, compensated)).toBeLessThan(mae(steps, SHIFT + 4 * LABEL_DELAY, UPDATE, raw) / 2);
    for (const cluster of [1, 2]) expect(mae(steps, SHIFT + 4 * LABEL_DELAY, UPDATE, compensated, cluster)).toBeLessThan(0.05);
  });

  it('stops correcting after the model update and retire(): no over-correction', async () => {
    const steps = await simulate({ retire: true });
    const after = steps.filter((s) => s.t >= UPDATE);
    // Right after the update the memory holds no v2 errors yet (late v1 labels are ignored).
    expect(after.filter((s) => s.t < UPDATE + LABEL_DELAY).every((s) => s.correction === 0)).toBe(true);
    const meanAbsCorrection = after.reduce((sum, s) => sum + Math.abs(s.correction), 0) / after.length;
    expect(meanAbsCorrection).toBeLessThan(0.02);
    expect(mae(steps, UPDATE, STEPS, compensated, 0)).toBeLessThan(mae(steps, UPDATE, STEPS, raw, 0) + 0.01);

    // Without retire(), the stale v1 errors would push the fixed scorer's scores down by the old bias.
    const stale = await simulate({ retire: false });
    expect(mae(stale, UPDATE, UPDATE + LABEL_DELAY, compensated, 0)).toBeGreaterThan(DELTA - 0.05);
  });
});

/**
 * On data not made for it: paragraphs of the prose corpus (license texts, Debian copyright
 * files, Python docstrings, npm READMEs) as rollouts featurized with the demo's layout (256
 * buckets of word 1- and 2-grams plus the numeric tail: log lengths and log-prob statistics).
 * True quality q is random; scorer v1 overrates legal text (+0.3 on paragraphs that mention a
 * licence, warranty or copyright) and underrates docs that talk about functions and arguments
 * (−0.3), plus noise. Errors of the first paragraphs go into the memory; on the later ones the
 * correction should track the true residual q − raw.
 */
describe('error compensation on prose, a scorer biased by topic', () => {
  const features: FeatureConfig = { ...featureDefaults, dims: 256, charNgrams: [] };
  const legal = /\b(licen[cs]e[sd]?|warrant(y|ies)|copyright)\b/i;
  const api = /\b(functions?|arguments?|methods?)\b/i;
  const random = prng(3);
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const rows = proseCorpus({ paragraphs: 1600, copyShare: 0, seed: 5 }).map((doc, i) => {
    const mean = -0.3 - random();
    const r = rollout({ id: `prose-${i}`, prompt: 'Explain:', response: doc.text, token_count: Math.round(doc.text.split(' ').length * 1.3), logprobs: Array.from({ length: 8 }, () => mean + 0.3 * gaussian()) });
    const quality = 0.2 + 0.6 * random();
    const bias = { legal: legal.test(doc.text) ? 0.3 : 0, api: api.test(doc.text) ? -0.3 : 0 };
    const raw = Math.min(1, Math.max(0, quality + bias.legal + bias.api + 0.05 * gaussian()));
    return { rollout: r, vector: featurize(r, features), quality, bias, raw };
  });
  const MEMORY = 1000;
  const known = rows.slice(0, MEMORY);
  const unseen = rows.slice(MEMORY);
  const pearson = (a: number[], b: number[]) => {
    const ma = a.reduce((x, y) => x + y, 0) / a.length;
    const mb = b.reduce((x, y) => x + y, 0) / b.length;
    let ab = 0, aa = 0, bb = 0;
    a.forEach((x, i) => ((ab += (x - ma) * (b[i]! - mb)), (aa += (x - ma) ** 2), (bb += (b[i]! - mb) ** 2)));
    return ab / Math.sqrt(aa * bb);
  };
  const fill = () => {
    const memory = new ErrorMemory(MEMORY);
    for (const r of known) memory.add({ key: r.vector, error: r.quality - r.raw, label: r.quality, modelVersion: 'v1', at: 0 });
    return memory;
  };
  const corrections = async (memory: ErrorMemory, similarity: SimilarityKind, minSimilarity: number, batch = unseen) => {
    const compensate = errorCompensate({ ...errorCompensateDefaults, similarity, minSimilarity }, memory, (s) => featurize(s.rollout, features), features.dims);
    const out = samplesOf(await through(compensate, batch.map((r) => sample(r.rollout, { scores: { model: r.raw }, scorerVersion: 'v1' }))));
    return out.map((s) => s.scores['model.correction']!);
  };

  it('the corpus has both biased topics and unbiased text, and the whole vector cannot tell them apart', () => {
    expect(known.filter((r) => r.bias.legal !== 0).length).toBeGreaterThan(100);
    expect(known.filter((r) => r.bias.api !== 0).length).toBeGreaterThan(100);
    expect(known.filter((r) => r.bias.legal === 0 && r.bias.api === 0).length).toBeGreaterThan(300);
    // The diagnosis: the numeric tail makes every pair of rollouts look alike.
    const cosine = (a: Vector, b: Vector) => { let ab = 0, aa = 0, bb = 0; a.forEach((x, i) => ((ab += x * b[i]!), (aa += x * x), (bb += b[i]! ** 2))); return ab / Math.sqrt(aa * bb); };
    const pairs = Array.from({ length: 200 }, (_, i) => cosine(known[i]!.vector, known[i + 200]!.vector));
    expect(Math.min(...pairs)).toBeGreaterThan(0.8);
  });

  it('corrections correlate with the true residual: text block, standardized and blocks similarity all beat the whole-vector cosine', async () => {
    const memory = fill();
    const truth = unseen.map((r) => r.quality - r.raw);
    const r = {
      whole: pearson(await corrections(memory, 'whole', 0.8), truth),
      text: pearson(await corrections(memory, 'text', 0.2), truth),
      standardized: pearson(await corrections(memory, 'standardized', 0.1), truth),
      blocks: pearson(await corrections(memory, 'blocks', errorCompensateDefaults.minSimilarity), truth),
    };
    console.log(`error memory on prose: correlation of correction and true residual ${JSON.stringify(r)}`);
    expect(r.text).toBeGreaterThanOrEqual(0.5);
    expect(r.standardized).toBeGreaterThanOrEqual(0.5);
    expect(r.text).toBeGreaterThan(r.whole + 0.1);
    expect(r.standardized).toBeGreaterThan(r.whole + 0.1);
    // The default gives the numeric tail (here lengths and random log-probs) half the say.
    expect(r.blocks).toBeGreaterThanOrEqual(0.5);
    expect(r.blocks).toBeGreaterThan(r.whole);
  });

  it('with 0/1 verdicts as labels: the memory\'s measured gain keeps corrections where the scorer is biased by topic and drops them where it is not', async () => {
    // Each paragraph's label is a coin with its quality as the chance; decided at i, labelled 50 later.
    const coin = prng(9);
    const verdicts = rows.map((r) => (coin() < r.quality ? 1 : 0));
    const run = async (rawOf: (r: (typeof rows)[number]) => number) => {
      const memory = new ErrorMemory(MEMORY);
      const config = { ...errorCompensateDefaults };
      const similarity = similarityOf(config.similarity, features.dims);
      const assessment = memory.assess({ k: config.k, minSimilarity: config.minSimilarity, similarity, shrinkage: config.shrinkage });
      known.forEach((r, i) => memory.add({ key: r.vector, error: verdicts[i]! - rawOf(r), label: verdicts[i]!, modelVersion: 'v1', at: i }, i + 50));
      const compensate = errorCompensate(config, memory, (s) => featurize(s.rollout, features), features.dims);
      const out = samplesOf(await through(compensate, unseen.map((r) => sample(r.rollout, { scores: { model: rawOf(r) }, scorerVersion: 'v1' }))));
      const corrections = out.map((s) => s.scores['model.correction']!);
      return { gain: assessment.gain, corrections, r: pearson(corrections, unseen.map((u) => u.quality - rawOf(u))), meanAbs: corrections.reduce((a, c) => a + Math.abs(c), 0) / corrections.length };
    };
    const biased = await run((r) => r.raw);
    const fair = await run((r) => r.quality);
    console.log(`0/1 labels: biased scorer gain ${biased.gain.toFixed(3)}, correlation with the true residual ${biased.r.toFixed(3)}, mean |correction| ${biased.meanAbs.toFixed(3)}; unbiased scorer gain ${fair.gain.toFixed(3)}, mean |correction| ${fair.meanAbs.toFixed(3)}`);
    expect(biased.gain).toBeGreaterThan(0.45);
    expect(biased.r).toBeGreaterThan(0.4);
    // Nothing to correct: the uncalibrated corrections would be the coins' noise (≈ 0.1 on average here).
    expect(fair.gain).toBeLessThan(0.35);
    expect(fair.meanAbs).toBeLessThan(biased.meanAbs / 3);
  });

  it('after a retrain that fixed the legal bias but not the other, keeps the errors v2 still makes and retires the fixed ones', async () => {
    const memory = fill();
    // v2 = the true quality plus the api bias only; it sees what v1 saw (the key), matched by content.
    const byKey = new Map(known.map((r) => [encodeVector(r.vector), r]));
    const v2 = (r: (typeof rows)[number]) => Math.min(1, Math.max(0, r.quality + r.bias.api));
    const { minResidual } = errorCompensateDefaults;
    const { kept, fixed, dropped } = await memory.reassess('v2', async (keys) => keys.map((k) => v2(byKey.get(encodeVector(k))!)), minResidual);
    expect(kept).toBe(known.filter((r) => Math.abs(r.quality - v2(r)) >= minResidual).length);
    expect(kept).toBeGreaterThan(50);
    expect({ total: kept + fixed, dropped }).toEqual({ total: MEMORY, dropped: 0 });
    // Every error still made is an api error, now with v2's residual; the legal ones are 0.
    for (const e of memory.toJSON().entries) {
      const r = byKey.get(e.key)!;
      expect(e.modelVersion).toBe('v2');
      if (e.error === 0) continue;
      expect(r.bias.api, r.rollout.id).toBe(-0.3);
      expect(e.error).toBeCloseTo(r.quality - v2(r), 5);
    }
    expect(memory.toJSON().entries.filter((e) => byKey.get(e.key)!.bias.legal !== 0 && byKey.get(e.key)!.bias.api === 0).every((e) => e.error === 0)).toBe(true);
    // On unseen text, the corrections now track v2's residual: api text still corrected up, legal text no longer down.
    const later = unseen.map((r) => ({ ...r, raw: v2(r) }));
    const after = await corrections(memory, 'standardized', 0.1, later);
    const meanOf = (pick: (r: (typeof rows)[number]) => boolean) => {
      const picked = after.filter((_, i) => pick(later[i]!));
      return picked.reduce((a, b) => a + b, 0) / picked.length;
    };
    const onApi = meanOf((r) => r.bias.api !== 0 && r.bias.legal === 0);
    const onLegal = meanOf((r) => r.bias.legal !== 0 && r.bias.api === 0);
    const r = pearson(after, later.map((x) => x.quality - x.raw));
    console.log(`after reassess: ${kept} kept, ${fixed} retired to 0; mean correction on api text ${onApi.toFixed(3)}, on legal text ${onLegal.toFixed(3)}; correlation with v2's residual ${r.toFixed(3)}`);
    // What a wholesale retire would give: no correction anywhere (the api bias is still there).
    expect(onApi).toBeGreaterThan(0.05);
    expect(Math.abs(onLegal)).toBeLessThan(onApi / 4);
    expect(r).toBeGreaterThan(0.3);
  });
});

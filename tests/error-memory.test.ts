import { describe, expect, it } from 'vitest';
import { prng } from '../cli/synthetic.ts';
import type { Envelope, Sample } from '../lib/envelope.ts';
import { errorCompensate, errorCompensateDefaults, type ErrorCompensateConfig } from '../operators/score/error-compensate.ts';
import { decodeVector, encodeVector, ErrorMemory, naturalOrder, type ErrorEntry, type Vector } from '../lib/error-memory.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';

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
    expect(restored.compensation(vec(1, 0.35, -0.5), 2, 0)).toEqual(memory.compensation(vec(1, 0.35, -0.5), 2, 0));
    expect(restored.add(entry(vec(1, 0, 0), 1, 'v2'))).toBe(false);
    restored.add(entry(vec(0, 1, 0), 1, 'v5'));
    restored.add(entry(vec(0, 1, 0), 1, 'v5'));
    expect(restored.size).toBe(3);
    expect(restored.toJSON().entries.map((e) => e.modelVersion)).toEqual(['v4', 'v5', 'v5']);
  });
});

describe('errorCompensate', () => {
  const config: ErrorCompensateConfig = { ...errorCompensateDefaults, score: 'model', k: 4, minSimilarity: 0.5 };
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
    const out = samplesOf(await through(errorCompensate(config, memory, vectorOf), input));
    expect(out[0]!.scores).toEqual({ 'model.raw': 0.9, 'model.correction': -0.3, model: expect.closeTo(0.6, 6) });
    expect(out[1]!.scores).toEqual({ 'model.raw': 0.7, 'model.correction': 0.5, model: 1 });
    expect(out[2]!.scores).toEqual({ 'model.raw': 0.4, 'model.correction': 0, model: 0.4 });
  });

  it('passes samples without the score and other envelopes unchanged; dead-letters a sample it cannot embed', async () => {
    const memory = new ErrorMemory(4);
    const unscored = withVector('u', undefined, undefined);
    const out = await through(errorCompensate(config, memory, vectorOf), [{ kind: 'tick', now: 1 }, unscored, withVector('x', 0.5, undefined)]);
    expect(out[0]).toEqual({ kind: 'tick', now: 1 });
    expect(out[1]).toBe(unscored);
    expect(out[2]).toMatchObject({ kind: 'dead', stage: 'error-compensate', reason: 'no feature vector' });
    expect(await through(errorCompensate(config, memory, vectorOf), [])).toEqual([]);
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
    const compensate = errorCompensate({ score: 'model', k: 8, minSimilarity: 0.7, min: 0, max: 1 }, memory, (s) => vectors.get(s.rollout.id)!);
    const steps: Step[] = [];
    for (let t = 0; t < STEPS; t++) {
      const labelled = steps[t - LABEL_DELAY];
      if (labelled !== undefined) memory.add({ key: labelled.vector, error: labelled.quality - labelled.raw, modelVersion: labelled.version, at: t });
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

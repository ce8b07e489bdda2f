import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, describe, expect, it, onTestFailed } from 'vitest';
import { prng, syntheticRollouts } from '../cli/synthetic.ts';
import { OnnxScoringModel } from '../pipeline/onnx-models.ts';
import { featureDefaults, featureSize, featurize, type FeatureConfig } from '../contracts/features.ts';
import { AnnouncedVersions } from '../operators/filter/staleness-filter.ts';
import type { Decision, Label, ModelUpdate, Rollout } from '../contracts/records.ts';
import { decisionSerde, labelSerde, modelUpdateSerde, registryClient } from '../streams/serde.ts';
import { topicCatalog } from '../streams/topics.ts';
import { admitByStaleness, ReplayBuffer, replayDefaults, StarvationMonitor, starvationDefaults, stalenessDefaults, type ReplayConfig } from '../trainers/admission.ts';
import { decodeCheckpoint, encodeCheckpoint, readCheckpointFile } from '../trainers/checkpoint.ts';
import { choleskySolve, logisticMap, OnlineLogistic, RecursiveRidge, ridgeSolve } from '../trainers/incremental.ts';
import { onnxMetadata } from '../contracts/onnx-codec.ts';
import type { TrainerProcessConfig } from '../trainers/main.ts';
import type { TrainerProgress } from '../contracts/trainer-progress.ts';
import { ReferenceTrainer } from '../trainers/reference-trainer.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil, createCatalogTopics } from './helpers/kafka.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'flywheel-trainers-'));
  dirs.push(d);
  return d;
}

function randomRows(seed: number, rows: number, dim: number, density = 1): Float64Array[] {
  const next = prng(seed);
  return Array.from({ length: rows }, () => Float64Array.from({ length: dim }, () => (next() < density ? next() * 2 - 1 : 0)));
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

describe('direct solvers', () => {
  it('choleskySolve solves an SPD system', () => {
    const n = 12;
    const rows = randomRows(3, 30, n);
    const A = new Float64Array(n * n);
    for (const r of rows) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) A[i * n + j]! += r[i]! * r[j]!;
    for (let i = 0; i < n; i++) A[i * n + i]! += 0.1;
    const x = Float64Array.from({ length: n }, (_, i) => i - 5);
    const b = Float64Array.from({ length: n }, (_, i) => x.reduce((s, v, j) => s + A[i * n + j]! * v, 0));
    expect(maxAbsDiff(choleskySolve(A, b, n), x)).toBeLessThan(1e-9);
    expect(() => choleskySolve(new Float64Array([1, 2, 2, 1]), new Float64Array([1, 1]), 2)).toThrow('not positive definite');
  });
});

describe('RecursiveRidge is exactly the batch ridge solution', () => {
  it('after every update, on dense random data (D = 40)', () => {
    const dim = 40;
    const rows = randomRows(11, 300, dim);
    const truth = randomRows(12, 1, dim)[0]!;
    const noise = prng(13);
    const y = rows.map((r) => r.reduce((s, v, i) => s + v * truth[i]!, 0.7) + (noise() - 0.5) * 0.2);
    const rls = new RecursiveRidge({ dim, lambda: 0.5, biasLambda: 0.05 });
    rows.forEach((r, i) => {
      rls.update(r, y[i]!);
      if ([0, 1, 39, 40, 41, 150, 299].includes(i)) {
        const direct = ridgeSolve(rows.slice(0, i + 1), y.slice(0, i + 1), { lambda: 0.5, biasLambda: 0.05 });
        const got = rls.linearWeights();
        const scale = Math.max(1, maxAbs(direct.weights));
        expect(maxAbsDiff(got.weights, direct.weights) / scale, `after ${i + 1} updates`).toBeLessThan(1e-9);
        expect(Math.abs(got.bias - direct.bias) / scale).toBeLessThan(1e-9);
      }
    });
  });

  it('with example weights and exponential forgetting: the data fade, the prior is restored, not faded', () => {
    const dim = 15;
    const rows = randomRows(21, 200, dim);
    const next = prng(22);
    const y = rows.map(() => next() * 2);
    const weights = rows.map(() => 0.2 + next() * 3);
    // Restored every 16 examples (dim + 1, the default): exact with the whole prior at 16, 32, …, and with ρ = β^k k examples after.
    const rls = new RecursiveRidge({ dim, lambda: 2, forgetting: 0.97 });
    const oldStyle = { lambda: 2, forgetting: 0.97 };
    rows.forEach((r, i) => {
      rls.update(r, y[i]!, weights[i]!);
      const n = i + 1;
      const k = n % 16;
      expect(rls.priorWeight).toBeCloseTo(0.97 ** k, 12);
      if ([5, 16, 100, 112, 200].includes(n)) {
        const direct = ridgeSolve(rows.slice(0, n), y.slice(0, n), { ...oldStyle, weights: weights.slice(0, n), priorWeight: 0.97 ** k });
        expect(maxAbsDiff(rls.linearWeights().weights, direct.weights) / maxAbs(direct.weights), `after ${n}`).toBeLessThan(1e-8);
      }
    });
    // After all 200 examples the prior is still (almost) whole, where fading it would leave 0.97²⁰⁰ ≈ 0.002 of it.
    rls.restorePrior();
    const fixed = ridgeSolve(rows, y, { ...oldStyle, weights });
    const faded = ridgeSolve(rows, y, { ...oldStyle, weights, priorWeight: 0.97 ** 200 });
    expect(maxAbsDiff(rls.linearWeights().weights, fixed.weights) / maxAbs(fixed.weights)).toBeLessThan(1e-8);
    expect(maxAbsDiff(fixed.weights, faded.weights) / maxAbs(fixed.weights)).toBeGreaterThan(0.01);
    // A state written before restorations existed (no priorWeight: the prior faded by β per example) is restored on load.
    const legacy = new RecursiveRidge({ dim, lambda: 2, forgetting: 0.97, priorRestoreEvery: 1_000_000 });
    rows.forEach((r, i) => legacy.update(r, y[i]!, weights[i]!));
    expect(legacy.priorWeight).toBeCloseTo(0.97 ** 200, 12);
    const { P, w } = legacy.arrays();
    const loaded = new RecursiveRidge({ dim, lambda: 2, forgetting: 0.97 }, { P, w, examples: 200 });
    expect(loaded.priorWeight).toBe(1);
    expect(maxAbsDiff(loaded.linearWeights().weights, fixed.weights) / maxAbs(fixed.weights)).toBeLessThan(1e-7);
    // A checkpoint mid-interval (arrays + state(): priorWeight, sinceRestore) resumes exactly.
    const half = new RecursiveRidge({ dim, lambda: 2, forgetting: 0.97 });
    rows.slice(0, 105).forEach((r, i) => half.update(r, y[i]!, weights[i]!));
    const saved = decodeCheckpoint(encodeCheckpoint({ group: 'g', savedAt: 0, offsets: [], state: half.state(), arrays: half.arrays(), admission: null }));
    const resumed = new RecursiveRidge({ dim, lambda: 2, forgetting: 0.97 }, { ...(saved.state as ReturnType<typeof half.state>), P: saved.arrays.P as Float64Array, w: saved.arrays.w as Float64Array });
    expect(resumed.priorWeight).toBe(half.priorWeight);
    rows.slice(105).forEach((r, i) => resumed.update(r, y[105 + i]!, weights[105 + i]!));
    resumed.restorePrior();
    expect(maxAbsDiff(resumed.linearWeights().weights, rls.linearWeights().weights)).toBeLessThan(1e-12);
    expect(() => new RecursiveRidge({ dim, lambda: 2, forgetting: 0.97, priorRestoreEvery: 0 })).toThrow(/priorRestoreEvery/);
  });

  it('at the pipeline dimension (1024 hashed buckets + numeric tail) on featurized rollouts, and resumes from its arrays', () => {
    const features: FeatureConfig = { ...featureDefaults, rewardNames: ['correct'] };
    const dim = featureSize(features);
    const rollouts = syntheticRollouts({ groups: 150, invalidRate: 0, garbage: 0 }).rollouts;
    const X = rollouts.map((r) => Float64Array.from(featurize(r, features)));
    const y = rollouts.map((r) => r.rewards.correct ?? 0);
    const started = performance.now();
    const first = new RecursiveRidge({ dim, lambda: 1 });
    X.slice(0, 300).forEach((x, i) => first.update(x, y[i]!));
    // A "restart": a new learner from the checkpointed arrays continues exactly.
    const arrays = decodeCheckpoint(encodeCheckpoint({ group: 'g', savedAt: 0, offsets: [], state: null, arrays: first.arrays(), admission: null })).arrays;
    const resumed = new RecursiveRidge({ dim, lambda: 1 }, { P: arrays.P as Float64Array, w: arrays.w as Float64Array, examples: 300 });
    X.slice(300).forEach((x, i) => resumed.update(x, y[300 + i]!));
    const perUpdateMs = (performance.now() - started) / X.length;
    const direct = ridgeSolve(X, y, { lambda: 1 });
    expect(dim).toBe(1031);
    expect(maxAbsDiff(resumed.linearWeights().weights, direct.weights)).toBeLessThan(1e-9);
    expect(Math.abs(resumed.linearWeights().bias - direct.bias)).toBeLessThan(1e-9);
    console.log(`RLS at D=${dim}: ${perUpdateMs.toFixed(2)} ms per update (${X.length} updates)`);
  });
});

describe('OnlineLogistic (online Newton)', () => {
  const dim = 10;
  const rows = randomRows(31, 3000, dim);
  const truth = Float64Array.from(randomRows(32, 1, dim)[0]!, (v) => v * 3);
  const coin = prng(33);
  const y = rows.map((r) => (coin() < 1 / (1 + Math.exp(-r.reduce((s, v, i) => s + v * truth[i]!, -0.5))) ? 1 : 0));

  for (const forgetting of [1, 0.99]) {
    it(`is exactly the minimiser of the prior plus each example’s second-order expansion at the weights it met (forgetting ${forgetting}: the expansions fade, the prior is restored)`, () => {
      const lambda = 1;
      const model = new OnlineLogistic({ dim, lambda, forgetting, priorRestoreEvery: 50 });
      const n = dim + 1;
      // The data's part of the precision and of the linear term; the prior is added at the end.
      const H = new Float64Array(n * n);
      const rhs = new Float64Array(n);
      const z = new Float64Array(n);
      rows.slice(0, 420).forEach((r, k) => {
        const before = model.linearWeights();
        const wPrev = Float64Array.from([...before.weights, before.bias]);
        const p = model.predict(r);
        const g = p - y[k]!;
        const h = p * (1 - p);
        z.set(r);
        z[dim] = 1;
        const zw = z.reduce((s, v, i) => s + v * wPrev[i]!, 0);
        for (let i = 0; i < n; i++) {
          rhs[i] = forgetting * rhs[i]! + z[i]! * (h * zw - g);
          for (let j = 0; j < n; j++) H[i * n + j] = forgetting * H[i * n + j]! + h * z[i]! * z[j]!;
        }
        expect(model.update(r, y[k]!)).toBeCloseTo(p, 12);
      });
      // 420 = 8 × 50 + 20: the prior was last restored 20 examples ago.
      const rho = forgetting ** 20;
      expect(model.priorWeight).toBeCloseTo(rho, 12);
      for (let i = 0; i < n; i++) H[i * n + i]! += rho * lambda;
      const surrogate = choleskySolve(H, rhs, n);
      const got = model.linearWeights();
      expect(maxAbsDiff([...got.weights, got.bias], surrogate)).toBeLessThan(1e-9);
    });
  }

  it('one update from the prior is one exact Newton step on the regularised objective', () => {
    const model = new OnlineLogistic({ dim: 3, lambda: 2 });
    const x = [0.5, -1, 2];
    model.update(x, 1);
    // Newton from w = 0: H = Λ + ¼ z z', gradient = (½ − 1) z.
    const z = [...x, 1];
    const H = new Float64Array(16);
    for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) H[i * 4 + j] = (i === j ? 2 : 0) + 0.25 * z[i]! * z[j]!;
    const step = choleskySolve(H, Float64Array.from(z, (v) => -0.5 * v), 4);
    const got = model.linearWeights();
    expect(maxAbsDiff([...got.weights, got.bias], step.map((v) => -v))).toBeLessThan(1e-12);
  });

  it('approaches the exact L2 logistic MAP (approximate: stated gap on 3000 examples)', () => {
    const model = new OnlineLogistic({ dim, lambda: 1 });
    rows.forEach((r, k) => model.update(r, y[k]!));
    const map = logisticMap(rows, y, { lambda: 1 });
    const got = model.linearWeights();
    const online = [...got.weights, got.bias];
    const exact = [...map.weights, map.bias];
    const relative = Math.sqrt(online.reduce((s, v, i) => s + (v - exact[i]!) ** 2, 0)) / Math.sqrt(exact.reduce((s, v) => s + v * v, 0));
    const loss = (w: number[]) =>
      rows.reduce((s, r, k) => {
        const p = 1 / (1 + Math.exp(-(r.reduce((t, v, i) => t + v * w[i]!, 0) + w[dim]!)));
        return s - (y[k]! * Math.log(p) + (1 - y[k]!) * Math.log(1 - p));
      }, 0) / rows.length;
    console.log(`online logistic vs exact MAP: relative weight error ${relative.toFixed(4)}, mean log-loss ${loss(online).toFixed(5)} vs ${loss(exact).toFixed(5)}`);
    // Measured: ≈6% relative weight error, ≈0.001 nats of mean log-loss above the optimum.
    expect(relative).toBeLessThan(0.1);
    expect(loss(online) - loss(exact)).toBeLessThan(0.002);
    expect(loss(online)).toBeGreaterThanOrEqual(loss(exact) - 1e-12); // the MAP is the optimum
  });
});

describe('ONNX export scores what the learner predicts', () => {
  it('ridge (linear) and logistic, through onnxruntime', async () => {
    const dim = 50;
    const rows = randomRows(41, 120, dim, 0.3);
    const ridge = new RecursiveRidge({ dim, lambda: 0.3 });
    const logistic = new OnlineLogistic({ dim, lambda: 0.3 });
    rows.forEach((r, i) => {
      ridge.update(r, i % 3 === 0 ? 1 : 0);
      logistic.update(r, i % 3 === 0 ? 1 : 0);
    });
    const probe = randomRows(42, 16, dim);
    const input = new Float32Array(probe.length * dim);
    probe.forEach((r, i) => input.set(r, i * dim));
    for (const model of [ridge, logistic]) {
      const bytes = model.toOnnx(`${model.kind}-v7`);
      expect(onnxMetadata(bytes).version).toBe(`${model.kind}-v7`);
      const session = await InferenceSession.create(bytes);
      const out = (await session.run({ features: new Tensor('float32', input, [probe.length, dim]) })).score!.data as Float32Array;
      // The in-TS prediction on the same float32 inputs; ONNX holds float32 weights.
      const expected = probe.map((r) => model.predict(Float64Array.from(Float32Array.from(r))));
      expect(maxAbsDiff(out, expected)).toBeLessThan(1e-5);
      await session.release();
    }
  });
});

describe('admission', () => {
  const rollout = (version: string, source?: string): Rollout => ({
    id: `r-${version}-${source}`,
    run_id: 'r',
    prompt_id: 'p',
    prompt: 'q',
    group_id: 'g',
    response: 'a',
    steps: [],
    model_name: 'policy',
    model_version: version,
    rewards: {},
    logprobs: null,
    token_count: 1,
    created_at: 0,
    tags: source === undefined ? {} : { source },
  });

  it('staleness tolerance per source, by version lag from announcements or a lag function', () => {
    const versions = new AnnouncedVersions(['v1', 'v2', 'v3', 'v4'].map((version, i) => ({ model: 'policy', version, announcedAt: i })));
    const config = { ...stalenessDefaults, maxLag: { synthetic: 0, human: Number.POSITIVE_INFINITY }, defaultMaxLag: 1, onUnknown: 'reject' as const };
    const verdict = (version: string, source?: string) => admitByStaleness(rollout(version, source), config, versions);
    expect(verdict('v4', 'synthetic')).toEqual({ admitted: true, source: 'synthetic', lag: 0 });
    expect(verdict('v3', 'synthetic')).toEqual({ admitted: false, source: 'synthetic', lag: 1, reason: 'stale:model_version' });
    expect(verdict('v1', 'human')).toMatchObject({ admitted: true, lag: 3 });
    expect(verdict('v3', 'other')).toMatchObject({ admitted: true, lag: 1 });
    expect(verdict('v2')).toMatchObject({ admitted: false, source: '', lag: 2, reason: 'stale:model_version' });
    expect(verdict('v9', 'human')).toMatchObject({ admitted: false, reason: 'stale:unknown_version' });
    expect(admitByStaleness(rollout('v9', 'human'), { ...config, onUnknown: 'admit' }, versions)).toMatchObject({ admitted: true, lag: undefined });
    const lag = (_model: string, version: string) => Number(version.slice(1));
    expect(admitByStaleness(rollout('v2', 'x'), { ...config, tag: 'dataset' }, lag)).toMatchObject({ admitted: false, source: '', lag: 2 });
  });

  const replayConfig = (o: Partial<ReplayConfig>): ReplayConfig => ({ ...replayDefaults, ...o });
  const items = (n: number, score: (i: number) => number, at = () => 0) => Array.from({ length: n }, (_, i) => ({ id: `i${i}`, value: i, at: at(), score: score(i) }));

  it('replay: priority from score and recency', () => {
    const byScore = new ReplayBuffer<number>(replayConfig({ capacity: 1000, maxReuse: 1_000_000, coolDownMs: 0, recencyWeight: 0, scoreWeight: 1, seed: 5 }));
    byScore.add(items(100, (i) => (i < 50 ? 0 : 1)), 0);
    let high = 0;
    let total = 0;
    for (let round = 0; round < 200; round++) {
      for (const d of byScore.draw(5, round)) {
        total++;
        if (d.value >= 50) high++;
      }
    }
    expect(high / total).toBeGreaterThan(0.9); // priority 1 vs 1e-9: practically only high scores
    const byRecency = new ReplayBuffer<number>(replayConfig({ capacity: 1000, maxReuse: 1_000_000, coolDownMs: 0, recencyWeight: 1, recencyHalfLifeMs: 1000, scoreWeight: 0, seed: 6 }));
    byRecency.add(items(10, () => 0, () => 0), 10_000); // ten half-lives old: priority ≈ 0.001
    byRecency.add(items(10, () => 0, () => 10_000).map((e) => ({ ...e, id: `new-${e.id}` })), 10_000);
    let recent = 0;
    for (let round = 0; round < 200; round++) recent += byRecency.draw(1, 10_000).filter((d) => d.id.startsWith('new-')).length;
    expect(recent).toBeGreaterThan(190);
    expect(byRecency.priority({ at: 9000, score: 0 }, 10_000)).toBeCloseTo(0.5, 6);
  });

  it('replay: reuse limit, cool-down, bounded size', () => {
    const buffer = new ReplayBuffer<number>(replayConfig({ capacity: 100, maxReuse: 2, coolDownMs: 1000, perBatch: 10, seed: 7 }));
    buffer.add(items(5, () => 1), 0);
    expect(buffer.draw(10, 999)).toEqual([]); // cooling down since their fresh use at 0
    const first = buffer.draw(10, 1000);
    expect(first.map((d) => d.id).sort()).toEqual(['i0', 'i1', 'i2', 'i3', 'i4']);
    expect(first.every((d) => d.uses === 1)).toBe(true);
    expect(buffer.draw(10, 1999)).toEqual([]);
    const second = buffer.draw(10, 2000);
    expect(second.every((d) => d.uses === 2)).toBe(true);
    expect(buffer.size).toBe(0); // used up
    expect(buffer.draw(10, 10_000)).toEqual([]);

    const bounded = new ReplayBuffer<number>(replayConfig({ capacity: 5, recencyWeight: 0, scoreWeight: 1, seed: 8 }));
    bounded.add(items(10, (i) => i), 0);
    expect(bounded.size).toBe(5);
    expect(['i5', 'i6', 'i7', 'i8', 'i9'].every((id) => bounded.has(id))).toBe(true);
  });

  it('replay: deterministic given the seed, and across snapshot/restore', () => {
    const config = replayConfig({ capacity: 50, maxReuse: 3, coolDownMs: 10, seed: 42, scoreWeight: 1, recencyWeight: 1, recencyHalfLifeMs: 100 });
    const script = (buffer: ReplayBuffer<number>, from: number, to: number) => {
      const out: string[] = [];
      for (let t = from; t < to; t++) {
        if (t % 3 === 0) buffer.add(items(4, (i) => (i * t) % 5).map((e) => ({ ...e, id: `${t}-${e.id}`, at: t * 10 })), t * 10);
        out.push(...buffer.draw(3, t * 10).map((d) => `${d.id}#${d.uses}`));
      }
      return out;
    };
    const a = script(new ReplayBuffer(config), 0, 60);
    const b = script(new ReplayBuffer(config), 0, 60);
    expect(a).toEqual(b);
    expect(a.length).toBeGreaterThan(50);
    expect(script(new ReplayBuffer({ ...config, seed: 43 }), 0, 60)).not.toEqual(a);
    const half = new ReplayBuffer<number>(config);
    const head = script(half, 0, 30);
    const restored = ReplayBuffer.fromSnapshot<number>(config, JSON.parse(JSON.stringify(half.snapshot())));
    expect([...head, ...script(restored, 30, 60)]).toEqual(a);
  });

  it('starvation: idle and rate conditions, repeat, clear', () => {
    const monitor = new StarvationMonitor('t1', { ...starvationDefaults, idleMs: 1000, minRate: 10, windowMs: 2000, repeatMs: 5000 }, 0);
    expect(monitor.check(500)).toBeNull();
    const idle = monitor.check(1001);
    expect(idle).toMatchObject({ kind: 'starvation', trainer: 't1', reason: 'idle', since: 0, admitted_rate: 0, last_admitted_at: null });
    expect(monitor.check(2000)).toBeNull(); // no repeat before repeatMs
    monitor.record(100, 2100, { 'stale:model_version': 4 });
    expect(monitor.check(2100)).toMatchObject({ kind: 'starvation-cleared', since: 0 }); // 100 in 2 s = 50/s
    monitor.record(5, 3500);
    expect(monitor.check(3600)).toBeNull();
    // Window (2 s) now holds only the 5 at 3500 (the 100 at 2100 aged out at 4100): 2.5/s < 10/s.
    const slow = monitor.check(4200);
    expect(slow).toMatchObject({ kind: 'starvation', reason: 'rate', since: 2200, min_rate: 10 });
    expect(slow!.admitted_rate).toBeCloseTo(2.5, 6);
    expect(monitor.check(9200)).toMatchObject({ kind: 'starvation', reason: 'idle', since: 2200 }); // repeated, same spell
    expect(monitor.status(9200)).toMatchObject({ starving: true, admitted_total: 105 });
  });
});

describe('reference trainer on real Kafka: labels joined with decisions, ONNX announced, restart continues exactly', () => {
  it('trains ridge on (features, label) pairs exactly once across a restart and announces loadable models', async () => {
    const prefix = uniquePrefix('reftrainer');
    const catalog = topicCatalog(prefix);
    const kafka = testKafka('reftrainer');
    await createCatalogTopics(kafka, catalog);
    const registry = registryClient(connections.schemaRegistryUrl);
    const decisions = await decisionSerde(registry, catalog.decisions);
    const labels = await labelSerde(registry, catalog.labels);
    const features: FeatureConfig = { ...featureDefaults, dims: 128, rewardNames: [] };
    const data = syntheticRollouts({ groups: 120, runId: prefix, invalidRate: 0, garbage: 0 }).rollouts;
    const decision = (r: Rollout, i: number): Decision => ({
      rollout: r,
      scores: {},
      duplicate_of: null,
      dedupe_method: null,
      reasons: [],
      decision: i % 3 === 0 ? 'rejected' : 'accepted',
      reason: i % 3 === 0 ? 'below_min:rule' : 'accepted',
      config_hash: 'h',
      scorer_version: null,
      annotations: {},
      pipeline_run: prefix,
      source: { topic: catalog.rollouts, partition: 0, offset: String(i) },
    });
    // Verified labels: 1/0 correctness. Every 7th rollout gets no label; labels for the first
    // quarter arrive before their decisions, the rest after.
    const labelled = data.filter((_, i) => i % 7 !== 3);
    const label = (r: Rollout): Label => ({ rollout_id: r.id, value: r.rewards.correct ?? 0, verifier: 'test', at: r.created_at });
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const sendLabels = async (rs: Rollout[]) =>
      producer.send({ topic: catalog.labels, messages: await Promise.all(rs.map(async (r) => ({ key: r.id, value: await labels.serialize(label(r)) }))) });
    const sendDecisions = async (rs: Rollout[]) =>
      producer.send({ topic: catalog.decisions, messages: await Promise.all(rs.map(async (r) => ({ key: r.group_id, value: await decisions.serialize(decision(r, data.indexOf(r))) }))) });
    const quarter = Math.floor(labelled.length / 4);
    await sendLabels(labelled.slice(0, quarter));
    await sendDecisions(data.slice(0, data.length / 2));

    const dir = tempDir();
    const options = {
      client: { kafka, registry, catalog, groupId: `${prefix}.ref`, trainer: 'reference', checkpointPath: join(dir, 'reference.ckpt') },
      model: 'scorer',
      features,
      learner: { kind: 'ridge' as const, lambda: 1 },
      labels: { source: 'topic' as const, ttlMs: 24 * 3600_000, maxPending: 10_000 },
      updateEvery: 100,
      checkpointEvery: 1,
      artifactDir: join(dir, 'models'),
      versionPrefix: 'v',
      batch: { maxRecords: 50, maxWaitMs: 200 },
    };
    const started = Date.now();
    const first = await ReferenceTrainer.open(options);
    const firstRun = first.run();
    await waitUntil(() => first.stats.version >= 1, 'the first version', 60_000);
    await first.stop();
    await firstRun;
    const afterFirst = first.stats;
    expect(afterFirst.examples).toBeGreaterThan(0);
    expect(afterFirst.examples).toBeLessThan(labelled.length);

    // The rest of the data arrives while no trainer runs; a new process resumes from the checkpoint.
    await sendLabels(labelled.slice(quarter));
    await sendDecisions(data.slice(data.length / 2));
    await producer.disconnect();
    const second = await ReferenceTrainer.open(options);
    expect(second.announced.map((u) => u.version)).toEqual([`v${second.stats.version}`]); // the checkpointed update, announced again
    const secondRun = second.run();
    await waitUntil(() => second.stats.examples >= labelled.length, 'every labelled example', 60_000);
    // updateEvery need not divide the total: the rest is published on stop.
    await second.stop({ publish: true });
    await secondRun;
    const elapsed = Date.now() - started;
    const stats = second.stats;
    expect(stats.examples, 'each labelled example trained exactly once').toBe(labelled.length);
    expect(stats.pendingLabels).toBe(0);
    expect(stats.pendingDecisions).toBe(data.length - labelled.length); // the unlabelled ones wait

    // The exported model equals the exact ridge solution over every (features, label) pair once.
    const learner = second.learner;
    const X = labelled.map((r) => Float64Array.from(featurize(r, features)));
    const y = labelled.map((r) => r.rewards.correct ?? 0);
    const direct = ridgeSolve(X, y, { lambda: 1 });
    // Rounding only (the join trains in arrival order, the direct solve sums in another)…
    expect(maxAbsDiff(learner.linearWeights().weights, direct.weights)).toBeLessThan(1e-7);
    // …whereas one example missing (or twice) moves the solution by orders of magnitude more.
    const withoutOne = ridgeSolve(X.slice(1), y.slice(1), { lambda: 1 });
    const withOneTwice = ridgeSolve([X[0]!, ...X], [y[0]!, ...y], { lambda: 1 });
    expect(maxAbsDiff(withoutOne.weights, direct.weights)).toBeGreaterThan(1e-4);
    expect(maxAbsDiff(withOneTwice.weights, direct.weights)).toBeGreaterThan(1e-4);

    // Announcements on the topic: versions increase, artifacts load, checksums match, scores agree.
    const serde = await modelUpdateSerde(registry, catalog.modelUpdates);
    const all = await consumeTopic(kafka, catalog.modelUpdates, (m) => m.length >= stats.version, { settleMs: 500 });
    const updates: ModelUpdate[] = await Promise.all(all.map((m) => serde.deserialize(m.value!)));
    const distinct = [...new Set(updates.map((u) => u.version))];
    expect(distinct).toEqual(Array.from({ length: stats.version }, (_, i) => `v${i + 1}`));
    expect(all.every((m) => m.key!.toString() === 'scorer')).toBe(true);
    for (const u of updates) {
      const bytes = readFileSync(u.artifact);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(u.checksum);
      expect(u.model).toBe('scorer');
      expect(u.metrics.examples).toBeGreaterThan(0);
      expect(Number.isFinite(u.metrics.train_loss)).toBe(true);
    }
    const last = updates[updates.length - 1]!;
    expect(last.metrics.examples).toBe(stats.examples);
    const scorer = await OnnxScoringModel.load(last.artifact);
    expect(scorer.version).toBe(last.version);
    const probe = data.slice(0, 20).map((r) => featurize(r, features));
    const scores = await scorer.score(probe);
    expect(maxAbsDiff(scores, probe.map((x) => learner.predict(Float64Array.from(x))))).toBeLessThan(1e-4);
    await scorer.dispose();
    // Progress reports (trainers/progress.ts) for the ClickHouse sink: the last one covers everything.
    const progress = (await consumeTopic(kafka, catalog.trainerProgress, (m) => m.some((x) => (JSON.parse(x.value!.toString()) as TrainerProgress).examples === stats.examples), { settleMs: 0 }))
      .map((m) => JSON.parse(m.value!.toString()) as TrainerProgress);
    const lastReport = progress.find((p) => p.examples === stats.examples)!;
    expect(lastReport).toMatchObject({ trainer: 'reference', model_version: `v${stats.version}`, committed_topic: catalog.decisions });
    expect(lastReport.committed_partitions.sort()).toEqual([0, 1, 2]);
    console.log(`reference trainer: ${stats.examples} examples, ${stats.version} versions, ${elapsed} ms including a restart`);
  }, 120_000);
});


describe('reference trainer process killed with SIGKILL at random points', () => {
  it('restarts from its checkpoint and ends with the exact ridge solution over every labelled example once', async () => {
    const prefix = uniquePrefix('reftrainer-kill');
    const catalog = topicCatalog(prefix);
    const kafka = testKafka('reftrainer-kill');
    await createCatalogTopics(kafka, catalog);
    const registry = registryClient(connections.schemaRegistryUrl);
    const decisions = await decisionSerde(registry, catalog.decisions);
    const labels = await labelSerde(registry, catalog.labels);
    // The pipeline's default layout: 1024 hashed buckets + 6 numeric features.
    const features: FeatureConfig = { ...featureDefaults };
    const data = syntheticRollouts({ groups: 250, runId: prefix, invalidRate: 0, garbage: 0 }).rollouts;
    const labelled = data.filter((_, i) => i % 7 !== 3);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    await producer.send({
      topic: catalog.labels,
      messages: await Promise.all(labelled.map(async (r) => ({ key: r.id, value: await labels.serialize({ rollout_id: r.id, value: r.rewards.correct ?? 0, verifier: 'test', at: r.created_at }) }))),
    });
    await producer.send({
      topic: catalog.decisions,
      messages: await Promise.all(
        data.map(async (r, i) => ({
          key: r.group_id,
          value: await decisions.serialize({
            rollout: r, scores: {}, duplicate_of: null, dedupe_method: null, reasons: [], decision: 'accepted', reason: 'accepted',
            config_hash: 'h', scorer_version: null, annotations: {}, pipeline_run: prefix, source: { topic: catalog.rollouts, partition: 0, offset: String(i) },
          }),
        })),
      ),
    });
    await producer.disconnect();

    const dir = tempDir();
    const checkpoint = join(dir, 'reference.ckpt');
    const config: TrainerProcessConfig = {
      prefix, group: `${prefix}.ref`, name: 'reference-kill', checkpoint, artifactDir: join(dir, 'models'), model: 'scorer', features,
      learner: { kind: 'ridge', lambda: 1 }, labels: { source: 'topic', ttlMs: 24 * 3600_000, maxPending: 100_000 },
      updateEvery: 200, checkpointEvery: 1, versionPrefix: 'v', batch: { maxRecords: 40, maxWaitMs: 200 }, sessionTimeout: 6000,
    };
    const configFile = join(dir, 'trainer.json');
    writeFileSync(configFile, JSON.stringify(config));
    const log: string[] = [];
    const t0 = Date.now();
    const phase = (what: string) => log.push(`[test +${Date.now() - t0} ms] ${what}\n`);
    onTestFailed(() => console.error(`--- trainer log ---\n${log.join('').split('\n').filter((l) => !l.startsWith('{"examples"')).join('\n')}`));
    const start = (env: NodeJS.ProcessEnv = {}) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'trainers/main.ts', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
      const progress = { examples: -1, restored: -1, metrics: '' };
      child.stdout!.on('data', (d: Buffer) => {
        log.push(d.toString());
        for (const line of d.toString().split('\n').filter((l) => l.startsWith('{'))) {
          const event = JSON.parse(line) as { examples?: number; started?: boolean; metrics?: string };
          if (event.metrics !== undefined) progress.metrics = event.metrics;
          if (event.started) progress.restored = event.examples!;
          if (typeof event.examples === 'number') progress.examples = Math.max(progress.examples, event.examples);
        }
      });
      child.stderr!.on('data', (d: Buffer) => log.push(d.toString()));
      const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      return { child, progress, exit };
    };
    const random = prng(Date.now() % 1_000_000);
    const restoredCounts: number[] = [];
    let previous = 0;
    for (let kill = 0; kill < 2; kill++) {
      const run = start();
      const target = Math.min(previous + 100 + Math.floor(random() * 200), labelled.length - 100);
      phase(`start ${kill + 1}, kill past ${target}`);
      await waitUntil(() => run.progress.examples >= target, `training past ${target} examples`, 45_000);
      await new Promise((r) => setTimeout(r, random() * 300)); // anywhere: training, checkpoint write, commit, announce
      run.child.kill('SIGKILL');
      await run.exit;
      phase(`killed at ${run.progress.examples}`);
      restoredCounts.push(run.progress.restored);
      previous = run.progress.examples;
    }
    // The last run serves /metrics (FLYWHEEL_HTTP_PORT=0: a free port): its progress gauge reaches every example.
    const last = start({ FLYWHEEL_HTTP_PORT: '0' });
    phase('start 3');
    await waitUntil(() => last.progress.examples >= labelled.length, 'every labelled example', 60_000);
    expect(last.progress.metrics).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const examplesGauge = async () => {
      const text = await (await fetch(last.progress.metrics)).text();
      return Number(/^flywheel_trainer_examples\{[^}]*trainer="reference-kill"[^}]*\} (\S+)$/m.exec(text)?.[1] ?? NaN);
    };
    let gauge = NaN;
    await waitUntil(async () => (gauge = await examplesGauge()) === labelled.length, 'the trainer-examples gauge to reach every example', 20_000);
    expect(gauge).toBe(labelled.length);
    phase('SIGTERM');
    last.child.kill('SIGTERM');
    expect(await Promise.race([last.exit, new Promise((r) => setTimeout(() => r('still running 30 s after SIGTERM'), 30_000))])).toBe(0);
    phase('exited');
    restoredCounts.push(last.progress.restored);
    console.log(`killed twice: restarts resumed from ${restoredCounts.join(', ')} checkpointed examples (killed at ≥ ${previous}); ${labelled.length} examples at the end`);
    // Each restart resumed from a checkpoint (some work since it was redone).
    expect(restoredCounts[0]).toBe(0);
    expect(restoredCounts[1]).toBeGreaterThan(0);
    expect(last.progress.examples).toBe(labelled.length);

    const final = (await readCheckpointFile<{ examples: number; version: number }>(checkpoint))!;
    expect(final.state.examples).toBe(labelled.length);
    const X = labelled.map((r) => Float64Array.from(featurize(r, features)));
    const y = labelled.map((r) => r.rewards.correct ?? 0);
    const direct = ridgeSolve(X, y, { lambda: 1 });
    const w = final.arrays.w as Float64Array;
    expect(w.length).toBe(featureSize(features) + 1);
    expect(maxAbsDiff(w.slice(0, -1), direct.weights)).toBeLessThan(1e-7);
    expect(Math.abs(w[w.length - 1]! - direct.bias)).toBeLessThan(1e-7);

    const serde = await modelUpdateSerde(registry, catalog.modelUpdates);
    const updates = await Promise.all(
      (await consumeTopic(kafka, catalog.modelUpdates, (m) => m.length >= final.state.version, { settleMs: 500 })).map((m) => serde.deserialize(m.value!)),
    );
    // Re-announcements after a restart repeat a version; the versions themselves run v1…vK.
    expect([...new Set(updates.map((u) => u.version))]).toEqual(Array.from({ length: final.state.version }, (_, i) => `v${i + 1}`));
    const newest = updates[updates.length - 1]!;
    expect(newest.metrics.examples).toBe(labelled.length);
    expect(createHash('sha256').update(readFileSync(newest.artifact)).digest('hex')).toBe(newest.checksum);
  }, 240_000);
});

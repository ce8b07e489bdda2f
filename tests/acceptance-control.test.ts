import { describe, expect, it } from 'vitest';
import { prng } from '../cli/synthetic.ts';
import { acceptanceControl, acceptanceControlDefaults, acceptanceControlStore, type AcceptanceControlConfig } from '../operators/filter/acceptance-control.ts';
import { groupFilter, groupFilterDefaults, groupFilterStore } from '../operators/filter/group-filter.ts';
import { stepThreshold } from '../lib/adaptive-threshold.ts';
import { isRejected, type Sample } from '../lib/envelope.ts';
import { acceptanceControlConfig } from '../pipeline/operator-configs.ts';
import { parseConfig } from '../pipeline/config.ts';
import { builtin, groupFilter as groupFilterStep, validate } from '../pipeline/builtin-steps.ts';
import { topology } from '../pipeline/topology.ts';
import { PartitionState } from '../streams/state-store.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';

function gaussian(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/** 24 000 scores whose distribution drifts: the mean rises from 0 to 4, the spread halves. */
function driftingScores(seed: number): number[] {
  const rand = prng(seed);
  const n = 24_000;
  return Array.from({ length: n }, (_, i) => 4 * (i / n) + (1 - 0.5 * (i / n)) * gaussian(rand));
}

const scored = (id: string, score: number, group = id): Sample => ({ ...sample({ id, group_id: group, prompt_id: group }), scores: { model: score } });

describe('acceptance-control, rate', () => {
  const config: AcceptanceControlConfig = { ...acceptanceControlDefaults, score: 'model', target: 0.3 };

  it('holds the accepted fraction at the target on a drifting score where a fixed threshold drifts away', async () => {
    const scores = driftingScores(7);
    const state = new PartitionState(0, [acceptanceControlStore.name]);
    const store = state.store(acceptanceControlStore.name);
    let operator = acceptanceControl(config, store);
    const accepted: boolean[] = [];
    for (let b = 0; b < scores.length / 500; b++) {
      // A restart every 8 batches: a new operator on the committed store goes on from its threshold.
      if (b % 8 === 7) operator = acceptanceControl(config, store);
      const out = samplesOf(await through(operator, scores.slice(b * 500, (b + 1) * 500).map((s, i) => scored(`r${b}-${i}`, s))));
      state.commit();
      accepted.push(...out.map((s) => !isRejected(s)));
    }
    // The fixed threshold a user would pick: the first 2 000 scores' 0.7 quantile (30 % accepted then).
    const fixed = [...scores.slice(0, 2000)].sort((a, b) => a - b)[1400]!;
    const windows = Array.from({ length: scores.length / 1000 }, (_, w) => w * 1000);
    const rate = (flags: boolean[], from: number) => flags.slice(from, from + 1000).filter(Boolean).length / 1000;
    const controlled = windows.map((w) => rate(accepted, w));
    const fixedRates = windows.map((w) => rate(scores.map((s) => s >= fixed), w));
    // The last 10 windows: within ±2 points of the target; the fixed threshold is far off.
    for (const r of controlled.slice(-10)) expect(Math.abs(r - 0.3)).toBeLessThanOrEqual(0.02);
    for (const r of fixedRates.slice(-10)) expect(Math.abs(r - 0.3)).toBeGreaterThan(0.3);
  });

  it('annotates the threshold, keeps it in the named store across a restart, and handles rejected and unscored samples', async () => {
    const state = new PartitionState(0, [acceptanceControlStore.name]);
    const store = state.store(acceptanceControlStore.name);
    const first = samplesOf(await through(acceptanceControl({ ...config, initial: 0.5 }, store), [scored('a', 0.9), scored('b', 0.1)]));
    expect(first.map((s) => s.reasons)).toEqual([[], ['acceptance:below_threshold']]);
    expect(first[0]!.annotations['acceptance.threshold']).toBe('0.5');
    const stored = JSON.parse(store.get('rate')!) as { threshold: number };
    expect(stored.threshold).not.toBe(0.5);
    state.commit();
    const restarted = acceptanceControl({ ...config, initial: 0.5 }, store);
    const upstreamRejected = { ...scored('c', 5), reasons: ['exact_dedupe:duplicate'] };
    const unscored = sample({ id: 'd' });
    const next = samplesOf(await through(restarted, [scored('e', 0.3), upstreamRejected, unscored]));
    expect(next[0]!.annotations['acceptance.threshold']).toBe(String(stored.threshold));
    expect(next[1]).toEqual(upstreamRejected);
    expect(next[2]!.reasons).toEqual(['acceptance:no_score']);
    const passing = samplesOf(await through(acceptanceControl({ ...config, onMissing: 'pass' }, store), [unscored]));
    expect(passing[0]!.reasons).toEqual([]);
  });

  it('shares its step with the explore-exploit controller (lib/adaptive-threshold.ts)', () => {
    const step = { gain: 0.5, maxStep: 0.05, deadBand: 0.05, min: 0, max: 1 };
    expect(stepThreshold(0.5, 0.2, step)).toBeCloseTo(0.55, 12);
    expect(stepThreshold(0.5, -0.06, step)).toBeCloseTo(0.47, 12);
    expect(stepThreshold(0.5, 0.04, step)).toBe(0.5);
    expect(stepThreshold(0.99, 1, step)).toBe(1);
  });
});

describe('acceptance-control, top-k', () => {
  it('accepts exactly the k best of each complete group released by the group filter', async () => {
    const state = new PartitionState(0, [groupFilterStore.name, acceptanceControlStore.name]);
    const groups = groupFilter({ ...groupFilterDefaults, groupSize: 8, minVarianceSamples: 99 }, state.store(groupFilterStore.name));
    const topK = acceptanceControl({ ...acceptanceControlDefaults, mode: 'top-k', score: 'model', k: 2 }, state.store(acceptanceControlStore.name));
    const rand = prng(3);
    // 30 groups of 8, interleaved as generators send them; one sample per group rejected upstream.
    const input = Array.from({ length: 8 }, (_, i) =>
      Array.from({ length: 30 }, (_, g) => {
        const s = scored(`g${g}-${i}`, rand(), `g${g}`);
        return i === 5 ? { ...s, reasons: ['rule:too_long'] } : s;
      }),
    ).flat();
    const released: Sample[] = [];
    for (let b = 0; b < input.length; b += 48) {
      released.push(...samplesOf(await through(groups, input.slice(b, b + 48))));
      state.commit();
    }
    const out = samplesOf(await through(topK, released));
    expect(out).toHaveLength(input.length);
    const byGroup = new Map<string, Sample[]>();
    for (const s of out) byGroup.set(s.rollout.group_id, [...(byGroup.get(s.rollout.group_id) ?? []), s]);
    expect(byGroup.size).toBe(30);
    for (const [, members] of byGroup) {
      const accepted = members.filter((s) => !isRejected(s));
      expect(accepted).toHaveLength(2);
      const candidates = members.filter((s) => !s.reasons.includes('rule:too_long'));
      const best = [...candidates].sort((a, b) => b.scores.model! - a.scores.model!).slice(0, 2);
      expect(new Set(accepted.map((s) => s.rollout.id))).toEqual(new Set(best.map((s) => s.rollout.id)));
      expect(candidates.filter((s) => isRejected(s)).every((s) => s.reasons.includes('acceptance:not_top_k'))).toBe(true);
    }
  });

  it('dead-letters samples that did not come through a group filter', async () => {
    const topK = acceptanceControl({ ...acceptanceControlDefaults, mode: 'top-k', score: 'model', k: 1 }, new PartitionState(0, [acceptanceControlStore.name]).store(acceptanceControlStore.name));
    const out = await through(topK, [scored('x', 1)]);
    expect(out[0]).toMatchObject({ kind: 'dead', stage: 'acceptance-control' });
  });
});

describe('acceptance-control config', () => {
  it('is validated with errors naming the field', () => {
    expect(acceptanceControlConfig.parse({ type: 'acceptance-control', score: 'model', target: 0.25 })).toMatchObject({ mode: 'rate', target: 0.25, gain: 0.05 });
    const bad = acceptanceControlConfig.safeParse({ type: 'acceptance-control', score: 'model', target: 1.5 });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues[0]!.path).toEqual(['target']);
    const unknown = acceptanceControlConfig.safeParse({ type: 'acceptance-control', score: 'model', treshold: 1 });
    expect(unknown.success).toBe(false);
  });

  it('refuses top-k without a group-filter before it, at config time (JSON config and topology alike)', () => {
    const topK = { type: 'acceptance-control', mode: 'top-k', score: 'model', k: 2 } as const;
    expect(() => parseConfig({ name: 'p', operators: [{ type: 'validate' }, topK] })).toThrow(/top-k needs a group-filter before it[\s\S]*at operators\[1\]\.type/);
    expect(() => parseConfig({ name: 'p', operators: [topK, { type: 'group-filter' }] })).toThrow(/top-k needs a group-filter before it[\s\S]*at operators\[0\]\.type/);
    expect(parseConfig({ name: 'p', operators: [{ type: 'group-filter' }, topK] }).operators[1]).toMatchObject({ mode: 'top-k', k: 2 });
    // Rate mode needs no groups.
    expect(parseConfig({ name: 'p', operators: [{ type: 'acceptance-control', score: 'model' }] }).operators[0]).toMatchObject({ mode: 'rate' });
    const curate = (...steps: Parameters<ReturnType<typeof topology>['pipe']>) => topology({ name: 'p' }).source('rollouts').pipe(...steps);
    expect(curate(validate(), builtin('acceptance-control', topK)).problems()).toEqual([
      'step 2 (acceptance-control): acceptance-control in mode top-k needs a group-filter before it: it ranks the samples of a group released together',
    ]);
    expect(curate(groupFilterStep(), builtin('acceptance-control', topK)).problems()).toEqual([]);
  });
});

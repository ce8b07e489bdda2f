import { describe, expect, it } from 'vitest';
import { featureDefaults, featureLayout, featurize, groupLengthNames, groupRewardNames, LOGIT_EPSILON, type FeatureConfig } from '../contracts/features.ts';
import { groupFilter, groupFilterDefaults, groupFilterStore, type GroupFilterConfig } from '../operators/filter/group-filter.ts';
import { parseConfig } from '../pipeline/config.ts';
import { PartitionState } from '../streams/state-store.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';

const filter = (overrides: Partial<GroupFilterConfig>) => groupFilter({ ...groupFilterDefaults, ...overrides }, new PartitionState(0, [groupFilterStore.name]).store(groupFilterStore.name));
const s = (id: string, group: string, rewards: Record<string, number>, reasons: string[] = []) => sample({ id, group_id: group, prompt_id: group, rewards }, { reasons });
/** A sample of group `group` answering `response` (null: a trajectory of `steps`). */
const answer = (id: string, group: string, response: string | null, reasons: string[] = [], steps: string[] = []) =>
  sample({ id, group_id: group, prompt_id: group, response, steps: steps.map((content) => ({ role: 'assistant', content })), rewards: {} }, { reasons });
/** Population mean and standard deviation. */
const meanSd = (xs: number[]) => {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return { mean, sd: Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / xs.length) };
};

describe('group-relative rewards from the group filter', () => {
  const names = groupRewardNames('correct');

  it('adds each sample’s reward minus its group mean and its rank in the group, once the group is complete', async () => {
    const input = [s('a1', 'a', { correct: 1 }), s('b1', 'b', { correct: 0.2 }), s('a2', 'a', { correct: 0 }), s('a3', 'a', { correct: 1 }), s('a4', 'a', { correct: 0.5 })];
    const out = samplesOf(await through(filter({ groupSize: 4, relative: ['correct'] }), input));
    // Only group a is complete; b is still held.
    expect(out.map((x) => x.rollout.id)).toEqual(['a1', 'a2', 'a3', 'a4']);
    const { mean, sd } = meanSd([1, 0, 1, 0.5]);
    expect(mean).toBe(0.625);
    // Rank: share of the other three with a lower reward, ties counting half; z: delta / sd.
    expect(out.map((x) => x.rollout.rewards)).toEqual([
      { correct: 1, [names.delta]: 1 - mean, [names.z]: (1 - mean) / sd, [names.rank]: 2.5 / 3 },
      { correct: 0, [names.delta]: 0 - mean, [names.z]: (0 - mean) / sd, [names.rank]: 0 },
      { correct: 1, [names.delta]: 1 - mean, [names.z]: (1 - mean) / sd, [names.rank]: 2.5 / 3 },
      { correct: 0.5, [names.delta]: 0.5 - mean, [names.z]: (0.5 - mean) / sd, [names.rank]: 1 / 3 },
    ]);
  });

  it('gives z = 0 to a group whose values are all equal, also when their mean is not exact in floating point', async () => {
    // (0.1 + 0.1 + 0.1) / 3 = 0.10000000000000002: the deltas are rounding, and delta / sd would be −1 each.
    const input = [s('a1', 'a', { correct: 0.1 }), s('a2', 'a', { correct: 0.1 }), s('a3', 'a', { correct: 0.1 })];
    const out = samplesOf(await through(filter({ groupSize: 3, relative: ['correct'] }), input));
    expect(out.map((x) => x.rollout.rewards[names.z])).toEqual([0, 0, 0]);
    expect(out.map((x) => x.rollout.rewards[names.rank])).toEqual([0.5, 0.5, 0.5]);
  });

  it('takes the not-yet-rejected samples carrying the reward as the reference; a sample without it gets none; off by default', async () => {
    const input = [s('a1', 'a', { correct: 1 }), s('a2', 'a', { correct: 0 }, ['dedupe:exact']), s('a3', 'a', {}), s('c1', 'c', { correct: 1 })];
    const out = samplesOf(await through(filter({ groupSize: null, maxGroupSize: 3, relative: ['correct'] }), input));
    const byId = new Map(out.map((x) => [x.rollout.id, x.rollout.rewards]));
    // The reference is a1 alone: mean 1, no other sample to rank against.
    expect(byId.get('a1')).toEqual({ correct: 1, [names.delta]: 0, [names.z]: 0, [names.rank]: 0.5 });
    // The rejected a2 is placed relative to that reference (whose sd is 0: z 0).
    expect(byId.get('a2')).toEqual({ correct: 0, [names.delta]: -1, [names.z]: 0, [names.rank]: 0 });
    expect(byId.get('a3')).toEqual({});

    const plain = samplesOf(await through(filter({ groupSize: 2 }), [s('a1', 'a', { correct: 1 }), s('a2', 'a', { correct: 0 })]));
    expect(plain.map((x) => x.rollout.rewards)).toEqual([{ correct: 1 }, { correct: 0 }]);
    expect(() => parseConfig({ name: 'p', topics: { prefix: 'x' }, operators: [{ type: 'group-filter', relative: [''] }] })).toThrow(/relative/);
  });

  it('reach the model through the layout’s rewardNames; the default layout does not change', async () => {
    const features: FeatureConfig = { ...featureDefaults, dims: 16, rewardNames: ['correct', names.delta, names.rank] };
    const input = [s('a1', 'a', { correct: 1 }), s('a2', 'a', { correct: 0 })];
    const out = samplesOf(await through(filter({ groupSize: 2, relative: ['correct'] }), input));
    const layout = featureLayout(features);
    const at = (name: string) => features.dims + layout.indexOf(name);
    expect(layout).toContain(`reward:${names.delta}`);
    const v = featurize(out[0]!.rollout, features);
    expect([v[at('reward:correct')], v[at(`reward:${names.delta}`)], v[at(`reward:${names.rank}`)]]).toEqual([1, 0.5, 1]);
    expect(featurize(out[1]!.rollout, features)[at(`reward:${names.delta}`)]).toBe(-0.5);
    // A layout that does not name them gives the same vector as before the group filter.
    const plain: FeatureConfig = { ...featureDefaults, rewardNames: ['correct'] };
    expect(featurize(out[0]!.rollout, plain)).toEqual(featurize(input[0]!.rollout, plain));
  });
});

describe('group-relative length from the group filter (relativeLength)', () => {
  const names = groupLengthNames();
  const ell = (text: string) => Math.log1p(text.length);

  it('writes z and rank of log1p(response length) against the group’s not-yet-rejected samples', async () => {
    const texts = ['a', 'abcd', 'abcdefghij', 'abcd'];
    const input = [...texts.map((t, i) => answer(`a${i}`, 'a', t)), answer('rej', 'a', 'x'.repeat(100), ['dedupe:exact']), answer('b0', 'b', 'b')];
    const out = samplesOf(await through(filter({ groupSize: 5, relativeLength: true }), input));
    expect(out.map((x) => x.rollout.id)).toEqual(['a0', 'a1', 'a2', 'a3', 'rej']);
    const { mean, sd } = meanSd(texts.map(ell));
    const byId = new Map(out.map((x) => [x.rollout.id, x.rollout.rewards]));
    // The four kept answers; ranks: share of the other three that are shorter, ties half.
    expect(byId.get('a0')).toEqual({ [names.z]: (ell('a') - mean) / sd, [names.rank]: 0 });
    expect(byId.get('a1')).toEqual({ [names.z]: (ell('abcd') - mean) / sd, [names.rank]: 1.5 / 3 });
    expect(byId.get('a2')).toEqual({ [names.z]: (ell('abcdefghij') - mean) / sd, [names.rank]: 1 });
    expect(byId.get('a3')).toEqual(byId.get('a1'));
    // The rejected, longest answer is placed against the four but does not move their reference.
    expect(byId.get('rej')).toEqual({ [names.z]: (ell('x'.repeat(100)) - mean) / sd, [names.rank]: 1 });
    expect(byId.get('a0')![names.z]).toBeLessThan(-1);
  });

  it('measures a trajectory by its joined steps; equal lengths give z 0; off by default; the layout names it', async () => {
    const input = [answer('a0', 'a', null, [], ['one', 'two']), answer('a1', 'a', 'one'), answer('c0', 'c', 'same'), answer('c1', 'c', 'SAME')];
    const out = samplesOf(await through(filter({ groupSize: 2, relativeLength: true }), input));
    const byId = new Map(out.map((x) => [x.rollout.id, x.rollout.rewards]));
    // 'one\ntwo' (7 units) against 'one' (3): two values, z = ±1.
    expect(byId.get('a0')).toEqual({ [names.z]: expect.closeTo(1, 12), [names.rank]: 1 });
    expect(byId.get('a1')).toEqual({ [names.z]: expect.closeTo(-1, 12), [names.rank]: 0 });
    expect(byId.get('c0')).toEqual({ [names.z]: 0, [names.rank]: 0.5 });

    const plain = samplesOf(await through(filter({ groupSize: 2 }), input.slice(0, 2)));
    expect(plain.map((x) => x.rollout.rewards)).toEqual([{}, {}]);

    const features: FeatureConfig = { ...featureDefaults, dims: 16, rewardNames: [names.z, names.rank] };
    const layout = featureLayout(features);
    const v = featurize(out[1]!.rollout, features);
    expect([v[features.dims + layout.indexOf(`reward:${names.z}`)], v[features.dims + layout.indexOf(`reward:${names.rank}`)]]).toEqual([Math.fround(out[1]!.rollout.rewards[names.z]!), 0]);
    expect(() => parseConfig({ name: 'p', topics: { prefix: 'x' }, operators: [{ type: 'group-filter', relativeLength: 'yes' }] })).toThrow(/relativeLength/);
  });
});

describe('probability rewards as logits (features.logitRewards)', () => {
  const features: FeatureConfig = { ...featureDefaults, dims: 16, rewardNames: ['proxy', 'correct'], logitRewards: ['proxy'] };
  const layout = featureLayout(features);
  const at = (name: string) => features.dims + layout.indexOf(name);
  const tail = (rewards: Record<string, number>) => {
    const v = featurize(sample({ rewards }).rollout, features);
    return [v[at('reward_logit:proxy')], v[at('reward:correct')]];
  };

  it('names the logit in the layout and writes log(p / (1 − p)) of the clamped p; other rewards stay raw', () => {
    expect(layout).toEqual(['log_chars', 'log_tokens', 'reward_logit:proxy', 'reward:correct', 'logprob_mean', 'logprob_min', 'logprob_std', 'logprob_present']);
    expect(tail({ proxy: 0.8125, correct: 0.8125 })).toEqual([Math.fround(Math.log(13 / 3)), 0.8125]);
    expect(tail({ proxy: 0.5, correct: 1 })).toEqual([0, 1]);
    const edge = Math.fround(Math.log((1 - LOGIT_EPSILON) / LOGIT_EPSILON));
    expect(edge).toBeCloseTo(13.8155, 4);
    // 0, 1 and values outside [0, 1] are clamped; a missing reward is 0 (the logit of 0.5), as a raw one is.
    expect(tail({ proxy: 0, correct: 0 })).toEqual([-edge, 0]);
    expect(tail({ proxy: 1 })).toEqual([edge, 0]);
    expect(tail({ proxy: 7, correct: 7 })).toEqual([edge, 7]);
    expect(tail({ proxy: -3 })).toEqual([-edge, 0]);
    expect(tail({})).toEqual([0, 0]);
    expect(() => tail({ proxy: Number.NaN })).toThrow(/proxy is not finite/);
  });

  it('is validated at the config edge, the error naming the field; a layout without it is unchanged', () => {
    const config = (f: unknown) => parseConfig({ name: 'p', topics: { prefix: 'x' }, features: f, operators: [{ type: 'validate' }] });
    expect(config({ rewardNames: ['proxy'], logitRewards: ['proxy'] }).features.logitRewards).toEqual(['proxy']);
    expect(config({ rewardNames: ['proxy'] }).features.logitRewards).toEqual([]);
    expect(() => config({ rewardNames: ['proxy'], logitRewards: ['correct'] })).toThrow(/"correct" is not in features\.rewardNames[\s\S]*at features\.logitRewards\[0\]/);
    expect(() => config({ rewardNames: ['proxy'], logitRewards: 'proxy' })).toThrow(/features\.logitRewards/);
    // A config built in code without the edge is checked when first used.
    expect(() => featurize(sample({}).rollout, { ...featureDefaults, dims: 8, logitRewards: ['proxy'] })).toThrow(/features\.logitRewards names "proxy"/);
    const raw: FeatureConfig = { ...featureDefaults, dims: 16, rewardNames: ['proxy', 'correct'] };
    expect(featureLayout(raw)).toContain('reward:proxy');
    expect(featurize(sample({ rewards: { proxy: 0.8125 } }).rollout, raw)[raw.dims + 2]).toBe(0.8125);
  });
});

import { describe, expect, it } from 'vitest';
import { featureDefaults, featureLayout, featurize, groupRewardNames, type FeatureConfig } from '../contracts/features.ts';
import { groupFilter, groupFilterDefaults, groupFilterStore, type GroupFilterConfig } from '../operators/filter/group-filter.ts';
import { parseConfig } from '../pipeline/config.ts';
import { PartitionState } from '../streams/state-store.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';

const filter = (overrides: Partial<GroupFilterConfig>) => groupFilter({ ...groupFilterDefaults, ...overrides }, new PartitionState(0, [groupFilterStore.name]).store(groupFilterStore.name));
const s = (id: string, group: string, rewards: Record<string, number>, reasons: string[] = []) => sample({ id, group_id: group, prompt_id: group, rewards }, { reasons });

describe('group-relative rewards from the group filter', () => {
  const names = groupRewardNames('correct');

  it('adds each sample’s reward minus its group mean and its rank in the group, once the group is complete', async () => {
    const input = [s('a1', 'a', { correct: 1 }), s('b1', 'b', { correct: 0.2 }), s('a2', 'a', { correct: 0 }), s('a3', 'a', { correct: 1 }), s('a4', 'a', { correct: 0.5 })];
    const out = samplesOf(await through(filter({ groupSize: 4, relative: ['correct'] }), input));
    // Only group a is complete; b is still held.
    expect(out.map((x) => x.rollout.id)).toEqual(['a1', 'a2', 'a3', 'a4']);
    const mean = (1 + 0 + 1 + 0.5) / 4;
    // Rank: share of the other three with a lower reward, ties counting half.
    expect(out.map((x) => x.rollout.rewards)).toEqual([
      { correct: 1, [names.delta]: 1 - mean, [names.rank]: 2.5 / 3 },
      { correct: 0, [names.delta]: 0 - mean, [names.rank]: 0 },
      { correct: 1, [names.delta]: 1 - mean, [names.rank]: 2.5 / 3 },
      { correct: 0.5, [names.delta]: 0.5 - mean, [names.rank]: 1 / 3 },
    ]);
  });

  it('takes the not-yet-rejected samples carrying the reward as the reference; a sample without it gets none; off by default', async () => {
    const input = [s('a1', 'a', { correct: 1 }), s('a2', 'a', { correct: 0 }, ['dedupe:exact']), s('a3', 'a', {}), s('c1', 'c', { correct: 1 })];
    const out = samplesOf(await through(filter({ groupSize: null, maxGroupSize: 3, relative: ['correct'] }), input));
    const byId = new Map(out.map((x) => [x.rollout.id, x.rollout.rewards]));
    // The reference is a1 alone: mean 1, no other sample to rank against.
    expect(byId.get('a1')).toEqual({ correct: 1, [names.delta]: 0, [names.rank]: 0.5 });
    // The rejected a2 is placed relative to that reference.
    expect(byId.get('a2')).toEqual({ correct: 0, [names.delta]: -1, [names.rank]: 0 });
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

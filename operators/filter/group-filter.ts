import type { Rollout } from '../../contracts/records.ts';
import { groupLengthNames, groupRewardNames, responseText } from '../../contracts/features.ts';
import type { KeyValueStore } from '../../streams/state-store.ts';
import { deadLetter, defaultMaxSkewMs, deserializeSample, eventTimeOf, isRejected, serializeSample, type Curator, type Envelope, type Sample } from '../../lib/envelope.ts';
import { ratioText, sessionCurator } from '../../lib/filters-internals.ts';

export interface GroupFilterConfig {
  /** Samples per group; a rollout's `group_size` tag wins. null: only the tag, a timeout or maxGroupSize close a group. */
  groupSize: number | null;
  /** How long an incomplete group is held before it is released anyway. */
  maxWaitMs: number;
  /** Clock(s) for maxWaitMs: rollout created_at ("event"), ticks ("processing"), or whichever fires first. */
  timeBasis: 'event' | 'processing' | 'both';
  /** Event time follows created_at at most this far beyond the broker's record timestamp (see eventTimeOf). */
  maxSkewMs: number;
  /** The reward whose spread decides whether a group teaches anything. */
  reward: string;
  /** Fewest not-yet-rejected samples carrying the reward for the zero-variance check to apply. */
  minVarianceSamples: number;
  /** A group released early (timeout, eviction) with fewer samples is incomplete. */
  minSize: number;
  /** Incomplete groups: rejected (`group:incomplete`) or let through. */
  onIncomplete: 'reject' | 'pass';
  /** Bound on groups held at once; opening one more releases the oldest early. */
  maxOpenGroups: number;
  /** Bound on one group's held samples: a group reaching it is complete. */
  maxGroupSize: number;
  /**
   * Rewards whose group-relative values are written into each released sample's rewards
   * (`groupRewardNames`: `<reward>.group_delta`, `<reward>.group_z`, `<reward>.group_rank`),
   * for the feature layout to name; empty: none.
   */
  relative: string[];
  /**
   * Also write the response's length relative to its group (`groupLengthNames`:
   * `group.length_z`, `group.length_rank`), for the feature layout to name.
   */
  relativeLength: boolean;
}

export const groupFilterDefaults: GroupFilterConfig = {
  groupSize: null,
  maxWaitMs: 60_000,
  timeBasis: 'both',
  maxSkewMs: defaultMaxSkewMs,
  reward: 'correct',
  minVarianceSamples: 2,
  minSize: 2,
  onIncomplete: 'pass',
  maxOpenGroups: 10_000,
  maxGroupSize: 256,
  relative: [],
  relativeLength: false,
};

/** Held samples and the open-group index (changelog-backed). */
export const groupFilterStore = { name: 'group-filter' } as const;

type Release = 'complete' | 'timeout' | 'evicted';

interface OpenGroup {
  /** Samples held, under `sampleKey(group, i)` for i < count, in arrival order. */
  count: number;
  /** Samples that complete the group. */
  target: number;
  /** Smallest event time (eventTimeOf) among its samples. */
  firstCreatedAt: number;
  /** `now` of the first tick after the group opened: its processing-time arrival; null before that tick. */
  firstArrival: number | null;
}

interface Index {
  /** Largest event time seen (eventTimeOf): the event-time clock. */
  watermark: number | null;
  /** Open groups in opening order. */
  open: Array<[string, OpenGroup]>;
}

const INDEX_KEY = 'index';
const sampleKey = (group: string, i: number) => `s:${group}:${i}`;

/**
 * Holds the samples of a prompt group (same `group_id`) until the group is whole, then releases
 * them together so later operators and trainers see groups, not stragglers:
 *
 * 1. A sample joins its open group (or opens one) and is written to the store; nothing is
 *    emitted for it yet. Dead letters and emits pass straight through; ticks pass after any
 *    release they cause.
 * 2. The group is released when it holds `group_size` (tag) or `groupSize` samples, capped at
 *    `maxGroupSize` (release "complete"); when its wait runs out (release "timeout"): in event
 *    time once a later sample's event time exceeds the group's earliest event time +
 *    maxWaitMs (event time: created_at, capped at maxSkewMs past the broker's record
 *    timestamp, so one wrong clock cannot time out every open group), in processing time once a tick's `now` exceeds maxWaitMs + the `now` of the
 *    first tick after the group opened (exact to one tick interval); or when opening another
 *    group would exceed `maxOpenGroups`, the oldest first (release "evicted").
 * 3. A released group's samples leave consecutively in arrival order, annotated `group.size`,
 *    `group.mean_reward` (over samples not yet rejected that carry the reward) and
 *    `group.release`. If at least `minVarianceSamples` such samples all have the same reward
 *    (all right or all wrong), every sample of the group gets `group:no_variance`; a group
 *    released early with fewer than `minSize` samples gets `group:incomplete` when
 *    `onIncomplete` is "reject". For each reward in `relative`, every sample carrying it is
 *    placed against the reference = the group's not-yet-rejected samples carrying it:
 *    `rewards[<reward>.group_delta]` = its reward − the reference's mean,
 *    `rewards[<reward>.group_z]` = that delta / the reference's population standard deviation
 *    (0 when the reference's values are all equal; |z| ≤ √(n − 1) for n values), and
 *    `rewards[<reward>.group_rank]` = the share of the reference (itself excluded) with a
 *    lower reward, ties counting half (0.5 when it has none to compare with). With
 *    `relativeLength`, every sample gets the same z and rank of ℓ = log1p(UTF-16 length of
 *    its `responseText`) against the group's not-yet-rejected samples, as
 *    `rewards['group.length_z']` and `rewards['group.length_rank']` (`groupLengthNames`). A
 *    scorer after this operator sees them through `features.rewardNames`.
 * 4. A sample of a group already released opens a new group with the same id; in event time, a
 *    sample older than the newest event time − maxWaitMs is released at once.
 *
 * State: each held sample under its own key, plus one index of open groups and the event-time
 * clock. A tick that times nothing out and starts no group's clock writes nothing.
 * The index is read when a batch starts and written back when the batch's input completes,
 * before completion goes downstream (the processor completes every batch before it commits),
 * so a restarted operator continues where the committed state left off.
 * Bound: at most maxOpenGroups × maxGroupSize held samples and maxOpenGroups index entries.
 *
 * @example
 *   groupFilter({ ...groupFilterDefaults, groupSize: 2 }, state.store(groupFilterStore.name))
 *   // in:  a1 b1 a2 b2          (a1, a2 of group a; rewards.correct 1 and 0)
 *   // out: a1 a2 b1 b2          annotated { 'group.size': '2', 'group.release': 'complete', 'group.mean_reward': '0.5' }
 *   // a group whose two samples are both correct → each gets reasons ['group:no_variance']
 *   // with relative: ['correct'], a1 also gets rewards { 'correct.group_delta': 0.5, 'correct.group_z': 1, 'correct.group_rank': 1 }
 *   // with relativeLength, a response "4" against "four" gets { 'group.length_z': -1, 'group.length_rank': 0 }
 */
export function groupFilter(config: GroupFilterConfig, store: KeyValueStore): Curator {
  const eventTime = config.timeBasis !== 'processing';
  const processingTime = config.timeBasis !== 'event';
  return sessionCurator(() => {
    const index = loadIndex(store);
    const open = new Map(index.open);
    let dirty = false;
    // Smallest firstCreatedAt among open groups; undefined when it must be recomputed.
    let earliest: number | undefined;

    const release = (id: string, group: OpenGroup, how: Release, out: Envelope[]) => {
      open.delete(id);
      if (group.firstCreatedAt === earliest) earliest = undefined;
      const samples: Sample[] = [];
      for (let i = 0; i < group.count; i++) {
        const text = store.get(sampleKey(id, i));
        store.delete(sampleKey(id, i));
        if (text !== undefined) samples.push(deserializeSample(text));
      }
      out.push(...judgeGroup(samples, how, config));
    };

    const onSample = (sample: Sample, out: Envelope[]) => {
      const r = sample.rollout;
      const at = eventTimeOf(sample, config.maxSkewMs);
      let group = open.get(r.group_id);
      if (group === undefined) {
        for (const [oldId, oldest] of open) {
          if (open.size < config.maxOpenGroups) break;
          release(oldId, oldest, 'evicted', out);
        }
        group = { count: 0, target: Math.min(config.groupSize ?? config.maxGroupSize, config.maxGroupSize), firstCreatedAt: at, firstArrival: null };
        open.set(r.group_id, group);
      }
      store.put(sampleKey(r.group_id, group.count), serializeSample(sample));
      group.count += 1;
      const tagged = groupSizeTag(r);
      if (tagged !== undefined) group.target = Math.min(tagged, config.maxGroupSize);
      group.firstCreatedAt = Math.min(group.firstCreatedAt, at);
      if (earliest !== undefined) earliest = Math.min(earliest, group.firstCreatedAt);
      dirty = true;
      if (group.count >= group.target) release(r.group_id, group, 'complete', out);
      if (!eventTime) return;
      index.watermark = Math.max(index.watermark ?? at, at);
      earliest ??= [...open.values()].reduce((min, g) => Math.min(min, g.firstCreatedAt), Infinity);
      if (index.watermark - config.maxWaitMs <= earliest) return;
      for (const [id, g] of open) {
        if (index.watermark > g.firstCreatedAt + config.maxWaitMs) release(id, g, 'timeout', out);
      }
    };

    const onTick = (now: number, out: Envelope[]) => {
      for (const [id, g] of open) {
        if (g.firstArrival === null) g.firstArrival = now;
        else if (now - g.firstArrival > config.maxWaitMs) release(id, g, 'timeout', out);
        else continue;
        dirty = true;
      }
    };

    return {
      next(envelope, out) {
        if (envelope.kind === 'tick' && processingTime) onTick(envelope.now, out);
        if (envelope.kind !== 'sample') return void out.push(envelope);
        try {
          onSample(envelope, out);
        } catch (err) {
          out.push(deadLetter(envelope, 'group-filter', (err as Error).message));
        }
      },
      complete() {
        if (dirty) store.put(INDEX_KEY, JSON.stringify({ watermark: index.watermark, open: [...open] } satisfies Index));
      },
    };
  });
}

function loadIndex(store: KeyValueStore): Index {
  const text = store.get(INDEX_KEY);
  return text === undefined ? { watermark: null, open: [] } : (JSON.parse(text) as Index);
}

function groupSizeTag(r: Rollout): number | undefined {
  const tag = r.tags['group_size'];
  if (tag === undefined || !/^\d+$/.test(tag.trim())) return undefined;
  const n = Number(tag);
  return n > 0 ? n : undefined;
}

function judgeGroup(samples: Sample[], how: Release, config: GroupFilterConfig): Sample[] {
  const rewards = samples.filter((s) => !isRejected(s)).flatMap((s) => s.rollout.rewards[config.reward] ?? []);
  const reasons: string[] = [];
  if (how !== 'complete' && samples.length < config.minSize && config.onIncomplete === 'reject') reasons.push('group:incomplete');
  if (rewards.length >= config.minVarianceSamples && rewards.every((v) => v === rewards[0])) reasons.push('group:no_variance');
  const annotations: Record<string, string> = { 'group.size': String(samples.length), 'group.release': how };
  if (rewards.length > 0) annotations['group.mean_reward'] = ratioText(rewards.reduce((a, b) => a + b, 0) / rewards.length);
  const judged = samples.map((s) => ({ ...s, reasons: [...s.reasons, ...reasons], annotations: { ...s.annotations, ...annotations } }));
  return config.relative.length === 0 && !config.relativeLength ? judged : judged.map((s, i) => withGroupRewards(s, samples, i, config));
}

/** `sample` (the i-th of its group) with the group-relative rewards of `relative` (and the length's) added. */
function withGroupRewards(sample: Sample, group: readonly Sample[], i: number, config: GroupFilterConfig): Sample {
  const added: Record<string, number> = {};
  for (const reward of config.relative) {
    const own = sample.rollout.rewards[reward];
    if (own === undefined) continue;
    // The reference: the group's samples not yet rejected that carry the reward.
    const reference = group.flatMap((s, j) => (isRejected(s) || s.rollout.rewards[reward] === undefined ? [] : [{ j, value: s.rollout.rewards[reward]! }]));
    if (reference.length === 0) continue;
    const place = placeInGroup(own, i, reference);
    const names = groupRewardNames(reward);
    added[names.delta] = place.delta;
    added[names.z] = place.z;
    added[names.rank] = place.rank;
  }
  if (config.relativeLength) {
    const reference = group.flatMap((s, j) => (isRejected(s) ? [] : [{ j, value: logLength(s) }]));
    if (reference.length > 0) {
      const place = placeInGroup(logLength(sample), i, reference);
      const names = groupLengthNames();
      added[names.z] = place.z;
      added[names.rank] = place.rank;
    }
  }
  return { ...sample, rollout: { ...sample.rollout, rewards: { ...sample.rollout.rewards, ...added } } };
}

/** ℓ of `relativeLength`: log1p of the response's length in UTF-16 code units (as `log_chars` counts). */
function logLength(sample: Sample): number {
  return Math.log1p(responseText(sample.rollout).length);
}

/**
 * `own` (of the group's j-th sample, `self`) against a non-empty `reference` of the group's
 * values: minus the mean, over the population sd (0 when all are equal), and the share of the
 * others (`j !== self`) below it, ties half (0.5 with none).
 */
function placeInGroup(own: number, self: number, reference: ReadonlyArray<{ j: number; value: number }>): { delta: number; z: number; rank: number } {
  const mean = reference.reduce((sum, r) => sum + r.value, 0) / reference.length;
  const delta = own - mean;
  // Exactly equal values leave only rounding in (x − mean): z is 0, not noise.
  const equal = reference.every((r) => r.value === reference[0]!.value);
  const sd = Math.sqrt(reference.reduce((sum, r) => sum + (r.value - mean) ** 2, 0) / reference.length);
  const others = reference.filter((r) => r.j !== self);
  const below = others.reduce((sum, r) => sum + (r.value < own ? 1 : r.value === own ? 0.5 : 0), 0);
  return { delta, z: equal || !(sd > 0) ? 0 : delta / sd, rank: others.length === 0 ? 0.5 : below / others.length };
}

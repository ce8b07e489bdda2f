import { pipe } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { eventTimeOf, newSample, type Curator, type Envelope, type Sample } from '../lib/envelope.ts';
import { exactDedupe, exactDedupeDefaults, exactDedupeStore, exactEntries, type ExactDedupeConfig } from '../operators/dedupe/exact-dedupe.ts';
import { nearDedupe, nearDedupeDefaults, nearDedupeStore } from '../operators/dedupe/near-dedupe.ts';
import { groupFilter, groupFilterDefaults, groupFilterStore } from '../operators/filter/group-filter.ts';
import { quotaBalance, quotaBalanceDefaults, quotaBalanceStore } from '../operators/balance/quota-balance.ts';
import { CREATED_AT_SKEW, validate, validateDefaults } from '../operators/filter/validate.ts';
import { weaknessTracker, weaknessTrackerDefaults, weaknessTrackerStore } from '../operators/signals/weakness-tracker.ts';
import { PartitionState } from '../streams/state-store.ts';
import { rollout, sample, samplesOf, through } from './helpers/envelopes.ts';

const T = 1_700_000_000_000;
const DAY = 86_400_000;
/** The chaos harness's outlier: beyond ClickHouse's DateTime range. */
const FAR_FUTURE = 8.64e15;

/** A sample as decode makes it: with the broker's record timestamp (default: created_at). */
const sent = (overrides: Parameters<typeof rollout>[0], brokerTimestamp = overrides?.created_at ?? T): Sample =>
  sample(overrides, { brokerTimestamp });

/** Runs one batch and commits it, as the processor does; returns the output and its changelog. */
async function batch(state: PartitionState, curator: Curator, input: Envelope[]) {
  const out = await through(curator, input);
  const changes = state.pendingChanges();
  state.commit();
  return { out, changes };
}

describe('newSample and eventTimeOf', () => {
  it('keeps a finite broker timestamp and leaves out a missing one', () => {
    const source = { topic: 't', partition: 0, offset: '0' };
    expect(newSample(rollout(), source, Buffer.alloc(0), null, T).brokerTimestamp).toBe(T);
    expect('brokerTimestamp' in newSample(rollout(), source, Buffer.alloc(0), null)).toBe(false);
    expect('brokerTimestamp' in newSample(rollout(), source, Buffer.alloc(0), null, Number.NaN)).toBe(false);
  });

  it('caps created_at at maxSkewMs past the broker time, and trusts it without one', () => {
    expect(eventTimeOf(sent({ created_at: FAR_FUTURE }, T), 60_000)).toBe(T + 60_000);
    expect(eventTimeOf(sent({ created_at: T - 5000 }, T), 60_000)).toBe(T - 5000);
    expect(eventTimeOf(sample({ created_at: FAR_FUTURE }))).toBe(FAR_FUTURE);
  });
});

describe('validate: created_at bounds', () => {
  it('rejects a created_at more than a day ahead of the broker time, saying so in the decision', async () => {
    const [out] = await through(validate(), [sent({ created_at: FAR_FUTURE }, T)]);
    expect(out).toMatchObject({ kind: 'sample', reasons: [CREATED_AT_SKEW] });
    expect((out as Sample).annotations['created_at.skew']).toBe(`created_at ${FAR_FUTURE} is after ${T + DAY} (broker time + ${DAY} ms)`);
    expect((out as Sample).rollout.created_at).toBe(FAR_FUTURE);
  });

  it('passes created_at within the bounds: behind the broker time, or ahead by less than a day', async () => {
    const input = [sent({ created_at: T - 365 * DAY }, T), sent({ created_at: T + DAY }, T)];
    expect(await through(validate(), input)).toEqual(input);
  });

  it('applies the absolute bounds with or without a broker time', async () => {
    const out = samplesOf(await through(validate(), [sample({ created_at: Date.UTC(1999, 11, 31) }), sample({ created_at: FAR_FUTURE })]));
    expect(out.map((s) => s.reasons)).toEqual([[CREATED_AT_SKEW], [CREATED_AT_SKEW]]);
    expect(out[1]!.annotations['created_at.skew']).toContain('(the latest allowed)');
  });

  it('clamps to the broker time when configured (to the bound without one), keeping the original in an annotation', async () => {
    const config = { ...validateDefaults, createdAt: { ...validateDefaults.createdAt, onSkew: 'clamp' as const, maxPastMs: DAY } };
    const input = [sent({ created_at: FAR_FUTURE }, T), sent({ created_at: T - 3 * DAY }, T), sample({ created_at: FAR_FUTURE }), sent({ created_at: T }, FAR_FUTURE)];
    const [ahead, behind, unknown, badBroker] = samplesOf(await through(validate(config), input));
    expect(ahead!.reasons).toEqual([]);
    expect(ahead!.rollout.created_at).toBe(T);
    expect(ahead!.annotations['created_at.clamped_from']).toBe(String(FAR_FUTURE));
    expect(behind!.rollout.created_at).toBe(T);
    expect(behind!.annotations['created_at.skew']).toBe(`created_at ${T - 3 * DAY} is before ${T - DAY} (broker time - ${DAY} ms)`);
    expect(unknown!.rollout.created_at).toBe(validateDefaults.createdAt.max);
    // A broker time past the absolute range is not trusted: created_at within it passes.
    expect(badBroker).toBe(input[3]);
  });
});

describe('exactDedupe: event time', () => {
  const setup = (overrides: Partial<ExactDedupeConfig> = {}) => {
    const state = new PartitionState(0, [exactDedupeStore.name]);
    const store = state.store(exactDedupeStore.name);
    return { state, store, dedupe: exactDedupe({ ...exactDedupeDefaults, ...overrides }, store) };
  };
  const text = (id: string, n: number, at: number, broker = at) => sent({ id, response: `Answer: ${n}`, created_at: at }, broker);

  it('a far-future created_at does not evict: the next true duplicate is still caught', async () => {
    const { state, store, dedupe } = setup({ ttlMs: DAY });
    await batch(state, dedupe, [text('a', 1, T), text('b', 2, T + 1000)]);
    // Not rejected upstream (no validate): the clock still moves at most maxSkewMs past the broker time.
    const { out } = await batch(state, dedupe, [text('outlier', 3, FAR_FUTURE, T + 2000)]);
    expect(samplesOf(out)[0]!.reasons).toEqual([]);
    expect(exactEntries(store)).toBe(3);
    const again = samplesOf((await batch(state, dedupe, [text('copy-of-a', 1, T + 3000)])).out);
    expect(again.map((s) => [s.duplicateOf, s.reasons])).toEqual([['a', ['duplicate']]]);
  });

  it('behind validate, the outlier is rejected with the reason and not remembered; duplicates are still caught', async () => {
    const { state, store, dedupe } = setup({ ttlMs: DAY });
    const chain = pipe(validate(), dedupe);
    await batch(state, chain, [text('a', 1, T)]);
    const out = samplesOf((await batch(state, chain, [text('outlier', 1, FAR_FUTURE, T + 1000), text('copy-of-a', 1, T + 2000)])).out);
    expect(out.map((s) => [s.rollout.id, s.reasons, s.duplicateOf])).toEqual([
      ['outlier', [CREATED_AT_SKEW], null],
      ['copy-of-a', ['duplicate'], 'a'],
    ]);
    expect(exactEntries(store)).toBe(1);
  });

  it('without a broker time, the old behaviour: created_at alone is the clock', async () => {
    const { state, store, dedupe } = setup({ ttlMs: DAY });
    await batch(state, dedupe, [sample({ id: 'a', response: 'Answer: 1', created_at: T }), sample({ id: 'far', response: 'Answer: 2', created_at: T + 2 * DAY })]);
    expect(exactEntries(store)).toBe(1);
  });

  it('allowedLatenessMs delays expiry by that much', async () => {
    const { state, store, dedupe } = setup({ ttlMs: DAY, allowedLatenessMs: 1000 });
    await batch(state, dedupe, [text('a', 1, T), text('b', 2, T + DAY + 1000)]);
    expect(exactEntries(store)).toBe(2);
    await batch(state, dedupe, [text('c', 3, T + DAY + 1001)]);
    expect(exactEntries(store)).toBe(2);
  });

  it('bounds evictions per batch: 100,000 expired entries drain N per batch while duplicates within the TTL are caught', async () => {
    const N = 1000;
    const { state, store, dedupe } = setup({ ttlMs: 7 * DAY, maxEvictionsPerBatch: N });
    for (let from = 0; from < 100_000; from += 10_000) {
      await batch(state, dedupe, Array.from({ length: 10_000 }, (_, i) => text(`old${from + i}`, from + i, T + (from + i))));
    }
    const recent = Array.from({ length: 50 }, (_, i) => text(`recent${i}`, 1_000_000 + i, T + 6 * DAY + i));
    await batch(state, dedupe, recent);
    expect(exactEntries(store)).toBe(100_050);

    // Days newer: every old entry is expired at once, but deletions are paced.
    const later = T + 10 * DAY;
    let batches = 0;
    let draining = 0;
    for (let i = 0, deleted = -1; deleted !== 0; i++) {
      const input = [
        ...Array.from({ length: 10 }, (_, j) => text(`new${i}-${j}`, 2_000_000 + i * 10 + j, later)),
        text(`copy-recent-${i}`, 1_000_000 + (i % 50), later),
        text(`copy-old-${i}`, i, later),
      ];
      const { out, changes } = await batch(state, dedupe, input);
      batches += 1;
      const verdicts = samplesOf(out).map((s) => s.duplicateOf);
      expect(verdicts.slice(0, 10)).toEqual(Array(10).fill(null));
      expect(verdicts[10]).toBe(`recent${i % 50}`); // within the TTL: caught
      expect(verdicts[11]).toBeNull(); // expired, even if not yet deleted: new content again
      // One slot per entry or refresh the batch adds (12 here) on top of the N.
      const deletedEntries = changes.filter((c) => c.key.startsWith('e:') && c.value === null).length;
      const deletedSlots = changes.filter((c) => c.key.startsWith('q:') && c.value === null).length;
      expect(deletedSlots).toBeLessThanOrEqual(N + input.length);
      expect(deletedEntries).toBeLessThanOrEqual(N + input.length);
      expect(batches).toBeLessThan(200);
      deleted = deletedEntries;
      if (deleted > 0) draining += 1;
    }
    // 100,000 expired entries took ⌈100,000 / 1,012⌉ batches, none a 100,000-delete transaction.
    expect(draining).toBe(Math.ceil(100_000 / (N + 12)));
    // What is left: the recent entries, and per batch its 10 new ones and the re-added old content.
    expect(exactEntries(store)).toBe(50 + 11 * batches);
  });

  it('writes about one changelog record per new entry (queue slots in chunks), and reads a store of one slot per key', async () => {
    const { state, store, dedupe } = setup({ ttlMs: DAY, maxEntries: 5_000 });
    const { out, changes } = await batch(state, dedupe, Array.from({ length: 3_000 }, (_, i) => text(`a${i}`, i, T + i)));
    expect(samplesOf(out).every((s) => s.duplicateOf === null)).toBe(true);
    expect(changes.filter((c) => c.key.startsWith('e:'))).toHaveLength(3_000);
    expect(changes.length).toBeLessThanOrEqual(3_000 * 1.02 + 4);
    expect(exactEntries(store)).toBe(3_000);
    // A store as the one-slot-per-key layout left it: `q:<seq>` slots, entries o0…o9.
    const old = setup({ ttlMs: DAY, maxEntries: 15 });
    for (let i = 0; i < 10; i++) {
      old.store.put(`e:${i}`, JSON.stringify({ id: `o${i}`, seq: i, lastSeen: T }));
      old.store.put(`q:${i}`, String(i));
    }
    old.store.put('#tail', '10');
    old.store.put('#size', '10');
    old.state.commit();
    // Entries keyed by content: o0…o9's hashes are not `0`…`9`, so 20 new samples are new, and the oldest 15 of 30 go.
    const { changes: evicted } = await batch(old.state, old.dedupe, Array.from({ length: 20 }, (_, i) => text(`n${i}`, 100 + i, T + 1 + i)));
    expect(exactEntries(old.store)).toBe(15);
    const deleted = evicted.filter((c) => c.value === null).map((c) => c.key);
    expect(deleted.filter((k) => k.startsWith('q:')).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `q:${i}`).sort());
    expect(deleted.filter((k) => /^e:\d$/.test(k))).toHaveLength(10);
    // The survivors are the 15 newest: a copy of n5 is caught, a copy of n4 is new again.
    const { out: copies } = await batch(old.state, old.dedupe, [text('copy5', 105, T + 30), text('copy4', 104, T + 31)]);
    expect(samplesOf(copies).map((s) => s.duplicateOf)).toEqual(['n5', null]);
  });

  it('reads and extends queue chunks written as closed JSON arrays by the previous layout', async () => {
    const { state, store, dedupe } = setup({ ttlMs: DAY, maxEntries: 4 });
    // Three slots in chunk 0 as the previous layout wrote them, for entries o0…o2.
    for (let i = 0; i < 3; i++) store.put(`e:h${i}`, JSON.stringify({ id: `o${i}`, seq: i, lastSeen: T }));
    store.put('s:0', JSON.stringify([0, 'h0', 'h1', 'h2']));
    store.put('#tail', '3');
    store.put('#size', '3');
    state.commit();
    // Two new samples: slots 3 and 4 join chunk 0; the index is then over maxEntries by one, so slot 0 (o0) goes.
    await batch(state, dedupe, [text('n0', 0, T + 1), text('n1', 1, T + 2)]);
    expect(exactEntries(store)).toBe(4);
    expect(store.get('e:h0')).toBeUndefined();
    expect(store.get('e:h1')).toBeDefined();
    const chunk = store.get('s:0')!;
    expect(chunk.startsWith('[')).toBe(false);
    expect(JSON.parse(`[${chunk}]`).slice(0, 4)).toEqual([0, 'h0', 'h1', 'h2']);
    // Both new samples were remembered in the extended chunk: their copies are caught.
    const { out } = await batch(state, dedupe, [text('c0', 0, T + 3), text('c1', 1, T + 4)]);
    expect(samplesOf(out).map((s) => s.duplicateOf)).toEqual(['n0', 'n1']);
  });

  it('ticks carry on pending evictions, within the same budget', async () => {
    const { state, store, dedupe } = setup({ ttlMs: DAY, maxEvictionsPerBatch: 3 });
    await batch(state, dedupe, Array.from({ length: 10 }, (_, i) => text(`a${i}`, i, T + i)));
    await batch(state, dedupe, [text('late', 100, T + 2 * DAY)]);
    expect(exactEntries(store)).toBe(7); // 3 + the one slot the batch added, of 10 expired
    await batch(state, dedupe, [{ kind: 'tick', now: 0 }]);
    expect(exactEntries(store)).toBe(4);
    await batch(state, dedupe, [{ kind: 'tick', now: 0 }]);
    await batch(state, dedupe, [{ kind: 'tick', now: 0 }]);
    expect(exactEntries(store)).toBe(1);
  });
});

describe('other event-time clocks ignore a far-future created_at', () => {
  it('group-filter: open groups are not timed out by one outlier', async () => {
    const state = new PartitionState(0, [groupFilterStore.name]);
    const filter = groupFilter({ ...groupFilterDefaults, groupSize: 2, maxWaitMs: 60_000, timeBasis: 'event' }, state.store(groupFilterStore.name));
    const s = (id: string, group: string, correct: number, at: number, broker = at) =>
      sent({ id, group_id: group, prompt_id: group, rewards: { correct }, created_at: at }, broker);
    const out = await through(filter, [s('a1', 'a', 1, T), s('z1', 'z', 1, FAR_FUTURE, T + 1000), s('a2', 'a', 0, T + 2000)]);
    expect(samplesOf(out).map((x) => [x.rollout.id, x.annotations['group.release']])).toEqual([
      ['a1', 'complete'],
      ['a2', 'complete'],
    ]);
  });

  it('quota-balance: windows are not all released, nor their counts expired, by one outlier', async () => {
    const state = new PartitionState(0, [quotaBalanceStore.name]);
    const op = quotaBalance({ ...quotaBalanceDefaults, quota: 1, windowMs: 1000, maxOutOfOrdernessMs: 100, retentionMs: 10_000 }, state.store(quotaBalanceStore.name));
    const s = (id: string, ms: number, score: number, broker = T + ms) => sample({ id, created_at: T + ms, tags: { skill: 'add' } }, { scores: { rule: score }, brokerTimestamp: broker });
    const out = samplesOf(await through(op, [s('a', 100, 0.9), s('outlier', FAR_FUTURE - T, 0.5, T + 200), s('b', 300, 0.8)]));
    // The outlier lands in the pane of its capped event time (its broker time, T + 200): nothing is released early.
    expect(out).toEqual([]);
    const released = samplesOf(await through(op, [s('c', 1200, 0.1)]));
    expect(released.map((x) => [x.rollout.id, x.reasons])).toEqual([
      ['a', []],
      ['outlier', ['quota:add']],
      ['b', ['quota:add']],
    ]);
  });

  it('weakness-tracker: a far-future attempt does not silence the prompt', async () => {
    const state = new PartitionState(0, [weaknessTrackerStore.name]);
    const tracker = weaknessTracker({ ...weaknessTrackerDefaults, window: 4, minAttempts: 2, maxPassRate: 0.5, cooldownAttempts: 2, cooldownMs: 1000 }, state.store(weaknessTrackerStore.name));
    const attempt = (i: number, at: number, broker = at) => sent({ id: `p-${i}`, prompt_id: 'p', rewards: { correct: 0 }, created_at: at }, broker);
    const out = await through(tracker, [attempt(0, T), attempt(1, FAR_FUTURE, T + 1), attempt(2, T + 70_000), attempt(3, T + 80_000)]);
    // Reported at the outlier (capped to its broker time, T + 1) and again once 2 attempts and 1 s have passed.
    expect(out.filter((e) => e.kind === 'emit')).toHaveLength(2);
  });

  it('near-dedupe: a far-future created_at does not expire the index', async () => {
    const state = new PartitionState(0, [nearDedupeStore.name]);
    const op = nearDedupe({ ...nearDedupeDefaults, minShingles: 3 }, state.store(nearDedupeStore.name));
    const text = 'The quick brown fox jumps over the lazy dog and runs across the green field to the river';
    const s = (id: string, at: number, response: string, broker = at) => sent({ id, group_id: 'g', created_at: at, response }, broker);
    await batch(state, op, [s('first', T, text)]);
    // Far beyond the TTL by created_at, but sent now: the clock follows the broker time.
    await batch(state, op, [s('outlier', FAR_FUTURE, 'Something else entirely, with its own words and nothing shared at all here', T + 1)]);
    const { out } = await batch(state, op, [s('copy', T + 2, `${text}!`)]);
    expect(samplesOf(out).map((x) => [x.rollout.id, x.duplicateOf])).toEqual([['copy', 'first']]);
  });
});

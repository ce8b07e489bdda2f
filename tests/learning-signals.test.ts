import { pipe } from 'rxjs';
import { describe, expect, it } from 'vitest';
import type { Emit, Envelope, Sample, Tick } from '../lib/envelope.ts';
import { groupFilter, groupFilterDefaults, groupFilterStore } from '../operators/filter/group-filter.ts';
import { preferencePairs, preferencePairsDefaults, type PreferencePairsConfig } from '../operators/signals/preference-pairs.ts';
import { weaknessTracker, weaknessTrackerDefaults, weaknessTrackerStore, type WeaknessTrackerConfig } from '../operators/signals/weakness-tracker.ts';
import { PartitionState } from '../streams/state-store.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';

const T = 1_700_000_000_000;
const tick = (now: number): Tick => ({ kind: 'tick', now });
const emitsOf = (envelopes: Envelope[]) => envelopes.filter((e): e is Emit => e.kind === 'emit');

describe('weaknessTracker', () => {
  const setup = (overrides: Partial<WeaknessTrackerConfig> = {}) => {
    const state = new PartitionState(0, [weaknessTrackerStore.name]);
    const store = state.store(weaknessTrackerStore.name);
    const config = { ...weaknessTrackerDefaults, window: 4, minAttempts: 3, maxPassRate: 0.34, cooldownAttempts: 2, ...overrides };
    return { state, store, config, tracker: weaknessTracker(config, store) };
  };
  const attempt = (prompt: string, correct: number | undefined, at = T, version = 'v1') =>
    sample({ id: `${prompt}-${at}`, prompt_id: prompt, prompt: `Solve ${prompt}`, rewards: correct === undefined ? {} : { correct }, created_at: at, model_version: version });

  it('passes empty input, ticks and samples without the reward through unchanged', async () => {
    const { tracker, state } = setup();
    expect(await through(tracker, [])).toEqual([]);
    const unrewarded = attempt('p', undefined);
    expect(await through(tracker, [tick(1), unrewarded])).toEqual([tick(1), unrewarded]);
    expect(state.pendingChanges()).toEqual([]);
  });

  it('reports a prompt once it has enough attempts at a low pass rate, right after the sample', async () => {
    const { tracker } = setup({ maxPassRate: 0.3 });
    const out = await through(tracker, [attempt('p', 0, T, 'v1'), attempt('p', 1, T + 1, 'v2'), attempt('p', 0, T + 2, 'v2'), attempt('p', 0, T + 3, 'v2')]);
    expect(out.map((e) => e.kind)).toEqual(['sample', 'sample', 'sample', 'sample', 'emit']);
    expect(samplesOf(out).map((s) => s.annotations['weakness.pass_rate'])).toEqual(['0', '0.5', '0.3333', '0.25']);
    expect(emitsOf(out)).toEqual([
      {
        kind: 'emit',
        output: 'weaknesses',
        key: 'p',
        value: {
          prompt_id: 'p',
          prompt: 'Solve p',
          attempts: 4,
          pass_rate: 0.25,
          by_version: { v1: { attempts: 1, pass_rate: 0 }, v2: { attempts: 3, pass_rate: 1 / 3 } },
          last_seen: T + 3,
        },
      },
    ]);
  });

  it('keeps only the last K outcomes', async () => {
    const { tracker } = setup({ window: 2, minAttempts: 2, maxPassRate: 0 });
    const out = await through(tracker, [attempt('p', 1, T), attempt('p', 0, T + 1), attempt('p', 0, T + 2)]);
    expect(emitsOf(out).map((e) => e.value['attempts'])).toEqual([2]);
    expect(samplesOf(out).at(-1)!.annotations['weakness.pass_rate']).toBe('0');
  });

  it('reports again only after the cool-down in attempts, across batches and a restart', async () => {
    const { state, store, config, tracker } = setup({ minAttempts: 1, maxPassRate: 0 });
    expect(emitsOf(await through(tracker, [attempt('p', 0, T), attempt('p', 0, T + 1)]))).toHaveLength(1);
    state.commit();
    const restarted = weaknessTracker(config, store);
    const out = await through(restarted, [attempt('p', 0, T + 2), attempt('p', 0, T + 3), attempt('p', 0, T + 4)]);
    expect(emitsOf(out).map((e) => e.value['last_seen'])).toEqual([T + 2, T + 4]);
  });

  it('also waits the event-time cool-down when one is set', async () => {
    const { tracker } = setup({ minAttempts: 1, maxPassRate: 0, cooldownAttempts: 1, cooldownMs: 1000 });
    const out = await through(tracker, [attempt('p', 0, T), attempt('p', 0, T + 999), attempt('p', 0, T + 1000)]);
    expect(emitsOf(out).map((e) => e.value['last_seen'])).toEqual([T, T + 1000]);
  });

  it('tracks prompts separately and does not report prompts that pass', async () => {
    const { tracker } = setup({ minAttempts: 2 });
    const out = await through(tracker, [attempt('a', 1), attempt('b', 0), attempt('a', 1, T + 1), attempt('b', 0, T + 1)]);
    expect(emitsOf(out).map((e) => e.key)).toEqual(['b']);
  });

  it('forgets the least recently seen prompt beyond maxPrompts', async () => {
    const { state, store, tracker } = setup({ maxPrompts: 2, minAttempts: 2, maxPassRate: 0 });
    // a, b, then a again: b is now the least recently seen and c pushes it out.
    await through(tracker, [attempt('a', 0, T), attempt('b', 0, T + 1), attempt('a', 1, T + 2), attempt('c', 0, T + 3)]);
    state.commit();
    expect([store.get('p:a') !== undefined, store.get('p:b') !== undefined, store.get('p:c') !== undefined]).toEqual([true, false, true]);
    expect(store.size).toBe(5);
    const out = await through(tracker, [attempt('b', 0, T + 4)]);
    expect(emitsOf(out)).toEqual([]);
    state.commit();
    expect(store.get('p:a')).toBeUndefined();
  });
});

describe('preferencePairs', () => {
  const config = (overrides: Partial<PreferencePairsConfig> = {}) => ({ ...preferencePairsDefaults, score: 'rule', ...overrides });
  const s = (id: string, group: string, correct: number, rule: number, reasons: string[] = []) =>
    sample({ id, group_id: group, prompt: `prompt ${group}`, response: `answer ${id}`, rewards: { correct } }, { scores: { rule }, reasons });
  const pairs = (envelopes: Envelope[]) =>
    emitsOf(envelopes).map((e) => {
      const v = e.value as { chosen: { id: string }; rejected: { id: string }; margin: number };
      return `${e.key}:${v.chosen.id}>${v.rejected.id}`;
    });

  it('passes empty input and ticks alone', async () => {
    expect(await through(preferencePairs(config()), [])).toEqual([]);
    expect(await through(preferencePairs(config()), [tick(1)])).toEqual([tick(1)]);
  });

  it('pairs the best right samples with the worst wrong ones, emitting when the group ends', async () => {
    const input = [s('a1', 'a', 1, 0.6), s('a2', 'a', 0, 0.4), s('a3', 'a', 1, 0.9), s('a4', 'a', 0, 0.1), s('a5', 'a', 1, 0.7), s('b1', 'b', 1, 1)];
    const out = await through(preferencePairs(config()), input);
    expect(out.map((e) => (e.kind === 'sample' ? e.rollout.id : e.kind))).toEqual(['a1', 'a2', 'a3', 'a4', 'a5', 'emit', 'emit', 'b1']);
    expect(pairs(out)).toEqual(['a:a3>a4', 'a:a5>a2']);
    expect(emitsOf(out)[0]).toEqual({
      kind: 'emit',
      output: 'preferencePairs',
      key: 'a',
      value: { group_id: 'a', prompt: 'prompt a', chosen: { id: 'a3', response: 'answer a3', score: 0.9 }, rejected: { id: 'a4', response: 'answer a4', score: 0.1 }, margin: 0.8 },
    });
    expect(samplesOf(out)).toEqual(input);
  });

  it('flushes on a tick and before completion', async () => {
    const out = await through(preferencePairs(config()), [s('a1', 'a', 1, 1), s('a2', 'a', 0, 0), tick(5), s('b1', 'b', 1, 1), s('b2', 'b', 0, 0)]);
    expect(out.map((e) => (e.kind === 'sample' ? e.rollout.id : e.kind))).toEqual(['a1', 'a2', 'emit', 'tick', 'b1', 'b2', 'emit']);
  });

  it('caps pairs per group and makes none from a group without both sides', async () => {
    const group = [s('a1', 'a', 1, 0.9), s('a2', 'a', 1, 0.8), s('a3', 'a', 0, 0.1), s('a4', 'a', 0, 0.2), s('b1', 'b', 1, 1), s('b2', 'b', 1, 1)];
    expect(pairs(await through(preferencePairs(config({ maxPairsPerGroup: 1 })), group))).toEqual(['a:a1>a3']);
  });

  it('uses rejected samples as the rejected side, ignores neutral reasons and skips excluded ones', async () => {
    const input = [
      s('a1', 'a', 1, 0.9, ['group:no_variance']),
      s('a2', 'a', 1, 0.5, ['rule:too_long']),
      s('a3', 'a', 1, 0.95, ['duplicate']),
      s('a4', 'a', 0, 0.0, ['contamination:gsm8k:q1']),
    ];
    expect(pairs(await through(preferencePairs(config()), input))).toEqual(['a:a1>a2']);
  });

  it('ranks by the reward when no score is named, and skips samples without the score', async () => {
    const input = [s('a1', 'a', 1, 0), sample({ id: 'a2', group_id: 'a', rewards: { correct: 0.2 } }), sample({ id: 'a3', group_id: 'a', rewards: {} })];
    expect(pairs(await through(preferencePairs(config({ score: null })), input))).toEqual(['a:a1>a2']);
    expect(pairs(await through(preferencePairs(config()), input))).toEqual([]);
  });

  it('pairs groups released by group-filter from interleaved input', async () => {
    const state = new PartitionState(0, [groupFilterStore.name]);
    const chain = pipe(groupFilter({ ...groupFilterDefaults, groupSize: 2 }, state.store(groupFilterStore.name)), preferencePairs(config()));
    const first = await through(chain, [s('a1', 'a', 1, 1), s('b1', 'b', 0, 0)]);
    expect(first).toEqual([]);
    state.commit();
    const out = await through(chain, [s('b2', 'b', 1, 1), s('a2', 'a', 0, 0)]);
    expect(pairs(out)).toEqual(['b:b2>b1', 'a:a1>a2']);
    expect(out.map((e) => (e.kind === 'sample' ? e.rollout.id : e.kind))).toEqual(['b1', 'b2', 'emit', 'a1', 'a2', 'emit']);
    expect(samplesOf(out).every((x: Sample) => x.annotations['group.size'] === '2')).toBe(true);
  });
});

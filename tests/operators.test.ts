import { describe, expect, it } from 'vitest';
import { deleteExactWhere, exactDedupe, exactDedupeDefaults, exactDedupeStore, exactEntries } from '../operators/dedupe/exact-dedupe.ts';
import { normalizeText } from '../lib/normalize-text.ts';
import { mapSamples } from '../lib/envelope.ts';
import { ruleScore } from '../operators/score/rule-score.ts';
import { thresholdFilter } from '../operators/filter/threshold-filter.ts';
import { validate, validateDefaults } from '../operators/filter/validate.ts';
import { toDecision } from '../lib/decision.ts';
import { PartitionState } from '../streams/state-store.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';

describe('validate', () => {
  it('passes a well-formed rollout unchanged', async () => {
    const s = sample();
    expect(await through(validate(), [s])).toEqual([s]);
  });

  it('dead-letters an invalid rollout with every problem named and the original bytes', async () => {
    const s = sample({ id: ' ', prompt: '', rewards: { correct: Number.NaN }, token_count: -1 });
    const [out] = await through(validate(), [s]);
    expect(out).toMatchObject({ kind: 'dead', stage: 'validate', payload: s.payload, source: s.source });
    const reason = (out as { reason: string }).reason;
    for (const part of ['id is empty', 'prompt is empty', 'rewards.correct is NaN', 'token_count -1']) expect(reason).toContain(part);
  });

  it('accepts a trajectory without a response, but not an empty rollout', async () => {
    const withSteps = sample({ response: null, steps: [{ role: 'assistant', content: 'x' }] });
    const empty = sample({ response: '  ', steps: [] });
    const out = await through(validate(), [withSteps, empty]);
    expect(out[0]!.kind).toBe('sample');
    expect(out[1]).toMatchObject({ kind: 'dead', reason: expect.stringContaining('neither response nor trajectory') });
  });

  it('rejects positive log-probs and over-long text', async () => {
    const out = await through(validate({ ...validateDefaults, maxChars: 10 }), [sample({ logprobs: [-0.1, 0.5] })]);
    const reason = (out[0] as { reason: string }).reason;
    expect(reason).toContain('logprobs must be finite and <= 0');
    expect(reason).toContain('response longer than 10 chars');
  });

  it('counts trajectory steps together against maxChars: many small steps are as long as one long response', async () => {
    const config = { ...validateDefaults, maxChars: 100 };
    const steps = (n: number, chars: number) => Array.from({ length: n }, (_, i) => ({ role: i % 2 === 0 ? 'assistant' : 'tool', content: 'x'.repeat(chars) }));
    const out = await through(validate(config), [sample({ response: null, steps: steps(10, 10) }), sample({ response: null, steps: steps(11, 10) })]);
    expect(out[0]!.kind).toBe('sample');
    expect(out[1]).toMatchObject({ kind: 'dead', stage: 'validate', reason: 'invalid rollout: trajectory steps longer than 100 chars in total (110)' });
    // The chaos harness's case: a 2 MB trajectory under the default bound of 200,000 chars.
    const [big] = await through(validate(), [sample({ response: null, steps: steps(2, 1_000_000) })]);
    expect(big).toMatchObject({ kind: 'dead', reason: expect.stringContaining('trajectory steps longer than 200000 chars in total') });
  });
});

describe('mapSamples', () => {
  it('turns an exception for one sample into a dead letter and keeps going', async () => {
    const boom = mapSamples('boom', (s) => {
      if (s.rollout.id === 'bad') throw new Error('cannot score');
      return s;
    });
    const out = await through(boom, [sample({ id: 'bad' }), sample({ id: 'good' })]);
    expect(out[0]).toMatchObject({ kind: 'dead', stage: 'boom', reason: 'cannot score' });
    expect(out[1]).toMatchObject({ kind: 'sample' });
  });
});

describe('ruleScore', () => {
  const config = { name: 'rule', rewards: { correct: 3, style: 1 }, format: { pattern: 'Answer:\\s*\\d+', minChars: 5 } };

  it('writes the weighted reward, the format check and their product', async () => {
    const [out] = samplesOf(await through(ruleScore(config), [sample({ rewards: { correct: 1, style: 0 } })]));
    expect(out!.scores).toEqual({ 'rule.reward': 0.75, 'rule.format': 1, rule: 0.75 });
  });

  it('counts a missing reward as 0 and fails the format without the pattern', async () => {
    const [out] = samplesOf(await through(ruleScore(config), [sample({ rewards: { style: 1 }, response: 'I think 4' })]));
    expect(out!.scores).toEqual({ 'rule.reward': 0.25, 'rule.format': 0, rule: 0 });
  });

  it('checks trajectory steps when there is no response', async () => {
    const s = sample({ response: null, steps: [{ role: 'assistant', content: 'Answer: 4' }] });
    const [out] = samplesOf(await through(ruleScore(config), [s]));
    expect(out!.scores['rule.format']).toBe(1);
  });

  it('reads own rewards only: a reward named like a prototype member counts as missing', async () => {
    const [out] = samplesOf(await through(ruleScore({ ...config, rewards: { constructor: 1, toString: 1 } }), [sample({ rewards: {} })]));
    expect(out!.scores['rule.reward']).toBe(0);
  });
});

describe('thresholdFilter', () => {
  it('adds one reason per failed bound and leaves passing samples alone', async () => {
    const filter = thresholdFilter({ min: { rule: 0.5 }, max: { length: 100 }, onMissing: 'reject' });
    const pass = sample({}, { scores: { rule: 0.5, length: 100 } });
    const both = sample({}, { scores: { rule: 0.2, length: 101 } });
    const missing = sample({}, { scores: { rule: 0.9 } });
    const out = samplesOf(await through(filter, [pass, both, missing]));
    expect(out.map((s) => s.reasons)).toEqual([[], ['below_min:rule', 'above_max:length'], ['missing:length']]);
  });

  it('lets samples without the score through when told to', async () => {
    const filter = thresholdFilter({ min: { rule: 0.5 }, max: {}, onMissing: 'pass' });
    const [out] = samplesOf(await through(filter, [sample()]));
    expect(out!.reasons).toEqual([]);
  });

  it('reads own scores only: a bound on a prototype member name is a missing score', async () => {
    const filter = thresholdFilter({ min: { constructor: 0.5 }, max: { toString: 1 }, onMissing: 'reject' });
    const [out] = samplesOf(await through(filter, [sample()]));
    expect(out!.reasons).toEqual(['missing:constructor', 'missing:toString']);
  });
});

describe('exactDedupe', () => {
  const setup = () => {
    const state = new PartitionState(0, [exactDedupeStore.name]);
    return { state, store: state.store(exactDedupeStore.name) };
  };

  it('rejects a repeat that differs only in case and spacing, naming the first', async () => {
    const { store } = setup();
    const first = sample({ id: 'a', response: 'Answer: 4' });
    const again = sample({ id: 'b', response: '  answer:   4 ' });
    const other = sample({ id: 'c', response: 'Answer: 5' });
    const out = samplesOf(await through(exactDedupe({ ...exactDedupeDefaults, scope: 'global' }, store), [first, again, other]));
    expect(out.map((s) => [s.rollout.id, s.duplicateOf, s.reasons])).toEqual([
      ['a', null, []],
      ['b', 'a', ['duplicate']],
      ['c', null, []],
    ]);
    expect(out[1]!.dedupeMethod).toBe('exact');
  });

  it('scopes by group when asked: the same text in another group is not a duplicate', async () => {
    const { store } = setup();
    const out = samplesOf(
      await through(exactDedupe({ ...exactDedupeDefaults, scope: 'group' }, store), [sample({ id: 'a', group_id: 'g1' }), sample({ id: 'b', group_id: 'g2' })]),
    );
    expect(out.every((s) => s.reasons.length === 0)).toBe(true);
  });

  it('neither checks nor remembers samples already rejected', async () => {
    const { store } = setup();
    const rejected = sample({ id: 'a' }, { reasons: ['below_min:rule'] });
    const later = sample({ id: 'b' });
    const out = samplesOf(await through(exactDedupe({ ...exactDedupeDefaults, scope: 'global' }, store), [rejected, later]));
    expect(out[1]!.reasons).toEqual([]);
  });

  it('keeps what it learned only when the batch commits', async () => {
    const { state, store } = setup();
    const dedupe = exactDedupe({ ...exactDedupeDefaults, scope: 'global' }, store);
    await through(dedupe, [sample({ id: 'a' })]);
    expect(state.pendingChanges().length).toBeGreaterThan(0);
    state.abort();
    expect(exactEntries(store)).toBe(0);
    const [retried] = samplesOf(await through(dedupe, [sample({ id: 'a2' })]));
    expect(retried!.reasons).toEqual([]);
    state.commit();
    expect(exactEntries(store)).toBe(1);
    const [repeat] = samplesOf(await through(dedupe, [sample({ id: 'a3' })]));
    expect(repeat!.duplicateOf).toBe('a2');
  });
});

describe('normalizeText', () => {
  it('is lower case with whitespace runs as one space, trimmed — for every mix of JS whitespace (the keys of stored hashes depend on it)', () => {
    const reference = (t: string) => t.toLowerCase().replace(/\s+/g, ' ').trim();
    const parts = ['a', 'B', ' ', '  ', '\t', '\n', '\u00a0', '\u2028', '\ufeff', '\u3000', 'É', 'İ', '🚀', 'x y', ''];
    for (const a of parts) for (const b of parts) for (const c of parts) {
      const text = `${a}${b}${c}`;
      expect(normalizeText(text)).toBe(reference(text));
    }
    expect(normalizeText('  What IS\t2 +\n\n2?  ')).toBe('what is 2 + 2?');
    expect(normalizeText('already normal')).toBe('already normal');
  });
});

describe('exactDedupe bounds', () => {
  const at = (i: number) => 1_000_000 + i * 1000;
  const texts = (n: number, from = 0) => Array.from({ length: n }, (_, i) => sample({ id: `s${from + i}`, response: `Answer: ${from + i}`, created_at: at(from + i) }));

  it('forgets the least recently seen beyond maxEntries', async () => {
    const state = new PartitionState(0, [exactDedupeStore.name]);
    const store = state.store(exactDedupeStore.name);
    const dedupe = exactDedupe({ ...exactDedupeDefaults, maxEntries: 3, ttlMs: null }, store);
    await through(dedupe, texts(3));
    // A repeat of s0 refreshes it, so s1 is the oldest when s3 arrives.
    await through(dedupe, [sample({ id: 'again', response: 'Answer: 0', created_at: at(3) }), ...texts(1, 3)]);
    expect(exactEntries(store)).toBe(3);
    const out = samplesOf(await through(dedupe, [sample({ id: 'x0', response: 'Answer: 0', created_at: at(5) }), sample({ id: 'x1', response: 'Answer: 1', created_at: at(5) })]));
    expect(out.map((s) => s.duplicateOf)).toEqual(['s0', null]);
  });

  it('forgets hashes not seen for ttlMs of event time, and deletes in bulk', async () => {
    const state = new PartitionState(0, [exactDedupeStore.name]);
    const store = state.store(exactDedupeStore.name);
    const dedupe = exactDedupe({ ...exactDedupeDefaults, ttlMs: 5000 }, store);
    await through(dedupe, texts(10));
    // The clock is now at(9): entries last seen before at(4) are gone.
    expect(exactEntries(store)).toBe(6);
    expect(deleteExactWhere(store, (e) => e.id === 's8' || e.id === 's9')).toBe(2);
    expect(exactEntries(store)).toBe(4);
    const out = samplesOf(await through(dedupe, [sample({ id: 'y', response: 'Answer: 9', created_at: at(9) }), sample({ id: 'z', response: 'Answer: 7', created_at: at(9) })]));
    expect(out.map((s) => s.duplicateOf)).toEqual([null, 's7']);
  });
});

describe('toDecision', () => {
  it('accepts a sample without reasons and names the first reason otherwise', () => {
    const context = { configHash: 'h', pipelineRun: 'live' };
    expect(toDecision(sample(), context)).toMatchObject({ decision: 'accepted', reason: 'accepted', config_hash: 'h' });
    expect(toDecision(sample({}, { reasons: ['duplicate', 'below_min:rule'] }), context)).toMatchObject({
      decision: 'rejected',
      reason: 'duplicate',
      reasons: ['duplicate', 'below_min:rule'],
    });
  });
});

describe('transaction slices', () => {
  it('splits outputs into slices under the byte budget, keeping every message once and in order', async () => {
    const { slices } = await import('../streams/exactly-once.ts');
    const messages = (topic: string, n: number) => ({ topic, messages: Array.from({ length: n }, (_, i) => ({ key: `${topic}${i}`, value: 'x'.repeat(100) })) });
    const out = slices([messages('a', 10), messages('b', 5)], 600);
    expect(out.length).toBeGreaterThan(1);
    const flat = out.flatMap((slice) => slice.flatMap((t) => t.messages.map((m) => m.key)));
    expect(flat).toEqual([...Array.from({ length: 10 }, (_, i) => `a${i}`), ...Array.from({ length: 5 }, (_, i) => `b${i}`)]);
    for (const slice of out) expect(slice.reduce((sum, t) => sum + t.messages.length, 0)).toBeLessThanOrEqual(4);
  });
});

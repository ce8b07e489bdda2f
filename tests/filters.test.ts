import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildEvalIndex, contaminationFilter, contaminationFilterDefaults } from '../operators/filter/contamination-filter.ts';
import { loadEvalSets } from '../pipeline/eval-sets.ts';
import type { Envelope, Sample, Tick } from '../lib/envelope.ts';
import { groupFilter, groupFilterDefaults, groupFilterStore, type GroupFilterConfig } from '../operators/filter/group-filter.ts';
import { ExpressionError } from '../lib/expression.ts';
import { compileRule, ruleFilter } from '../operators/filter/rule-filter.ts';
import { AnnouncedVersions, stalenessFilter } from '../operators/filter/staleness-filter.ts';
import { PartitionState } from '../streams/state-store.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';

const T = 1_700_000_000_000;
const tick = (now: number): Tick => ({ kind: 'tick', now });
const ids = (envelopes: Envelope[]) => envelopes.map((e) => (e.kind === 'sample' ? e.rollout.id : e.kind === 'tick' ? `tick@${e.now}` : e.kind));

describe('groupFilter', () => {
  const setup = (overrides: Partial<GroupFilterConfig> = {}) => {
    const state = new PartitionState(0, [groupFilterStore.name]);
    const store = state.store(groupFilterStore.name);
    const config = { ...groupFilterDefaults, groupSize: 2, ...overrides };
    return { state, store, config, filter: groupFilter(config, store) };
  };
  const s = (id: string, group: string, correct: number, createdAt = T, extra: Partial<Sample> = {}) =>
    sample({ id, group_id: group, prompt_id: group, rewards: { correct }, created_at: createdAt }, extra);

  it('passes empty input and ticks alone', async () => {
    const { filter } = setup();
    expect(await through(filter, [])).toEqual([]);
    expect(await through(filter, [tick(1), tick(2)])).toEqual([tick(1), tick(2)]);
  });

  it('holds samples until their group is complete, then releases the group together in arrival order', async () => {
    const { filter } = setup();
    const out = await through(filter, [s('a1', 'a', 1), s('b1', 'b', 1), s('a2', 'a', 0), s('b2', 'b', 0)]);
    expect(ids(out)).toEqual(['a1', 'a2', 'b1', 'b2']);
    expect(samplesOf(out)[0]!.annotations).toEqual({ 'group.size': '2', 'group.release': 'complete', 'group.mean_reward': '0.5' });
    expect(samplesOf(out).every((x) => x.reasons.length === 0)).toBe(true);
  });

  it('lets dead letters and emits pass at once while samples are held', async () => {
    const { filter } = setup();
    const dead: Envelope = { kind: 'dead', source: { topic: 't', partition: 0, offset: '9' }, payload: null, key: null, stage: 'decode', reason: 'x' };
    const emit: Envelope = { kind: 'emit', output: 'control', key: 'k', value: {} };
    expect(ids(await through(filter, [s('a1', 'a', 1), dead, emit, s('a2', 'a', 0)]))).toEqual(['dead', 'emit', 'a1', 'a2']);
  });

  it('completes a group split across batches, and after a restart on the same store', async () => {
    const { state, store, config, filter } = setup({ groupSize: 3 });
    expect(await through(filter, [s('a1', 'a', 1)])).toEqual([]);
    state.commit();
    expect(await through(filter, [s('a2', 'a', 0)])).toEqual([]);
    state.commit();
    const restarted = groupFilter(config, store);
    const out = samplesOf(await through(restarted, [s('b1', 'b', 1), s('a3', 'a', 1)]));
    expect(out.map((x) => x.rollout.id)).toEqual(['a1', 'a2', 'a3']);
    expect(out[0]!.payload).toEqual(Buffer.from('payload'));
    state.commit();
    expect(store.get('s:a:0')).toBeUndefined();
  });

  it('forgets what an aborted batch held', async () => {
    const { state, filter } = setup();
    await through(filter, [s('a1', 'a', 1)]);
    state.abort();
    expect(await through(filter, [s('a2', 'a', 0)])).toEqual([]);
    expect(ids(await through(filter, [s('a3', 'a', 1)]))).toEqual(['a2', 'a3']);
  });

  it('takes the group size from the group_size tag when present', async () => {
    const { filter } = setup({ groupSize: 4 });
    const tagged = (id: string) => sample({ id, group_id: 'g', tags: { group_size: '2' } });
    expect(ids(await through(filter, [tagged('g1'), tagged('g2')]))).toEqual(['g1', 'g2']);
  });

  it('rejects a zero-variance group, not counting samples already rejected', async () => {
    const { filter } = setup({ groupSize: 3 });
    const rejected = s('a3', 'a', 0, T, { reasons: ['below_min:rule'] });
    const out = samplesOf(await through(filter, [s('a1', 'a', 1), s('a2', 'a', 1), rejected, s('b1', 'b', 0), s('b2', 'b', 0), s('b3', 'b', 1)]));
    expect(out.map((x) => x.reasons)).toEqual([['group:no_variance'], ['group:no_variance'], ['below_min:rule', 'group:no_variance'], [], [], []]);
    expect(out[0]!.annotations['group.mean_reward']).toBe('1');
  });

  it('releases a one-sample group at once and does not check its variance', async () => {
    const { filter } = setup({ groupSize: 1 });
    const [out] = samplesOf(await through(filter, [s('a1', 'a', 1)]));
    expect(out!.reasons).toEqual([]);
    expect(out!.annotations['group.size']).toBe('1');
  });

  it('times out by event time: a later sample beyond first created_at + maxWaitMs releases the group', async () => {
    const { filter } = setup({ groupSize: 3, maxWaitMs: 1000, timeBasis: 'event', minSize: 2, onIncomplete: 'reject' });
    const out = await through(filter, [s('a1', 'a', 1, T), s('a2', 'a', 0, T + 500), s('b1', 'b', 1, T + 1000), s('c1', 'c', 1, T + 1001)]);
    expect(ids(out)).toEqual(['a1', 'a2']);
    expect(samplesOf(out)[0]!.annotations['group.release']).toBe('timeout');
    expect(samplesOf(out)[0]!.reasons).toEqual([]);
    const later = samplesOf(await through(filter, [s('d1', 'd', 1, T + 2001)]));
    expect(later.map((x) => [x.rollout.id, x.reasons])).toEqual([['b1', ['group:incomplete']]]);
  });

  it('lets an incomplete group pass when told to', async () => {
    const { filter } = setup({ groupSize: 3, maxWaitMs: 10, timeBasis: 'event', onIncomplete: 'pass' });
    const out = samplesOf(await through(filter, [s('a1', 'a', 1, T), s('b1', 'b', 1, T + 11)]));
    expect(out.map((x) => [x.rollout.id, x.reasons])).toEqual([['a1', []]]);
  });

  it('times out by processing time, counting from the first tick after the group opened, across a restart', async () => {
    const { state, store, config, filter } = setup({ groupSize: 3, maxWaitMs: 1000, timeBasis: 'processing' });
    expect(ids(await through(filter, [tick(5000), s('a1', 'a', 1, T + 10_000_000)]))).toEqual(['tick@5000']);
    state.commit();
    const restarted = groupFilter(config, store);
    expect(ids(await through(restarted, [s('a2', 'a', 1), tick(6000), tick(7000)]))).toEqual(['tick@6000', 'tick@7000']);
    state.commit();
    expect(ids(await through(restarted, [tick(7001)]))).toEqual(['a1', 'a2', 'tick@7001']);
  });

  it('writes nothing on a tick that changes nothing', async () => {
    const { state, filter } = setup({ groupSize: 3, maxWaitMs: 1000, timeBasis: 'processing' });
    await through(filter, [tick(1)]);
    expect(state.pendingChanges()).toEqual([]);
    await through(filter, [s('a1', 'a', 1), tick(2)]);
    state.commit();
    await through(filter, [tick(3)]);
    expect(state.pendingChanges()).toEqual([]);
  });

  it('releases the oldest group early when maxOpenGroups is exceeded', async () => {
    const { filter } = setup({ groupSize: 2, maxOpenGroups: 2 });
    const out = samplesOf(await through(filter, [s('a1', 'a', 1), s('b1', 'b', 1), s('c1', 'c', 0), s('c2', 'c', 1)]));
    expect(out.map((x) => [x.rollout.id, x.annotations['group.release']])).toEqual([
      ['a1', 'evicted'],
      ['c1', 'complete'],
      ['c2', 'complete'],
    ]);
  });

  it('caps a group without a known size at maxGroupSize', async () => {
    const { filter } = setup({ groupSize: null, maxGroupSize: 3 });
    expect(ids(await through(filter, [s('a1', 'a', 1), s('a2', 'a', 0), s('a3', 'a', 1), s('a4', 'a', 1)]))).toEqual(['a1', 'a2', 'a3']);
  });

  it('opens a new group for a straggler of a group already released', async () => {
    const { filter } = setup({ groupSize: 1 });
    expect(ids(await through(filter, [s('a1', 'a', 1), s('a2', 'a', 1)]))).toEqual(['a1', 'a2']);
  });
});

describe('stalenessFilter', () => {
  const versions = new AnnouncedVersions([
    { model: 'policy', version: 'v1', announcedAt: 1 },
    { model: 'policy', version: 'v2', announcedAt: 2 },
    { model: 'other', version: 'x1', announcedAt: 3 },
    { model: 'policy', version: 'v3', announcedAt: 4 },
    { model: 'policy', version: 'v1', announcedAt: 5 },
  ]);

  it('counts newer announcements per model; re-announcing changes nothing', () => {
    expect([versions.lag('policy', 'v1'), versions.lag('policy', 'v3'), versions.lag('other', 'x1')]).toEqual([2, 0, 0]);
    expect(versions.lag('policy', 'v9')).toBeUndefined();
    expect(versions.lag('nobody', 'v1')).toBeUndefined();
  });

  it('forgets the oldest versions beyond its bound', () => {
    const bounded = new AnnouncedVersions(['a', 'b', 'c'].map((version, i) => ({ model: 'm', version, announcedAt: i })), 2);
    expect([bounded.lag('m', 'a'), bounded.lag('m', 'b'), bounded.lag('m', 'c')]).toEqual([undefined, 1, 0]);
  });

  it('rejects samples lagging more than maxLag and annotates the lag', async () => {
    const filter = stalenessFilter({ maxLag: 1, onUnknown: 'pass' }, versions);
    const out = samplesOf(await through(filter, [sample({ model_version: 'v1' }), sample({ model_version: 'v2' }), sample({ model_version: 'v9' })]));
    expect(out.map((x) => x.reasons)).toEqual([['stale:model_version'], [], []]);
    expect(out.map((x) => x.annotations['staleness.lag'])).toEqual(['2', '1', undefined]);
  });

  it('rejects unknown versions when told to, and passes other envelopes', async () => {
    const filter = stalenessFilter({ maxLag: 5, onUnknown: 'reject' }, versions);
    const out = await through(filter, [tick(1), sample({ model_version: 'v9' })]);
    expect(out[0]).toEqual(tick(1));
    expect(samplesOf(out)[0]!.reasons).toEqual(['stale:unknown_version']);
  });

  it('follows announcements made while running', async () => {
    const live = new AnnouncedVersions();
    const filter = stalenessFilter({ maxLag: 0, onUnknown: 'pass' }, live);
    live.announce({ model: 'policy', version: 'v1', announcedAt: 1 });
    const [before] = samplesOf(await through(filter, [sample({ model_version: 'v1' })]));
    live.announce({ model: 'policy', version: 'v2', announcedAt: 2 });
    const [after] = samplesOf(await through(filter, [sample({ model_version: 'v1' })]));
    expect([before!.reasons, after!.reasons]).toEqual([[], ['stale:model_version']]);
  });
});

describe('contaminationFilter', () => {
  const passage = 'Natalia sold clips to forty eight of her friends in April and then she sold half as many clips in May';
  const options = { n: 13, minN: 5 };
  const sets = [
    { name: 'gsm8k', items: [{ id: 'q1', text: passage }, { id: 'q2', text: 'A short question about prime numbers here' }, { id: 'q3', text: 'too short' }] },
  ];
  const check = (config = {}) => contaminationFilter({ ...contaminationFilterDefaults, ...config }, buildEvalIndex(sets, options));

  it('rejects a prompt that copies an eval item, ignoring case and punctuation, and names the item', async () => {
    const copied = sample({ prompt: `Question: ${passage.toUpperCase().replace(/ /g, ', ')}. How many?` });
    const clean = sample({ prompt: 'Natalia sold clips to her friends.' });
    const out = samplesOf(await through(check(), [copied, clean]));
    expect(out.map((x) => x.reasons)).toEqual([['contamination:gsm8k:q1'], []]);
    expect(out[0]!.annotations).toMatchObject({ 'contamination.field': 'prompt', 'contamination.ngrams': '9' });
  });

  it('indexes a short item as one n-gram of its own length and skips items below minN', async () => {
    const index = buildEvalIndex(sets, options);
    expect(index.lengths).toEqual([13, 7]);
    expect(index.skipped).toBe(1);
    const out = samplesOf(await through(check(), [sample({ response: 'Here is a short question about prime numbers here, answered.' }), sample({ response: 'too short' })]));
    expect(out.map((x) => x.reasons)).toEqual([['contamination:gsm8k:q2'], []]);
    expect(out[0]!.annotations['contamination.field']).toBe('response');
  });

  it('requires minOverlap shared n-grams and minFraction of the item', async () => {
    const partial = sample({ prompt: passage.split(' ').slice(0, 14).join(' ') });
    expect(samplesOf(await through(check({ minOverlap: 2 }), [partial]))[0]!.reasons).toEqual(['contamination:gsm8k:q1']);
    expect(samplesOf(await through(check({ minOverlap: 3 }), [partial]))[0]!.reasons).toEqual([]);
    expect(samplesOf(await through(check({ minFraction: 0.5 }), [partial]))[0]!.reasons).toEqual([]);
  });

  it('checks only the fields configured', async () => {
    const s = sample({ response: passage });
    expect(samplesOf(await through(check({ fields: ['prompt'] }), [s]))[0]!.reasons).toEqual([]);
  });

  it('drops boilerplate n-grams shared by too many items', async () => {
    const boiler = 'which of the following is the correct answer to this question';
    const index = buildEvalIndex([{ name: 'mmlu', items: ['a', 'b', 'c'].map((id) => ({ id, text: `${boiler} ${id}` })) }], { n: 10, minN: 5, maxItemsPerNgram: 2 });
    const filter = contaminationFilter(contaminationFilterDefaults, index);
    expect(samplesOf(await through(filter, [sample({ prompt: boiler })]))[0]!.reasons).toEqual([]);
  });

  it('refuses to grow past maxNgrams', () => {
    expect(() => buildEvalIndex(sets, { ...options, maxNgrams: 3 })).toThrow(/more than 3 distinct 13-grams/);
  });

  it('loads JSONL and plain-text eval sets from files, naming sets after their files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flywheel-eval-'));
    const jsonl = join(dir, 'math.jsonl');
    const txt = join(dir, 'trivia.txt');
    await writeFile(jsonl, `${JSON.stringify({ id: 7, text: passage })}\n\n${JSON.stringify({ text: 'an item without any id field at all' })}\n`);
    await writeFile(txt, 'first line is not relevant to anything\nthe capital city of australia is canberra not sydney\n');
    const index = await loadEvalSets([jsonl, txt], options);
    expect(index.items.map((i) => `${i.set}:${i.id}`)).toEqual(['math:7', 'math:3', 'trivia:1', 'trivia:2']);
    const filter = contaminationFilter(contaminationFilterDefaults, index);
    const out = samplesOf(await through(filter, [sample({ prompt: 'True or false: the capital city of Australia is Canberra, not Sydney?' })]));
    expect(out[0]!.reasons).toEqual(['contamination:trivia:2']);
  });

  it('names the file and line of a malformed JSONL item', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flywheel-eval-'));
    const bad = join(dir, 'bad.jsonl');
    await writeFile(bad, '{"id": 1, "text": "fine"}\n{oops\n');
    await expect(loadEvalSets([bad])).rejects.toThrow(/bad\.jsonl:2: not JSON/);
  });
});

describe('ruleFilter', () => {
  const rules = [
    { name: 'weak_or_long', when: 'rule.reward < 0.5 or token_count > 4000' },
    { name: 'math_wrong', when: "tags.domain == 'math' and rewards.correct == 0" },
  ];

  it('rejects by each rule that holds, naming it', async () => {
    const filter = ruleFilter({ rules, onMissing: 'pass' });
    const ok = sample({ tags: { domain: 'math' } }, { scores: { 'rule.reward': 0.9 } });
    const long = sample({ token_count: 5000, rewards: { correct: 0 }, tags: { domain: 'math' } }, { scores: { 'rule.reward': 0.9 } });
    const out = samplesOf(await through(filter, [ok, long]));
    expect(out.map((x) => x.reasons)).toEqual([[], ['rule:weak_or_long', 'rule:math_wrong']]);
  });

  it('decides a rule that needs a missing value by onMissing, with three-valued logic', async () => {
    const unknown = sample({ token_count: 10 });
    const known = sample({ token_count: 5000 });
    const pass = ruleFilter({ rules: [rules[0]!], onMissing: 'pass' });
    const reject = ruleFilter({ rules: [rules[0]!], onMissing: 'reject' });
    expect(samplesOf(await through(pass, [unknown, known])).map((x) => x.reasons)).toEqual([[], ['rule:weak_or_long']]);
    expect(samplesOf(await through(reject, [unknown, known])).map((x) => x.reasons)).toEqual([['rule:weak_or_long:missing'], ['rule:weak_or_long']]);
    const andFalse = compileRule('rule.reward < 0.5 and token_count > 4000');
    expect(andFalse(unknown)).toBe(false);
    expect(compileRule('not (rule.reward < 0.5)')(unknown)).toBeNull();
  });

  it('evaluates arithmetic with precedence, strings, exists() and division by zero as missing', () => {
    const s = sample({ token_count: 10, prompt: 'abcd' }, { scores: { a: 2, b: 0 }, annotations: { cell: 'x' } });
    expect(compileRule('1 + a * 3 == 7 && -a < 0')(s)).toBe(true);
    expect(compileRule('(1 + a) * 3 == 9')(s)).toBe(true);
    expect(compileRule('prompt_chars / token_count == 0.4')(s)).toBe(true);
    expect(compileRule('a / b > 1')(s)).toBeNull();
    expect(compileRule("annotations.cell != 'y' and model_version == 'v1'")(s)).toBe(true);
    expect(compileRule('exists(scores.missing) or !exists(a)')(s)).toBe(false);
    expect(compileRule('1e3 > 999.5 and .5 < 1')(s)).toBe(true);
  });

  it('reports bad rules with the field and the column', () => {
    const error = (when: string) => {
      try {
        ruleFilter({ rules: [{ name: 'ok', when: 'a > 1' }, { name: 'r', when }], onMissing: 'pass' });
      } catch (err) {
        return err as ExpressionError;
      }
      throw new Error('no error');
    };
    const cut = error('rule.reward < ');
    expect(cut).toBeInstanceOf(ExpressionError);
    expect(cut.message).toBe('rules[1].when: expected a value but found end of input at column 15\n  rule.reward < \n                ^');
    expect(error('a = 1').message).toContain('use == to compare at column 3');
    expect(error('prompt > 3').message).toContain('expected a string right of ">" (the left side is a string), got a number at column 10');
    expect(error('rule.reward + 1').message).toContain('expected a condition (true or false) as the whole expression, got a number');
    expect(error('(a > 1').message).toContain('expected ")" (for the "(" at column 1) but found end of input');
    expect(error("tags.x == 'open").message).toContain('unterminated string at column 11');
    expect(error('tags.x == "open"').message).toContain('double quotes are not used');
    expect(error('a > 1 b').message).toContain('unexpected "b" at column 7');
    expect(error('a > 1 and or').message).toContain('expected a value but found "or"');
    expect(error('a # 1').message).toContain('unexpected character "#"');
  });

  it('reads own properties only: a prototype member such as constructor is a missing value, not a function', async () => {
    const s = sample({ rewards: { correct: 1 }, tags: {} }, { scores: { a: 1 }, annotations: {} });
    for (const name of ['scores.constructor', 'rewards.toString', 'constructor', 'scores.__proto__', 'hasOwnProperty']) {
      expect(compileRule(`exists(${name})`)(s)).toBe(false);
      expect(compileRule(`${name} > 0`)(s)).toBeNull();
    }
    expect(compileRule("tags.constructor == 'x' or annotations.valueOf != 'y'")(s)).toBeNull();
    // An own property of that name is an ordinary value.
    expect(compileRule('scores.constructor == 2')(sample({}, { scores: { constructor: 2 } }))).toBe(true);
    const reject = ruleFilter({ rules: [{ name: 'proto', when: 'scores.constructor > 0' }], onMissing: 'reject' });
    expect(samplesOf(await through(reject, [s])).map((x) => x.reasons)).toEqual([['rule:proto:missing']]);
  });

  it('refuses unnamed and duplicate rules', () => {
    expect(() => ruleFilter({ rules: [{ name: '', when: 'a > 1' }], onMissing: 'pass' })).toThrow(/needs a name/);
    expect(() => ruleFilter({ rules: [{ name: 'x', when: 'a > 1' }, { name: 'x', when: 'a > 2' }], onMissing: 'pass' })).toThrow(/defined twice/);
  });
});

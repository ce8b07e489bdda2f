import { describe, expect, it } from 'vitest';
import type { Envelope } from '../lib/envelope.ts';
import { featureDefaults, featureLayout, featureSize, featurize, featurizeInto, murmur3, responseText, textFeatures, textFeaturesInto, type FeatureConfig } from '../contracts/features.ts';
import { heuristics, heuristicsDefaults, repetition, type HeuristicsConfig } from '../operators/score/heuristics.ts';
import { rewardCombine, rewardCombineDefaults, type RewardCombineConfig } from '../operators/score/reward-combine.ts';
import { selfCertainty, selfCertaintyDefaults } from '../operators/score/self-certainty.ts';
import type { Rollout } from '../contracts/records.ts';
import { rollout, sample, samplesOf, through } from './helpers/envelopes.ts';

const ticks: Envelope[] = [{ kind: 'tick', now: 1 }, { kind: 'tick', now: 2 }];

function cosine(a: Float32Array, b: Float32Array): number {
  let [ab, aa, bb] = [0, 0, 0];
  a.forEach((x, i) => ((ab += x * b[i]!), (aa += x * x), (bb += b[i]! ** 2)));
  return ab / Math.sqrt(aa * bb);
}

/**
 * `featurize` as its doc comment states it, written the slow, obvious way (regexes, arrays of
 * code points, one array per n-gram): what a port to another language would follow.
 */
function literalFeatures(r: Rollout, c: FeatureConfig): Float32Array {
  const raw = `${r.prompt}\n${responseText(r)}`;
  const text = Array.from(raw).slice(0, c.maxChars).join('').toLowerCase();
  const points = (s: string) => Array.from(s, (ch) => ch.codePointAt(0)!);
  const counts = new Float64Array(c.dims);
  const add = (g: number) => (counts[g % c.dims]! += g < 2 ** 31 ? 1 : -1);
  const words = (text.match(/[\p{L}\p{N}]+/gu) ?? []).map((w) => murmur3(points(w), 0));
  for (const n of c.wordNgrams) for (let i = 0; i + n <= words.length; i++) add(murmur3(words.slice(i, i + n), 0x77000000 + n));
  const chars = points(` ${text.replace(/\s+/g, ' ').trim()} `);
  for (const n of c.charNgrams) for (let i = 0; i + n <= chars.length; i++) add(murmur3(chars.slice(i, i + n), 0x63000000 + n));
  const out = new Float32Array(featureSize(c));
  const squares = counts.reduce((s, x) => s + x * x, 0);
  if (squares > 0) counts.forEach((x, i) => (out[i] = x * (1 / Math.sqrt(squares))));
  const lps = r.logprobs ?? [];
  const mean = lps.reduce((s, x) => s + x, 0) / lps.length;
  const tail = [
    Math.log1p(raw.length),
    Math.log1p(Math.max(0, r.token_count)),
    ...c.rewardNames.map((name) => (Object.hasOwn(r.rewards, name) ? r.rewards[name]! : 0)),
    ...(lps.length === 0 ? [0, 0, 0, 0] : [mean, Math.min(...lps), Math.sqrt(lps.reduce((s, x) => s + (x - mean) ** 2, 0) / lps.length), 1]),
  ];
  out.set(tail, c.dims);
  return out;
}

describe('features', () => {
  const config: FeatureConfig = { ...featureDefaults, dims: 256, rewardNames: ['correct', 'style'] };

  it('hashes with MurmurHash3_x86_32 over 32-bit little-endian values (the published test vectors)', () => {
    const le = (bytes: string) => [Buffer.from(bytes, 'latin1').readUInt32LE(0)];
    expect(murmur3([], 0)).toBe(0);
    expect(murmur3([], 1)).toBe(0x514e28b7);
    expect(murmur3([], 0xffffffff)).toBe(0x81f16f39);
    expect(murmur3([0], 0)).toBe(0x2362f9de);
    expect(murmur3(le('aaaa'), 0x9747b28c)).toBe(0x5a97808a);
    expect(murmur3(le('abcd'), 0x9747b28c)).toBe(0xf0478627);
    // mmh3.hash('hé🙂'.encode('utf-32-le'), 0x63000003, signed=False), computed with Python's mmh3.
    expect(murmur3(Array.from('hé🙂', (c) => c.codePointAt(0)!), 0x63000003)).toBe(0xc64ed8ff);
  });

  it('follows its documented algorithm exactly: a literal, string-based implementation of the steps gives the same float32 values', () => {
    const configs: FeatureConfig[] = [
      config,
      { ...featureDefaults, dims: 100, wordNgrams: [1, 3], charNgrams: [2, 4], rewardNames: ['correct'], maxChars: 40 },
      { ...featureDefaults, dims: 64, wordNgrams: [], charNgrams: [1], rewardNames: [] },
    ];
    const rollouts: Rollout[] = [
      rollout({ prompt: 'What is 2 + 2?', response: 'Answer: 4', logprobs: [-0.5, -1.5] }),
      rollout({ prompt: '  ÉLAN  vital\t\tΣΑΣ  ', response: 'ΟΔΟΣ\n\nİstanbul 🙂 x² ½ 日本語のテキスト\u00a0end  ', rewards: { correct: 0.25 } }),
      rollout({ prompt: '', response: '', token_count: 0, rewards: {} }),
      rollout({ prompt: 'Long '.repeat(30), response: null, steps: [{ role: 'assistant', content: 'step one' }, { role: 'tool', content: 'STEP two 🙂🙂' }] }),
      rollout({ prompt: 'a\ud800b', response: 'lone\udc00surrogates' }),
    ];
    for (const c of configs) {
      for (const r of rollouts) {
        const expected = literalFeatures(r, c);
        expect(Array.from(featurize({ ...r }, c)), `${c.dims} ${r.prompt}`).toEqual(Array.from(expected));
        const row = new Float32Array(featureSize(c) * 3).fill(7);
        featurizeInto({ ...r }, c, row, featureSize(c));
        expect(Array.from(row.subarray(featureSize(c), 2 * featureSize(c)))).toEqual(Array.from(expected));
        expect(row[0]).toBe(7);
        expect(row[2 * featureSize(c)]).toBe(7);
        const text = `${r.prompt} ${responseText(r)}`;
        const textRow = new Float32Array(c.dims + 2).fill(7);
        textFeaturesInto(text, c, textRow, 1);
        expect(Array.from(textRow.subarray(1, c.dims + 1))).toEqual(Array.from(textFeatures(text, c)));
      }
    }
  });

  it('lays out l2-normalised hashed n-grams, then the named numeric tail', () => {
    const r = sample({ prompt: 'What is 2 + 2?', response: 'Answer: 4', token_count: 7, rewards: { correct: 1 }, logprobs: [-0.5, -1.5] }).rollout;
    const v = featurize(r, config);
    expect(featureLayout(config)).toEqual(['log_chars', 'log_tokens', 'reward:correct', 'reward:style', 'logprob_mean', 'logprob_min', 'logprob_std', 'logprob_present']);
    expect(v).toHaveLength(featureSize(config));
    expect(Math.hypot(...v.slice(0, 256))).toBeCloseTo(1, 5);
    const tail = Array.from(v.slice(256));
    const expected = [Math.log1p('What is 2 + 2?\nAnswer: 4'.length), Math.log1p(7), 1, 0, -1, -1.5, 0.5, 1];
    tail.forEach((x, i) => expect(x).toBeCloseTo(expected[i]!, 5));
  });

  it('is deterministic and gives zeros, not NaN, for empty text and absent log-probs', () => {
    const r = sample({ prompt: '', response: '', token_count: 0, rewards: {}, logprobs: null }).rollout;
    const v = featurize(r, config);
    expect(Array.from(v)).toEqual(Array.from(featurize(r, config)));
    expect(Array.from(v.slice(0, 256)).every((x) => x === 0)).toBe(true);
    expect(Array.from(v.slice(256 + 4))).toEqual([0, 0, 0, 0]);
    expect(Array.from(featurize(sample({ logprobs: [] }).rollout, config).slice(-4))).toEqual([0, 0, 0, 0]);
  });

  it('puts near copies close and unrelated texts apart', () => {
    const a = textFeatures('The derivative of x squared is two x, so the slope at 3 is 6.', config);
    const b = textFeatures('the derivative of x squared is 2x, so the slope at 3 is six', config);
    const c = textFeatures('Paris is the capital of France and sits on the Seine.', config);
    expect(cosine(a, b)).toBeGreaterThan(0.6);
    // Not near 0: "the", "is", "of" and their char trigrams are shared (0.32 with no bucket
    // collisions at all, at 2^20 dims); 256 buckets add collisions, not much similarity.
    expect(cosine(a, c)).toBeLessThan(0.45);
    expect(cosine(a, b)).toBeGreaterThan(2 * cosine(a, c));
  });

  it('hashes only the first maxChars characters', () => {
    const short: FeatureConfig = { ...config, maxChars: 10 };
    expect(Array.from(textFeatures('0123456789 and more', short))).toEqual(Array.from(textFeatures('0123456789 else', short)));
  });

  it('throws on non-finite rewards and log-probs, and reads only own reward properties', () => {
    expect(() => featurize(sample({ rewards: { correct: Number.POSITIVE_INFINITY } }).rollout, config)).toThrow('reward correct is not finite');
    expect(() => featurize(sample({ logprobs: [-1, Number.NaN] }).rollout, config)).toThrow('log-prob NaN is not finite');
    const odd = featurize(sample({ rewards: {} }).rollout, { ...config, rewardNames: ['constructor'] });
    expect(odd[256 + 2]).toBe(0);
  });
});

describe('selfCertainty', () => {
  it('scores mean and min log-prob and exp(mean) as confidence', async () => {
    const [out] = samplesOf(await through(selfCertainty(selfCertaintyDefaults), [sample({ logprobs: [-0.1, -0.3, -2] })]));
    expect(out!.scores['certainty.mean_logprob']).toBeCloseTo(-0.8, 6);
    expect(out!.scores['certainty.min_logprob']).toBeCloseTo(-2, 6);
    expect(out!.scores['certainty.confidence']).toBeCloseTo(Math.exp(-0.8), 6);
  });

  it('gives no score, not 0, without log-probs; dead-letters a non-finite one; passes ticks', async () => {
    const out = await through(selfCertainty({ name: 'c' }), [sample({ logprobs: null }), sample({ logprobs: [] }), sample({ logprobs: [Number.NaN] }), ...ticks]);
    expect(out[0]).toMatchObject({ kind: 'sample', scores: {} });
    expect(out[1]).toMatchObject({ kind: 'sample', scores: {} });
    expect(out[2]).toMatchObject({ kind: 'dead', stage: 'self-certainty', reason: 'log-prob NaN is not finite' });
    expect(out.slice(3)).toEqual(ticks);
    expect(await through(selfCertainty({ name: 'c' }), [])).toEqual([]);
  });
});

describe('rewardCombine', () => {
  const cfg = (overrides: Partial<RewardCombineConfig>): RewardCombineConfig => ({ ...rewardCombineDefaults, ...overrides });
  const combined = async (config: RewardCombineConfig, ...samples: ReturnType<typeof sample>[]) =>
    samplesOf(await through(rewardCombine(config), samples)).map((s) => s.scores[config.name]);

  it('weights inputs, as a mean or a plain sum', async () => {
    const s = sample({ rewards: { correct: 1, style: 0 } });
    expect(await combined(cfg({ weights: { correct: 3, style: 1 } }), s)).toEqual([0.75]);
    expect(await combined(cfg({ weights: { correct: 3, style: -1 }, normalize: false }), sample({ rewards: { correct: 1, style: 1 } }))).toEqual([2]);
  });

  it('takes the min or max, reading scores before rewards', async () => {
    const s = sample({ rewards: { correct: 1, judge: 0.2 } }, { scores: { judge: 0.6 } });
    expect(await combined(cfg({ mode: 'min', inputs: ['correct', 'judge'] }), s)).toEqual([0.6]);
    expect(await combined(cfg({ mode: 'max', inputs: ['judge'] }), s)).toEqual([0.6]);
  });

  it('evaluates an expression over scores and rewards', async () => {
    const config = cfg({ mode: 'expression', expression: 'correct * (certainty.confidence > 0.5) + 0.1 * min(rule.format, 1)' });
    const s = sample({ rewards: { correct: 1 } }, { scores: { 'certainty.confidence': 0.7, 'rule.format': 1 } });
    const [value] = await combined(config, s);
    expect(value).toBeCloseTo(1.1, 10);
  });

  it('skips or zeroes a missing input, and writes no score for a non-finite result', async () => {
    const missing = sample({ rewards: { correct: 1 } });
    expect(await combined(cfg({ mode: 'min', inputs: ['correct', 'judge'] }), missing)).toEqual([undefined]);
    expect(await combined(cfg({ mode: 'min', inputs: ['correct', 'judge'], onMissing: 'zero' }), missing)).toEqual([0]);
    expect(await combined(cfg({ mode: 'expression', expression: 'correct / (correct - 1)' }), missing)).toEqual([undefined]);
    expect(await combined(cfg({ mode: 'expression', expression: 'constructor + 1' }), missing)).toEqual([undefined]);
  });

  it('refuses a bad config when built, naming the problem', () => {
    expect(() => rewardCombine(cfg({ weights: {} }))).toThrow('needs at least one entry in weights');
    expect(() => rewardCombine(cfg({ weights: { a: 1, b: -1 } }))).toThrow('weights must sum to more than 0');
    expect(() => rewardCombine(cfg({ mode: 'max' }))).toThrow('needs at least one name in inputs');
    expect(() => rewardCombine(cfg({ mode: 'expression', expression: 'a +' }))).toThrow('expression: expected a value but found end of input at column 4');
  });

  it('passes ticks and dead letters through, in order, and handles empty input', async () => {
    const dead: Envelope = { kind: 'dead', source: { topic: 't', partition: 0, offset: '1' }, payload: null, key: null, stage: 'decode', reason: 'x' };
    const out = await through(rewardCombine(cfg({ weights: { correct: 1 } })), [ticks[0]!, dead, sample(), ticks[1]!]);
    expect(out.map((e) => e.kind)).toEqual(['tick', 'dead', 'sample', 'tick']);
    expect(await through(rewardCombine(cfg({ weights: { correct: 1 } })), [])).toEqual([]);
  });
});

describe('heuristics', () => {
  const cfg = (overrides: Partial<HeuristicsConfig> = {}): HeuristicsConfig => ({ ...heuristicsDefaults, ...overrides });
  const scores = async (config: HeuristicsConfig, ...samples: ReturnType<typeof sample>[]) =>
    samplesOf(await through(heuristics(config), samples)).map((s) => s.scores);

  it('measures length, repetition, overthinking and format', async () => {
    const config = cfg({ overthinking: { maxTokens: 100, answerPattern: 'Answer:' }, format: { pattern: '^answer:\\s*\\d+$', flags: 'im' } });
    const [s] = await scores(config, sample({ response: 'so so so so\nAnswer: 4', token_count: 12 }));
    expect(s).toEqual({ 'heuristic.chars': 21, 'heuristic.tokens': 12, 'heuristic.repetition': 0.25, 'heuristic.overthinking': 0, 'heuristic.format': 1 });
  });

  it('flags a long chain without an answer as overthinking, but not a long one that answers', async () => {
    const config = cfg({ overthinking: { maxTokens: 100, answerPattern: 'Answer:' } });
    const out = await scores(config, sample({ response: 'hmm, wait, let me reconsider', token_count: 101 }), sample({ response: 'long... Answer: 4', token_count: 5000 }), sample({ response: 'hmm', token_count: 100 }));
    expect(out.map((s) => s['heuristic.overthinking'])).toEqual([1, 0, 0]);
  });

  it('counts repeated word n-grams and gives 0 below n words', () => {
    expect(repetition('a b c a b c', 3)).toBe(0.25);
    expect(repetition('One two', 3)).toBe(0);
    expect(repetition('', 1)).toBe(0);
    expect(repetition('Yes yes YES', 1)).toBeCloseTo(2 / 3, 10);
  });

  it('reads trajectory steps without a response and writes only the named scores', async () => {
    const config = cfg({ names: { chars: 'len', tokens: null, repetition: null, overthinking: null, format: 'fmt' }, format: { pattern: 'Answer:', flags: '' } });
    const [s] = await scores(config, sample({ response: null, steps: [{ role: 'assistant', content: 'Answer: 4' }] }));
    expect(s).toEqual({ len: 9, fmt: 1 });
  });

  it('refuses a bad or stateful pattern when built, naming the field', () => {
    expect(() => heuristics(cfg({ format: { pattern: '(', flags: '' } }))).toThrow('heuristics format.pattern');
    expect(() => heuristics(cfg({ format: { pattern: 'a', flags: 'g' } }))).toThrow('flags "g" and "y" are not allowed');
    expect(() => heuristics(cfg({ overthinking: { maxTokens: 1, answerPattern: '[' } }))).toThrow('heuristics overthinking.answerPattern');
  });

  it('passes ticks through and handles empty input', async () => {
    expect(await through(heuristics(cfg()), ticks)).toEqual(ticks);
    expect(await through(heuristics(cfg()), [])).toEqual([]);
  });
});

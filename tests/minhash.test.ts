import { describe, expect, it } from 'vitest';
import { prng } from '../cli/synthetic.ts';
import {
  bandKeys,
  candidateProbability,
  checkMinHashConfig,
  decodeSketch,
  encodeSketch,
  estimateJaccard,
  exactJaccard,
  minHashDefaults,
  murmur3,
  shingleHashes,
  shingles,
  sketchOf,
} from '../operators/minhash.ts';

describe('murmur3', () => {
  it('matches the reference x86 32-bit vectors', () => {
    const h = (s: string, seed = 0) => murmur3(Buffer.from(s, 'utf8'), seed);
    expect(h('')).toBe(0);
    expect(h('', 1)).toBe(0x514e28b7);
    expect(h('abc')).toBe(0xb3dd93fa);
    expect(h('hello')).toBe(0x248bfa47);
    expect(h('The quick brown fox jumps over the lazy dog')).toBe(0x2e4ff723);
  });
});

describe('shingles', () => {
  const words = { shingle: 'word', shingleSize: 3 } as const;

  it('takes k consecutive words of the normalised text', () => {
    expect([...shingles('  The cat   SAT on\tthe mat ', words)]).toEqual(['the cat sat', 'cat sat on', 'sat on the', 'on the mat']);
  });

  it('makes a text shorter than k one shingle and an empty text none', () => {
    expect([...shingles('Answer: 4', words)]).toEqual(['answer: 4']);
    expect(shingles(' \n ', words).size).toBe(0);
    expect(shingleHashes('', words)).toHaveLength(0);
  });

  it('takes k characters (code points) in char mode', () => {
    expect([...shingles('Abcd', { shingle: 'char', shingleSize: 3 })]).toEqual(['abc', 'bcd']);
    expect([...shingles('h👋', { shingle: 'char', shingleSize: 3 })]).toEqual(['h👋']);
  });
});

describe('sketchOf', () => {
  const text = 'The quick brown fox jumps over the lazy dog by the river bank';

  it('is fixed by the algorithm and seed: these values must never change, stored indexes depend on them', () => {
    const sketch = sketchOf(text, minHashDefaults);
    expect(sketch).toHaveLength(128);
    expect(Array.from(sketch.slice(0, 4))).toEqual(GOLDEN_PREFIX);
    expect(bandKeys(sketch, minHashDefaults).slice(0, 2)).toEqual(GOLDEN_BANDS);
  });

  it('depends on the seed, not on case or spacing', () => {
    expect(sketchOf(text.toUpperCase().replace(/ /g, '  '), minHashDefaults)).toEqual(sketchOf(text, minHashDefaults));
    expect(sketchOf(text, { ...minHashDefaults, seed: 2 })).not.toEqual(sketchOf(text, minHashDefaults));
  });

  it('gives an empty text the all-max sketch', () => {
    expect(Array.from(new Set(sketchOf('', minHashDefaults)))).toEqual([0xffffffff]);
  });

  it('estimates 1 for identical texts and refuses sketches of different lengths', () => {
    const s = sketchOf(text, minHashDefaults);
    expect(estimateJaccard(s, sketchOf(text, minHashDefaults))).toBe(1);
    expect(() => estimateJaccard(s, sketchOf(text, { ...minHashDefaults, permutations: 64 }))).toThrow(/different lengths/);
  });

  it('round-trips through base64 as little-endian uint32', () => {
    const s = sketchOf(text, minHashDefaults);
    expect(decodeSketch(encodeSketch(s))).toEqual(s);
    expect(encodeSketch(Uint32Array.of(1, 0xffffffff))).toBe(Buffer.from([1, 0, 0, 0, 255, 255, 255, 255]).toString('base64'));
    expect(() => decodeSketch('AAA')).toThrow(/multiple of 4/);
  });

  it('prefixes band keys and gives one key per band', () => {
    const keys = bandKeys(sketchOf(text, minHashDefaults), minHashDefaults, 'g1/');
    expect(keys).toHaveLength(16);
    expect(keys.every((k, j) => k.startsWith(`g1/${j}.`) && /^g1\/\d+\.[0-9a-f]{8}$/.test(k))).toBe(true);
  });

  it('rejects configs whose bands do not divide the permutations', () => {
    expect(() => checkMinHashConfig({ ...minHashDefaults, bands: 3 })).toThrow(/must divide/);
    expect(() => checkMinHashConfig({ ...minHashDefaults, shingleSize: 0 })).toThrow(/positive integers/);
  });
});

// Values of the defaults (seed 1, 128 permutations, 16 bands, word 3-shingles) for `text` above.
const GOLDEN_PREFIX = [530892217, 765250105, 703442377, 286799452];
const GOLDEN_BANDS = ['0.199d526f', '1.5a1a41e8'];

/**
 * Estimate quality on reproducible text: base passages drawn from a synthetic vocabulary, and
 * variants with controlled word substitution, insertion and deletion rates, so true Jaccard
 * similarities cover 0…1.
 */
describe('estimate quality against exact Jaccard', () => {
  const random = prng(20_240_601);
  const vocabulary = Array.from({ length: 3000 }, () => {
    const syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'ti', 'vo', 'ze', 'pu', 'da', 'fe'];
    let w = '';
    for (let i = 0, n = 2 + Math.floor(random() * 3); i < n; i++) w += syllables[Math.floor(random() * syllables.length)];
    return w;
  });
  const word = () => vocabulary[Math.floor(random() * vocabulary.length)]!;
  const variant = (base: string[], rate: number) => {
    const out: string[] = [];
    for (const w of base) {
      const r = random();
      if (r < rate / 3) continue; // deletion
      if (r < (2 * rate) / 3) out.push(word()); // substitution
      else if (r < rate) out.push(w, word()); // insertion
      else out.push(w);
    }
    return out.join(' ');
  };
  const rates = [0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.13, 0.17, 0.22, 0.3, 0.45, 0.7];
  const config = minHashDefaults;
  const threshold = 0.8;
  const pairs: Array<{ exact: number; estimate: number; candidate: boolean }> = [];
  for (let b = 0; b < 80; b++) {
    const base = Array.from({ length: 60 + Math.floor(random() * 140) }, word);
    const baseText = base.join(' ');
    const baseSketch = sketchOf(baseText, config);
    const baseKeys = new Set(bandKeys(baseSketch, config));
    for (const rate of rates) {
      const text = variant(base, rate);
      const sketch = sketchOf(text, config);
      pairs.push({
        exact: exactJaccard(baseText, text, config),
        estimate: estimateJaccard(baseSketch, sketch),
        candidate: bandKeys(sketch, config).some((k) => baseKeys.has(k)),
      });
    }
  }

  it('estimates with a mean absolute error below 0.05 (128 permutations)', () => {
    const errors = pairs.map((p) => Math.abs(p.estimate - p.exact));
    const mae = errors.reduce((a, b) => a + b, 0) / errors.length;
    const max = Math.max(...errors);
    console.log(`minhash: ${pairs.length} pairs, MAE ${mae.toFixed(4)}, max error ${max.toFixed(3)} (theory: std ≤ ${Math.sqrt(0.25 / 128).toFixed(3)})`);
    expect(mae).toBeLessThan(0.05);
    expect(max).toBeLessThan(0.2);
  });

  it('makes candidates at the rate of the S-curve 1 − (1 − s^r)^b', () => {
    const lines: string[] = [];
    for (let i = 0; i < 10; i++) {
      const lo = i / 10;
      const bin = pairs.filter((p) => Math.min(9, Math.floor(p.exact * 10)) === i);
      if (bin.length === 0) continue;
      const observed = bin.filter((p) => p.candidate).length / bin.length;
      const expected = bin.reduce((a, p) => a + candidateProbability(p.exact, config), 0) / bin.length;
      lines.push(`  J ∈ [${lo.toFixed(1)}, ${(lo + 0.1).toFixed(1)}${i === 9 ? ']' : ')'}: n=${String(bin.length).padStart(3)} candidates ${observed.toFixed(3)} vs S-curve ${expected.toFixed(3)}`);
      // Binomial noise plus the estimate's own spread around each pair's s: generous for small bins.
      if (bin.length >= 20) expect(Math.abs(observed - expected)).toBeLessThan(0.15);
    }
    console.log(`LSH (b=${config.bands}, r=${config.permutations / config.bands}):\n${lines.join('\n')}`);
  });

  it('flags pairs with J ≥ threshold + 0.1 and few with J ≤ threshold − 0.2 (candidate and estimate ≥ threshold)', () => {
    const flagged = (p: (typeof pairs)[number]) => p.candidate && p.estimate >= threshold;
    const high = pairs.filter((p) => p.exact >= threshold + 0.1);
    const low = pairs.filter((p) => p.exact <= threshold - 0.2);
    const recall = high.filter(flagged).length / high.length;
    const falsePositives = low.filter(flagged).length / low.length;
    const lowCandidates = low.filter((p) => p.candidate).length / low.length;
    console.log(
      `decision at ${threshold}: recall ${recall.toFixed(3)} (n=${high.length}), false positives ${falsePositives.toFixed(3)} (n=${low.length}; LSH candidates among them ${lowCandidates.toFixed(3)})`,
    );
    expect(high.length).toBeGreaterThan(100);
    expect(low.length).toBeGreaterThan(100);
    expect(recall).toBeGreaterThanOrEqual(0.9);
    expect(falsePositives).toBeLessThanOrEqual(0.1);
  });
});

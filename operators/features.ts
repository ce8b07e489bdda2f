import type { Rollout } from '../streams/records.ts';

export interface FeatureConfig {
  /** Hash buckets for the text n-grams: the first `dims` entries of every feature vector. */
  dims: number;
  /** Word n-gram sizes (words = runs of letters and digits, lower-cased). */
  wordNgrams: number[];
  /** Character n-gram sizes, over the lower-cased, whitespace-collapsed text. */
  charNgrams: number[];
  /** Verifier rewards copied into the numeric tail, in this order (a missing reward is 0). */
  rewardNames: string[];
  /** Only this many leading characters of the text are hashed, so cost per sample is bounded. */
  maxChars: number;
}

export const featureDefaults: FeatureConfig = {
  dims: 1024,
  wordNgrams: [1, 2],
  charNgrams: [3],
  rewardNames: [],
  maxChars: 20_000,
};

/**
 * Names of the numeric features that follow the `dims` hashed buckets, in vector order. A
 * trainer that builds the same layout from the same config gets vectors a model trained on
 * them can score.
 */
export function featureLayout(config: FeatureConfig): string[] {
  return [
    'log_chars',
    'log_tokens',
    ...config.rewardNames.map((name) => `reward:${name}`),
    'logprob_mean',
    'logprob_min',
    'logprob_std',
    'logprob_present',
  ];
}

/** Length of the vectors `featurize` returns. */
export function featureSize(config: FeatureConfig): number {
  return config.dims + featureLayout(config).length;
}

/** The text a rollout answered with: the response, or its trajectory's contents. */
export function responseText(r: Rollout): string {
  return r.response ?? r.steps.map((s) => s.content).join('\n');
}

/**
 * A rollout as a fixed-length vector: signed hashed n-grams of prompt + response, l2-normalised,
 * then the numeric tail named by `featureLayout`:
 * 1. log1p of the text length in characters and of `token_count`;
 * 2. each configured reward (missing → 0);
 * 3. mean, min and standard deviation of the token log-probs, and 1 — or four zeros when the
 *    rollout kept no log-probs.
 * Throws on a non-finite reward or log-prob, so the caller can dead-letter the sample.
 */
export function featurize(rollout: Rollout, config: FeatureConfig): Float32Array {
  // The scorer, the error memory and the label join all featurize the same rollout object in
  // one pass; compute it once. Keyed weakly, so nothing outlives the rollout. Callers only read.
  let byConfig = cache.get(rollout);
  if (byConfig === undefined) cache.set(rollout, (byConfig = new WeakMap()));
  let vector = byConfig.get(config);
  if (vector === undefined) byConfig.set(config, (vector = computeFeatures(rollout, config)));
  return vector;
}

const cache = new WeakMap<Rollout, WeakMap<FeatureConfig, Float32Array>>();

function computeFeatures(rollout: Rollout, config: FeatureConfig): Float32Array {
  const text = `${rollout.prompt}\n${responseText(rollout)}`;
  const out = new Float32Array(featureSize(config));
  hashText(text, config, out);
  let i = config.dims;
  out[i++] = Math.log1p(text.length);
  out[i++] = Math.log1p(Math.max(0, rollout.token_count));
  for (const name of config.rewardNames) {
    const value = Object.hasOwn(rollout.rewards, name) ? rollout.rewards[name]! : 0;
    if (!Number.isFinite(value)) throw new Error(`reward ${name} is not finite (${value})`);
    out[i++] = value;
  }
  const stats = logprobStats(rollout.logprobs);
  if (stats !== null) {
    out[i++] = stats.mean;
    out[i++] = stats.min;
    out[i++] = stats.std;
    out[i++] = 1;
  }
  return out;
}

/** The hashed, l2-normalised n-gram part alone (length `dims`): what text encoders take. */
export function textFeatures(text: string, config: FeatureConfig): Float32Array {
  const out = new Float32Array(config.dims);
  hashText(text, config, out);
  return out;
}

export interface LogprobStats {
  mean: number;
  min: number;
  std: number;
}

/** Statistics of per-token log-probs; null when there are none. Throws on a non-finite value. */
export function logprobStats(logprobs: readonly number[] | null): LogprobStats | null {
  if (logprobs === null || logprobs.length === 0) return null;
  let sum = 0;
  let min = Infinity;
  for (const lp of logprobs) {
    if (!Number.isFinite(lp)) throw new Error(`log-prob ${lp} is not finite`);
    sum += lp;
    if (lp < min) min = lp;
  }
  const mean = sum / logprobs.length;
  let squares = 0;
  for (const lp of logprobs) squares += (lp - mean) ** 2;
  return { mean, min, std: Math.sqrt(squares / logprobs.length) };
}

/**
 * Adds each n-gram's signed count into `out[0..dims)`, then l2-normalises that block. The
 * bucket and sign of an n-gram come from FNV-1a (32-bit) over the UTF-8 bytes of
 * `w<n>:<words joined by one space>` or `c<n>:<chars>`: bucket = low 31 bits mod dims, sign =
 * top bit. Documented so a trainer in another language can reproduce it.
 */
function hashText(raw: string, config: FeatureConfig, out: Float32Array): void {
  const text = raw.slice(0, config.maxChars).toLowerCase();
  const add = (key: string) => {
    const h = fnv1a(key);
    out[(h & 0x7fffffff) % config.dims]! += h >>> 31 === 1 ? -1 : 1;
  };
  const words = text.match(/[\p{L}\p{N}]+/gu) ?? [];
  for (const n of config.wordNgrams) {
    for (let i = 0; i + n <= words.length; i++) add(`w${n}:${words.slice(i, i + n).join(' ')}`);
  }
  const chars = Array.from(` ${text.replace(/\s+/g, ' ').trim()} `);
  for (const n of config.charNgrams) {
    for (let i = 0; i + n <= chars.length; i++) add(`c${n}:${chars.slice(i, i + n).join('')}`);
  }
  let norm = 0;
  for (let i = 0; i < config.dims; i++) norm += out[i]! ** 2;
  if (norm === 0) return;
  const scale = 1 / Math.sqrt(norm);
  for (let i = 0; i < config.dims; i++) out[i]! *= scale;
}

/** FNV-1a, 32-bit, over the UTF-8 encoding of `text`; unsigned result. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  const byte = (b: number) => {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  };
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c < 0x80) byte(c);
    else if (c < 0x800) {
      byte(0xc0 | (c >> 6));
      byte(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
      byte(0xe0 | (c >> 12));
      byte(0x80 | ((c >> 6) & 0x3f));
      byte(0x80 | (c & 0x3f));
    } else {
      byte(0xf0 | (c >> 18));
      byte(0x80 | ((c >> 12) & 0x3f));
      byte(0x80 | ((c >> 6) & 0x3f));
      byte(0x80 | (c & 0x3f));
    }
  }
  return h >>> 0;
}

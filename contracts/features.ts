import type { Rollout } from './records.ts';
import { fmix32, mixBlock } from './murmur3.ts';

export interface FeatureConfig {
  /** Hash buckets for the text n-grams: the first `dims` entries of every feature vector. */
  dims: number;
  /** Word n-gram sizes (words = runs of letters and digits, lower-cased). */
  wordNgrams: number[];
  /** Character n-gram sizes, over the lower-cased, whitespace-collapsed text. */
  charNgrams: number[];
  /**
   * Verifier rewards copied into the numeric tail, in this order (a missing reward is 0). May
   * name the group-relative rewards the group filter derives (`groupRewardNames`), e.g.
   * `["correct", "correct.group_delta", "correct.group_rank"]`, or the group-relative length
   * (`groupLengthNames`).
   */
  rewardNames: string[];
  /**
   * Rewards of `rewardNames` that are probabilities and enter the tail as their logit,
   * log(p / (1 − p)) with p clamped to [`LOGIT_EPSILON`, 1 − `LOGIT_EPSILON`], instead of raw:
   * a linear scorer adds log-odds, so a calibrated probability reward is worth its log-odds, and
   * the raw value squashes exactly the confident end of the scale. Their layout name is
   * `reward_logit:<name>`. Each must be listed in `rewardNames`. Empty: every reward raw.
   */
  logitRewards: string[];
  /** Only this many leading characters of the text are hashed, so cost per sample is bounded. */
  maxChars: number;
}

export const featureDefaults: FeatureConfig = {
  dims: 1024,
  wordNgrams: [1, 2],
  charNgrams: [3],
  rewardNames: [],
  logitRewards: [],
  maxChars: 20_000,
};

/**
 * The clamp of a `logitRewards` probability: p is taken as min(max(p, ε), 1 − ε) before
 * log(p / (1 − p)), so 0, 1 (and values outside [0, 1]) give ∓/± 13.8155… rather than ±∞.
 */
export const LOGIT_EPSILON = 1e-6;

/**
 * Names of the numeric features that follow the `dims` hashed buckets, in vector order. A
 * trainer that builds the same layout from the same config gets vectors a model trained on
 * them can score.
 */
export function featureLayout(config: FeatureConfig): string[] {
  return [
    'log_chars',
    'log_tokens',
    ...config.rewardNames.map((name) => (config.logitRewards.includes(name) ? `reward_logit:${name}` : `reward:${name}`)),
    'logprob_mean',
    'logprob_min',
    'logprob_std',
    'logprob_present',
  ];
}

/**
 * The names under which the group filter (`relative: [reward]`) writes a sample's place in its
 * prompt group into `rollout.rewards` when the group is released: `delta` = the reward minus
 * the group's mean, `z` = that delta over the group's (population) standard deviation, i.e.
 * GRPO's normalised advantage (0 when the group's values are all equal), `rank` = the share of
 * the group's other samples with a lower reward (ties count half; 0.5 alone). Being rewards,
 * they reach every featurizer (the Python port too) by `rewardNames`, with no change to the
 * layout's arithmetic.
 *
 *   groupRewardNames('correct')  // → { delta: 'correct.group_delta', z: 'correct.group_z', rank: 'correct.group_rank' }
 */
export function groupRewardNames(reward: string): { delta: string; z: string; rank: string } {
  return { delta: `${reward}.group_delta`, z: `${reward}.group_z`, rank: `${reward}.group_rank` };
}

/**
 * The reserved reward names under which the group filter (`relativeLength: true`) writes a
 * sample's response length relative to its prompt group, the same way as `groupRewardNames`:
 * `z` = (ℓ − mean ℓ) / sd ℓ over the group, ℓ = log1p(UTF-16 length of `responseText`) (0 when
 * the lengths are all equal), `rank` = the share of the group's other samples with a shorter
 * response (ties count half; 0.5 alone). Why: reward models and LLM judges favour longer
 * answers (the best-known proxy bias), and a prompt's answers differ in length far less than
 * answers to different prompts, so the absolute `log_chars` mostly encodes the prompt; the
 * value within the group is what a scorer needs to learn (or unlearn) a length preference. The
 * `group.` prefix cannot collide with a `groupRewardNames` value (those end in `.group_*`).
 *
 *   groupLengthNames()  // → { z: 'group.length_z', rank: 'group.length_rank' }
 *   features: { rewardNames: ['proxy', 'group.length_z'] }
 */
export function groupLengthNames(): { z: string; rank: string } {
  return { z: 'group.length_z', rank: 'group.length_rank' };
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
 * A rollout as a fixed-length vector. Deterministic, and written down step by step so that a
 * port (a Python trainer, say) gives the same float32 values; every step names its Python
 * equivalent.
 *
 * Text. `t` = prompt + "\n" + `responseText(rollout)`, cut to its first `maxChars` code points,
 * then lower-cased with the Unicode default full mapping (JS `toLowerCase`, Python `str.lower`).
 *
 * Hash. `H(values, seed)` = MurmurHash3_x86_32 (`murmur3` below) over the 32-bit values as
 * little-endian bytes: `mmh3.hash(struct.pack(f'<{len(v)}I', *v), seed, signed=False)`. A code
 * point is one value, so `H(chars, s)` = `mmh3.hash(chars.encode('utf-32-le'), s, signed=False)`.
 *
 * 1. Word n-grams, for each n in `wordNgrams`: a word is a maximal run of code points of general
 *    category L* or N* (`/[\p{L}\p{N}]+/gu`; Python: `unicodedata.category(ch)[0] in 'LN'`);
 *    its hash is `w = H(word's code points, 0)`; every n consecutive words (across lines and
 *    punctuation) give `g = H([w1, …, wn], 0x77000000 + n)`.
 * 2. Char n-grams, for each n in `charNgrams`: `chars` = " " + `t` with leading and trailing
 *    white space removed and each run of white space replaced by one " ", + " " (white space
 *    is JS `\s`: U+0009–U+000D, U+0020, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F,
 *    U+205F, U+3000, U+FEFF); every n consecutive code points give `g = H(them, 0x63000000 + n)`.
 * 3. Each `g` (unsigned 32-bit) adds ±1 to bucket `g mod dims` (= `g & (dims - 1)` when dims is
 *    a power of two): +1 when `g < 2^31`, −1 otherwise. Word grams first, then char grams; the
 *    counts are integers, so the order does not change the result.
 * 4. L2 normalisation of `out[0 .. dims)`: `s` = Σ out[i]² (an exact integer in float64); when
 *    s > 0, `out[i] = float32(out[i] × (1 / sqrt(s)))` in float64 arithmetic; all zeros stay zero.
 * 5. The numeric tail, in `featureLayout` order, computed in float64 and stored as float32:
 *    log1p of the length of prompt + "\n" + response before the cut, in UTF-16 code units
 *    (Python: `len(text.encode('utf-16-le')) // 2`), and of max(0, `token_count`); each reward
 *    (own properties only; missing → 0), or for a reward in `logitRewards` (present and
 *    finite) with p = min(max(value, 1e-6), 1 − 1e-6) the value log(p / (1 − p)) (Python:
 *    `math.log(p / (1 - p))`; missing → 0, the logit of 0.5); then the log-probs' mean (sum in order / count), min,
 *    population standard deviation (sqrt(Σ(lp − mean)² / count)) and 1 — or four zeros when the
 *    rollout kept no log-probs.
 * Throws on a non-finite reward or log-prob, so the caller can dead-letter the sample.
 *
 *   featurize(rollout, { ...featureDefaults, dims: 256, charNgrams: [] })  // Float32Array(262)
 *
 * The vector is computed once per (rollout object, config object) and cached weakly: the error
 * memory and the label join read the same vector. Callers only read it; it may be a view into a
 * larger buffer (mind `byteOffset`). The scorer writes rows straight into its batch buffer
 * instead (`featurizeInto`).
 */
export function featurize(rollout: Rollout, config: FeatureConfig): Float32Array {
  const byRollout = cacheOf(config);
  let vector = byRollout.get(rollout);
  if (vector === undefined) {
    const plan = planOf(config);
    vector = slabRow(plan.size);
    writeFeatures(rollout, plan, vector, 0);
    byRollout.set(rollout, vector);
  }
  return vector;
}

/**
 * A zeroed Float32Array of `size` values, a view into a shared 64 KiB slab: one small object
 * per row instead of an ArrayBuffer per row (whose allocation cost more than hashing). A slab
 * lives while any of its rows does. A row that did not fill (a throw) is simply not handed out.
 */
function slabRow(size: number): Float32Array {
  if (slab.length - slabUsed < size) {
    slab = new Float32Array(Math.max(SLAB_VALUES, size));
    slabUsed = 0;
  }
  const row = slab.subarray(slabUsed, slabUsed + size);
  slabUsed += size;
  return row;
}

const SLAB_VALUES = 16_384;
let slab = new Float32Array(0);
let slabUsed = 0;

/**
 * Writes `featurize(rollout, config)` into `out[offset .. offset + featureSize(config))`, e.g. a
 * row of a model's batch buffer, without allocating: a rollout already featurized (cached) is
 * copied, any other is computed in place and not cached (the buffer is the caller's, to reuse).
 * Throws like `featurize`; the row's content is then unspecified.
 */
export function featurizeInto(rollout: Rollout, config: FeatureConfig, out: Float32Array, offset: number): void {
  const plan = planOf(config);
  if (!(offset >= 0 && offset + plan.size <= out.length)) throw new RangeError(`featurizeInto: ${plan.size} values do not fit at offset ${offset} of ${out.length}`);
  const cached = cache.get(config)?.get(rollout);
  if (cached !== undefined) return out.set(cached, offset);
  out.fill(0, offset, offset + plan.size);
  writeFeatures(rollout, plan, out, offset);
}

/** The hashed, l2-normalised n-gram part alone (steps 1–4 on `text`, length `dims`): what text encoders take. */
export function textFeatures(text: string, config: FeatureConfig): Float32Array {
  const out = new Float32Array(config.dims);
  hashText(text, null, planOf(config), out, 0);
  return out;
}

/** `textFeatures(text, config)` written into `out[offset .. offset + dims)`, e.g. a row of an encoder's batch. */
export function textFeaturesInto(text: string, config: FeatureConfig, out: Float32Array, offset: number): void {
  const plan = planOf(config);
  if (!(offset >= 0 && offset + plan.dims <= out.length)) throw new RangeError(`textFeaturesInto: ${plan.dims} values do not fit at offset ${offset} of ${out.length}`);
  out.fill(0, offset, offset + plan.dims);
  hashText(text, null, plan, out, offset);
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
 * MurmurHash3_x86_32 of 32-bit values taken as little-endian 4-byte blocks (so there is never a
 * tail), unsigned: `murmur3([0x61616161], 0x9747b28c)` = mmh3 of "aaaa" = 0x5a97808a.
 */
export function murmur3(values: ArrayLike<number>, seed: number): number {
  let h = seed | 0;
  for (let i = 0; i < values.length; i++) h = mixBlock(h, values[i]! | 0);
  return fmix32(h ^ (values.length * 4)) >>> 0;
}

// ---- implementation ----------------------------------------------------------------------

/** log(p / (1 − p)) of p clamped to [LOGIT_EPSILON, 1 − LOGIT_EPSILON] (step 5). */
function logit(value: number): number {
  const p = Math.min(Math.max(value, LOGIT_EPSILON), 1 - LOGIT_EPSILON);
  return Math.log(p / (1 - p));
}

/** Seeds of step 1 and 2: 'w' and 'c' in the top byte, n in the low byte. */
const WORD_SEED = 0x77000000;
const CHAR_SEED = 0x63000000;


/**
 * A config compiled once (per config object, which is treated as immutable): typed copies of
 * its lists and the scratch one call needs — featurize is synchronous, so one set serves all.
 */
interface Plan {
  dims: number;
  /** dims − 1 when dims is a power of two (bucket = g & mask), else −1 (bucket = g mod dims). */
  mask: number;
  size: number;
  maxChars: number;
  rewardNames: readonly string[];
  /** Per entry of rewardNames: 1 when it is taken as a logit (`logitRewards`). */
  rewardLogit: Uint8Array;
  wordNs: Int32Array;
  charNs: Int32Array;
  /**
   * Scratch of one call, grown as needed: the text's word hashes and its chars (code points),
   * both as pre-mixed blocks (`premix`); the buckets' integer counts (all zero between calls);
   * the buckets that left zero (a bucket may be listed twice); the scan's state.
   */
  words: Int32Array;
  chars: Int32Array;
  counts: Int32Array;
  touched: Int32Array;
  scan: Scan;
}

const plans = new WeakMap<FeatureConfig, Plan>();
const cache = new WeakMap<FeatureConfig, WeakMap<Rollout, Float32Array>>();

function cacheOf(config: FeatureConfig): WeakMap<Rollout, Float32Array> {
  let byRollout = cache.get(config);
  if (byRollout === undefined) cache.set(config, (byRollout = new WeakMap()));
  return byRollout;
}

function planOf(config: FeatureConfig): Plan {
  let plan = plans.get(config);
  if (plan !== undefined) return plan;
  const { dims } = config;
  if (!Number.isInteger(dims) || dims < 1) throw new RangeError(`features.dims must be a positive integer, got ${dims}`);
  for (const n of [...config.wordNgrams, ...config.charNgrams]) if (!Number.isInteger(n) || n < 1) throw new RangeError(`features n-gram sizes must be positive integers, got ${n}`);
  for (const name of config.logitRewards) if (!config.rewardNames.includes(name)) throw new RangeError(`features.logitRewards names "${name}", which is not in features.rewardNames`);
  plan = {
    dims,
    mask: (dims & (dims - 1)) === 0 ? dims - 1 : -1,
    size: featureSize(config),
    maxChars: config.maxChars,
    rewardNames: [...config.rewardNames],
    rewardLogit: Uint8Array.from(config.rewardNames, (name) => (config.logitRewards.includes(name) ? 1 : 0)),
    wordNs: Int32Array.from(config.wordNgrams),
    charNs: Int32Array.from(config.charNgrams),
    words: new Int32Array(64),
    chars: new Int32Array(128),
    counts: new Int32Array(dims),
    touched: new Int32Array(256),
    scan: { wordCount: 0, charCount: 0, word: 0, wordLength: 0, started: false, space: false },
  };
  plans.set(config, plan);
  return plan;
}

/** Steps 1–5 into a zeroed `out[offset .. offset + plan.size)`. */
function writeFeatures(rollout: Rollout, plan: Plan, out: Float32Array, offset: number): void {
  const response = responseText(rollout);
  hashText(rollout.prompt, response, plan, out, offset);
  let i = offset + plan.dims;
  out[i++] = Math.log1p(rollout.prompt.length + 1 + response.length);
  out[i++] = Math.log1p(Math.max(0, rollout.token_count));
  for (let k = 0; k < plan.rewardNames.length; k++) {
    const name = plan.rewardNames[k]!;
    if (!Object.hasOwn(rollout.rewards, name)) {
      i++;
      continue;
    }
    const value = rollout.rewards[name]!;
    if (!Number.isFinite(value)) throw new Error(`reward ${name} is not finite (${value})`);
    out[i++] = plan.rewardLogit[k] === 1 ? logit(value) : value;
  }
  const logprobs = rollout.logprobs;
  if (logprobs === null || logprobs.length === 0) return;
  let sum = 0;
  let min = Infinity;
  for (let k = 0; k < logprobs.length; k++) {
    const lp = logprobs[k]!;
    if (!Number.isFinite(lp)) throw new Error(`log-prob ${lp} is not finite`);
    sum += lp;
    if (lp < min) min = lp;
  }
  const mean = sum / logprobs.length;
  let squares = 0;
  for (let k = 0; k < logprobs.length; k++) squares += (logprobs[k]! - mean) ** 2;
  out[i++] = mean;
  out[i++] = min;
  out[i++] = Math.sqrt(squares / logprobs.length);
  out[i] = 1;
}

/**
 * Steps 1–4 of `featurize` on `first` + "\n" + `second` (or `first` alone when `second` is
 * null) into a zeroed `out[offset .. offset + dims)`, without a substring, a token array or a
 * string per n-gram: one pass over the UTF-16 code units lower-cases ASCII in place, hashes each
 * word as it goes and keeps each char's pre-mixed MurmurHash3 block (`premix`) for the char
 * grams, then tight loops hash the n-gram windows from the pre-mixed blocks into integer bucket
 * counts. The parts are lower-cased apart, which equals lower-casing the joined text: the one
 * context-dependent mapping (final sigma) does not look across a line break.
 */
function hashText(first: string, second: string | null, plan: Plan, out: Float32Array, offset: number): void {
  let a = first;
  let b = second;
  if (a.length + (b === null ? 0 : b.length + 1) > plan.maxChars) {
    a = cutCodePoints(b === null ? a : `${a}\n${b}`, plan.maxChars);
    b = null;
  }
  const units = a.length + (b === null ? 0 : b.length + 1);
  // At most one word per two units (+1), one char per unit (+2 spaces): grown once, reused.
  if (plan.words.length < (units >> 1) + 1) plan.words = new Int32Array(units + 1);
  const wantChars = plan.charNs.length > 0;
  if (wantChars && plan.chars.length < units + 2) plan.chars = new Int32Array(units + 2);
  const scan = plan.scan;
  scan.wordCount = 0;
  scan.charCount = 0;
  scan.word = 0;
  scan.wordLength = 0;
  scan.started = false;
  scan.space = false;
  if (wantChars) plan.chars[scan.charCount++] = SPACE_BLOCK;
  scanPart(a, plan, wantChars);
  if (b !== null) {
    scanPart('\n', plan, wantChars);
    scanPart(b, plan, wantChars);
  }
  const words = plan.words;
  if (scan.wordLength > 0) words[scan.wordCount++] = premix(fmix32(scan.word ^ (scan.wordLength * 4)));
  if (wantChars) plan.chars[scan.charCount++] = SPACE_BLOCK;

  let touched = addGrams(plan, plan.wordNs, WORD_SEED, words, scan.wordCount, 0);
  touched = addGrams(plan, plan.charNs, CHAR_SEED, plan.chars, scan.charCount, touched);

  // Each gram listed its bucket: a bucket's nonzero count is taken (and cleared) at its first
  // listing, so any later listing finds 0 and is skipped, as is a bucket whose ±1s cancelled. The counts are exact integers, so Σ count² is exact in float64
  // whatever the order.
  const counts = plan.counts;
  const list = plan.touched;
  let unique = 0;
  let squares = 0;
  for (let k = 0; k < touched; k++) {
    const bucket = list[k]!;
    const v = counts[bucket]!;
    if (v === 0) continue;
    counts[bucket] = 0;
    out[offset + bucket] = v;
    list[unique++] = bucket;
    squares += v * v;
  }
  if (squares === 0) return;
  const scale = 1 / Math.sqrt(squares);
  for (let k = 0; k < unique; k++) out[offset + list[k]!]! *= scale;
}

/**
 * State of the pass over the text's parts (`scanPart`), kept in the plan between the parts:
 * words and char grams run across the line break that joins them.
 */
interface Scan {
  wordCount: number;
  charCount: number;
  /** MurmurHash3 state of the current word (seed 0), and its length in code points. */
  word: number;
  wordLength: number;
  /** A non-space char was kept: white space from now on separates. */
  started: boolean;
  /** White space seen since the last kept char. */
  space: boolean;
}

/**
 * One part of the text through steps 1–2's scan, lower-cased as it goes: ASCII code units
 * directly (A–Z + 32, which is all `toLowerCase` does to them, in any context); at the first
 * code unit above U+007F the rest of the part is read from `text.toLowerCase()` at the same
 * index — lower-casing an ASCII prefix changes no length, and the ASCII chars before it map alike
 * in both, so the result is the lower-cased part's.
 */
function scanPart(text: string, plan: Plan, wantChars: boolean): void {
  const scan = plan.scan;
  const words = plan.words;
  const chars = plan.chars;
  let { wordCount, charCount, word, wordLength, started, space } = scan;
  let lowered = false;
  let length = text.length;
  for (let i = 0; i < length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      // ASCII from tables: its lower case, then the word hash and the char's kept block.
      c = asciiLower[c]!;
      if (asciiWord[c] === 1) {
        word = mixPremixed(word, asciiBlocks[c]!);
        wordLength++;
      } else if (wordLength > 0) {
        words[wordCount++] = premix(fmix32(word ^ (wordLength * 4)));
        word = 0;
        wordLength = 0;
      }
      if (wantChars) {
        if (c === 0x20 || (c <= 0x0d && c >= 0x09)) space = started;
        else {
          if (space) chars[charCount++] = SPACE_BLOCK;
          chars[charCount++] = asciiBlocks[c]!;
          started = true;
          space = false;
        }
      }
      continue;
    }
    // Past ASCII (also a lower-cased char that became ASCII, e.g. U+212A Kelvin → "k").
    if (!lowered) {
      text = text.toLowerCase();
      length = text.length;
      lowered = true;
      c = text.charCodeAt(i);
    }
    if ((c & 0xfc00) === 0xd800 && i + 1 < length) {
      const low = text.charCodeAt(i + 1);
      if ((low & 0xfc00) === 0xdc00) {
        c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
        i++;
      }
    }
    const known = c < 0x10000 ? bmpWordChars[c]! : 0;
    if (known === 1 || (known === 0 && isWordCharSlow(c))) {
      word = mixBlock(word, c);
      wordLength++;
    } else if (wordLength > 0) {
      words[wordCount++] = premix(fmix32(word ^ (wordLength * 4)));
      word = 0;
      wordLength = 0;
    }
    if (wantChars) {
      if (c <= 0x20 ? c === 0x20 || (c >= 0x09 && c <= 0x0d) : c >= 0xa0 && isSpaceAbove0x9f(c)) space = started;
      else {
        if (space) chars[charCount++] = SPACE_BLOCK;
        chars[charCount++] = premix(c);
        started = true;
        space = false;
      }
    }
  }
  scan.wordCount = wordCount;
  scan.charCount = charCount;
  scan.word = word;
  scan.wordLength = wordLength;
  scan.started = started;
  scan.space = space;
}

/**
 * The block half of MurmurHash3's body step (`mixBlock(h, k)` = `mixPremixed(h, premix(k))`):
 * a value that takes part in several n-gram windows is pre-mixed once instead of in each.
 */
function premix(k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, 0x1b873593);
}

/** The state half of MurmurHash3's body step, on a `premix`ed block. */
function mixPremixed(h: number, premixed: number): number {
  h ^= premixed;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

const asciiBlocks = Int32Array.from({ length: 0x80 }, (_, c) => premix(c));
const asciiLower = Uint8Array.from({ length: 0x80 }, (_, c) => (c >= 0x41 && c <= 0x5a ? c + 32 : c));
const SPACE_BLOCK = premix(0x20);

/**
 * Step 3 for every window of n consecutive values (pre-mixed blocks, `blocks[0 .. count)`), for
 * each n in `ns`: gram hash H(window, seed + n), ±1 into its bucket's integer count in
 * `plan.counts`. Appends each gram's bucket to `plan.touched` from index `touched` (a bucket
 * is listed once per gram); returns the new length.
 */
function addGrams(plan: Plan, ns: Int32Array, seed: number, blocks: Int32Array, count: number, touched: number): number {
  const { mask, dims, counts } = plan;
  let list = plan.touched;
  for (let k = 0; k < ns.length; k++) {
    const n = ns[k]!;
    const windows = count - n + 1;
    if (windows <= 0) continue;
    if (list.length < touched + windows) {
      const grown = new Int32Array(Math.max(list.length * 2, touched + windows));
      grown.set(list);
      plan.touched = list = grown;
    }
    const start = seed + n;
    const length = n * 4;
    // n = 1, 2, 3 (the usual sizes) unrolled; the same hash as the general loop below.
    for (let i = 0; i < windows; i++) {
      let g: number;
      if (n === 1) g = mixPremixed(start, blocks[i]!);
      else if (n === 2) g = mixPremixed(mixPremixed(start, blocks[i]!), blocks[i + 1]!);
      else if (n === 3) g = mixPremixed(mixPremixed(mixPremixed(start, blocks[i]!), blocks[i + 1]!), blocks[i + 2]!);
      else {
        g = start;
        for (let j = i; j < i + n; j++) g = mixPremixed(g, blocks[j]!);
      }
      g = fmix32(g ^ length);
      const bucket = mask >= 0 ? g & mask : (g >>> 0) % dims;
      // Without branches (the sign is a coin flip): +1, or −1 when the top bit is set.
      counts[bucket] = counts[bucket]! + 1 - ((g >>> 31) << 1);
      list[touched++] = bucket;
    }
  }
  return touched;
}

/** The first `max` code points of `text` (a surrogate pair is one code point). */
function cutCodePoints(text: string, max: number): string {
  if (text.length <= max) return text;
  let units = 0;
  for (let points = 0; points < max && units < text.length; points++) {
    const c = text.charCodeAt(units);
    units += (c & 0xfc00) === 0xd800 && units + 1 < text.length && (text.charCodeAt(units + 1) & 0xfc00) === 0xdc00 ? 2 : 1;
  }
  return text.slice(0, units);
}

const WORD_CHAR = /^[\p{L}\p{N}]$/u;
/** Per BMP code unit: 0 not yet known, 1 word char, 2 not. Latin-1 up front, the rest when first seen. */
const bmpWordChars = new Uint8Array(0x10000);
for (let c = 0; c < 0x100; c++) bmpWordChars[c] = WORD_CHAR.test(String.fromCharCode(c)) ? 1 : 2;
const asciiWord = bmpWordChars.subarray(0, 0x80);
const astralWordChars = new Map<number, boolean>();

/** Whether `c` is a word char, for code points the table does not know yet (and astral ones). */
function isWordCharSlow(c: number): boolean {
  if (c < 0x10000) {
    const word = WORD_CHAR.test(String.fromCharCode(c));
    bmpWordChars[c] = word ? 1 : 2;
    return word;
  }
  let word = astralWordChars.get(c);
  if (word === undefined) astralWordChars.set(c, (word = WORD_CHAR.test(String.fromCodePoint(c))));
  return word;
}

/** JS `\s` (WhiteSpace and LineTerminator) above U+009F, as listed in `featurize`'s step 2. */
function isSpaceAbove0x9f(c: number): boolean {
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

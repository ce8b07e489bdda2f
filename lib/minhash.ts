import { endianness } from 'node:os';
import { normalizeText } from './normalize-text.ts';
import { fmix32, mixBlock } from '../contracts/murmur3.ts';

/**
 * MinHash sketches and LSH banding, shared by near-dedupe and any operator that compares texts
 * by shingle overlap.
 *
 * Every step is fixed and seeded, so the same text gives the same sketch and the same band keys
 * in every process, after every restart and in any language that re-implements it:
 * 1. text → normalizeText (lower case, whitespace runs → one space, trimmed) → shingles: k
 *    consecutive words or k consecutive code points; a text shorter than k is one shingle, an
 *    empty text none. The fast path never builds the normalised text or a shingle string: it
 *    walks the lower-cased text's char codes.
 * 2. word → FNV-1a 32 of its UTF-16 code units, then murmur3's fmix32; shingle → murmur3 x86
 *    32's block mix of its k word hashes (char mode: of its k code points), seed 0, finalised
 *    with the count. `hashShingle(string)` gives the same value from a shingle string.
 * 3. One-permutation hashing (Li, Owen, Zhang 2012) over the set expanded to (shingle, round)
 *    pairs, 8 rounds: v = (a_r · shingle hash + b_r) mod 2^32 (a_r odd; a_r, b_r from the seed), bin =
 *    ⌊(v >>> 16) · k / 65536⌋ (k = permutations; v >>> 25 for k = 128), value = r · 2^29 + (v mod 2^29),
 *    sketch[bin] = min value. The round in the top bits gives every round-r value priority over
 *    every later round's, as in fast similarity sketching (Dahlgaard, Knudsen, Thorup 2017): a
 *    shingle's later rounds fill only bins no earlier round of any shingle reached, so each
 *    shingle of a short text wins about k/|shingles| bins, evenly, instead of as many as its
 *    random values happen to win. On the bench's prose pairs (25–130 shingles, 0.8 ≤ J < 0.85)
 *    that cuts the estimate's variance by a third against rounds of equal rank, and its bias from
 *    +0.005 to +0.002 (standard deviation of the 32-bit rows 0.025 against 0.031; k independent
 *    permutations: 0.035), at the same cost; every bin's minimum is still a uniformly random member of
 *    the expanded union, so the estimate is unbiased up to the multiply-shift family's own small
 *    bias (the +0.002). The expanded sets have the same Jaccard
 *    similarity as the shingle sets, and 8·|shingles| elements fill the bins of short texts that
 *    one round would leave mostly empty. An empty bin takes the value of the first non-empty bin
 *    along its own pseudo-random probe sequence
 *    bin(fmix32(seedKey ^ imul(i+1, 0x9e3779b1) ^ imul(attempt, 0x85ebca77))), attempt = 1, 2…:
 *    Shrivastava's optimal densification (ICML 2017). Cost O(8 · shingles + k), not O(shingles · k).
 * 4. b-bit minwise hashing (Li & König 2010): the signature keeps the low `bits` bits of
 *    fmix32(sketch[i]), packed little-endian into 32-bit words (row i at bit (i·bits) mod 32 of
 *    word ⌊i·bits/32⌋). Two texts with Jaccard J agree on a row with probability
 *    J + (1 − J)·2^−bits, which estimateSimilarity inverts.
 * 5. Band j covers rows [j·r, (j+1)·r), r = permutations / bands; its key is
 *    fmix32(mix of (scope, j, the r row values)) >> 1, a 31-bit integer (a V8 small integer).
 *    Bands are taken from the b-bit rows, so band keys can be recomputed from a stored signature.
 *
 * Two texts with Jaccard similarity J share a band with probability 1 − (1 − p^r)^b,
 * p = J + (1 − J)·2^−bits (the LSH S-curve, shifted a little up by the b-bit collisions).
 */
export type Sketch = Uint32Array;

/** Packed b-bit rows (see step 4): what near-dedupe stores, compares and broadcasts. */
export type Signature = Uint32Array;

export interface MinHashConfig {
  /** Sketch rows ("permutations"); more gives a finer estimate (std ≈ √(J(1−J)/n)). */
  permutations: number;
  /** LSH bands; must divide `permutations`. More bands (fewer rows) find lower similarities. */
  bands: number;
  /** What a shingle is: k consecutive words, or k consecutive characters. */
  shingle: 'word' | 'char';
  /** k. */
  shingleSize: number;
  /** Seeds the hash functions: sketches compare only under the same seed and config. */
  seed: number;
  /**
   * Bits kept per row in the signature: 1, 2, 4, 8, 16 or 32. 4 bits of 128 rows is 64 bytes,
   * and the estimate's standard deviation at J = 0.8 grows only from 0.035 to 0.037.
   */
  bits: number;
}

/** 128 rows of 4 bits in 16 bands of 8: a pair at J = 0.8 becomes a candidate with p ≈ 0.97. */
export const minHashDefaults: MinHashConfig = { permutations: 128, bands: 16, shingle: 'word', shingleSize: 3, seed: 1, bits: 4 };

const BITS = [1, 2, 4, 8, 16, 32];

if (endianness() !== 'LE') throw new Error('minhash: signatures are encoded as little-endian words; this host is big-endian');

export function checkMinHashConfig(c: MinHashConfig): void {
  const positive = (n: number) => Number.isInteger(n) && n > 0;
  if (!positive(c.permutations) || !positive(c.bands) || !positive(c.shingleSize)) {
    throw new Error('minhash: permutations, bands and shingleSize must be positive integers');
  }
  if (c.permutations > 65536) throw new Error('minhash: permutations must be at most 65536');
  if (c.permutations % c.bands !== 0) throw new Error(`minhash: bands (${c.bands}) must divide permutations (${c.permutations})`);
  if (!Number.isInteger(c.seed)) throw new Error('minhash: seed must be an integer');
  if (!BITS.includes(c.bits)) throw new Error(`minhash: bits must be one of ${BITS.join(', ')}`);
}

export function rowsPerBand(c: Pick<MinHashConfig, 'permutations' | 'bands'>): number {
  return c.permutations / c.bands;
}

/** 32-bit words of a packed signature. */
export function signatureWords(c: Pick<MinHashConfig, 'permutations' | 'bits'>): number {
  return Math.ceil((c.permutations * c.bits) / 32);
}

/** The normalised shingles of a text, as strings (for exact Jaccard and debugging). */
export function shingles(text: string, c: Pick<MinHashConfig, 'shingle' | 'shingleSize'>): Set<string> {
  const norm = normalizeText(text);
  const out = new Set<string>();
  if (norm === '') return out;
  const k = c.shingleSize;
  if (c.shingle === 'char') {
    const chars = Array.from(norm);
    if (chars.length <= k) out.add(norm);
    for (let i = 0; i + k <= chars.length; i++) out.add(chars.slice(i, i + k).join(''));
    return out;
  }
  const words = norm.split(' ');
  if (words.length <= k) out.add(norm);
  for (let i = 0; i + k <= words.length; i++) out.add(words.slice(i, i + k).join(' '));
  return out;
}

/** The hash of one shingle string as `shingles` gives it (equal to what the fast path computes). */
export function hashShingle(shingle: string, c: Pick<MinHashConfig, 'shingle'>): number {
  let h = 0;
  let n = 0;
  if (c.shingle === 'char') {
    for (const ch of shingle) {
      h = mixBlock(h, ch.codePointAt(0)!);
      n++;
    }
  } else {
    for (const word of shingle.split(' ')) {
      h = mixBlock(h, wordHash(word));
      n++;
    }
  }
  return finalize(h, n);
}

/** The distinct 32-bit shingle hashes of a text (fast path), in first-seen order. */
export function shingleHashes(text: string, c: MinHashConfig): Uint32Array {
  const m = ownHasher(c);
  const n = m.scan(text);
  return Uint32Array.from(new Set(m.hashes.subarray(0, n)));
}

/** The full 32-bit OPH sketch of a text (steps 1–3); an empty text has every value 0xffffffff. */
export function sketchOf(text: string, c: MinHashConfig): Sketch {
  const m = ownHasher(c);
  m.scan(text);
  m.densify();
  return m.sketch.slice();
}

/** The packed b-bit signature of a text (steps 1–4). */
export function signatureOf(text: string, c: MinHashConfig): Signature {
  const m = ownHasher(c);
  m.scan(text);
  m.densify();
  m.pack();
  return m.signature.slice();
}

/** The fraction of rows on which two full sketches agree: an unbiased estimate of Jaccard. */
export function estimateJaccard(x: Sketch, y: Sketch): number {
  if (x.length !== y.length) throw new Error(`minhash: sketches of different lengths (${x.length}, ${y.length})`);
  if (x.length === 0) return 0;
  let same = 0;
  for (let i = 0; i < x.length; i++) if (x[i] === y[i]) same++;
  return same / x.length;
}

/**
 * Estimated Jaccard similarity of two packed signatures: the share of equal rows m/k, less the
 * chance 2^−b that two different minima agree on b bits, rescaled (Li & König): (m/k − 2^−b)/(1 − 2^−b),
 * clamped at 0. For bits = 32 it is m/k.
 */
export function estimateSimilarity(x: Signature, y: Signature, c: Pick<MinHashConfig, 'permutations' | 'bits'>): number {
  const words = signatureWords(c);
  if (x.length !== words || y.length !== words) throw new Error(`minhash: signatures of ${x.length} and ${y.length} words, expected ${words}`);
  return similarityAt(x, 0, y, 0, words, c.permutations, c.bits);
}

/**
 * estimateSimilarity on signatures stored at word offsets of larger arrays (no subarray views
 * in the hot path). Rows past `permutations` in the last word are zero in both, so they are
 * subtracted as agreements.
 */
export function similarityAt(x: Uint32Array, xo: number, y: Uint32Array, yo: number, words: number, permutations: number, bits: number): number {
  const low = LOW_BITS[bits]!;
  let differ = 0;
  for (let w = 0; w < words; w++) {
    let t = x[xo + w]! ^ y[yo + w]!;
    for (let s = 1; s < bits; s <<= 1) t |= t >>> s;
    differ += popcount(t & low);
  }
  const p = (permutations - differ) / permutations;
  if (bits === 32) return p;
  const chance = 1 / 2 ** bits;
  return Math.max(0, (p - chance) / (1 - chance));
}

/** |A ∩ B| / |A ∪ B| of the two texts' shingle sets (two empty texts: 1). */
export function exactJaccard(x: string, y: string, c: Pick<MinHashConfig, 'shingle' | 'shingleSize'>): number {
  const a = shingles(x, c);
  const b = shingles(y, c);
  if (a.size === 0 && b.size === 0) return 1;
  let inter = 0;
  for (const s of a) if (b.has(s)) inter++;
  return inter / (a.size + b.size - inter);
}

/** Probability that a pair with Jaccard s shares at least one band: 1 − (1 − p^r)^b, p = s + (1 − s)·2^−bits. */
export function candidateProbability(s: number, c: Pick<MinHashConfig, 'permutations' | 'bands' | 'bits'>): number {
  const p = c.bits === 32 ? s : s + (1 - s) / 2 ** c.bits;
  return 1 - (1 - p ** (c.permutations / c.bands)) ** c.bands;
}

/** The scope word band keys are mixed with: 0 for none, else a hash of the group id. */
export function scopeHash(scope: string | undefined): number {
  if (scope === undefined) return 0;
  return wordHash(scope) | 1;
}

/** The signature's band keys, one per band (step 5), as 31-bit integers. */
export function bandKeys(signature: Signature, c: MinHashConfig, scope = 0): number[] {
  const out = new Int32Array(c.bands);
  bandKeysAt(signature, 0, c, scope, out);
  return Array.from(out);
}

/** bandKeys into `out` (length ≥ bands), reading the signature at word offset `at`. */
export function bandKeysAt(signature: Uint32Array, at: number, c: Pick<MinHashConfig, 'permutations' | 'bands' | 'bits'>, scope: number, out: Int32Array): void {
  const r = c.permutations / c.bands;
  const bits = c.bits;
  const mask = bits === 32 ? 0xffffffff : (1 << bits) - 1;
  let row = 0;
  for (let j = 0; j < c.bands; j++) {
    let h = mixBlock(scope, j);
    // r·bits ≤ 32 and aligned (the default: 8 rows × 4 bits is one word): one block.
    if ((r * bits) % 32 === 0 || r * bits < 32) {
      let acc = 0;
      let accBits = 0;
      for (let i = 0; i < r; i++, row++) {
        const pos = row * bits;
        const v = (signature[at + (pos >>> 5)]! >>> (pos & 31)) & mask;
        acc = bits === 32 ? v : acc | (v << accBits);
        accBits += bits;
        if (accBits >= 32 || i === r - 1) {
          h = mixBlock(h, acc);
          acc = 0;
          accBits = 0;
        }
      }
    } else {
      for (let i = 0; i < r; i++, row++) {
        const pos = row * bits;
        h = mixBlock(h, (signature[at + (pos >>> 5)]! >>> (pos & 31)) & mask);
      }
    }
    out[j] = finalize(h, r) >> 1;
  }
}

/** A signature as base64 of its words in little-endian order (the form stores and topics carry). */
export function encodeSignature(signature: Signature): string {
  return Buffer.from(signature.buffer, signature.byteOffset, signature.byteLength).toString('base64');
}

export function decodeSignature(text: string, c: Pick<MinHashConfig, 'permutations' | 'bits'>): Signature {
  const buf = Buffer.from(text, 'base64');
  const words = signatureWords(c);
  if (buf.length !== words * 4) throw new Error(`minhash: encoded signature has ${buf.length} bytes, expected ${words * 4}`);
  const out = new Uint32Array(words);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

/** Characters of encodeSignature's output for this config. */
export function encodedSignatureChars(c: Pick<MinHashConfig, 'permutations' | 'bits'>): number {
  return Math.ceil((signatureWords(c) * 4) / 3) * 4;
}

/**
 * The reusable state of steps 1–5 for one config: every buffer is allocated once, so computing a
 * signature allocates nothing but the lower-cased text. Not re-entrant: one computation at a time
 * (JavaScript runs one at a time anyway; results must be copied out before the next).
 */
export class MinHasher {
  /** Shingle hashes of the last scan (with repeats), first `scan()` of them valid. */
  hashes = new Uint32Array(256);
  /** The densified full sketch, after densify(). */
  readonly sketch: Uint32Array;
  /** Packed b-bit rows after pack(). */
  readonly signature: Uint32Array;
  /** Band keys after keys(). */
  readonly bandKeys: Int32Array;
  /**
   * OPH bins during the scan, each min v stored as v ^ 0x80000000 so that int32 comparison is
   * unsigned comparison of v (V8 keeps int32 in registers; uint32 above 2^31 would be doubles).
   * EMPTY_BIN (v = 0xffffffff) marks an empty bin: a shingle hashing exactly there counts as
   * absent in every text alike, which keeps estimates consistent.
   */
  private readonly bins: Int32Array;
  private readonly ring: Int32Array;
  private readonly seedKey: number;
  private readonly roundKeys: Int32Array;
  private readonly k: number;
  /** log2(k) when k is a power of two (bin = v >>> (32 − log2 k), what Lemire's reduction gives then), else −1. */
  private readonly shift: number;

  constructor(readonly config: MinHashConfig) {
    checkMinHashConfig(config);
    this.k = config.permutations;
    this.sketch = new Uint32Array(this.k);
    this.bins = new Int32Array(this.k);
    this.signature = new Uint32Array(signatureWords(config));
    this.bandKeys = new Int32Array(config.bands);
    this.ring = new Int32Array(config.shingleSize);
    this.seedKey = fmix32(Math.imul(config.seed | 0, 0x9e3779b1) ^ 0x5bd1e995);
    this.roundKeys = new Int32Array(2 * ROUNDS);
    for (let r = 0; r < ROUNDS; r++) {
      this.roundKeys[2 * r] = fmix32(this.seedKey + Math.imul(2 * r + 1, 0x27d4eb2f)) | 1;
      this.roundKeys[2 * r + 1] = fmix32(this.seedKey + Math.imul(2 * r + 2, 0x27d4eb2f));
    }
    const log = Math.log2(this.k);
    this.shift = Number.isInteger(log) && log >= 1 ? 32 - log : -1;
  }

  /** Steps 1–3 without densification; returns the number of shingles (with repeats). */
  scan(text: string): number {
    this.bins.fill(EMPTY_BIN);
    // At most one shingle per word or code point, plus one: sized once, no check per shingle.
    if (this.hashes.length < text.length + 2) this.hashes = new Uint32Array(Math.max(text.length + 2, this.hashes.length * 2));
    if (this.config.shingle === 'char') return this.scanChars(text.toLowerCase());
    // ASCII text is lower-cased on the fly (A–Z + 32 is all toLowerCase does there), sparing a
    // copy of the text; the first non-ASCII character restarts on text.toLowerCase().
    const n = this.scanWords(text, true);
    if (n >= 0) return n;
    this.bins.fill(EMPTY_BIN);
    return this.scanWords(text.toLowerCase(), false);
  }

  /** Whether the last scan's first `n` shingle hashes hold at least `min` distinct values. */
  distinctAtLeast(n: number, min: number): boolean {
    if (n < min) return false;
    const h = this.hashes;
    if (min > 64) return new Set(h.subarray(0, n)).size >= min;
    // Few needed: a short list of distinct values found so far, usually filled by the first `min` hashes.
    const seen = DISTINCT.length >= min ? DISTINCT : (DISTINCT = new Uint32Array(min));
    let found = 0;
    for (let i = 0; i < n && found < min; i++) {
      const v = h[i]!;
      let j = 0;
      while (j < found && seen[j] !== v) j++;
      if (j === found) seen[found++] = v;
    }
    return found >= min;
  }

  /** Step 3's densification into `sketch`: every empty bin borrows from a non-empty one. */
  densify(): void {
    const k = this.k;
    const bins = this.bins;
    const sketch = this.sketch;
    let nonEmpty = 0;
    for (let i = 0; i < k; i++) {
      const b = bins[i]!;
      if (b !== EMPTY_BIN) nonEmpty++;
      sketch[i] = (b ^ 0x80000000) >>> 0;
    }
    if (nonEmpty === 0 || nonEmpty === k) return;
    for (let i = 0; i < k; i++) {
      if (bins[i] !== EMPTY_BIN) continue;
      const base = this.seedKey ^ Math.imul(i + 1, 0x9e3779b1);
      for (let attempt = 1; ; attempt++) {
        const j = binOf(fmix32(base ^ Math.imul(attempt, 0x85ebca77)), k);
        if (bins[j] !== EMPTY_BIN) {
          sketch[i] = sketch[j]!;
          break;
        }
      }
    }
  }

  /** Step 4: the low `bits` bits of fmix32 of each row, packed. */
  pack(): void {
    const { bits } = this.config;
    const sig = this.signature;
    const sketch = this.sketch;
    if (bits === 32) {
      for (let i = 0; i < this.k; i++) sig[i] = fmix32(sketch[i]! | 0);
      return;
    }
    sig.fill(0);
    const mask = (1 << bits) - 1;
    for (let i = 0; i < this.k; i++) {
      const pos = i * bits;
      sig[pos >>> 5] = sig[pos >>> 5]! | ((fmix32(sketch[i]! | 0) & mask) << (pos & 31));
    }
  }

  /** Step 5 into `bandKeys`. */
  keys(scope: number): Int32Array {
    bandKeysAt(this.signature, 0, this.config, scope, this.bandKeys);
    return this.bandKeys;
  }

  /** Records shingle hash `h` as the `count`-th and puts its ROUNDS values in their bins. */
  private add(count: number, h: number): void {
    this.hashes[count] = h;
    const bins = this.bins;
    const keys = this.roundKeys;
    const shift = this.shift;
    const k = this.k;
    for (let r = 0; r < 2 * ROUNDS; r += 2) {
      // Multiply-shift (Dietzfelbinger): h is already a full-avalanche hash, so one odd multiplier
      // and an offset per round give independent-enough orders; the bin comes from the high bits.
      const v = (Math.imul(h, keys[r]!) + keys[r + 1]!) | 0;
      const bin = shift >= 0 ? v >>> shift : binOf(v, k);
      const signed = (v & RANK_MASK) | ROUND_BASE[r >> 1]!;
      if (signed < bins[bin]!) bins[bin] = signed;
    }
  }

  /** Word shingles of `s`; with `ascii`, lower-cases A–Z itself and returns −1 at the first non-ASCII code unit. */
  private scanWords(s: string, ascii: boolean): number {
    const k = this.config.shingleSize;
    const ring = this.ring;
    const hashes = this.hashes;
    const bins = this.bins;
    const keys = this.roundKeys;
    const shift = this.shift;
    const bins_k = this.k;
    let count = 0;
    let words = 0;
    let at = 0; // ring position of the next word
    let h = FNV_OFFSET;
    let inWord = false;
    const n = s.length;
    for (let i = 0; i <= n; i++) {
      let c = i < n ? s.charCodeAt(i) : 32;
      if (ascii) {
        if (c >= 128) return -1;
        if (c >= 65 && c <= 90) c += 32;
      }
      if (c <= 32 ? c === 32 || (c >= 9 && c <= 13) : c >= 0xa0 && isWideSpace(c)) {
        if (!inWord) continue;
        inWord = false;
        ring[at] = fmix32(h);
        at = at + 1 === k ? 0 : at + 1;
        words++;
        h = FNV_OFFSET;
        if (words >= k) {
          // The window is ring[at], ring[at+1]… (oldest first), wrapping.
          let x = 0;
          for (let j = 0, p = at; j < k; j++, p = p + 1 === k ? 0 : p + 1) x = mixBlock(x, ring[p]!);
          const sh = finalize(x, k);
          hashes[count++] = sh;
          // add(), inlined: this loop is most of the sketch's time.
          for (let r = 0; r < 2 * ROUNDS; r += 2) {
            const v = (Math.imul(sh, keys[r]!) + keys[r + 1]!) | 0;
            const bin = shift >= 0 ? v >>> shift : binOf(v, bins_k);
            const signed = (v & RANK_MASK) | ROUND_BASE[r >> 1]!;
            if (signed < bins[bin]!) bins[bin] = signed;
          }
        }
      } else {
        inWord = true;
        h = Math.imul(h ^ c, FNV_PRIME);
      }
    }
    if (words > 0 && words < k) {
      let x = 0;
      for (let j = 0; j < words; j++) x = mixBlock(x, ring[j]!);
      this.add(count++, finalize(x, words));
    }
    return count;
  }

  private scanChars(s: string): number {
    const k = this.config.shingleSize;
    const ring = this.ring;
    let count = 0;
    let chars = 0;
    let pendingSpace = false;
    const n = s.length;
    for (let i = 0; i < n; i++) {
      let c = s.charCodeAt(i);
      if (isSpace(c)) {
        pendingSpace = chars > 0;
        continue;
      }
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
        const d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
          i++;
        }
      }
      for (let pass = pendingSpace ? 0 : 1; pass < 2; pass++) {
        ring[chars % k] = pass === 0 ? 32 : c;
        chars++;
        if (chars >= k) {
          let x = 0;
          for (let j = chars - k; j < chars; j++) x = mixBlock(x, ring[j % k]!);
          this.add(count++, finalize(x, k));
        }
      }
      pendingSpace = false;
    }
    if (chars > 0 && chars < k) {
      let x = 0;
      for (let j = 0; j < chars; j++) x = mixBlock(x, ring[j]!);
      this.add(count++, finalize(x, chars));
    }
    return count;
  }
}

const EMPTY_BIN = 0x7fffffff;
/** The low 29 bits of a round's value rank it within its bin; the top 3 hold the round (step 3). */
const RANK_MASK = 0x1fffffff;

let DISTINCT = new Uint32Array(64);
/**
 * Hash rounds per shingle (step 3). Fixed, not per text: both texts of a pair must expand their
 * sets alike for the estimate to stay unbiased. 8 fills the 128 bins of a 60-word paragraph.
 */
const ROUNDS = 8;
/** Round r's top bits, r << 29, in the bins' signed form (xor 0x80000000): earlier rounds always rank lower. */
const ROUND_BASE = Int32Array.from({ length: ROUNDS }, (_, r) => (r << 29) ^ 0x80000000);

// One hasher per config object: a pure function of the config, so sharing changes nothing.
const hashers = new WeakMap<MinHashConfig, MinHasher>();

/**
 * The shared MinHasher of a config for hot paths (near-dedupe's step): its buffers are reused by
 * every call with that config, so results must be used or copied before the next call.
 */
export function hasherFor(c: MinHashConfig): MinHasher {
  let m = hashers.get(c);
  if (m === undefined) hashers.set(c, (m = new MinHasher(c)));
  return m;
}

// The copying helpers (sketchOf, signatureOf…) have their own, so calling them (e.g. from a
// remote index asked in the middle of a step) never overwrites a hot path's buffers.
const ownHashers = new WeakMap<MinHashConfig, MinHasher>();

function ownHasher(c: MinHashConfig): MinHasher {
  let m = ownHashers.get(c);
  if (m === undefined) ownHashers.set(c, (m = new MinHasher(c)));
  return m;
}

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
const LOW_BITS: Record<number, number> = { 1: 0xffffffff, 2: 0x55555555, 4: 0x11111111, 8: 0x01010101, 16: 0x00010001, 32: 1 };

/** JavaScript's \s (what normalizeText collapses), on one UTF-16 code unit. */
function isSpace(c: number): boolean {
  if (c <= 32) return c === 32 || (c >= 9 && c <= 13);
  return c >= 0xa0 && isWideSpace(c);
}

/** \s above U+009F. */
function isWideSpace(c: number): boolean {
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

function wordHash(word: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < word.length; i++) h = Math.imul(h ^ word.charCodeAt(i), FNV_PRIME);
  return fmix32(h);
}

/** Lemire's multiply-shift range reduction of the high 16 bits to [0, k), k ≤ 65536. */
function binOf(v: number, k: number): number {
  return ((v >>> 16) * k) >>> 16;
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;


function finalize(h: number, length: number): number {
  return fmix32(h ^ length) >>> 0;
}

/** murmur3 x86 32-bit. */
export function murmur3(bytes: Uint8Array, seed: number): number {
  let h = seed | 0;
  const blocks = bytes.length >>> 2;
  for (let i = 0; i < blocks; i++) {
    const o = i * 4;
    h = mixBlock(h, bytes[o]! | (bytes[o + 1]! << 8) | (bytes[o + 2]! << 16) | (bytes[o + 3]! << 24));
  }
  const tail = blocks * 4;
  let k = 0;
  switch (bytes.length & 3) {
    case 3:
      k ^= bytes[tail + 2]! << 16;
    // falls through
    case 2:
      k ^= bytes[tail + 1]! << 8;
    // falls through
    case 1:
      k ^= bytes[tail]!;
      k = Math.imul(k, C1);
      k = (k << 15) | (k >>> 17);
      h ^= Math.imul(k, C2);
  }
  return finalize(h, bytes.length);
}

/**
 * The band keys of a sketch under the retired layout 1 (32-bit (a·x + b) mod p sketches, bands
 * hashed with murmur3 to `<j>.<8 hex digits>`): only to delete an index stored in that layout.
 */
export function legacyBandKeys(sketch: Uint32Array, bands: number, prefix: string): string[] {
  const r = sketch.length / bands;
  const keys: string[] = [];
  for (let j = 0; j < bands; j++) {
    let h = j | 0;
    for (let i = j * r; i < (j + 1) * r; i++) h = mixBlock(h, sketch[i]! | 0);
    keys.push(`${prefix}${j}.${finalize(h, r * 4).toString(16).padStart(8, '0')}`);
  }
  return keys;
}

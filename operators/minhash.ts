import { normalizeText } from './exact-dedupe.ts';

/**
 * MinHash sketches and LSH banding, shared by near-dedupe and any operator that compares texts
 * by shingle overlap (error memory, clustering).
 *
 * Every step is fixed and seeded, so the same text gives the same sketch and the same band keys
 * in every process, after every restart and in any language that re-implements it:
 * 1. text → normalizeText → shingles: k consecutive words (joined by one space) or k
 *    consecutive characters; a text shorter than k is one shingle, an empty text none.
 * 2. shingle → murmur3 x86 32-bit of its UTF-8 bytes, seed 0.
 * 3. hash function i: h_i(x) = (a_i·x + b_i) mod p, p = 4294967291 (the largest prime < 2^32),
 *    a_i ∈ [1, p), b_i ∈ [0, p) drawn in order a_0, b_0, a_1, b_1… from mulberry32(seed).
 *    sketch[i] = min over the shingles of h_i; an empty text has every value 0xffffffff.
 * 4. band j covers sketch[j·r, (j+1)·r), r = permutations / bands; its key is
 *    `<j>.<murmur3 of those r values as little-endian uint32, seed j, 8 hex digits>`.
 *
 * Two texts with Jaccard similarity s agree on each sketch position with probability s, and
 * share at least one band key with probability 1 − (1 − s^r)^b (the LSH S-curve).
 */
export type Sketch = Uint32Array;

export interface MinHashConfig {
  /** Hash functions, i.e. sketch length; more gives a finer estimate (std ≈ √(s(1−s)/n)). */
  permutations: number;
  /** LSH bands; must divide `permutations`. More bands (fewer rows) find lower similarities. */
  bands: number;
  /** What a shingle is: k consecutive words, or k consecutive characters. */
  shingle: 'word' | 'char';
  /** k. */
  shingleSize: number;
  /** Seeds the hash functions: sketches compare only under the same seed and config. */
  seed: number;
}

/** 128 permutations in 16 bands of 8 rows: a pair at s = 0.8 becomes a candidate with p ≈ 0.95. */
export const minHashDefaults: MinHashConfig = { permutations: 128, bands: 16, shingle: 'word', shingleSize: 3, seed: 1 };

const PRIME = 4294967291;
const EMPTY = 0xffffffff;

export function checkMinHashConfig(c: MinHashConfig): void {
  const positive = (n: number) => Number.isInteger(n) && n > 0;
  if (!positive(c.permutations) || !positive(c.bands) || !positive(c.shingleSize)) {
    throw new Error('minhash: permutations, bands and shingleSize must be positive integers');
  }
  if (c.permutations % c.bands !== 0) throw new Error(`minhash: bands (${c.bands}) must divide permutations (${c.permutations})`);
  if (!Number.isInteger(c.seed)) throw new Error('minhash: seed must be an integer');
}

export function rowsPerBand(c: MinHashConfig): number {
  return c.permutations / c.bands;
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

/** The distinct 32-bit shingle hashes of a text: what a sketch is computed from. */
export function shingleHashes(text: string, c: Pick<MinHashConfig, 'shingle' | 'shingleSize'>): Uint32Array {
  const hashes = new Set<number>();
  for (const s of shingles(text, c)) hashes.add(murmur3(Buffer.from(s, 'utf8'), 0));
  return Uint32Array.from(hashes);
}

export function sketchOf(text: string, c: MinHashConfig): Sketch {
  return sketchOfHashes(shingleHashes(text, c), c);
}

export function sketchOfHashes(hashes: Uint32Array, c: MinHashConfig): Sketch {
  const { aHi, aLo, b } = hashFamily(c.seed, c.permutations);
  const sketch = new Uint32Array(c.permutations).fill(EMPTY);
  for (const x of hashes) {
    for (let i = 0; i < c.permutations; i++) {
      // a·x with a split at 16 bits keeps every intermediate below 2^53: doubles compute it exactly.
      const v = (((aHi[i]! * x) % PRIME) * 65536 + aLo[i]! * x + b[i]!) % PRIME;
      if (v < sketch[i]!) sketch[i] = v;
    }
  }
  return sketch;
}

/** The fraction of positions on which two sketches agree: an unbiased estimate of Jaccard. */
export function estimateJaccard(x: Sketch, y: Sketch): number {
  if (x.length !== y.length) throw new Error(`minhash: sketches of different lengths (${x.length}, ${y.length})`);
  if (x.length === 0) return 0;
  let same = 0;
  for (let i = 0; i < x.length; i++) if (x[i] === y[i]) same++;
  return same / x.length;
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

/** Probability that a pair with Jaccard s shares at least one band: 1 − (1 − s^r)^b. */
export function candidateProbability(s: number, c: Pick<MinHashConfig, 'permutations' | 'bands'>): number {
  return 1 - (1 - s ** (c.permutations / c.bands)) ** c.bands;
}

/**
 * The sketch's LSH band keys, one per band. `prefix` (e.g. a group id + '/') scopes them: keys
 * with different prefixes never meet.
 */
export function bandKeys(sketch: Sketch, c: MinHashConfig, prefix = ''): string[] {
  const r = rowsPerBand(c);
  const keys: string[] = [];
  for (let j = 0; j < c.bands; j++) {
    const h = murmur3Words(sketch, j * r, (j + 1) * r, j);
    keys.push(`${prefix}${j}.${h.toString(16).padStart(8, '0')}`);
  }
  return keys;
}

/** A sketch as base64 of its values in little-endian order (the form stores and topics carry). */
export function encodeSketch(sketch: Sketch): string {
  const buf = Buffer.alloc(sketch.length * 4);
  for (let i = 0; i < sketch.length; i++) buf.writeUInt32LE(sketch[i]!, i * 4);
  return buf.toString('base64');
}

export function decodeSketch(text: string): Sketch {
  const buf = Buffer.from(text, 'base64');
  if (buf.length % 4 !== 0) throw new Error('minhash: encoded sketch length is not a multiple of 4 bytes');
  const sketch = new Uint32Array(buf.length / 4);
  for (let i = 0; i < sketch.length; i++) sketch[i] = buf.readUInt32LE(i * 4);
  return sketch;
}

// Memoised per (seed, permutations): a pure function of its key, so caching changes nothing.
interface HashFamily {
  aHi: Float64Array;
  aLo: Float64Array;
  b: Float64Array;
}

const families = new Map<string, HashFamily>();

function hashFamily(seed: number, permutations: number): HashFamily {
  const key = `${seed}:${permutations}`;
  let family = families.get(key);
  if (family === undefined) {
    const next = mulberry32(seed);
    family = { aHi: new Float64Array(permutations), aLo: new Float64Array(permutations), b: new Float64Array(permutations) };
    for (let i = 0; i < permutations; i++) {
      const a = 1 + (next() % (PRIME - 1));
      family.aHi[i] = Math.floor(a / 65536);
      family.aLo[i] = a % 65536;
      family.b[i] = next() % PRIME;
    }
    families.set(key, family);
  }
  return family;
}

/**
 * mulberry32 returning raw uint32 values. Deliberately a private copy rather than cli/synthetic's
 * prng: stored sketches depend on this exact sequence, so it must never change with test tooling.
 */
function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function mixBlock(h: number, k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finalize(h: number, length: number): number {
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
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

/** murmur3 of words[start, end) as little-endian bytes, without copying them out. */
function murmur3Words(words: Uint32Array, start: number, end: number, seed: number): number {
  let h = seed | 0;
  for (let i = start; i < end; i++) h = mixBlock(h, words[i]! | 0);
  return finalize(h, (end - start) * 4);
}

/** A sample's key sketch: its feature vector (`featurize`), compared by a `Similarity`. */
export type Vector = Float32Array;

/**
 * How two keys are compared in a lookup:
 * - `{ kind: 'cosine', dims }`: cosine over the first `dims` values only, e.g. the hashed-text
 *   block of a feature vector (`FeatureConfig.dims`). Over the whole vector the unnormalised
 *   numeric tail (log lengths ≈ 4–6, log-prob statistics) dominates and every pair of rollouts
 *   is ≥ 0.8 similar; the text block tells neighbours apart. Omit `dims` for the whole vector.
 * - `{ kind: 'standardized' }`: cosine of the keys z-scored per dimension by the running mean
 *   and variance of every key the memory was given (constant dimensions are left out), so no
 *   feature dominates by its scale (but rare text buckets, z-scored, outweigh the few numeric
 *   features).
 * - `{ kind: 'blocks', dims }`: the mean of the text block's cosine (first `dims` values) and
 *   the standardized cosine of the rest (lengths, rewards, log-prob statistics): each block has
 *   an equal say, whatever its size or scale.
 */
export type Similarity = { kind: 'cosine'; dims?: number } | { kind: 'standardized' } | { kind: 'blocks'; dims: number };

/** One observed scorer error: a label arrived for a sample the scorer had scored. */
export interface ErrorEntry {
  key: Vector;
  /** label − predicted score. */
  error: number;
  /** The label itself, so a new model can be asked whether it still makes the error (`reassess`). */
  label?: number;
  /** The scorer version that made the prediction. */
  modelVersion: string;
  /** When the sample was scored (epoch ms): the decision's time, `ScorerError.at`. */
  at: number;
}

/** How a reader of the memory looks errors up: what `compensation` takes besides the vector. */
export interface Lookup {
  k: number;
  minSimilarity: number;
  similarity: Similarity;
  /** Pseudo-neighbours of error 0 and similarity 1 in the weighted mean (default 0): shrinks a correction resting on few or distant neighbours. */
  shrinkage?: number;
}

/**
 * How well a lookup's corrections have predicted the errors that arrived since (see `assess`):
 * exponentially weighted sums over the last ≈ `window` errors of c·e and c² (c = the correction
 * the lookup gave that sample as of its decision, e = its actual error), and their weight.
 */
export interface AssessmentJSON {
  lookup: Lookup;
  ce: number;
  cc: number;
  weight: number;
}

export interface Compensation {
  /** Similarity-weighted mean error of the neighbours (shrunk by `Lookup.shrinkage`); 0 without neighbours. */
  correction: number;
  neighbours: number;
}

/** The memory as JSON; keys are little-endian float32 bytes in base64, entries oldest first. */
export interface ErrorMemoryJSON {
  capacity: number;
  retiredBelow: string | null;
  entries: Array<{ key: string; error: number; label?: number; modelVersion: string; at: number; addedAt?: number }>;
  assessments?: AssessmentJSON[];
}

/**
 * A lookup's track record (`ErrorMemory.assess`): `gain` is the least-squares slope through 0
 * of the errors on the corrections it gave, clamped to [0, 1] — the factor by which its
 * corrections, scaled, best predicted the errors that followed; 1 before there is evidence.
 */
export interface Assessment {
  readonly lookup: Lookup;
  /** In [0, 1]: multiply the lookup's correction by it. */
  readonly gain: number;
  /** Errors assessed with a non-zero correction, weighted by recency. */
  readonly evidence: number;
}

/** Orders model versions; the default compares digit runs numerically ("v10" > "v9"). */
export type VersionOrder = (a: string, b: string) => number;

/**
 * The fast error memory of ReLoop2 (arXiv 2306.08591, self-correcting error compensation): the
 * most recent scorer errors, looked up by similarity so a fresh bias of the scorer on some
 * region of inputs is corrected long before the scorer is retrained.
 *
 * - Bounded: at most `capacity` entries; adding to a full memory evicts the oldest.
 * - `compensation(v, k, minSimilarity, similarity)`: among entries with similarity to v of at
 *   least minSimilarity (and above 0), the k most similar (ties: the most recent), and their
 *   similarity-weighted mean error. O(size × dim) per lookup.
 * - `reassess(version, rescore, minResidual)`: the scorer was retrained into `version`. Each
 *   error of an older version that carries its label is re-scored by the new model: where
 *   |label − new score| is still at least minResidual the new model still makes it, and it stays
 *   with that residual as its error, now under `version`; where it is below, the error is fixed
 *   and retired — the entry stays with error 0, under `version`, as evidence that the model is
 *   right there (dropping it instead would leave only the still-made errors as neighbours, and
 *   their corrections would spill onto the inputs the retrain fixed); entries without a label
 *   are dropped. So a retrain that did not learn a bias does not wipe its corrections.
 * - `retire(version)`: the same without a model to ask: every error of an older version goes.
 * - `assess(lookup)`: from then on each error added is first predicted by the lookup as of its
 *   decision (only entries added before `ErrorEntry.at`, with the errors they had then, so the
 *   sample's own and later labels do not count), and the pair (correction, error) is scored:
 *   `gain` = clamp(Σc·e / Σc², 0, 1) over the last ≈ capacity errors, with `PRIOR_PAIRS` pairs
 *   of gain 1 mixed in so it starts at 1. Where corrections do not predict errors (neighbours
 *   that share nothing with the sample but its features' scale) the gain goes to 0 and the
 *   memory stops moving scores; where they do it stays near 1. This is the memory validating
 *   itself on the labels it gets, prequentially; clocks of different hosts must roughly agree.
 *   Cost: a lookup per assessed error, O(size × dim); past ASSESS_BUDGET entries only every
 *   (size / ASSESS_BUDGET)-th error is assessed.
 * After either, labels of older versions still in flight are ignored (`add` refuses them).
 * Versions are ordered by `versionOrder`; retiring a version older than an earlier retire
 * changes nothing.
 * - In memory, shared by all partitions of a worker (fed from a broadcast topic by the
 *   pipeline); `toJSON`/`fromJSON` let a worker rebuild it from a snapshot.
 */
export class ErrorMemory {
  /** A ring: `slots[(head + i) % capacity]` is the i-th oldest of `count` entries. */
  private slots: Array<StoredEntry | undefined>;
  private head = 0;
  private count = 0;
  private retiredBelow: string | null = null;
  /** Running per-dimension mean and sum of squared deviations (Welford) of every key added. */
  private stats: { n: number; mean: Float64Array; m2: Float64Array } | null = null;
  private readonly assessments = new Map<string, TrackedAssessment>();
  private addsSinceAssessed = 0;

  constructor(
    readonly capacity: number,
    private readonly versionOrder: VersionOrder = naturalOrder,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`error memory capacity must be a positive integer, got ${capacity}`);
    this.slots = new Array<StoredEntry | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  /**
   * Stores the error unless its version is retired; returns whether it was stored. `now` is when
   * it is added (default: the clock), what `assess` compares decision times with. Each assessed
   * lookup first predicts it (as of `entry.at`), which costs one lookup per assessment.
   */
  add(entry: ErrorEntry, now = Date.now()): boolean {
    if (!Number.isFinite(entry.error)) throw new Error(`error memory: error must be finite, got ${entry.error}`);
    if (this.isRetired(entry.modelVersion)) return false;
    // One lookup per assessment, on every `stride`-th error only, so an add costs about ASSESS_BUDGET key comparisons however full the memory is.
    const stride = Math.max(1, Math.round(this.count / ASSESS_BUDGET));
    if (this.assessments.size > 0 && ++this.addsSinceAssessed >= stride) {
      this.addsSinceAssessed = 0;
      for (const tracked of this.assessments.values()) {
        const { correction } = this.lookupAsOf(entry.key, tracked.lookup, entry.at);
        tracked.observe(correction, entry.error, this.capacity / stride);
      }
    }
    // A copy: the caller may reuse its buffer.
    const stored: StoredEntry = { ...entry, key: Float32Array.from(entry.key), addedAt: now };
    this.observe(stored.key);
    if (this.count < this.capacity) {
      this.slots[(this.head + this.count) % this.capacity] = stored;
      this.count += 1;
    } else {
      this.slots[this.head] = stored;
      this.head = (this.head + 1) % this.capacity;
    }
    return true;
  }

  compensation(vector: Vector, k: number, minSimilarity: number, similarity: Similarity = { kind: 'cosine' }, shrinkage = 0): Compensation {
    return this.lookupAsOf(vector, { k, minSimilarity, similarity, shrinkage }, Infinity);
  }

  /**
   * The track record of `lookup` (see the class comment): registered on the first call, the
   * same object for an equal lookup after. Assessment starts with the next error added.
   *
   *   const a = memory.assess({ k: 16, minSimilarity: 0.1, similarity: { kind: 'standardized' } })
   *   a.gain  // 1 at first; after labels whose errors the corrections did not predict, ≈ 0
   */
  assess(lookup: Lookup): Assessment {
    const key = lookupKey(lookup);
    let tracked = this.assessments.get(key);
    if (tracked === undefined) {
      tracked = new TrackedAssessment({ ...lookup });
      this.assessments.set(key, tracked);
    }
    return tracked;
  }

  /** `compensation` over the entries added at or before `asOf`. */
  private lookupAsOf(vector: Vector, lookup: Lookup, asOf: number): Compensation {
    const { k, minSimilarity, similarity } = lookup;
    if (k < 1 || this.count === 0) return { correction: 0, neighbours: 0 };
    const measure = this.measure(vector, similarity);
    if (measure === null) return { correction: 0, neighbours: 0 };
    const near: Array<{ similarity: number; error: number }> = [];
    for (const entry of this.newestFirst()) {
      if (entry.key.length !== vector.length) throw new Error(`error memory: vector has ${vector.length} dimensions, stored keys ${entry.key.length}`);
      if (entry.addedAt > asOf) continue;
      const s = measure(entry.key);
      if (s > 0 && s >= minSimilarity) near.push({ similarity: s, error: entry.error });
    }
    // Stable sort over newest-first input: equally similar errors favour the recent.
    const neighbours = near.sort((a, b) => b.similarity - a.similarity).slice(0, k);
    if (neighbours.length === 0) return { correction: 0, neighbours: 0 };
    const weight = neighbours.reduce((sum, n) => sum + n.similarity, 0) + (lookup.shrinkage ?? 0);
    const correction = neighbours.reduce((sum, n) => sum + n.similarity * n.error, 0) / weight;
    return { correction, neighbours: neighbours.length };
  }

  /**
   * Re-scores the errors of versions older than `modelVersion`, as the class comment says;
   * `rescore` gives the new model's scores of the keys, in order. Returns how many the new model
   * still makes (`kept`), how many it fixed (`fixed`, now error 0) and how many had no label
   * (`dropped`). A failing `rescore` drops them all (as `retire`) and rethrows. Errors added
   * while it runs are kept as they are.
   *
   *   await memory.reassess('v3', (keys) => model.score(keys), 0.25)  // → { kept: 12, fixed: 340, dropped: 0 }
   */
  async reassess(modelVersion: string, rescore: (keys: Vector[]) => Promise<ArrayLike<number>>, minResidual: number): Promise<{ kept: number; fixed: number; dropped: number }> {
    if (this.isRetired(modelVersion)) return { kept: 0, fixed: 0, dropped: 0 };
    this.retiredBelow = modelVersion;
    const old = [...this.oldestFirst()].filter((e) => this.isRetired(e.modelVersion));
    const scorable = old.filter((e) => e.label !== undefined);
    const residuals = new Map<StoredEntry, number>();
    let failure: unknown = null;
    try {
      const scores = scorable.length === 0 ? [] : await rescore(scorable.map((e) => e.key));
      if (scores.length !== scorable.length) throw new Error(`error memory: rescore gave ${scores.length} scores for ${scorable.length} keys`);
      scorable.forEach((e, i) => {
        const residual = e.label! - scores[i]!;
        if (Number.isFinite(residual)) residuals.set(e, Math.abs(residual) >= minResidual ? residual : 0);
      });
    } catch (err) {
      failure = err;
    }
    // Entries may have been added (and old ones evicted) while the model scored: match by identity.
    const doomed = new Set(old);
    const counts = { kept: 0, fixed: 0, dropped: 0 };
    this.rebuild((e) => {
      if (!doomed.has(e)) return e;
      const residual = residuals.get(e);
      if (residual === undefined) {
        counts.dropped += 1;
        return null;
      }
      if (residual === 0) counts.fixed += 1;
      else counts.kept += 1;
      return { ...e, error: residual, modelVersion };
    });
    if (failure !== null) throw failure;
    return counts;
  }

  /** Drops errors recorded against versions older than `modelVersion`; returns how many. */
  retire(modelVersion: string): number {
    if (this.isRetired(modelVersion)) return 0;
    this.retiredBelow = modelVersion;
    const before = this.count;
    this.rebuild((e) => (this.isRetired(e.modelVersion) ? null : e));
    return before - this.count;
  }

  toJSON(): ErrorMemoryJSON {
    return {
      capacity: this.capacity,
      retiredBelow: this.retiredBelow,
      entries: [...this.oldestFirst()].map((e) => ({ key: encodeVector(e.key), error: e.error, ...(e.label === undefined ? {} : { label: e.label }), modelVersion: e.modelVersion, at: e.at, addedAt: e.addedAt })),
      assessments: [...this.assessments.values()].map((a) => a.toJSON()),
    };
  }

  static fromJSON(json: ErrorMemoryJSON, versionOrder: VersionOrder = naturalOrder): ErrorMemory {
    const memory = new ErrorMemory(json.capacity, versionOrder);
    memory.retiredBelow = json.retiredBelow;
    // The running statistics restart from the snapshot's keys; assessments are restored after, so the entries are not assessed again.
    for (const e of json.entries) memory.add({ key: decodeVector(e.key), error: e.error, ...(e.label === undefined ? {} : { label: e.label }), modelVersion: e.modelVersion, at: e.at }, e.addedAt ?? e.at);
    for (const a of json.assessments ?? []) memory.assessments.set(lookupKey(a.lookup), TrackedAssessment.fromJSON(a));
    return memory;
  }

  /** The similarity of stored keys to `query`; null when the query has no direction (norm 0). */
  private measure(query: Vector, similarity: Similarity): ((key: Vector) => number) | null {
    if (similarity.kind === 'cosine') return cosineOver(query, Math.min(similarity.dims ?? query.length, query.length));
    if (similarity.kind === 'standardized') return this.standardizedOver(query, 0);
    const dims = Math.min(similarity.dims, query.length);
    const text = cosineOver(query, dims);
    const tail = this.standardizedOver(query, dims);
    if (text === null || tail === null) return text ?? tail;
    return (key) => (text(key) + tail(key)) / 2;
  }

  /** Cosine over `[from, length)` of the keys z-scored by the running statistics (constant dimensions left out). */
  private standardizedOver(query: Vector, from: number): ((key: Vector) => number) | null {
    const stats = this.stats;
    if (stats === null || stats.n < 2 || stats.mean.length !== query.length) return null;
    // 1/sd per dimension, 0 for constant ones; the query z-scored once.
    const scale = new Float64Array(query.length);
    const z = new Float64Array(query.length);
    let queryNorm = 0;
    for (let i = from; i < query.length; i++) {
      const variance = stats.m2[i]! / stats.n;
      scale[i] = variance > 1e-12 ? 1 / Math.sqrt(variance) : 0;
      z[i] = (query[i]! - stats.mean[i]!) * scale[i]!;
      queryNorm += z[i]! * z[i]!;
    }
    if (queryNorm === 0) return null;
    queryNorm = Math.sqrt(queryNorm);
    const mean = stats.mean;
    return (key) => {
      let product = 0;
      let squares = 0;
      for (let i = from; i < z.length; i++) {
        const x = (key[i]! - mean[i]!) * scale[i]!;
        product += x * z[i]!;
        squares += x * x;
      }
      return squares === 0 ? 0 : product / (Math.sqrt(squares) * queryNorm);
    };
  }

  private observe(key: Vector): void {
    if (this.stats === null || this.stats.mean.length !== key.length) this.stats = { n: 0, mean: new Float64Array(key.length), m2: new Float64Array(key.length) };
    const stats = this.stats;
    stats.n += 1;
    for (let i = 0; i < key.length; i++) {
      const delta = key[i]! - stats.mean[i]!;
      const mean = stats.mean[i]! + delta / stats.n;
      stats.mean[i] = mean;
      stats.m2[i] = stats.m2[i]! + delta * (key[i]! - mean);
    }
  }

  /** Rewrites the ring oldest first through `map` (null drops the entry). */
  private rebuild(map: (e: StoredEntry) => StoredEntry | null): void {
    const kept = [...this.oldestFirst()].flatMap((e) => map(e) ?? []);
    this.slots = new Array<StoredEntry | undefined>(this.capacity);
    kept.forEach((e, i) => (this.slots[i] = e));
    this.head = 0;
    this.count = kept.length;
  }

  private isRetired(modelVersion: string): boolean {
    return this.retiredBelow !== null && this.versionOrder(modelVersion, this.retiredBelow) < 0;
  }

  private *oldestFirst(): Generator<StoredEntry> {
    for (let i = 0; i < this.count; i++) yield this.slots[(this.head + i) % this.capacity]!;
  }

  private *newestFirst(): Generator<StoredEntry> {
    for (let i = this.count - 1; i >= 0; i--) yield this.slots[(this.head + i) % this.capacity]!;
  }
}

type StoredEntry = ErrorEntry & { addedAt: number };

/** Key comparisons an add spends on assessment, on average: beyond that many entries only every (size / budget)-th error is assessed. */
export const ASSESS_BUDGET = 8192;

/** Pairs of gain 1 the assessment starts from: the gain follows the evidence once there is more than a few dozen errors' worth. */
export const PRIOR_PAIRS = 20;

const lookupKey = (l: Lookup) => JSON.stringify([l.k, l.minSimilarity, l.similarity, l.shrinkage ?? 0]);

class TrackedAssessment implements Assessment {
  private ce = 0;
  private cc = 0;
  private weight = 0;

  constructor(readonly lookup: Lookup) {}

  static fromJSON(json: AssessmentJSON): TrackedAssessment {
    const a = new TrackedAssessment(json.lookup);
    a.ce = json.ce;
    a.cc = json.cc;
    a.weight = json.weight;
    return a;
  }

  get evidence(): number {
    return this.weight;
  }

  get gain(): number {
    if (this.cc <= 0 || this.weight <= 0) return 1;
    // PRIOR_PAIRS pseudo-pairs of gain 1, each of the mean c² seen.
    const prior = (PRIOR_PAIRS / this.weight) * this.cc;
    return Math.min(1, Math.max(0, (this.ce + prior) / (this.cc + prior)));
  }

  /** One (correction, error) pair; a correction of 0 says nothing about the gain. */
  observe(correction: number, error: number, window: number): void {
    if (correction === 0 || !Number.isFinite(correction)) return;
    const decay = 1 - 1 / Math.max(1, window);
    this.ce = this.ce * decay + correction * error;
    this.cc = this.cc * decay + correction * correction;
    this.weight = this.weight * decay + 1;
  }

  toJSON(): AssessmentJSON {
    return { lookup: this.lookup, ce: this.ce, cc: this.cc, weight: this.weight };
  }
}

/** Compares runs of digits as numbers and everything else as text: v2 < v10 < v10b. */
export function naturalOrder(a: string, b: string): number {
  const pa = a.match(/\d+|\D+/g) ?? [];
  const pb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i]!;
    const y = pb[i]!;
    const bothDigits = /^\d/.test(x) && /^\d/.test(y);
    const order = bothDigits ? Number(x) - Number(y) : x < y ? -1 : x > y ? 1 : 0;
    if (order !== 0) return order;
  }
  return pa.length - pb.length;
}

/** Cosine over the first `dims` values; null when the query's are all zero. */
function cosineOver(query: Vector, dims: number): ((key: Vector) => number) | null {
  const queryNorm = Math.sqrt(dot(query, query, dims));
  if (queryNorm === 0) return null;
  return (key) => {
    let product = 0;
    let squares = 0;
    for (let i = 0; i < dims; i++) {
      const x = key[i]!;
      product += x * query[i]!;
      squares += x * x;
    }
    return squares === 0 ? 0 : product / (Math.sqrt(squares) * queryNorm);
  };
}

function dot(a: Vector, b: Vector, dims = a.length): number {
  let sum = 0;
  for (let i = 0; i < dims; i++) sum += a[i]! * b[i]!;
  return sum;
}

/**
 * A vector as text, the form keys travel in on topics and snapshots, in whichever of two forms
 * is shorter (hashed text features are mostly zeros):
 * - dense: base64 of every value as little-endian float32;
 * - sparse (only for at most 65,536 values): "~" (outside base64's alphabet, so the forms cannot
 *   be confused) + base64 of the length (uint32 LE), then per non-zero value its index (uint16
 *   LE) and the value (float32 LE), indices ascending.
 * Both give back the same float32 values; dense texts written before the sparse form existed
 * read as before.
 *
 *   encodeVector(Float32Array.of(0, 0, 0, 0, 0, 1.5))  // '~BgAAAAUAAADAPw==' (sparse: 1 of 6 non-zero)
 */
export function encodeVector(v: Vector): string {
  let nonZero = 0;
  for (let i = 0; i < v.length; i++) if (v[i] !== 0) nonZero++;
  if (v.length <= SPARSE_MAX && 4 + 6 * nonZero < 4 * v.length) {
    const bytes = Buffer.allocUnsafe(4 + 6 * nonZero);
    bytes.writeUInt32LE(v.length, 0);
    let at = 4;
    for (let i = 0; i < v.length; i++) {
      if (v[i] === 0) continue;
      bytes.writeUInt16LE(i, at);
      bytes.writeFloatLE(v[i]!, at + 2);
      at += 6;
    }
    return SPARSE_MARK + bytes.toString('base64');
  }
  const dense = Float32Array.from(v);
  return Buffer.from(dense.buffer, dense.byteOffset, dense.byteLength).toString('base64');
}

const SPARSE_MARK = '~';
const SPARSE_MAX = 65_536;

/** The vector `encodeVector` wrote (either form). Throws on a sparse form that is cut or out of range. */
export function decodeVector(text: string): Vector {
  if (text.startsWith(SPARSE_MARK)) {
    const bytes = Buffer.from(text.slice(1), 'base64');
    if (bytes.length < 4 || (bytes.length - 4) % 6 !== 0) throw new Error(`sparse vector of ${bytes.length} bytes: not a length and whole (index, value) pairs`);
    const v = new Float32Array(bytes.readUInt32LE(0));
    for (let at = 4; at < bytes.length; at += 6) {
      const i = bytes.readUInt16LE(at);
      if (i >= v.length) throw new Error(`sparse vector: index ${i} outside its length ${v.length}`);
      v[i] = bytes.readFloatLE(at + 2);
    }
    return v;
  }
  const bytes = Buffer.from(text, 'base64');
  const v = new Float32Array(bytes.length >> 2);
  for (let i = 0; i < v.length; i++) v[i] = bytes.readFloatLE(i * 4);
  return v;
}

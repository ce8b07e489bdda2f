/** A sample's key sketch: a feature vector compared by cosine similarity. */
export type Vector = Float32Array;

/** One observed scorer error: a label arrived for a sample the scorer had scored. */
export interface ErrorEntry {
  key: Vector;
  /** label − predicted score. */
  error: number;
  /** The scorer version that made the prediction. */
  modelVersion: string;
  /** When the label arrived (epoch ms). */
  at: number;
}

export interface Compensation {
  /** Similarity-weighted mean error of the neighbours; 0 without neighbours. */
  correction: number;
  neighbours: number;
}

/** The memory as JSON; keys are little-endian float32 bytes in base64, entries oldest first. */
export interface ErrorMemoryJSON {
  capacity: number;
  retiredBelow: string | null;
  entries: Array<{ key: string; error: number; modelVersion: string; at: number }>;
}

/** Orders model versions; the default compares digit runs numerically ("v10" > "v9"). */
export type VersionOrder = (a: string, b: string) => number;

/**
 * The fast error memory of ReLoop2 (arXiv 2306.08591, self-correcting error compensation): the
 * most recent scorer errors, looked up by similarity so a fresh bias of the scorer on some
 * region of inputs is corrected long before the scorer is retrained.
 *
 * - Bounded: at most `capacity` entries; adding to a full memory evicts the oldest.
 * - `compensation(v, k, minSimilarity)`: among entries with cosine similarity to v of at least
 *   minSimilarity (and above 0), the k most similar (ties: the most recent), and their
 *   similarity-weighted mean error. O(size × dim) per lookup.
 * - `retire(version)`: the scorer was retrained into `version`, which has absorbed the errors
 *   of older versions; those are dropped so they do not correct a bias that is gone, and so are
 *   their labels still in flight (`add` ignores them afterwards). Versions are ordered by
 *   `versionOrder`; retiring a version older than an earlier retire changes nothing.
 * - In memory, shared by all partitions of a worker (fed from a broadcast topic by the
 *   pipeline); `toJSON`/`fromJSON` let a worker rebuild it from a snapshot.
 */
export class ErrorMemory {
  /** A ring: `slots[(head + i) % capacity]` is the i-th oldest of `count` entries. */
  private slots: Array<StoredEntry | undefined>;
  private head = 0;
  private count = 0;
  private retiredBelow: string | null = null;

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

  /** Stores the error unless its version is retired; returns whether it was stored. */
  add(entry: ErrorEntry): boolean {
    if (!Number.isFinite(entry.error)) throw new Error(`error memory: error must be finite, got ${entry.error}`);
    if (this.isRetired(entry.modelVersion)) return false;
    // A copy: the caller may reuse its buffer.
    const stored = { ...entry, key: Float32Array.from(entry.key), norm: norm(entry.key) };
    if (this.count < this.capacity) {
      this.slots[(this.head + this.count) % this.capacity] = stored;
      this.count += 1;
    } else {
      this.slots[this.head] = stored;
      this.head = (this.head + 1) % this.capacity;
    }
    return true;
  }

  compensation(vector: Vector, k: number, minSimilarity: number): Compensation {
    const queryNorm = norm(vector);
    if (queryNorm === 0 || k < 1) return { correction: 0, neighbours: 0 };
    const near: Array<{ similarity: number; error: number }> = [];
    for (const entry of this.newestFirst()) {
      if (entry.key.length !== vector.length) throw new Error(`error memory: vector has ${vector.length} dimensions, stored keys ${entry.key.length}`);
      if (entry.norm === 0) continue;
      const similarity = dot(entry.key, vector) / (entry.norm * queryNorm);
      if (similarity > 0 && similarity >= minSimilarity) near.push({ similarity, error: entry.error });
    }
    // Stable sort over newest-first input: equally similar errors favour the recent.
    const neighbours = near.sort((a, b) => b.similarity - a.similarity).slice(0, k);
    if (neighbours.length === 0) return { correction: 0, neighbours: 0 };
    const weight = neighbours.reduce((sum, n) => sum + n.similarity, 0);
    const correction = neighbours.reduce((sum, n) => sum + n.similarity * n.error, 0) / weight;
    return { correction, neighbours: neighbours.length };
  }

  /** Drops errors recorded against versions older than `modelVersion`; returns how many. */
  retire(modelVersion: string): number {
    if (this.isRetired(modelVersion)) return 0;
    this.retiredBelow = modelVersion;
    const kept = [...this.oldestFirst()].filter((e) => !this.isRetired(e.modelVersion));
    const dropped = this.count - kept.length;
    this.slots = new Array<StoredEntry | undefined>(this.capacity);
    kept.forEach((e, i) => (this.slots[i] = e));
    this.head = 0;
    this.count = kept.length;
    return dropped;
  }

  toJSON(): ErrorMemoryJSON {
    return {
      capacity: this.capacity,
      retiredBelow: this.retiredBelow,
      entries: [...this.oldestFirst()].map((e) => ({ key: encodeVector(e.key), error: e.error, modelVersion: e.modelVersion, at: e.at })),
    };
  }

  static fromJSON(json: ErrorMemoryJSON, versionOrder: VersionOrder = naturalOrder): ErrorMemory {
    const memory = new ErrorMemory(json.capacity, versionOrder);
    memory.retiredBelow = json.retiredBelow;
    for (const e of json.entries) memory.add({ key: decodeVector(e.key), error: e.error, modelVersion: e.modelVersion, at: e.at });
    return memory;
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

interface StoredEntry extends ErrorEntry {
  norm: number;
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

function dot(a: Vector, b: Vector): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

function norm(v: Vector): number {
  return Math.sqrt(dot(v, v));
}

/** A vector as little-endian float32 bytes in base64: the form keys travel in on topics and snapshots. */
export function encodeVector(v: Vector): string {
  const bytes = Buffer.alloc(v.length * 4);
  v.forEach((x, i) => bytes.writeFloatLE(x, i * 4));
  return bytes.toString('base64');
}

export function decodeVector(text: string): Vector {
  const bytes = Buffer.from(text, 'base64');
  const v = new Float32Array(bytes.length / 4);
  for (let i = 0; i < v.length; i++) v[i] = bytes.readFloatLE(i * 4);
  return v;
}

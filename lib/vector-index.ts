import usearch from 'usearch';

/**
 * A set of unit vectors under integer keys, searched by inner product (= cosine similarity for
 * unit vectors). Two implementations behind one interface:
 * - `exactVectorIndex`: a scan over every vector; exact, O(count · dims) per search — the
 *   reference, and the right choice for small sets (a prompt group's few responses).
 * - `hnswVectorIndex`: an HNSW graph (usearch, int8-quantised) proposes `candidates` keys, which
 *   are re-ranked exactly against the float32 vectors kept here; so the similarities returned are
 *   exact, only the candidate set is approximate. O(log count) per search and per add.
 * Neither persists itself: its owner keeps the vectors elsewhere (semantic-dedupe: the state
 * store's changelog) and rebuilds the index from them.
 *
 * @example
 *   const ix = hnswVectorIndex(384);
 *   ix.add(7, unitVector);
 *   ix.search(query, 1) // → [{ key: 7, similarity: 0.93 }]
 */
export interface VectorIndex {
  readonly dimensions: number;
  /** Vectors held. */
  readonly count: number;
  /** Adds (or replaces) the vector under `key` (a non-negative safe integer). */
  add(key: number, vector: Float32Array): void;
  /** Removes the vector under `key`; no-op when absent. */
  remove(key: number): void;
  has(key: number): boolean;
  /**
   * Up to `k` vectors most similar to `query` passing `accept` (default: all), best first, with
   * their exact similarity. The HNSW index checks `accept` on its candidates only.
   */
  search(query: Float32Array, k: number, accept?: (key: number) => boolean): Array<{ key: number; similarity: number }>;
  /** Estimated memory held, in bytes. */
  bytes(): number;
}

export interface HnswOptions {
  /** Graph degree (HNSW M): higher → better recall, more memory and slower adds. */
  connectivity: number;
  /** Candidate list size while adding (efConstruction). */
  expansionAdd: number;
  /** Candidate list size while searching (ef). */
  expansionSearch: number;
  /** Candidates taken from the graph and re-ranked exactly: covers what int8 quantisation misorders. */
  candidates: number;
}

export const hnswDefaults: HnswOptions = { connectivity: 16, expansionAdd: 64, expansionSearch: 64, candidates: 16 };

/** Exact search: a scan over all vectors. */
export function exactVectorIndex(dimensions: number): VectorIndex {
  const vectors = new Map<number, Float32Array>();
  return {
    dimensions,
    get count() {
      return vectors.size;
    },
    add: (key, vector) => void vectors.set(key, checked(vector, dimensions)),
    remove: (key) => void vectors.delete(key),
    has: (key) => vectors.has(key),
    search(query, k, accept) {
      const found: Array<{ key: number; similarity: number }> = [];
      for (const [key, vector] of vectors) {
        if (accept !== undefined && !accept(key)) continue;
        insertTop(found, k, key, dot(vector, query));
      }
      return found;
    },
    bytes: () => vectors.size * (dimensions * 4 + MAP_ENTRY_BYTES),
  };
}

/** Approximate search on a usearch HNSW graph, re-ranked exactly (see VectorIndex). */
export function hnswVectorIndex(dimensions: number, options: HnswOptions = hnswDefaults): VectorIndex {
  const graph = new usearch.Index({
    dimensions,
    metric: usearch.MetricKind.IP,
    quantization: usearch.ScalarKind.I8,
    connectivity: options.connectivity,
    expansion_add: options.expansionAdd,
    expansion_search: options.expansionSearch,
    multi: false,
  });
  const vectors = new Map<number, Float32Array>();
  return {
    dimensions,
    // The graph's own count, so a remove it did not carry out shows (usearch < 2.26 failed some after slot reuse).
    get count() {
      return graph.size();
    },
    add(key, vector) {
      checked(vector, dimensions);
      if (vectors.has(key)) graph.remove(BigInt(key));
      vectors.set(key, vector);
      // One thread: a worker's other partitions and the encoder use the other cores.
      graph.add(BigInt(key), vector, 1);
    },
    remove(key) {
      if (!vectors.delete(key)) return;
      graph.remove(BigInt(key));
    },
    has: (key) => vectors.has(key),
    search(query, k, accept) {
      if (vectors.size === 0) return [];
      const matches = graph.search(checked(query, dimensions), Math.min(vectors.size, Math.max(k, options.candidates)), 1);
      const found: Array<{ key: number; similarity: number }> = [];
      for (const raw of matches.keys) {
        const key = Number(raw);
        const vector = vectors.get(key);
        if (vector === undefined || (accept !== undefined && !accept(key))) continue;
        insertTop(found, k, key, dot(vector, query));
      }
      return found;
    },
    // int8 copy + level-0 links (2·M 32-bit slots) + ~1.1× upper levels, and our float32 copy.
    bytes: () => vectors.size * (dimensions + Math.ceil(2 * options.connectivity * 4 * 1.1) + 16 + dimensions * 4 + MAP_ENTRY_BYTES),
  };
}

/** V8 Map entry with a small-integer key and an object value, roughly. */
const MAP_ENTRY_BYTES = 40;

function checked(vector: Float32Array, dimensions: number): Float32Array {
  if (vector.length !== dimensions) throw new Error(`vector index: a vector of ${vector.length} dimensions given to an index of ${dimensions}`);
  return vector;
}

/** Keeps `top` the k best by similarity, best first (k is small: insertion). */
function insertTop(top: Array<{ key: number; similarity: number }>, k: number, key: number, similarity: number): void {
  if (top.length === k && similarity <= top[k - 1]!.similarity) return;
  let at = top.length < k ? top.length : k - 1;
  while (at > 0 && top[at - 1]!.similarity < similarity) {
    if (at < k) top[at] = top[at - 1]!;
    at--;
  }
  top[at] = { key, similarity };
}

export function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

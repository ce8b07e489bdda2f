import usearch from 'usearch';

/**
 * A set of unit vectors under integer keys, searched by inner product (= cosine similarity for
 * unit vectors). Three implementations behind one interface:
 * - `exactVectorIndex`: a scan over every vector; exact, O(count · dims) per search — the
 *   reference, and the right choice for small sets (a prompt group's few responses).
 * - `hnswVectorIndex`: an HNSW graph (usearch, int8-quantised) proposes `candidates` keys, which
 *   are re-ranked exactly against the float32 vectors kept here; so the similarities returned are
 *   exact, only the candidate set is approximate. O(log count) per search and per add.
 * - `clusteredVectorIndex`: SemDeDup-style — vectors are assigned to clusters (online k-means)
 *   and a search scans, exactly, the members of the `probes` clusters whose centroids are
 *   nearest the query: cluster, then dedupe within clusters. O(clusters + members probed).
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

export interface ClusterOptions {
  /** Most clusters; the first `clusters` vectors added seed them. */
  clusters: number;
  /** Clusters scanned per search (1: SemDeDup's "within the cluster" only). */
  probes: number;
}

export const clusterDefaults: ClusterOptions = { clusters: 256, probes: 4 };

/**
 * SemDeDup-style search (see VectorIndex): online k-means (MacQueen) over the vectors added —
 * 1. while fewer than `clusters` clusters exist, a vector added starts a new one (its centroid
 *    the vector itself);
 * 2. otherwise it joins the cluster whose centroid is most similar (cosine) and moves that
 *    centroid towards itself by 1/(members + 1) (the running mean);
 * 3. a search ranks the centroids by cosine to the query and scans the members of the best
 *    `probes` clusters exactly. Removing a vector takes it out of its cluster; the centroid
 *    stays where the adds moved it.
 * A near duplicate sits next to its original, so it falls in the same cluster or a neighbouring
 * one; the similarities returned are exact, only the candidate set is approximate (a duplicate
 * whose original went to an unprobed cluster is missed). Centroids depend on the order of adds,
 * so an index rebuilt after a restore may cluster differently (as a rebuilt HNSW graph links
 * differently).
 *
 *   const ix = clusteredVectorIndex(384, { clusters: 256, probes: 4 });
 */
export function clusteredVectorIndex(dimensions: number, options: ClusterOptions = clusterDefaults): VectorIndex {
  if (!Number.isInteger(options.clusters) || options.clusters < 1) throw new Error('vector index: clusters must be an integer >= 1');
  if (!Number.isInteger(options.probes) || options.probes < 1) throw new Error('vector index: probes must be an integer >= 1');
  const vectors = new Map<number, { vector: Float32Array; cluster: number }>();
  const centroids: Float32Array[] = [];
  /** Vectors a centroid has averaged (its step size), and its length (cosine = dot / norm). */
  const weights: number[] = [];
  const norms: number[] = [];
  const members: Array<Set<number>> = [];
  const nearest = (query: Float32Array, n: number) => {
    const top: Array<{ key: number; similarity: number }> = [];
    centroids.forEach((c, i) => insertTop(top, n, i, dot(c, query) / Math.max(norms[i]!, 1e-12)));
    return top.map((t) => t.key);
  };
  const index: VectorIndex = {
    dimensions,
    get count() {
      return vectors.size;
    },
    add(key, vector) {
      checked(vector, dimensions);
      index.remove(key);
      let cluster: number;
      if (centroids.length < options.clusters) {
        cluster = centroids.length;
        centroids.push(Float32Array.from(vector));
        weights.push(1);
        norms.push(Math.sqrt(dot(vector, vector)));
        members.push(new Set());
      } else {
        cluster = nearest(vector, 1)[0]!;
        const c = centroids[cluster]!;
        const step = 1 / ++weights[cluster]!;
        for (let d = 0; d < dimensions; d++) c[d]! += (vector[d]! - c[d]!) * step;
        norms[cluster] = Math.sqrt(dot(c, c));
      }
      members[cluster]!.add(key);
      vectors.set(key, { vector, cluster });
    },
    remove(key) {
      const held = vectors.get(key);
      if (held === undefined) return;
      vectors.delete(key);
      members[held.cluster]!.delete(key);
    },
    has: (key) => vectors.has(key),
    search(query, k, accept) {
      checked(query, dimensions);
      const found: Array<{ key: number; similarity: number }> = [];
      for (const cluster of nearest(query, options.probes)) {
        for (const key of members[cluster]!) {
          if (accept !== undefined && !accept(key)) continue;
          insertTop(found, k, key, dot(vectors.get(key)!.vector, query));
        }
      }
      return found;
    },
    bytes: () => vectors.size * (dimensions * 4 + 2 * MAP_ENTRY_BYTES) + centroids.length * dimensions * 4,
  };
  return index;
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

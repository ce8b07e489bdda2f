import type { Rollout } from '../../contracts/records.ts';
import type { KeyValueStore } from '../../streams/state-store.ts';
import { eventTimeOf, isRejected, type Curator, type Envelope, type Sample } from '../../lib/envelope.ts';
import { clusteredVectorIndex, dot, exactVectorIndex, hnswVectorIndex, type VectorIndex } from '../../lib/vector-index.ts';
import { responseText } from '../../contracts/features.ts';
import { microBatch, type MicroBatchConfig } from '../../lib/micro-batch.ts';
import { compileExpression, sampleVocabulary } from '../../lib/expression.ts';

/** Texts to vectors; similar texts should get vectors of high cosine similarity. */
export interface Encoder {
  /** Identifies the embedding space: vectors stored under another version are not compared. */
  readonly version: string;
  embed(texts: string[]): Promise<Float32Array[]>;
}

export interface SemanticDedupeConfig extends MicroBatchConfig {
  /** Cosine similarity at or above which a sample is a near duplicate of a remembered one. */
  threshold: number;
  /** Most embeddings remembered per partition; beyond it the oldest is forgotten. */
  maxEntries: number;
  /** Embeddings remembered longer than this (event time, as the other dedupe operators) are forgotten; null: never. */
  ttlMs: number | null;
  /** Expired embeddings removed per sample at most; the rest in later samples (expired ones are never matched meanwhile). */
  evictionsPerStep: number;
  /**
   * "global": compare prompt + response with every remembered sample of the partition;
   * "group": compare responses only with those of the same prompt group.
   */
  scope: 'global' | 'group';
  /**
   * How global scope finds the nearest remembered embedding: "hnsw", an approximate graph
   * (lib/vector-index.ts; ≈ O(log n), similarities still exact), "clusters", SemDeDup-style
   * (online k-means into `clusters` clusters, then an exact scan of the `probes` nearest
   * clusters), or "exact", a scan (O(n)). Group scope always scans the group's few embeddings.
   */
  index: 'hnsw' | 'clusters' | 'exact';
  /** index "clusters": most clusters, and clusters scanned per sample. */
  clusters: number;
  probes: number;
  /** Where the best similarity found is written. */
  scoreName: string;
  /**
   * Which samples are embedded, compared and remembered (lib/expression.ts, e.g.
   * "tags.source == 'forum'"); the others (false or unknown) pass untouched. null: all.
   * Why: a sentence encoder barely sees numbers or names, so templated samples that differ
   * only in them ("Sample 1 computes 2 + 3", "Sample 2 computes 4 + 5") embed almost alike.
   */
  when: string | null;
}

export const semanticDedupeDefaults: SemanticDedupeConfig = {
  threshold: 0.9,
  maxEntries: 10_000,
  ttlMs: 24 * 60 * 60 * 1000,
  evictionsPerStep: 8,
  scope: 'global',
  index: 'hnsw',
  clusters: 256,
  probes: 4,
  scoreName: 'semantic.similarity',
  when: null,
  maxBatch: 64,
  latencyMs: 20,
};

/** The state store this operator keeps its remembered embeddings in (changelog-backed). */
export const semanticDedupeStore = { name: 'semantic-dedupe' } as const;

interface Entry {
  /** The stored string, to tell cheaply whether the store still holds what the mirror holds. */
  raw: string;
  id: string;
  group: string;
  version: string;
  vector: Float32Array;
  /** The operator's clock (largest event time seen) when the entry was remembered. */
  at: number;
}

/**
 * Rejects near duplicates by embedding similarity, in micro-batches (see `microBatch`; every
 * envelope leaves in arrival order). For each batch:
 * 1. samples not already rejected (and for which `when` holds, when set) are embedded in one
 *    encoder call (an encoder failure errors the stream so the batch is retried: it is not the
 *    data's fault); the others pass untouched;
 * 2. in arrival order, the clock moves to each sample's event time (eventTimeOf; never back) and
 *    up to `evictionsPerStep` embeddings older than `ttlMs` are forgotten (older ones left are
 *    never matched); then the sample is compared (cosine) with the remembered embeddings of the
 *    same encoder version — in "group" scope only those of its group, by a scan; in "global"
 *    scope through `index` (HNSW by default: the candidates are approximate, the similarity
 *    exact). The best similarity goes to `scores[scoreName]` (no score while nothing comparable
 *    is remembered);
 * 3. at or above `threshold` the sample is rejected: reason `near_duplicate:semantic`,
 *    `duplicateOf` = the most similar sample's id, `dedupeMethod` = "semantic"; otherwise its
 *    embedding is remembered (the oldest forgotten beyond `maxEntries`), so later samples of the
 *    same batch are compared with it too.
 * State lives in the store (entry `e:<seq>` = [id, group, version, base64 little-endian float32,
 * clock at insert], `meta` = "<oldest seq> <next seq> <clock>"): the vectors, not the graph. The
 * in-memory index is a mirror, rebuilt from the store when the store's meta is not what the
 * mirror last saw (a restore from the changelog, a rebalance, an aborted batch): O(changed
 * entries) for an abort, O(entries · log entries) for a restore.
 * Memory per remembered embedding of d dims: ≈ 5.3·d bytes in the store (base64 text, one byte
 * per char) plus the mirror's float32 copy (4·d) and the HNSW graph (≈ d + 160): ≈ 4.2 kB at d = 384
 * (bench/semantic-index.ts measures it).
 *
 * @example
 *   const encoder: Encoder = { version: 'minilm-v2', embed: (texts) => session.embed(texts) };
 *   semanticDedupe({ ...semanticDedupeDefaults, threshold: 0.9 }, encoder, state.store(semanticDedupeStore.name))
 *   // "What is 2 + 2? Four."            → passes, remembered (no score: nothing to compare with)
 *   // "What's 2 plus 2? It is four." (cosine 0.95 with the first)
 *   //   → reasons ['near_duplicate:semantic'], duplicateOf = the first's id, scores['semantic.similarity'] = 0.95
 */
export function semanticDedupe(config: SemanticDedupeConfig, encoder: Encoder, store: KeyValueStore): Curator {
  return microBatch(config, semanticDedupeBatches(config, encoder, store));
}

/**
 * The work of semanticDedupe on one micro-batch at a time (steps 1–3 above), for callers that
 * batch themselves: seeding the store from stored samples (pipeline/corpus-seed.ts) goes
 * through exactly this, so a seeded store is what streaming the same samples would have left.
 */
export function semanticDedupeBatches(config: SemanticDedupeConfig, encoder: Encoder, store: KeyValueStore): (batch: Envelope[]) => Promise<Envelope[]> {
  checkSemanticDedupeConfig(config);
  const when = config.when === null ? null : compileExpression(config.when, { field: 'when', vocabulary: sampleVocabulary(), result: 'boolean' });
  const mirror = new Mirror(store, config);
  return async (batch) => {
    const candidates = batch.flatMap((e, at) => (e.kind === 'sample' && !isRejected(e) && (when === null || when.evaluate(e) === true) ? [{ at, sample: e }] : []));
    if (candidates.length === 0) return batch;
    const vectors = await encoder.embed(candidates.map(({ sample }) => dedupeText(sample.rollout, config.scope)));
    if (vectors.length !== candidates.length) throw new Error(`encoder ${encoder.version} returned ${vectors.length} embeddings for ${candidates.length} texts`);

    // From here on synchronous: the store cannot change under us.
    mirror.sync(encoder.version, vectors[0]!.length);
    const out: Envelope[] = [...batch];
    try {
      candidates.forEach(({ at, sample }, i) => {
        const vector = unit(vectors[i]!, encoder.version);
        const group = sample.rollout.group_id;
        mirror.advance(eventTimeOf(sample));
        const best = mirror.nearest(vector, group, encoder.version);
        const scored: Sample = best === null ? sample : { ...sample, scores: { ...sample.scores, [config.scoreName]: best.similarity } };
        if (best !== null && best.similarity >= config.threshold) {
          out[at] = { ...scored, duplicateOf: best.entry.id, dedupeMethod: 'semantic', reasons: [...scored.reasons, 'near_duplicate:semantic'] };
          return;
        }
        out[at] = scored;
        mirror.insert(sample.rollout.id, group, encoder.version, vector);
      });
    } catch (err) {
      // The batch will be aborted: its staged writes vanish, so the mirror must not keep them.
      mirror.invalidate();
      throw err;
    }
    mirror.save();
    return out;
  };
}

export function checkSemanticDedupeConfig(c: SemanticDedupeConfig): void {
  if (!Number.isInteger(c.maxEntries) || c.maxEntries < 1) throw new Error('semantic-dedupe: maxEntries must be an integer >= 1');
  if (c.ttlMs !== null && !(c.ttlMs > 0)) throw new Error('semantic-dedupe: ttlMs must be > 0 or null');
  if (!Number.isInteger(c.evictionsPerStep) || c.evictionsPerStep < 1) throw new Error('semantic-dedupe: evictionsPerStep must be an integer >= 1');
  if (!Number.isInteger(c.clusters) || c.clusters < 1) throw new Error('semantic-dedupe: clusters must be an integer >= 1');
  if (!Number.isInteger(c.probes) || c.probes < 1) throw new Error('semantic-dedupe: probes must be an integer >= 1');
}

/** The in-memory view of the store's entries: by seq, by group, and (global scope) a vector index. */
class Mirror {
  private readonly entries = new Map<number, Entry>();
  private readonly groups = new Map<string, Set<number>>();
  /** Global scope: the entries of `indexed` version and dimensions. */
  private index: VectorIndex | null = null;
  private indexed = { version: '', dims: 0 };
  private tail = 0;
  private head = 0;
  private clock = 0;
  /** The meta as this mirror last read or wrote it (undefined: none in the store). */
  private seenMeta: string | undefined;
  private dirty = false;
  /** Set when the mirror may hold what the store does not (a batch failed half-way). */
  private stale = false;

  constructor(
    private readonly store: KeyValueStore,
    private readonly config: SemanticDedupeConfig,
  ) {}

  /** Catches up with the store if it changed behind the mirror, and indexes `version`'s vectors. */
  sync(version: string, dims: number): void {
    const meta = this.store.get('meta');
    if (this.stale || meta !== this.seenMeta) {
      const [tail = 0, head = 0, clock = 0] = (meta ?? '0 0 0').split(' ').map(Number);
      for (const seq of [...this.entries.keys()]) if (seq < tail || seq >= head) this.forget(seq);
      for (let seq = tail; seq < head; seq++) {
        const raw = this.store.get(entryKey(seq));
        const held = this.entries.get(seq);
        if (raw === undefined) {
          if (held !== undefined) this.forget(seq);
        } else if (held === undefined || held.raw !== raw) {
          if (held !== undefined) this.forget(seq);
          this.remember(seq, parseEntry(raw, clock));
        } else held.raw = raw; // equal text in another string (after a restore): share the store's
      }
      [this.tail, this.head, this.clock, this.seenMeta, this.dirty, this.stale] = [tail, head, clock, meta, false, false];
    }
    if (this.config.scope === 'global' && (this.index === null || this.indexed.version !== version || this.indexed.dims !== dims)) {
      const { index, clusters, probes } = this.config;
      this.index = index === 'hnsw' ? hnswVectorIndex(dims) : index === 'clusters' ? clusteredVectorIndex(dims, { clusters, probes }) : exactVectorIndex(dims);
      this.indexed = { version, dims };
      for (const [seq, entry] of this.entries) if (this.indexable(entry)) this.index.add(seq, entry.vector);
    }
  }

  /** Moves the clock to `at` (never back) and forgets up to evictionsPerStep expired entries. */
  advance(at: number): void {
    if (Number.isFinite(at) && at > this.clock) [this.clock, this.dirty] = [at, true];
    for (let budget = this.config.evictionsPerStep; budget > 0 && this.tail < this.head && this.expired(this.tail); budget--) this.evictTail();
  }

  nearest(vector: Float32Array, group: string, version: string): { entry: Entry; similarity: number } | null {
    let bestSeq = -1;
    let best = -Infinity;
    if (this.config.scope === 'global') {
      const [hit] = this.index!.search(vector, 1, (seq) => !this.expired(seq));
      if (hit !== undefined) [bestSeq, best] = [hit.key, hit.similarity];
    } else {
      for (const seq of this.groups.get(group) ?? []) {
        const entry = this.entries.get(seq)!;
        if (entry.version !== version || entry.vector.length !== vector.length || this.expired(seq)) continue;
        const similarity = dot(entry.vector, vector);
        if (similarity > best) [bestSeq, best] = [seq, similarity];
      }
    }
    return bestSeq < 0 ? null : { entry: this.entries.get(bestSeq)!, similarity: best };
  }

  insert(id: string, group: string, version: string, vector: Float32Array): void {
    const raw = JSON.stringify([id, group, version, Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64'), this.clock]);
    const seq = this.head++;
    this.store.put(entryKey(seq), raw);
    this.remember(seq, { raw, id, group, version, vector, at: this.clock });
    while (this.head - this.tail > this.config.maxEntries) this.evictTail();
    this.dirty = true;
  }

  invalidate(): void {
    this.stale = true;
  }

  /** Writes the meta if anything changed; once per batch. */
  save(): void {
    if (!this.dirty) return;
    const meta = `${this.tail} ${this.head} ${this.clock}`;
    this.store.put('meta', meta);
    [this.seenMeta, this.dirty] = [meta, false];
  }

  private expired(seq: number): boolean {
    const ttl = this.config.ttlMs;
    const entry = this.entries.get(seq);
    return ttl !== null && entry !== undefined && entry.at < this.clock - ttl;
  }

  private evictTail(): void {
    this.store.delete(entryKey(this.tail));
    this.forget(this.tail);
    this.tail++;
    this.dirty = true;
  }

  private indexable(entry: Entry): boolean {
    return entry.version === this.indexed.version && entry.vector.length === this.indexed.dims;
  }

  private remember(seq: number, entry: Entry): void {
    this.entries.set(seq, entry);
    let members = this.groups.get(entry.group);
    if (members === undefined) this.groups.set(entry.group, (members = new Set()));
    members.add(seq);
    if (this.index !== null && this.indexable(entry)) this.index.add(seq, entry.vector);
  }

  private forget(seq: number): void {
    const entry = this.entries.get(seq);
    if (entry === undefined) return;
    this.entries.delete(seq);
    const members = this.groups.get(entry.group)!;
    members.delete(seq);
    if (members.size === 0) this.groups.delete(entry.group);
    this.index?.remove(seq);
  }
}

const entryKey = (seq: number) => `e:${seq}`;

function dedupeText(r: Rollout, scope: SemanticDedupeConfig['scope']): string {
  return scope === 'group' ? responseText(r) : `${r.prompt}\n${responseText(r)}`;
}

function parseEntry(raw: string, clock: number): Entry {
  // Entries written before TTL had no time: they count as remembered at the stored clock.
  const [id, group, version, vector, at = clock] = JSON.parse(raw) as [string, string, string, string, number?];
  const bytes = Buffer.from(vector, 'base64');
  // Copied into its own buffer: a Float32Array view needs 4-byte alignment.
  return { raw, id, group, version, vector: new Float32Array(new Uint8Array(bytes).buffer), at };
}

/** The vector scaled to length 1 (cosine similarity becomes a dot product). */
function unit(vector: Float32Array, version: string): Float32Array {
  let norm = 0;
  for (const x of vector) norm += x * x;
  if (!Number.isFinite(norm)) throw new Error(`encoder ${version} returned a non-finite embedding`);
  const out = new Float32Array(vector.length);
  if (norm === 0) return out;
  const scale = 1 / Math.sqrt(norm);
  vector.forEach((x, i) => (out[i] = x * scale));
  return out;
}

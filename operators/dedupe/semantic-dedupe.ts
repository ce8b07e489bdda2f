import type { Rollout } from '../../contracts/records.ts';
import type { KeyValueStore } from '../../streams/state-store.ts';
import { isRejected, type Curator, type Envelope, type Sample } from '../../lib/envelope.ts';
import { responseText } from '../../contracts/features.ts';
import { microBatch, type MicroBatchConfig } from '../../lib/micro-batch.ts';

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
  /**
   * "global": compare prompt + response with every remembered sample of the partition;
   * "group": compare responses only with those of the same prompt group.
   */
  scope: 'global' | 'group';
  /** Where the best similarity found is written. */
  scoreName: string;
}

export const semanticDedupeDefaults: SemanticDedupeConfig = {
  threshold: 0.9,
  maxEntries: 10_000,
  scope: 'global',
  scoreName: 'semantic.similarity',
  maxBatch: 64,
  latencyMs: 20,
};

/** The state store this operator keeps its remembered embeddings in (changelog-backed). */
export const semanticDedupeStore = { name: 'semantic-dedupe' } as const;

interface Entry {
  /** The stored string, to tell cheaply whether the store still holds what the cache holds. */
  raw: string;
  id: string;
  group: string;
  version: string;
  vector: Float32Array;
}

/**
 * Rejects near duplicates by embedding similarity, in micro-batches (see `microBatch`; every
 * envelope leaves in arrival order). For each batch:
 * 1. samples not already rejected are embedded in one encoder call (an encoder failure errors
 *    the stream so the batch is retried: it is not the data's fault);
 * 2. in arrival order, each is compared (cosine, exact search) with the remembered embeddings
 *    of the same encoder version — and, in "group" scope, the same group; the best similarity
 *    goes to `scores[scoreName]` (no score while nothing comparable is remembered);
 * 3. at or above `threshold` the sample is rejected: reason `near_duplicate:semantic`,
 *    `duplicateOf` = the most similar sample's id, `dedupeMethod` = "semantic"; otherwise its
 *    embedding is remembered, so later samples of the same batch are compared with it too.
 * Memory is bounded: at most `maxEntries` embeddings, the oldest evicted first. They live in
 * the store (entry `e:<seq>` = [id, group, version, base64 little-endian float32], `meta` =
 * "<oldest seq> <next seq>"), so dedupe continues after a restart; the in-memory copy is only a
 * cache, checked against the store at each batch, so aborted batches and restores are seen.
 *
 * @example
 *   const encoder: Encoder = { version: 'minilm-v2', embed: (texts) => session.embed(texts) };
 *   semanticDedupe({ ...semanticDedupeDefaults, threshold: 0.9 }, encoder, state.store(semanticDedupeStore.name))
 *   // "What is 2 + 2? Four."            → passes, remembered (no score: nothing to compare with)
 *   // "What's 2 plus 2? It is four." (cosine 0.95 with the first)
 *   //   → reasons ['near_duplicate:semantic'], duplicateOf = the first's id, scores['semantic.similarity'] = 0.95
 */
export function semanticDedupe(config: SemanticDedupeConfig, encoder: Encoder, store: KeyValueStore): Curator {
  const cache = new Map<number, Entry>();

  const readMeta = (): { tail: number; head: number } => {
    const [tail = 0, head = 0] = (store.get('meta') ?? '0 0').split(' ').map(Number);
    return { tail, head };
  };
  const syncCache = (tail: number, head: number) => {
    for (const seq of cache.keys()) if (seq < tail || seq >= head) cache.delete(seq);
    for (let seq = tail; seq < head; seq++) {
      const raw = store.get(`e:${seq}`);
      const cached = cache.get(seq);
      if (raw === undefined) cache.delete(seq);
      else if (cached?.raw !== raw) cache.set(seq, parseEntry(raw));
      // Equal text in another string (after a restore): keep the store's, so the next check is a pointer compare.
      else cached.raw = raw;
    }
  };

  return microBatch(config, async (batch) => {
    const candidates = batch.flatMap((e, at) => (e.kind === 'sample' && !isRejected(e) ? [{ at, sample: e }] : []));
    if (candidates.length === 0) return batch;
    const vectors = await encoder.embed(candidates.map(({ sample }) => dedupeText(sample.rollout, config.scope)));
    if (vectors.length !== candidates.length) throw new Error(`encoder ${encoder.version} returned ${vectors.length} embeddings for ${candidates.length} texts`);

    // From here on synchronous: the store cannot change under us.
    let { tail, head } = readMeta();
    syncCache(tail, head);
    const out: Envelope[] = [...batch];
    candidates.forEach(({ at, sample }, i) => {
      const vector = unit(vectors[i]!, encoder.version);
      const group = sample.rollout.group_id;
      let best: Entry | null = null;
      let bestSimilarity = -Infinity;
      for (const entry of cache.values()) {
        if (entry.version !== encoder.version || entry.vector.length !== vector.length) continue;
        if (config.scope === 'group' && entry.group !== group) continue;
        const similarity = dot(entry.vector, vector);
        if (similarity > bestSimilarity) [best, bestSimilarity] = [entry, similarity];
      }
      const scored: Sample = best === null ? sample : { ...sample, scores: { ...sample.scores, [config.scoreName]: bestSimilarity } };
      if (best !== null && bestSimilarity >= config.threshold) {
        out[at] = { ...scored, duplicateOf: best.id, dedupeMethod: 'semantic', reasons: [...scored.reasons, 'near_duplicate:semantic'] };
        return;
      }
      out[at] = scored;
      const raw = JSON.stringify([sample.rollout.id, group, encoder.version, Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64')]);
      store.put(`e:${head}`, raw);
      cache.set(head, { raw, id: sample.rollout.id, group, version: encoder.version, vector });
      head++;
      while (head - tail > config.maxEntries) {
        store.delete(`e:${tail}`);
        cache.delete(tail);
        tail++;
      }
      store.put('meta', `${tail} ${head}`);
    });
    return out;
  });
}

function dedupeText(r: Rollout, scope: SemanticDedupeConfig['scope']): string {
  return scope === 'group' ? responseText(r) : `${r.prompt}\n${responseText(r)}`;
}

function parseEntry(raw: string): Entry {
  const [id, group, version, vector] = JSON.parse(raw) as [string, string, string, string];
  const bytes = Buffer.from(vector, 'base64');
  // Copied into its own buffer: a Float32Array view needs 4-byte alignment.
  return { raw, id, group, version, vector: new Float32Array(new Uint8Array(bytes).buffer) };
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

function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

import { map } from 'rxjs';
import type { Rollout } from '../../contracts/records.ts';
import type { KeyValueStore } from '../../streams/state-store.ts';
import { bandScope, checkIndexBounds, indexMaxChars, openIndex, type DedupeIndex, type IndexBounds, type IndexLayout } from '../../lib/dedupe-index.ts';
import { deadLetter, eventTimeOf, isRejected, type Curator, type Sample } from '../../lib/envelope.ts';
import { bandKeysAt, checkMinHashConfig, estimateSimilarity, hasherFor, minHashDefaults, type MinHashConfig, type Signature } from '../../lib/minhash.ts';

export { deleteWhere, indexEntries, type EntryInfo } from '../../lib/dedupe-index.ts';

export interface NearDedupeConfig extends IndexBounds {
  /** "global": near copies anywhere in the partition (plus the remote index); "group": only within a prompt group. */
  scope: 'global' | 'group';
  /** Estimated Jaccard similarity at or above which a sample is a near duplicate. */
  threshold: number;
  /**
   * What is compared. "response" by default: within a group every prompt is the same, and a
   * long shared prompt would make any two answers look alike.
   */
  text: 'response' | 'prompt_response';
  /** Texts with fewer distinct shingles are neither checked nor indexed: too short for a meaningful estimate (exact-dedupe covers them). */
  minShingles: number;
  minhash: MinHashConfig;
  /** Which time expires entries: event time only, or also the processor's ticks (`tick.now`). */
  clock: 'event' | 'event+tick';
  /** A duplicate hit makes the original recently seen again, so TTL and count eviction keep it. */
  refreshOnHit: boolean;
  /** Put each indexed sample's base64 signature in `annotations['minhash.signature']` (for the cross-partition broadcast). */
  annotateSignature: boolean;
}

export const nearDedupeDefaults: NearDedupeConfig = {
  scope: 'group',
  threshold: 0.8,
  text: 'response',
  minShingles: 5,
  minhash: minHashDefaults,
  maxEntries: 50_000,
  ttlMs: 24 * 60 * 60 * 1000,
  maxBucketSize: 32,
  evictionsPerStep: 8,
  clock: 'event',
  refreshOnHit: true,
  annotateSignature: true,
};

/** The state store this operator keeps its LSH index in (changelog-backed; layout in dedupe-index.ts). */
export const nearDedupeStore = { name: 'near-dedupe' } as const;

export const SIGNATURE_ANNOTATION = 'minhash.signature';

/**
 * Read-only candidates from outside this partition's index (e.g. a cache of signatures other
 * partitions broadcast). Asked only when the local index has no near duplicate; must be
 * deterministic for a given input if replays are to decide the same.
 */
export interface RemoteIndex {
  /** Entries sharing at least one band key (as `bandKeysOf` gives them), with their packed signatures. */
  candidates(bandKeys: Int32Array): Array<{ id: string; signature: Signature }>;
}

/** One item offered to the index: a sample, or a corpus item while seeding. */
export interface NearDedupeItem {
  id: string;
  groupId: string;
  text: string;
  /** Event time, epoch ms (NaN: none, the item takes the index clock). */
  at: number;
}

export type NearDedupeOutcome =
  | { kind: 'too_short' }
  | { kind: 'known' }
  | { kind: 'duplicate'; of: string; similarity: number }
  /** `signature` is the hasher's buffer: valid until the next step under the same minhash config; `encoded` its encodeSignature. */
  | { kind: 'inserted'; signature: Signature; encoded: string };

/**
 * Rejects a sample whose text is a near copy of an earlier indexed one: reason
 * `near_duplicate`, `dedupeMethod` "minhash", `duplicateOf` = the earlier sample's id,
 * `scores['minhash.similarity']` = the estimated Jaccard similarity. Step by step, per sample:
 * 1. Already rejected samples pass untouched (neither checked nor indexed), like exact-dedupe.
 * 2. The text (config.text, normalised, shingled) with fewer than minShingles shingles passes
 *    untouched.
 * 3. The clock advances to the sample's event time (eventTimeOf; never back); entries last seen more than
 *    ttlMs before the clock are never matched, and at most evictionsPerStep of them are removed
 *    per sample (64× per tick), so a mass expiry spreads over later batches (dedupe-index.ts).
 * 4. The signature's band keys (mixed with the group id in group scope) select candidates from
 *    the index; the one with the highest estimated similarity (ties: the least recently seen)
 *    decides. At or
 *    above threshold the sample is a duplicate, and with refreshOnHit the original's last-seen
 *    moves to the clock. A candidate with the sample's own id (a re-sent rollout) means it is
 *    indexed already: it passes, refreshed, and is not indexed twice.
 * 5. Otherwise the remote index, if given, is asked the same way (remote hits are not refreshed).
 * 6. Otherwise the sample is indexed (evicting the least recently seen entry at maxEntries) and,
 *    with annotateSignature, carries its packed signature in `annotations['minhash.signature']`
 *    (encodeSignature, 88 base64 characters with the defaults); `bandKeysOf(decodeSignature(that,
 *    config.minhash), group_id, config)` gives its band keys.
 * Ticks advance the clock (and so expire entries) when clock = "event+tick"; other envelopes pass.
 * An exception for a sample dead-letters it (stage "near-dedupe").
 *
 * Cost per sample: one pass over the text's char codes, O(shingles + permutations) hashing
 * (one-permutation hashing, minhash.ts), one map lookup per band, and one store write (the
 * entry) when indexed. Memory: at most maxEntries entries of ≤ indexEntryChars(config, sizes)
 * characters each in the store (213 with the defaults and 36-character ids and group ids, ≈ 185
 * measured);
 * nearDedupeMaxChars gives the bound. All state is in `store` (the in-memory buckets are
 * rebuilt from it): an operator built later on the same store continues exactly. Changing `scope` or `minhash` makes the stored index unreadable: it is dropped on
 * first use (as is an index signed by the sketch before round priority, layout 2: dedupe-index.ts). The clock follows the largest event time seen, created_at capped by the broker's
 * record timestamp (eventTimeOf), so one far-future created_at cannot expire the index.
 *
 * @example
 *   nearDedupe(nearDedupeDefaults, state.store(nearDedupeStore.name))
 *   // in one group, the response "The quick brown fox jumps over the lazy dog and runs across
 *   // the green field to the river"                 → passes, indexed
 *   // then the same ending in "river!" (15 of 17 distinct word 3-shingles shared, J = 0.88)
 *   //   → reasons ['near_duplicate'], dedupeMethod 'minhash', duplicateOf = the first's id,
 *   //     scores['minhash.similarity'] ≈ 0.88; the first stays indexed, its last-seen refreshed
 */
export function nearDedupe(config: NearDedupeConfig, store: KeyValueStore, remote?: RemoteIndex): Curator {
  checkNearDedupeConfig(config);
  const layout = layoutOf(config);
  const index = () => openIndex(store, layout, config);
  return map((envelope) => {
    if (envelope.kind === 'tick') {
      if (config.clock === 'event+tick') {
        const ix = index();
        ix.advance(envelope.now, config.evictionsPerStep * 64);
        ix.save();
      }
      return envelope;
    }
    if (envelope.kind !== 'sample' || isRejected(envelope)) return envelope;
    try {
      return decide(envelope, nearDedupeStep(index(), config, { ...itemOf(envelope.rollout, config), at: eventTimeOf(envelope) }, remote), config);
    } catch (err) {
      return deadLetter(envelope, 'near-dedupe', (err as Error).message);
    }
  });
}

/**
 * Offers one item to the index (steps 2–6 of nearDedupe) and saves the index. Seeding uses it
 * too, so a seeded index is exactly what streaming the same items would have built.
 */
export function nearDedupeStep(index: DedupeIndex, config: NearDedupeConfig, item: NearDedupeItem, remote?: RemoteIndex): NearDedupeOutcome {
  const hasher = hasherFor(config.minhash);
  const shingles = hasher.scan(item.text);
  if (!hasher.distinctAtLeast(shingles, config.minShingles)) return TOO_SHORT;
  hasher.densify();
  hasher.pack();
  const signature = hasher.signature;
  const keys = hasher.keys(bandScope(config.scope, item.groupId));
  try {
    index.advance(item.at, config.evictionsPerStep);
    let outcome = match(index, config, item, signature, keys, remote);
    if (outcome === INSERT) outcome = { kind: 'inserted', signature, encoded: index.insert({ id: item.id, groupId: item.groupId, at: item.at, signature }, keys) };
    index.save();
    return outcome;
  } catch (err) {
    // A write failed half-way: the mirror may be ahead of the store, so it is rebuilt from it.
    index.invalidate();
    throw err;
  }
}

const TOO_SHORT: NearDedupeOutcome = { kind: 'too_short' };
const KNOWN: NearDedupeOutcome = { kind: 'known' };
/** match's "not found": the step then inserts. */
const INSERT: NearDedupeOutcome = { kind: 'inserted', signature: new Uint32Array(0), encoded: '' };
let CANDIDATES = new Int32Array(512);

export function checkNearDedupeConfig(config: NearDedupeConfig): void {
  if (!(config.threshold > 0 && config.threshold <= 1)) throw new Error('near-dedupe: threshold must be in (0, 1]');
  if (!Number.isInteger(config.minShingles) || config.minShingles < 1) throw new Error('near-dedupe: minShingles must be an integer >= 1');
  checkMinHashConfig(config.minhash);
  checkIndexBounds(config);
}

/** Upper bound of the index's size in characters for ids and group ids of at most the given lengths. */
export function nearDedupeMaxChars(config: NearDedupeConfig, sizes = { idChars: 36, groupChars: 36 }): number {
  return indexMaxChars(layoutOf(config), config, sizes);
}

/** The band keys a signature is indexed under (what the cross-partition cache files it under). */
export function bandKeysOf(signature: Signature, groupId: string, config: Pick<NearDedupeConfig, 'scope' | 'minhash'>): Int32Array {
  const out = new Int32Array(config.minhash.bands);
  bandKeysAt(signature, 0, config.minhash, bandScope(config.scope, groupId), out);
  return out;
}

export function itemOf(r: Rollout, config: Pick<NearDedupeConfig, 'text'>): NearDedupeItem {
  return { id: r.id, groupId: r.group_id, text: comparedText(r.prompt, responseText(r), config.text), at: r.created_at };
}

/** The text near-dedupe compares, from a prompt and a response (trajectories: see responseText). */
export function comparedText(prompt: string, response: string, mode: NearDedupeConfig['text']): string {
  return mode === 'response' ? response : `${prompt}\n${response}`;
}

/** The response, or a trajectory's steps as "role: content" lines (as exact-dedupe and the samples table have it). */
export function responseText(r: Pick<Rollout, 'response' | 'steps'>): string {
  return r.response ?? r.steps.map((s) => `${s.role}: ${s.content}`).join('\n');
}

export function layoutOf(config: Pick<NearDedupeConfig, 'scope' | 'minhash'>): IndexLayout {
  return { scope: config.scope, minhash: config.minhash };
}

function match(
  index: DedupeIndex,
  config: NearDedupeConfig,
  item: NearDedupeItem,
  signature: Signature,
  keys: Int32Array,
  remote: RemoteIndex | undefined,
): NearDedupeOutcome {
  const wanted = Math.min(config.maxBucketSize * config.minhash.bands, 1 << 16);
  if (CANDIDATES.length < wanted) CANDIDATES = new Int32Array(wanted);
  const found = index.candidates(keys, CANDIDATES);
  let best = -1;
  let bestSimilarity = 0;
  for (let i = 0; i < found; i++) {
    const slot = CANDIDATES[i]!;
    // Band keys mix in the group in group scope; another group's entry here is a 31-bit key collision.
    if (config.scope === 'group' && index.groupOf(slot) !== item.groupId) continue;
    if (index.idOf(slot) === item.id) {
      if (config.refreshOnHit) index.refresh(slot);
      return KNOWN;
    }
    const similarity = index.similarity(slot, signature);
    // Candidates come least recently seen first: strict > keeps that one on ties.
    if (similarity >= config.threshold && (best < 0 || similarity > bestSimilarity)) {
      best = slot;
      bestSimilarity = similarity;
    }
  }
  if (best >= 0) {
    const of = index.idOf(best);
    if (config.refreshOnHit) index.refresh(best);
    return { kind: 'duplicate', of, similarity: bestSimilarity };
  }
  if (remote !== undefined) {
    let remoteBest: { id: string; similarity: number } | undefined;
    for (const c of remote.candidates(keys)) {
      if (c.id === item.id) continue;
      const similarity = estimateSimilarity(signature, c.signature, config.minhash);
      if (similarity >= config.threshold && (remoteBest === undefined || similarity > remoteBest.similarity)) remoteBest = { id: c.id, similarity };
    }
    if (remoteBest !== undefined) return { kind: 'duplicate', of: remoteBest.id, similarity: remoteBest.similarity };
  }
  return INSERT;
}

function decide(sample: Sample, outcome: NearDedupeOutcome, config: NearDedupeConfig): Sample {
  if (outcome.kind === 'duplicate') {
    return {
      ...sample,
      duplicateOf: outcome.of,
      dedupeMethod: 'minhash',
      reasons: [...sample.reasons, 'near_duplicate'],
      scores: { ...sample.scores, 'minhash.similarity': outcome.similarity },
    };
  }
  if (outcome.kind === 'inserted' && config.annotateSignature) {
    return { ...sample, annotations: { ...sample.annotations, [SIGNATURE_ANNOTATION]: outcome.encoded } };
  }
  return sample;
}

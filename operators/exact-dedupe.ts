import { createHash } from 'node:crypto';
import type { Rollout } from '../streams/records.ts';
import type { KeyValueStore } from '../streams/state-store.ts';
import { isRejected, mapSamples, type Curator } from './envelope.ts';

export interface ExactDedupeConfig {
  /** "global": the same content anywhere in the partition; "group": only within a prompt group. */
  scope: 'global' | 'group';
  /** Hashes remembered at most; one more evicts the least recently seen. */
  maxEntries: number;
  /** A hash not seen for this long (event time) is forgotten; null: only maxEntries bounds the index. */
  ttlMs: number | null;
  /** A repeat makes the original recently seen again. */
  refreshOnHit: boolean;
}

export const exactDedupeDefaults: ExactDedupeConfig = { scope: 'global', maxEntries: 200_000, ttlMs: 7 * 24 * 3600 * 1000, refreshOnHit: true };

/** The state store this operator keeps its content hashes in (changelog-backed). */
export const exactDedupeStore = { name: 'exact-dedupe' } as const;

/**
 * Rejects a sample whose normalised prompt + response was seen before (reason `duplicate`,
 * `duplicateOf` = the first sample's id). The first occurrence is remembered in the
 * partition's store; samples already rejected by an earlier operator are neither checked nor
 * remembered. Since topics are keyed by group id, a group's samples share a partition, so
 * "global" means global within the partition the content lands on.
 *
 * Bounded: at most `maxEntries` hashes (about 120 bytes each with their queue key), and hashes
 * not seen for `ttlMs` of event time (the largest `created_at` seen) are forgotten, oldest first,
 * so an index fed by an endless stream does not grow forever.
 */
export function exactDedupe(config: ExactDedupeConfig, store: KeyValueStore): Curator {
  return mapSamples('exact-dedupe', (sample) => {
    if (isRejected(sample)) return sample;
    const key = contentKey(sample.rollout, config.scope);
    const first = rememberExact(store, config, key, sample.rollout.id, sample.rollout.created_at);
    if (first === undefined) return sample;
    return { ...sample, duplicateOf: first, dedupeMethod: 'exact', reasons: [...sample.reasons, 'duplicate'] };
  });
}

interface Entry {
  id: string;
  /** Position in the recency queue; an older queue slot for the key is stale. */
  seq: number;
  lastSeen: number;
}

// Layout: `e:<hash>` → entry, `q:<seq>` → hash (recency queue), `#head`, `#tail`, `#size`, `#clock`.
const read = (store: KeyValueStore, key: string, fallback = 0) => Number(store.get(key) ?? fallback);
const entryOf = (store: KeyValueStore, key: string): Entry | undefined => {
  const raw = store.get(`e:${key}`);
  return raw === undefined ? undefined : (JSON.parse(raw) as Entry);
};

/**
 * Looks `key` up; when absent remembers it for `id` and returns undefined, else returns the
 * first id (refreshing it when configured). Evicts past the bounds. Shared by the operator and
 * by seeding from an existing corpus.
 */
export function rememberExact(store: KeyValueStore, config: ExactDedupeConfig, key: string, id: string, at: number): string | undefined {
  const clock = Math.max(read(store, '#clock', at), at);
  if (clock !== read(store, '#clock', Number.NaN)) store.put('#clock', String(clock));
  const existing = entryOf(store, key);
  let tail = read(store, '#tail');
  if (existing !== undefined && (config.ttlMs === null || clock - existing.lastSeen <= config.ttlMs)) {
    if (config.refreshOnHit) {
      store.put(`e:${key}`, JSON.stringify({ id: existing.id, seq: tail, lastSeen: Math.max(existing.lastSeen, at) }));
      store.put(`q:${tail}`, key);
      store.put('#tail', String(tail + 1));
    }
    return existing.id;
  }
  if (existing === undefined) store.put('#size', String(read(store, '#size') + 1));
  store.put(`e:${key}`, JSON.stringify({ id, seq: tail, lastSeen: at }));
  store.put(`q:${tail}`, key);
  store.put('#tail', String(++tail));
  evict(store, config, clock);
  return undefined;
}

/** Pops the recency queue while the index is over its bounds; stale slots are dropped on the way. */
function evict(store: KeyValueStore, config: ExactDedupeConfig, clock: number): void {
  let head = read(store, '#head');
  const tail = read(store, '#tail');
  let size = read(store, '#size');
  const start = head;
  while (head < tail) {
    const key = store.get(`q:${head}`)!;
    const entry = entryOf(store, key);
    const live = entry !== undefined && entry.seq === head;
    if (live && size <= config.maxEntries && (config.ttlMs === null || clock - entry.lastSeen <= config.ttlMs)) break;
    if (live) {
      store.delete(`e:${key}`);
      size--;
    }
    store.delete(`q:${head}`);
    head++;
  }
  if (head !== start) {
    store.put('#head', String(head));
    store.put('#size', String(size));
  }
}

/** Deletes every remembered hash whose entry matches; returns how many. */
export function deleteExactWhere(store: KeyValueStore, matches: (entry: { key: string; id: string; lastSeen: number }) => boolean): number {
  const tail = read(store, '#tail');
  let deleted = 0;
  for (let seq = read(store, '#head'); seq < tail; seq++) {
    const key = store.get(`q:${seq}`);
    if (key === undefined) continue;
    const entry = entryOf(store, key);
    if (entry === undefined || entry.seq !== seq || !matches({ key, id: entry.id, lastSeen: entry.lastSeen })) continue;
    store.delete(`e:${key}`);
    deleted++;
  }
  if (deleted > 0) store.put('#size', String(read(store, '#size') - deleted));
  return deleted;
}

/** How many hashes the index holds. */
export function exactEntries(store: KeyValueStore): number {
  return read(store, '#size');
}

/** Case, surrounding and repeated whitespace do not make two texts different. */
export function normalizeText(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim();
}

export function contentKey(r: Rollout, scope: ExactDedupeConfig['scope']): string {
  const response = r.response ?? r.steps.map((s) => `${s.role}: ${s.content}`).join('\n');
  const hash = createHash('sha256').update(normalizeText(r.prompt)).update('\u0000').update(normalizeText(response)).digest('hex').slice(0, 32);
  return scope === 'group' ? `${r.group_id}/${hash}` : hash;
}

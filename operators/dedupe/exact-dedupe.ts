import { hash } from 'node:crypto';
import type { Rollout } from '../../contracts/records.ts';
import type { KeyValueStore } from '../../streams/state-store.ts';
import { defer, map } from 'rxjs';
import { deadLetter, defaultMaxSkewMs, eventTimeOf, isRejected, type Curator, type Envelope } from '../../lib/envelope.ts';
import { normalizeText } from '../../lib/normalize-text.ts';

export interface ExactDedupeConfig {
  /** "global": the same content anywhere in the partition; "group": only within a prompt group. */
  scope: 'global' | 'group';
  /** Hashes remembered at most; one more evicts the least recently seen. */
  maxEntries: number;
  /** A hash not seen for this long (event time) is forgotten; null: only maxEntries bounds the index. */
  ttlMs: number | null;
  /** A repeat makes the original recently seen again. */
  refreshOnHit: boolean;
  /** The clock follows created_at at most this far beyond the broker's record timestamp. */
  maxSkewMs: number;
  /** Grace before expiry: the TTL is counted from the newest event time minus this. */
  allowedLatenessMs: number;
  /** Evictions one batch (or tick) may do beyond one per entry it adds; the rest wait for later batches. */
  maxEvictionsPerBatch: number;
}

export const exactDedupeDefaults: ExactDedupeConfig = {
  scope: 'global',
  maxEntries: 200_000,
  ttlMs: 7 * 24 * 3600 * 1000,
  refreshOnHit: true,
  maxSkewMs: defaultMaxSkewMs,
  allowedLatenessMs: 0,
  maxEvictionsPerBatch: 1_000,
};

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
 * not seen for `ttlMs` of event time are forgotten, oldest first, so an index fed by an endless
 * stream does not grow forever. Event time is a watermark: the largest created_at seen, each
 * capped at `maxSkewMs` past its broker timestamp (see eventTimeOf), minus `allowedLatenessMs`;
 * one sample with a wrong clock cannot expire the index. An expired hash no longer matches at
 * once, but its deletion is paced: a batch (or tick) deletes at most `maxEvictionsPerBatch`
 * queue slots beyond one per slot it adds, so a jump in event time over 100,000 entries costs
 * 100 batches of 1,000 deletes instead of one stalled transaction. The index thus stays within
 * its bounds eventually, not at every instant: over maxEntries by at most what the pending
 * evictions have not yet removed.
 *
 * @example
 *   exactDedupe({ ...exactDedupeDefaults, ttlMs: 86_400_000 }, state.store(exactDedupeStore.name))
 *   // a at 10:00, b at 10:00           → both pass, both remembered
 *   // a copy of a at 11:00             → reasons ['duplicate'], duplicateOf = a's id
 *   // a copy of b two days later       → passes (b's hash expired), remembered anew
 */
export function exactDedupe(config: ExactDedupeConfig, store: KeyValueStore): Curator {
  // One budget per subscription: the processor runs each batch (and tick) as its own stream.
  return (source) =>
    defer(() => {
      const budget: EvictionBudget = { left: config.maxEvictionsPerBatch };
      return source.pipe(
        map((envelope): Envelope => {
          if (envelope.kind === 'tick') {
            // Pending evictions proceed while no input arrives.
            evict(store, config, watermarkOf(store, config), budget);
            return envelope;
          }
          if (envelope.kind !== 'sample' || isRejected(envelope)) return envelope;
          try {
            const key = contentKey(envelope.rollout, config.scope);
            const first = rememberExact(store, config, key, envelope.rollout.id, eventTimeOf(envelope, config.maxSkewMs), budget);
            if (first === undefined) return envelope;
            return { ...envelope, duplicateOf: first, dedupeMethod: 'exact', reasons: [...envelope.reasons, 'duplicate'] };
          } catch (err) {
            return deadLetter(envelope, 'exact-dedupe', (err as Error).message);
          }
        }),
      );
    });
}

/** Queue slots a batch may still delete; adding a slot earns one more. */
export interface EvictionBudget {
  left: number;
}

interface Entry {
  id: string;
  /** Position in the recency queue; an older queue slot for the key is stale. */
  seq: number;
  lastSeen: number;
}

/*
 * Layout: `e:<hash>` → entry; the recency queue (slot seq → hash) in chunks of SLOT_CHUNK
 * consecutive slots, `s:<seq ÷ SLOT_CHUNK>` → `firstSeq,"hash","hash",…` (a JSON array's body:
 * appending a slot is a concatenation, where a closed array had to be cut open and copied whole);
 * `#head`, `#tail`, `#size`, `#clock`. A batch's changes coalesce per key (the state store stages
 * one write per key), so a batch that adds n entries writes n entry records, about n / SLOT_CHUNK
 * chunk records and the four counters: about one changelog record per entry, where one slot per
 * key made two. Chunks written by earlier versions as a closed array `[firstSeq,"hash",…]`, and
 * slots written as `q:<seq>` (one per slot), are still read and deleted.
 */
const SLOT_CHUNK = 64;
const read = (store: KeyValueStore, key: string, fallback = 0) => Number(store.get(key) ?? fallback);
const chunkKey = (seq: number) => `s:${Math.floor(seq / SLOT_CHUNK)}`;

/** Appends `key` as slot `seq` (the queue's tail). */
function appendSlot(store: KeyValueStore, seq: number, key: string): void {
  const at = chunkKey(seq);
  const raw = store.get(at);
  // A chunk starts at its first slot written in this layout (a store from `q:` slots may switch mid-chunk).
  if (raw === undefined) store.put(at, `${seq},${JSON.stringify(key)}`);
  else if (raw.charCodeAt(0) === 0x5b /* [ */) store.put(at, `${raw.slice(1, -1)},${JSON.stringify(key)}`);
  else store.put(at, `${raw},${JSON.stringify(key)}`);
}

const parseChunk = (raw: string) => JSON.parse(raw.charCodeAt(0) === 0x5b ? raw : `[${raw}]`) as [number, ...string[]];

/**
 * The last chunk parsed, by its text: every record's eviction check reads the head slot, and the
 * head chunk rarely changes, so it is parsed once rather than per record.
 */
let lastChunk: { raw: string; parsed: [number, ...string[]] } | undefined;

/** Reads queue slots; `popped` deletes what a popped slot leaves behind: the chunk after its last slot. */
class Slots {
  constructor(private readonly store: KeyValueStore) {}

  private chunk(seq: number): [number, ...string[]] | undefined {
    const raw = this.store.get(chunkKey(seq));
    if (raw === undefined) return undefined;
    if (lastChunk?.raw !== raw) lastChunk = { raw, parsed: parseChunk(raw) };
    return lastChunk.parsed;
  }

  /** The hash in slot `seq`, undefined when the slot is gone. */
  get(seq: number): string | undefined {
    const chunk = this.chunk(seq);
    if (chunk !== undefined && seq >= chunk[0]) return chunk[seq - chunk[0] + 1] as string | undefined;
    return this.store.get(`q:${seq}`);
  }

  /** Slot `seq` was popped (the queue's head): delete the chunk once its last slot is gone. */
  popped(seq: number): void {
    const chunk = this.chunk(seq);
    if (chunk !== undefined && seq >= chunk[0]) {
      if ((seq + 1) % SLOT_CHUNK === 0) this.store.delete(chunkKey(seq));
    } else {
      this.store.delete(`q:${seq}`);
    }
  }

  /** The queue emptied up to `tail` (not a chunk boundary): its partial chunk holds no live slot. */
  drained(tail: number): void {
    if (tail % SLOT_CHUNK !== 0 && this.chunk(tail - 1) !== undefined) this.store.delete(chunkKey(tail - 1));
  }
}
const entryOf = (store: KeyValueStore, key: string): Entry | undefined => {
  const raw = store.get(`e:${key}`);
  return raw === undefined ? undefined : (JSON.parse(raw) as Entry);
};

/** The last head entry read, by its text: every record's eviction check reads it, and it rarely changes. */
let lastHead: { raw: string; entry: Entry } | undefined;
function headEntry(store: KeyValueStore, key: string): Entry | undefined {
  const raw = store.get(`e:${key}`);
  if (raw === undefined) return undefined;
  if (lastHead?.raw !== raw) lastHead = { raw, entry: JSON.parse(raw) as Entry };
  return lastHead.entry;
}

/**
 * Looks `key` up; when absent remembers it for `id` and returns undefined, else returns the
 * first id (refreshing it when configured). `at` is the sample's event time, already bounded
 * (eventTimeOf). Evicts past the bounds, within `budget` (default: unbounded, as when seeding
 * from an existing corpus). Shared by the operator and by seeding.
 */
export function rememberExact(
  store: KeyValueStore,
  config: ExactDedupeConfig,
  key: string,
  id: string,
  at: number,
  budget: EvictionBudget = { left: Number.POSITIVE_INFINITY },
): string | undefined {
  const stored = store.get('#clock');
  const previous = stored === undefined ? Number.NaN : Number(stored);
  const clock = stored === undefined ? at : Math.max(previous, at);
  if (clock !== previous) store.put('#clock', String(clock));
  const watermark = clock - config.allowedLatenessMs;
  // Built once: each new key string is hashed anew by every lookup.
  const entryKey = `e:${key}`;
  const raw = store.get(entryKey);
  const existing = raw === undefined ? undefined : (JSON.parse(raw) as Entry);
  let tail = read(store, '#tail');
  if (existing !== undefined && !expired(config, watermark, existing.lastSeen)) {
    if (config.refreshOnHit) {
      store.put(entryKey, JSON.stringify({ id: existing.id, seq: tail, lastSeen: Math.max(existing.lastSeen, at) }));
      appendSlot(store, tail, key);
      store.put('#tail', String(tail + 1));
      budget.left += 1;
    }
    return existing.id;
  }
  let size = read(store, '#size');
  if (existing === undefined) store.put('#size', String(++size));
  store.put(entryKey, JSON.stringify({ id, seq: tail, lastSeen: at }));
  appendSlot(store, tail, key);
  store.put('#tail', String(++tail));
  budget.left += 1;
  evict(store, config, watermark, budget, tail, size);
  return undefined;
}

const expired = (config: ExactDedupeConfig, watermark: number, lastSeen: number) => config.ttlMs !== null && watermark - lastSeen > config.ttlMs;

function watermarkOf(store: KeyValueStore, config: ExactDedupeConfig): number {
  const clock = store.get('#clock');
  return clock === undefined ? Number.NEGATIVE_INFINITY : Number(clock) - config.allowedLatenessMs;
}

/**
 * Pops the recency queue while the index is over its bounds and the budget lasts; stale slots
 * are dropped on the way (each counts against the budget: each is a delete).
 */
function evict(store: KeyValueStore, config: ExactDedupeConfig, watermark: number, budget: EvictionBudget, tail = read(store, '#tail'), size = read(store, '#size')): void {
  let head = read(store, '#head');
  const start = head;
  const slots = new Slots(store);
  while (head < tail && budget.left >= 1) {
    const key = slots.get(head)!;
    const entry = headEntry(store, key);
    const live = entry !== undefined && entry.seq === head;
    if (live && size <= config.maxEntries && !expired(config, watermark, entry.lastSeen)) break;
    if (live) {
      store.delete(`e:${key}`);
      size--;
    }
    slots.popped(head);
    head++;
    budget.left -= 1;
  }
  if (head === tail && head !== start) slots.drained(tail);
  if (head !== start) {
    store.put('#head', String(head));
    store.put('#size', String(size));
  }
}

/** Deletes every remembered hash whose entry matches; returns how many. */
export function deleteExactWhere(store: KeyValueStore, matches: (entry: { key: string; id: string; lastSeen: number }) => boolean): number {
  const tail = read(store, '#tail');
  let deleted = 0;
  const slots = new Slots(store);
  for (let seq = read(store, '#head'); seq < tail; seq++) {
    const key = slots.get(seq);
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


export function contentKey(r: Rollout, scope: ExactDedupeConfig['scope']): string {
  const response = r.response ?? r.steps.map((s) => `${s.role}: ${s.content}`).join('\n');
  // One-shot hash of the joined text: the same digest as hashing the parts in turn, without a Hash object per record.
  const digest = hash('sha256', `${normalizeText(r.prompt)}\u0000${normalizeText(response)}`, 'hex').slice(0, 32);
  return scope === 'group' ? `${r.group_id}/${digest}` : digest;
}

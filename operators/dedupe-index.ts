import type { KeyValueStore } from '../streams/state-store.ts';
import { bandKeys, checkMinHashConfig, decodeSketch, encodeSketch, type MinHashConfig, type Sketch } from './minhash.ts';

/**
 * A bounded MinHash LSH index kept entirely in a KeyValueStore (near-dedupe's state, and what
 * corpus-seed fills). Layout, every value a string:
 *
 *   m          meta: {layout, head, next, count, clock}
 *   e/<n>      entry n: {i: sample id, g: group id, t: inserted at, l: last seen, s: touch seq, h: base64 sketch}
 *   s/<seq>    touch log: seq → n; one key per live entry, at the seq of its last insert/refresh
 *   b/<band>   bucket: "n1,n2,…", oldest first, at most maxBucketSize entries
 *
 * `next` numbers both entries and touches, so the touch log is ordered by last-seen. Eviction
 * walks it from `head`: O(evicted + holes left by refreshes and deletions), each hole walked once.
 * Band keys are not stored: they are derived again from the sketch, the group and the layout
 * saved in the meta, so removing an entry touches exactly its buckets.
 *
 * Time is the index's clock: the largest event time it has been given. Entries are stamped with
 * the clock, so last-seen grows along the touch log and TTL eviction from the head is exact.
 */
export interface IndexLayout {
  minhash: MinHashConfig;
  /** "group" prefixes band keys with `<group id>/`, so only entries of the same group meet. */
  scope: 'global' | 'group';
}

export interface IndexBounds {
  /** Live entries at most; inserting one more evicts the least recently seen. */
  maxEntries: number;
  /** Entries whose last-seen is more than this before the clock are evicted; null: never. */
  ttlMs: number | null;
  /** Entries a bucket lists at most (oldest dropped from that bucket only): caps candidates per lookup. */
  maxBucketSize: number;
}

/** What a bulk delete can select on. */
export interface EntryInfo {
  id: string;
  groupId: string;
  /** Event time of the sample that created the entry. */
  insertedAt: number;
  /** Index clock at insertion or at the last duplicate hit that refreshed it. */
  lastSeen: number;
}

export interface IndexedEntry extends EntryInfo {
  n: number;
  signature: Sketch;
}

interface Meta {
  layout: IndexLayout;
  head: number;
  next: number;
  count: number;
  clock: number;
}

interface EntryRecord {
  i: string;
  g: string;
  t: number;
  l: number;
  s: number;
  h: string;
}

export interface DedupeIndex {
  readonly clock: number;
  readonly count: number;
  /** Moves the clock forward to `at` (never back) and evicts what the TTL expires. */
  advance(at: number): void;
  /** Entries sharing at least one band key, oldest first. */
  candidates(keys: readonly string[]): IndexedEntry[];
  /** Adds an entry under `keys`, evicting the least recently seen first if the index is full. */
  insert(entry: { id: string; groupId: string; at: number; signature: Sketch }, keys: readonly string[]): void;
  /** Sets an entry's last-seen to the clock, making it the most recently seen. */
  refresh(n: number): void;
  /** Writes the meta back; call once after a series of operations. */
  save(): void;
}

const META = 'm';
const entryKey = (n: number) => `e/${n}`;
const touchKey = (seq: number) => `s/${seq}`;
const bucketKey = (band: string) => `b/${band}`;

export function bandPrefix(scope: IndexLayout['scope'], groupId: string): string {
  return scope === 'group' ? `${groupId}/` : '';
}

export function checkIndexBounds(b: IndexBounds): void {
  if (!Number.isInteger(b.maxEntries) || b.maxEntries < 1) throw new Error('dedupe index: maxEntries must be an integer >= 1');
  if (!Number.isInteger(b.maxBucketSize) || b.maxBucketSize < 1) throw new Error('dedupe index: maxBucketSize must be an integer >= 1');
  if (b.ttlMs !== null && !(b.ttlMs > 0)) throw new Error('dedupe index: ttlMs must be > 0 or null');
}

/**
 * Opens the index in `store`. An index built under another layout cannot be read under this
 * one (its sketches and band keys differ), so it is deleted first, O(its entries), once.
 */
export function openIndex(store: KeyValueStore, given: IndexLayout, bounds: IndexBounds): DedupeIndex {
  checkMinHashConfig(given.minhash);
  checkIndexBounds(bounds);
  const layout = canonicalLayout(given);
  let meta = readMeta(store);
  if (meta !== undefined && JSON.stringify(meta.layout) !== JSON.stringify(layout)) {
    removeWhere(store, meta, () => true);
    meta = undefined;
  }
  const m: Meta = meta ?? { layout, head: 0, next: 0, count: 0, clock: 0 };

  const evictWhile = (evict: (r: EntryRecord) => boolean) => {
    while (m.head < m.next) {
      const n = store.get(touchKey(m.head));
      const record = n === undefined ? undefined : readEntry(store, Number(n));
      if (record !== undefined) {
        if (!evict(record)) return;
        removeEntry(store, m, Number(n), record);
      } else if (n !== undefined) {
        store.delete(touchKey(m.head));
      }
      m.head++;
    }
  };
  const expire = () => {
    if (bounds.ttlMs !== null) evictWhile((r) => r.l < m.clock - bounds.ttlMs!);
  };

  return {
    get clock() {
      return m.clock;
    },
    get count() {
      return m.count;
    },
    advance(at) {
      if (Number.isFinite(at) && at > m.clock) m.clock = at;
      expire();
    },
    candidates(keys) {
      const ns = new Set<number>();
      for (const key of keys) for (const n of readBucket(store, key)) ns.add(n);
      const out: IndexedEntry[] = [];
      for (const n of [...ns].sort((a, b) => a - b)) {
        const r = readEntry(store, n);
        if (r !== undefined) out.push({ n, id: r.i, groupId: r.g, insertedAt: r.t, lastSeen: r.l, signature: decodeSketch(r.h) });
      }
      return out;
    },
    insert(entry, keys) {
      evictWhile(() => m.count >= bounds.maxEntries);
      const n = m.next++;
      const at = Number.isFinite(entry.at) ? entry.at : m.clock;
      const record: EntryRecord = { i: entry.id, g: entry.groupId, t: at, l: m.clock, s: n, h: encodeSketch(entry.signature) };
      store.put(entryKey(n), JSON.stringify(record));
      store.put(touchKey(n), String(n));
      for (const key of keys) {
        const members = [...readBucket(store, key), n];
        store.put(bucketKey(key), members.slice(-bounds.maxBucketSize).join(','));
      }
      m.count++;
    },
    refresh(n) {
      const record = readEntry(store, n);
      if (record === undefined) return;
      store.delete(touchKey(record.s));
      const seq = m.next++;
      store.put(touchKey(seq), String(n));
      store.put(entryKey(n), JSON.stringify({ ...record, l: m.clock, s: seq }));
    },
    save() {
      store.put(META, JSON.stringify(m));
    },
  };
}

/**
 * Deletes every entry the predicate selects and returns how many; O(entries + holes) since it
 * walks the whole touch log. Works on any index layout (it reads the layout from the store).
 */
export function deleteWhere(store: KeyValueStore, predicate: (entry: EntryInfo) => boolean): number {
  const meta = readMeta(store);
  if (meta === undefined) return 0;
  const deleted = removeWhere(store, meta, predicate);
  store.put(META, JSON.stringify(meta));
  return deleted;
}

/** The live entries, least recently seen first (for inspection and tests). */
export function indexEntries(store: KeyValueStore): EntryInfo[] {
  const meta = readMeta(store);
  const out: EntryInfo[] = [];
  if (meta === undefined) return out;
  for (let seq = meta.head; seq < meta.next; seq++) {
    const n = store.get(touchKey(seq));
    const r = n === undefined ? undefined : readEntry(store, Number(n));
    if (r !== undefined) out.push(infoOf(r));
  }
  return out;
}

/**
 * Upper bound of the characters (= changelog bytes for ASCII ids) one entry occupies across
 * its keys and values, for ids and group ids of at most the given lengths; every counter is
 * taken at 16 digits and every bucket as if the entry were alone in it. With the defaults
 * (128 permutations, 16 bands) and 36-character ids: ≈ 1.95 kB in group scope, ≈ 1.4 kB global,
 * three quarters of it the base64 sketch and the bucket keys. An in-memory store holds the same
 * strings as UTF-16 (×2) plus its map's per-key overhead (~100 B per key, 2 + bands keys per entry).
 */
export function indexEntryChars(layout: IndexLayout, sizes: { idChars: number; groupChars: number }): number {
  const big = Number.MAX_SAFE_INTEGER;
  const digits = String(big).length;
  const sketchChars = Math.ceil((layout.minhash.permutations * 4) / 3) * 4;
  const record: EntryRecord = { i: 'x'.repeat(sizes.idChars), g: 'x'.repeat(sizes.groupChars), t: big, l: big, s: big, h: 'x'.repeat(sketchChars) };
  const entry = entryKey(big).length + JSON.stringify(record).length;
  const touch = touchKey(big).length + digits;
  const prefix = layout.scope === 'group' ? sizes.groupChars + 1 : 0;
  const bandKeyChars = String(layout.minhash.bands - 1).length + 1 + 8;
  const perBand = digits + 1 + bucketKey('').length + prefix + bandKeyChars;
  return entry + touch + layout.minhash.bands * perBand;
}

/** Upper bound of the whole index's characters: maxEntries entries plus the meta. */
export function indexMaxChars(layout: IndexLayout, bounds: IndexBounds, sizes: { idChars: number; groupChars: number }): number {
  const big = Number.MAX_SAFE_INTEGER;
  const meta = META.length + JSON.stringify({ layout, head: big, next: big, count: big, clock: big }).length;
  return bounds.maxEntries * indexEntryChars(layout, sizes) + meta;
}

/** Fixed key order, so a config object built in another order still matches the stored layout. */
function canonicalLayout(l: IndexLayout): IndexLayout {
  const { permutations, bands, shingle, shingleSize, seed } = l.minhash;
  return { scope: l.scope, minhash: { permutations, bands, shingle, shingleSize, seed } };
}

function readMeta(store: KeyValueStore): Meta | undefined {
  const text = store.get(META);
  return text === undefined ? undefined : (JSON.parse(text) as Meta);
}

function readEntry(store: KeyValueStore, n: number): EntryRecord | undefined {
  const text = store.get(entryKey(n));
  return text === undefined ? undefined : (JSON.parse(text) as EntryRecord);
}

function readBucket(store: KeyValueStore, key: string): number[] {
  const text = store.get(bucketKey(key));
  return text === undefined || text === '' ? [] : text.split(',').map(Number);
}

function infoOf(r: EntryRecord): EntryInfo {
  return { id: r.i, groupId: r.g, insertedAt: r.t, lastSeen: r.l };
}

function removeEntry(store: KeyValueStore, meta: Meta, n: number, r: EntryRecord): void {
  const keys = bandKeys(decodeSketch(r.h), meta.layout.minhash, bandPrefix(meta.layout.scope, r.g));
  for (const key of keys) {
    const rest = readBucket(store, key).filter((m) => m !== n);
    if (rest.length === 0) store.delete(bucketKey(key));
    else store.put(bucketKey(key), rest.join(','));
  }
  store.delete(entryKey(n));
  store.delete(touchKey(r.s));
  meta.count--;
}

function removeWhere(store: KeyValueStore, meta: Meta, predicate: (entry: EntryInfo) => boolean): number {
  let deleted = 0;
  for (let seq = meta.head; seq < meta.next; seq++) {
    const n = store.get(touchKey(seq));
    const r = n === undefined ? undefined : readEntry(store, Number(n));
    if (r !== undefined && predicate(infoOf(r))) {
      removeEntry(store, meta, Number(n), r);
      deleted++;
    }
  }
  // Leading holes need not be walked again.
  while (meta.head < meta.next && store.get(touchKey(meta.head)) === undefined) meta.head++;
  return deleted;
}

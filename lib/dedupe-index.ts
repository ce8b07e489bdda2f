import type { KeyValueStore } from '../streams/state-store.ts';
import {
  bandKeysAt,
  checkMinHashConfig,
  encodedSignatureChars,
  legacyBandKeys,
  scopeHash,
  signatureWords,
  similarityAt,
  type MinHashConfig,
  type Signature,
} from './minhash.ts';

/**
 * A bounded MinHash LSH index whose state is a KeyValueStore (near-dedupe's, and what
 * corpus-seed fills), mirrored in memory. Layout 3, every value a string:
 *
 *   m        meta: {"v":3,"layout":…,"clock":…,"seq":…,"slots":…,"count":…}
 *   e/<slot> entry: <base64 b-bit signature><seq>.<last seen>.<inserted − last seen>.<group length>.<group><id>
 *            (numbers in base 36; a slot is reused by the next entry once its entry is gone)
 *
 * e.g. `e/0` → `QaarraNK…bT7Q==1.2.-1.1.ga`: seq 1, last seen 2, inserted at 2 − 1 = 1, group
 * "g", id "a".
 *
 * That is one changelog record per indexed sample (plus the meta once per batch, and one
 * tombstone when an entry expires): band buckets and the LRU order are not stored, they are
 * rebuilt in memory from the entries when the index is opened on a store it has not seen (a
 * restore, another worker's writes, an aborted batch — detected by the meta differing from what
 * the mirror last wrote). With the defaults (128 rows × 4 bits) an entry with 36-character ids
 * and group ids is ≈ 185 bytes of key and value (88 of them the signature).
 *
 * Order: `seq` counts inserts and refreshes, so the entries sorted by seq are least to most
 * recently seen; last-seen is the index clock at that moment, so it grows along that order and
 * TTL expiry takes entries from the front. Slots are allocated lowest free first, so a rebuilt
 * mirror allocates exactly as the one that wrote the store would have.
 *
 * Eviction is bounded per step (one sample or tick): TTL expiry removes at most
 * `evictionsPerStep` entries per sample (64× that per tick), the rest in later steps; an entry
 * past its TTL but not yet removed is never matched, so decisions are as if it were gone. When
 * many entries expire at once (e.g. the first record after a long pause), the tombstones spread
 * over the next batches instead of stalling one transaction (a batch of n samples removes at
 * most n · evictionsPerStep; a tick's transaction at most 64 · evictionsPerStep). Capacity eviction removes one entry
 * per insert (at most `evictionsPerStep` if maxEntries was lowered; the index then shrinks over
 * later inserts).
 */
export interface IndexLayout {
  minhash: MinHashConfig;
  /** "group" mixes the group id into band keys, so only entries of the same group meet. */
  scope: 'global' | 'group';
}

export interface IndexBounds {
  /** Live entries at most; inserting one more evicts the least recently seen. */
  maxEntries: number;
  /** Entries whose last-seen is more than this before the clock expire; null: never. */
  ttlMs: number | null;
  /** Entries a lookup takes from one band bucket at most, the most recently seen: caps candidates per lookup. */
  maxBucketSize: number;
  /** Expired entries removed per sample at most (ticks: 64×); the rest in later steps. */
  evictionsPerStep: number;
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

export interface DedupeIndex {
  readonly clock: number;
  readonly count: number;
  /** Moves the clock forward to `at` (never back) and removes up to `budget` expired entries. */
  advance(at: number, budget: number): void;
  /**
   * Live slots sharing at least one of `keys` (the band keys of `bandKeysOf`), least recently
   * seen first, into `out`; returns how many. At most maxBucketSize per bucket, `out.length` in all.
   */
  candidates(keys: Int32Array, out: Int32Array): number;
  idOf(slot: number): string;
  groupOf(slot: number): string;
  /** Estimated similarity of the entry in `slot` to a signature. */
  similarity(slot: number, signature: Signature): number;
  /** Adds an entry under `keys`, evicting the least recently seen first if the index is full; returns the encoded signature it stored. */
  insert(entry: { id: string; groupId: string; at: number; signature: Signature }, keys: Int32Array): string;
  /** Sets an entry's last-seen to the clock, making it the most recently seen. */
  refresh(slot: number): void;
  /** Writes the meta back if anything changed; call once after a series of operations. */
  save(): void;
  /** Forgets the mirror (after a failed write): the next open rebuilds it from the store. */
  invalidate(): void;
}

const META = 'm';
/**
 * 3: signatures of minhash.ts's round-priority sketch. Layout 2 stored entries in the same
 * format but signed with the sketch before it (rounds of equal rank), which a new signature
 * cannot be compared with: deleteWhere and indexEntries still read a layout-2 store (and leave
 * it at layout 2), and openIndex drops it, as it does any other layout (near-dedupe then starts
 * from an empty index, the only sound choice: the texts are not stored, so nothing can be re-signed).
 */
const LAYOUT_VERSION = 3;
/** Versions whose entries deleteWhere / indexEntries can read. */
const READABLE_VERSIONS = [2, 3];
const entryKey = (slot: number) => `e/${slot}`;

export function checkIndexBounds(b: IndexBounds): void {
  if (!Number.isInteger(b.maxEntries) || b.maxEntries < 1) throw new Error('dedupe index: maxEntries must be an integer >= 1');
  if (!Number.isInteger(b.maxBucketSize) || b.maxBucketSize < 1) throw new Error('dedupe index: maxBucketSize must be an integer >= 1');
  if (b.ttlMs !== null && !(b.ttlMs > 0)) throw new Error('dedupe index: ttlMs must be > 0 or null');
  if (!Number.isInteger(b.evictionsPerStep) || b.evictionsPerStep < 1) throw new Error('dedupe index: evictionsPerStep must be an integer >= 1');
}

/** The scope word of band keys for an entry of `groupId` (see minhash.ts step 5). */
export function bandScope(scope: IndexLayout['scope'], groupId: string): number {
  return scope === 'group' ? scopeHash(groupId) : 0;
}

const mirrors = new WeakMap<KeyValueStore, Mirror>();

/**
 * Opens the index in `store`. An index stored under another layout (or layout version) cannot be
 * read under this one (its signatures and band keys differ), so it is deleted first,
 * O(its entries), once.
 */
export function openIndex(store: KeyValueStore, given: IndexLayout, bounds: IndexBounds): DedupeIndex {
  let mirror = mirrors.get(store);
  if (mirror !== undefined && mirror.bounds === bounds && mirror.layout === given && mirror.current()) return mirror;
  checkMinHashConfig(given.minhash);
  checkIndexBounds(bounds);
  const layout = canonicalLayout(given);
  const layoutJson = JSON.stringify(layout);
  if (mirror === undefined || mirror.layoutJson !== layoutJson || mirror.version !== LAYOUT_VERSION || !mirror.current()) {
    const text = store.get(META);
    const meta = text === undefined ? undefined : (JSON.parse(text) as StoredMeta);
    if (meta !== undefined && (meta.v !== LAYOUT_VERSION || JSON.stringify(meta.layout) !== layoutJson)) {
      dropStored(store, meta);
      mirror = new Mirror(store, layout, layoutJson, undefined);
      mirror.save(true);
    } else {
      mirror = new Mirror(store, layout, layoutJson, meta);
    }
    mirrors.set(store, mirror);
  }
  mirror.layout = given;
  mirror.bounds = bounds;
  return mirror;
}

/**
 * Deletes every entry the predicate selects and returns how many (one tombstone each). Works on
 * an index of this layout version in any minhash layout (read from the store).
 */
export function deleteWhere(store: KeyValueStore, predicate: (entry: EntryInfo) => boolean): number {
  const mirror = storedMirror(store);
  if (mirror === undefined) return 0;
  let deleted = 0;
  for (const slot of mirror.liveSlots()) {
    if (predicate(mirror.info(slot))) {
      mirror.remove(slot);
      deleted++;
    }
  }
  mirror.save();
  return deleted;
}

/** The live entries, least recently seen first (for inspection and tests). */
export function indexEntries(store: KeyValueStore): EntryInfo[] {
  const mirror = storedMirror(store);
  return mirror === undefined ? [] : mirror.liveSlots().map((slot) => mirror.info(slot));
}

/**
 * Upper bound of the characters (= changelog bytes for ASCII ids) one entry occupies in its key
 * and value, for ids and group ids of at most the given lengths, counters and timestamps up to
 * ±2^53: 213 with the defaults and 36-character ids and group ids (≈ 185 measured, with today's
 * timestamps). An in-memory store holds the
 * same strings as UTF-16 (×2) plus its map's per-key overhead (~100 B); the mirror holds per
 * entry the signature (64 B), the ids, and ≈ 26 bytes per band of bucket links.
 */
export function indexEntryChars(layout: IndexLayout, sizes: { idChars: number; groupChars: number }): number {
  const big = Number.MAX_SAFE_INTEGER.toString(36).length;
  const key = entryKey(0).length + String(2 ** 32).length;
  return key + encodedSignatureChars(layout.minhash) + 3 * (big + 1) + 1 + String(sizes.groupChars).length + 1 + sizes.groupChars + sizes.idChars;
}

/** Upper bound of the whole index's characters: maxEntries entries plus the meta. */
export function indexMaxChars(layout: IndexLayout, bounds: IndexBounds, sizes: { idChars: number; groupChars: number }): number {
  const big = Number.MAX_SAFE_INTEGER;
  const meta = META.length + metaText(LAYOUT_VERSION, JSON.stringify(canonicalLayout(layout)), big, big, big, big).length;
  return bounds.maxEntries * indexEntryChars(layout, sizes) + meta;
}

interface StoredMeta {
  v?: number;
  layout: IndexLayout;
  clock: number;
  seq: number;
  slots: number;
  count: number;
  // Layout 1 kept a touch log from head to next.
  head?: number;
  next?: number;
}

function metaText(version: number, layoutJson: string, clock: number, seq: number, slots: number, count: number): string {
  // Numbers print as JSON would (the clock is finite: advance ignores anything else).
  return `{"v":${version},"layout":${layoutJson},"clock":${clock},"seq":${seq},"slots":${slots},"count":${count}}`;
}

/** Fixed key order, so a config object built in another order still matches the stored layout. */
function canonicalLayout(l: IndexLayout): IndexLayout {
  const { permutations, bands, shingle, shingleSize, seed, bits } = l.minhash;
  return { scope: l.scope, minhash: { permutations, bands, shingle, shingleSize, seed, bits } };
}

function storedMirror(store: KeyValueStore): Mirror | undefined {
  const mirror = mirrors.get(store);
  if (mirror !== undefined && mirror.current()) return mirror;
  const text = store.get(META);
  if (text === undefined) return undefined;
  const meta = JSON.parse(text) as StoredMeta;
  if (meta.v === undefined || !READABLE_VERSIONS.includes(meta.v)) return undefined;
  const layout = canonicalLayout(meta.layout);
  const fresh = new Mirror(store, layout, JSON.stringify(layout), meta);
  mirrors.set(store, fresh);
  return fresh;
}

/** Deletes an index of another layout (or of layout 1, with its touch log and bucket keys). */
function dropStored(store: KeyValueStore, meta: StoredMeta): void {
  if (meta.v === undefined) {
    for (let seq = meta.head ?? 0; seq < (meta.next ?? 0); seq++) {
      const n = store.get(`s/${seq}`);
      if (n === undefined) continue;
      store.delete(`s/${seq}`);
      const text = store.get(`e/${n}`);
      if (text === undefined) continue;
      const r = JSON.parse(text) as { g: string; h: string };
      const buf = Buffer.from(r.h, 'base64');
      const sketch = new Uint32Array(buf.length / 4);
      for (let i = 0; i < sketch.length; i++) sketch[i] = buf.readUInt32LE(i * 4);
      const prefix = meta.layout.scope === 'group' ? `${r.g}/` : '';
      for (const key of legacyBandKeys(sketch, meta.layout.minhash.bands, prefix)) store.delete(`b/${key}`);
      store.delete(`e/${n}`);
    }
    return;
  }
  for (let slot = 0; slot < meta.slots; slot++) if (store.get(entryKey(slot)) !== undefined) store.delete(entryKey(slot));
}

/** The in-memory mirror of one store's index: entries by slot, band buckets, LRU list, free slots. */
class Mirror implements DedupeIndex {
  layout: IndexLayout;
  /** The layout version of the stored entries (a layout-2 store keeps 2 when deleteWhere writes its meta). */
  readonly version: number;
  bounds: IndexBounds = { maxEntries: Number.MAX_SAFE_INTEGER, ttlMs: null, maxBucketSize: Number.MAX_SAFE_INTEGER, evictionsPerStep: 1 };
  clock = 0;
  count = 0;
  private seq = 0;
  private slots = 0;
  private metaWritten: string | undefined;
  private dirty = false;
  private readonly words: number;
  private readonly bands: number;
  private readonly sigChars: number;
  private capacity = 0;
  private ids: string[] = [];
  private groups: string[] = [];
  private lastSeen = new Float64Array(0);
  private insertedAt = new Float64Array(0);
  private seqs = new Float64Array(0);
  private sigs = new Uint32Array(0);
  private keys = new Int32Array(0);
  /** Bucket lists per cell slot·bands + band, most recently seen first. */
  private bucketNext = new Int32Array(0);
  private bucketPrev = new Int32Array(0);
  /** Band key → first cell of its bucket. */
  private readonly heads = new IntMap();
  private lruPrev = new Int32Array(0);
  private lruNext = new Int32Array(0);
  private lruHead = -1;
  private lruTail = -1;
  private live = new Uint8Array(0);
  private stamp = new Uint32Array(0);
  private stampNow = 0;
  /** Min-heap of free slots below `slots`. */
  private free = new Int32Array(0);
  private freeCount = 0;

  constructor(
    private readonly store: KeyValueStore,
    layout: IndexLayout,
    readonly layoutJson: string,
    meta: StoredMeta | undefined,
  ) {
    this.layout = layout;
    this.version = meta?.v ?? LAYOUT_VERSION;
    this.words = signatureWords(layout.minhash);
    this.bands = layout.minhash.bands;
    this.sigChars = encodedSignatureChars(layout.minhash);
    if (meta === undefined) return;
    this.clock = meta.clock;
    this.seq = meta.seq;
    this.slots = meta.slots;
    this.grow(meta.slots);
    const loaded: number[] = [];
    for (let slot = 0; slot < meta.slots; slot++) {
      const text = store.get(entryKey(slot));
      if (text !== undefined) {
        this.load(slot, text);
        loaded.push(slot);
      }
    }
    // Rebuilt in touch order, so buckets and the LRU list are what incremental updates made.
    loaded.sort((a, b) => this.seqs[a]! - this.seqs[b]!);
    for (const slot of loaded) this.link(slot);
    for (let slot = 0; slot < meta.slots; slot++) if (this.live[slot] === 0) this.pushFree(slot);
    this.metaWritten = store.get(META);
  }

  /** Whether the store's meta is what this mirror last wrote or read. */
  current(): boolean {
    return this.metaWritten !== undefined ? this.store.get(META) === this.metaWritten : this.store.get(META) === undefined;
  }

  invalidate(): void {
    mirrors.delete(this.store);
  }

  advance(at: number, budget: number): void {
    if (Number.isFinite(at) && at > this.clock) {
      this.clock = at;
      this.dirty = true;
    }
    const ttl = this.bounds.ttlMs;
    if (ttl === null) return;
    while (budget-- > 0 && this.lruHead >= 0 && this.lastSeen[this.lruHead]! < this.clock - ttl) this.remove(this.lruHead);
  }

  candidates(keys: Int32Array, out: Int32Array): number {
    if (++this.stampNow === 0xffffffff) {
      this.stamp.fill(0);
      this.stampNow = 1;
    }
    const bands = this.bands;
    const cap = this.bounds.maxBucketSize;
    const ttl = this.bounds.ttlMs;
    const oldest = ttl === null ? -Infinity : this.clock - ttl;
    let n = 0;
    for (let j = 0; j < bands; j++) {
      let cell = this.heads.get(keys[j]!);
      for (let taken = 0; cell >= 0 && taken < cap; taken++, cell = this.bucketNext[cell]!) {
        const slot = (cell - j) / bands;
        if (this.stamp[slot] === this.stampNow) continue;
        this.stamp[slot] = this.stampNow;
        if (this.lastSeen[slot]! < oldest || n >= out.length) continue;
        out[n++] = slot;
      }
    }
    // Usually 0 or 1: an insertion sort by touch order is all it needs.
    for (let i = 1; i < n; i++) {
      const slot = out[i]!;
      let k = i - 1;
      while (k >= 0 && this.seqs[out[k]!]! > this.seqs[slot]!) {
        out[k + 1] = out[k]!;
        k--;
      }
      out[k + 1] = slot;
    }
    return n;
  }

  idOf(slot: number): string {
    return this.ids[slot]!;
  }

  groupOf(slot: number): string {
    return this.groups[slot]!;
  }

  similarity(slot: number, signature: Signature): number {
    return similarityAt(this.sigs, slot * this.words, signature, 0, this.words, this.layout.minhash.permutations, this.layout.minhash.bits);
  }

  insert(entry: { id: string; groupId: string; at: number; signature: Signature }, keys: Int32Array): string {
    for (let budget = this.bounds.evictionsPerStep; budget > 0 && this.count >= this.bounds.maxEntries && this.lruHead >= 0; budget--) this.remove(this.lruHead);
    const slot = this.freeCount > 0 ? this.popFree() : this.slots++;
    this.grow(slot + 1);
    const at = Number.isFinite(entry.at) ? entry.at : this.clock;
    this.ids[slot] = entry.id;
    this.groups[slot] = entry.groupId;
    this.insertedAt[slot] = at;
    this.lastSeen[slot] = this.clock;
    this.seqs[slot] = this.seq++;
    const words = this.words;
    for (let w = 0; w < words; w++) this.sigs[slot * words + w] = entry.signature[w]!;
    const bands = this.bands;
    for (let j = 0; j < bands; j++) this.keys[slot * bands + j] = keys[j]!;
    this.link(slot);
    this.count++;
    this.dirty = true;
    const encoded = encodeWords(entry.signature, words);
    this.write(slot, encoded);
    return encoded;
  }

  refresh(slot: number): void {
    if (this.live[slot] === 0) return;
    this.unlink(slot);
    this.lastSeen[slot] = this.clock;
    this.seqs[slot] = this.seq++;
    this.link(slot);
    this.dirty = true;
    const old = this.store.get(entryKey(slot))!;
    this.write(slot, old.slice(0, this.sigChars));
  }

  save(force = false): void {
    if (!this.dirty && !force) return;
    const text = metaText(this.version, this.layoutJson, this.clock, this.seq, this.slots, this.count);
    this.store.put(META, text);
    this.metaWritten = text;
    this.dirty = false;
  }

  // ---- for deleteWhere / indexEntries

  liveSlots(): number[] {
    const out: number[] = [];
    for (let slot = this.lruHead; slot >= 0; slot = this.lruNext[slot]!) out.push(slot);
    return out;
  }

  info(slot: number): EntryInfo {
    return { id: this.ids[slot]!, groupId: this.groups[slot]!, insertedAt: this.insertedAt[slot]!, lastSeen: this.lastSeen[slot]! };
  }

  remove(slot: number): void {
    this.unlink(slot);
    this.live[slot] = 0;
    this.ids[slot] = '';
    this.groups[slot] = '';
    this.pushFree(slot);
    this.count--;
    this.dirty = true;
    this.store.delete(entryKey(slot));
  }

  // ---- internals

  private write(slot: number, sig: string): void {
    const g = this.groups[slot]!;
    const l = this.lastSeen[slot]!;
    this.store.put(entryKey(slot), `${sig}${num(this.seqs[slot]!)}.${num(l)}.${num(this.insertedAt[slot]! - l)}.${g.length.toString(36)}.${g}${this.ids[slot]}`);
  }

  private load(slot: number, text: string): void {
    const s = this.sigChars;
    const d1 = text.indexOf('.', s);
    const d2 = text.indexOf('.', d1 + 1);
    const d3 = text.indexOf('.', d2 + 1);
    const d4 = text.indexOf('.', d3 + 1);
    const glen = parseInt(text.slice(d3 + 1, d4), 36);
    const l = unnum(text.slice(d1 + 1, d2));
    this.seqs[slot] = unnum(text.slice(s, d1));
    this.lastSeen[slot] = l;
    this.insertedAt[slot] = l + unnum(text.slice(d2 + 1, d3));
    this.groups[slot] = text.slice(d4 + 1, d4 + 1 + glen);
    this.ids[slot] = text.slice(d4 + 1 + glen);
    const buf = Buffer.from(text.slice(0, s), 'base64');
    new Uint8Array(this.sigs.buffer, slot * this.words * 4, this.words * 4).set(buf.subarray(0, this.words * 4));
    bandKeysAt(this.sigs, slot * this.words, this.layout.minhash, bandScope(this.layout.scope, this.groups[slot]!), SCRATCH_KEYS.length >= this.bands ? SCRATCH_KEYS : (SCRATCH_KEYS = new Int32Array(this.bands)));
    this.keys.set(SCRATCH_KEYS.subarray(0, this.bands), slot * this.bands);
    this.count++;
  }

  /** Puts a slot at the most recently seen end of the LRU list and at the front of its buckets. */
  private link(slot: number): void {
    this.live[slot] = 1;
    this.lruPrev[slot] = this.lruTail;
    this.lruNext[slot] = -1;
    if (this.lruTail >= 0) this.lruNext[this.lruTail] = slot;
    else this.lruHead = slot;
    this.lruTail = slot;
    const bands = this.bands;
    for (let j = 0; j < bands; j++) {
      const cell = slot * bands + j;
      const key = this.keys[cell]!;
      const head = this.heads.exchange(key, cell);
      this.bucketPrev[cell] = -1;
      this.bucketNext[cell] = head;
      if (head >= 0) this.bucketPrev[head] = cell;
    }
  }

  private unlink(slot: number): void {
    const p = this.lruPrev[slot]!;
    const n = this.lruNext[slot]!;
    if (p >= 0) this.lruNext[p] = n;
    else this.lruHead = n;
    if (n >= 0) this.lruPrev[n] = p;
    else this.lruTail = p;
    const bands = this.bands;
    for (let j = 0; j < bands; j++) {
      const cell = slot * bands + j;
      const prev = this.bucketPrev[cell]!;
      const next = this.bucketNext[cell]!;
      if (prev >= 0) this.bucketNext[prev] = next;
      else if (next >= 0) this.heads.set(this.keys[cell]!, next);
      else this.heads.delete(this.keys[cell]!);
      if (next >= 0) this.bucketPrev[next] = prev;
    }
  }

  private grow(slots: number): void {
    if (slots <= this.capacity) return;
    const cap = Math.max(slots, this.capacity * 2, 64);
    const f64 = (a: Float64Array) => {
      const out = new Float64Array(cap);
      out.set(a);
      return out;
    };
    const i32 = (a: Int32Array, per = 1) => {
      const out = new Int32Array(cap * per);
      out.set(a);
      return out;
    };
    this.lastSeen = f64(this.lastSeen);
    this.insertedAt = f64(this.insertedAt);
    this.seqs = f64(this.seqs);
    const sigs = new Uint32Array(cap * this.words);
    sigs.set(this.sigs);
    this.sigs = sigs;
    this.keys = i32(this.keys, this.bands);
    this.bucketNext = i32(this.bucketNext, this.bands);
    this.bucketPrev = i32(this.bucketPrev, this.bands);
    this.lruPrev = i32(this.lruPrev);
    this.lruNext = i32(this.lruNext);
    const live = new Uint8Array(cap);
    live.set(this.live);
    this.live = live;
    const stamp = new Uint32Array(cap);
    stamp.set(this.stamp);
    this.stamp = stamp;
    this.free = i32(this.free);
    this.capacity = cap;
  }

  private pushFree(slot: number): void {
    this.grow(this.freeCount + 1);
    const h = this.free;
    let i = this.freeCount++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]! <= slot) break;
      h[i] = h[parent]!;
      i = parent;
    }
    h[i] = slot;
  }

  private popFree(): number {
    const h = this.free;
    const top = h[0]!;
    const last = h[--this.freeCount]!;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= this.freeCount) break;
      if (c + 1 < this.freeCount && h[c + 1]! < h[c]!) c++;
      if (h[c]! >= last) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
    return top;
  }
}

let SCRATCH_KEYS = new Int32Array(16);

/**
 * Band key → first cell of its bucket: open addressing with linear probing over one typed
 * array of (key, value) pairs, so a probe touches one cache line (a JS Map costs several times
 * more per operation, and near-dedupe does 16–32 per sample, mostly cache misses on a large
 * index). Keys are 31-bit (minhash.ts step 5), so 0x7fffffff marks a free place; removal shifts
 * the following run back (no tombstones). Kept at most half full.
 */
class IntMap {
  private table = new Int32Array(128).fill(FREE);
  private mask = 63;
  private size = 0;

  /** The value of `key`, or −1. */
  get(key: number): number {
    const t = this.table;
    for (let i = hashInt(key) & this.mask; ; i = (i + 1) & this.mask) {
      const k = t[2 * i]!;
      if (k === key) return t[2 * i + 1]!;
      if (k === FREE) return -1;
    }
  }

  /** Sets `key` to `value` and returns the value it had, or −1: one probe sequence for both. */
  exchange(key: number, value: number): number {
    const t = this.table;
    for (let i = hashInt(key) & this.mask; ; i = (i + 1) & this.mask) {
      const k = t[2 * i]!;
      if (k === key) {
        const old = t[2 * i + 1]!;
        t[2 * i + 1] = value;
        return old;
      }
      if (k === FREE) {
        t[2 * i] = key;
        t[2 * i + 1] = value;
        if (++this.size * 2 > this.mask) this.grow();
        return -1;
      }
    }
  }

  set(key: number, value: number): void {
    this.exchange(key, value);
  }

  delete(key: number): void {
    const t = this.table;
    const mask = this.mask;
    let i = hashInt(key) & mask;
    for (; ; i = (i + 1) & mask) {
      const k = t[2 * i]!;
      if (k === FREE) return;
      if (k === key) break;
    }
    this.size--;
    // Backward shift: move later members of the run into the hole unless their home lies cyclically in (hole, j].
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const k = t[2 * j]!;
      if (k === FREE) break;
      const home = hashInt(k) & mask;
      if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
        t[2 * i] = k;
        t[2 * i + 1] = t[2 * j + 1]!;
        i = j;
      }
    }
    t[2 * i] = FREE;
  }

  private grow(): void {
    const old = this.table;
    const places = old.length; // doubled: old.length / 2 places → old.length
    this.table = new Int32Array(places * 2).fill(FREE);
    this.mask = places - 1;
    this.size = 0;
    for (let i = 0; i < old.length; i += 2) if (old[i] !== FREE) this.exchange(old[i]!, old[i + 1]!);
  }
}

const FREE = 0x7fffffff;

/** Band keys are already hashes; one multiply spreads their low bits for the mask. */
function hashInt(key: number): number {
  return Math.imul(key, 0x9e3779b1) >>> 16 ^ Math.imul(key, 0x85ebca6b);
}

function encodeWords(signature: Signature, words: number): string {
  return Buffer.from(signature.buffer, signature.byteOffset, words * 4).toString('base64');
}

/** Integers in base 36; anything else (fractional timestamps) as `~` + its decimal form with `_` for the point (`.` separates fields). */
function num(x: number): string {
  return Number.isSafeInteger(x) ? x.toString(36) : `~${String(x).replace('.', '_')}`;
}

function unnum(s: string): number {
  return s.charCodeAt(0) === 126 ? Number(s.slice(1).replace('_', '.')) : parseInt(s, 36);
}

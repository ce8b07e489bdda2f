/**
 * Partition-scoped key-value state for operators, backed by compacted changelog topics.
 *
 * Writes made while a batch is processed are staged: readers see them at once, but they reach
 * the committed state only when the batch's Kafka transaction (which also carries them to the
 * changelog) commits. An aborted batch leaves the state exactly as the changelog has it, so a
 * retried batch sees what it saw the first time.
 */

/** The view an operator gets of one store for one input partition. */
export interface KeyValueStore {
  get(key: string): string | undefined;
  put(key: string, value: string): void;
  delete(key: string): void;
  readonly size: number;
}

/** A store an operator declares it needs: its name names the changelog topic too. */
export interface StoreSpec {
  name: string;
}

export interface ChangelogRecord {
  store: string;
  key: string;
  /** null is a tombstone: compaction removes the key. */
  value: string | null;
}

export class PartitionState {
  private readonly committed = new Map<string, Map<string, string>>();
  /**
   * One map of staged writes per store, for the state's lifetime (cleared, never replaced), so a
   * store view reads it with one lookup: operators call get/put several times per record.
   */
  private readonly staged = new Map<string, Map<string, string | null>>();
  /** Per store, the committed keys' and values' length in UTF-16 code units, kept as writes commit. */
  private readonly chars = new Map<string, number>();

  constructor(readonly partition: number, storeNames: readonly string[]) {
    for (const name of storeNames) {
      this.committed.set(name, new Map());
      this.staged.set(name, new Map());
      this.chars.set(name, 0);
    }
  }

  /**
   * Each store's committed size: `entries` keys, `bytes` the length of its keys and values in
   * characters (bytes for ASCII; an estimate of the changelog payload, kept without a scan).
   *
   *   state.sizes() // → [{ store: 'exact-dedupe', entries: 1200, bytes: 52800 }]
   */
  sizes(): { store: string; entries: number; bytes: number }[] {
    return [...this.committed].map(([store, entries]) => ({ store, entries: entries.size, bytes: this.chars.get(store)! }));
  }

  store(name: string): KeyValueStore {
    const committed = this.committed.get(name);
    const staged = this.staged.get(name);
    if (committed === undefined || staged === undefined) throw new Error(`state store "${name}" was not declared for this pipeline`);
    return {
      get: (key) => {
        const s = staged.get(key);
        // null is a staged delete; undefined: not staged, the committed value counts.
        if (s !== undefined) return s ?? undefined;
        return committed.get(key);
      },
      put: (key, value) => void staged.set(key, value),
      delete: (key) => void staged.set(key, null),
      get size() {
        return committed.size;
      },
    };
  }

  /** The staged writes, in the form they take on the changelog. */
  pendingChanges(): ChangelogRecord[] {
    const out: ChangelogRecord[] = [];
    for (const [store, writes] of this.staged) {
      for (const [key, value] of writes) out.push({ store, key, value });
    }
    return out;
  }

  /** The batch's transaction committed: staged writes become the state. */
  commit(): void {
    for (const [store, writes] of this.staged) {
      if (writes.size === 0) continue;
      const target = this.committed.get(store)!;
      let chars = this.chars.get(store)!;
      for (const [key, value] of writes) {
        const old = target.get(key);
        if (old !== undefined) chars -= key.length + old.length;
        if (value === null) target.delete(key);
        else {
          target.set(key, value);
          chars += key.length + value.length;
        }
      }
      this.chars.set(store, chars);
      writes.clear();
    }
  }

  /** The batch's transaction aborted: forget its writes. */
  abort(): void {
    for (const writes of this.staged.values()) writes.clear();
  }

  /** Replaces a store's contents with what its changelog holds. */
  restore(store: string, entries: Map<string, string>): void {
    if (!this.committed.has(store)) throw new Error(`state store "${store}" was not declared for this pipeline`);
    // Cleared and refilled in place: operators keep the views they were built with.
    const target = this.committed.get(store)!;
    target.clear();
    let chars = 0;
    for (const [key, value] of entries) {
      target.set(key, value);
      chars += key.length + value.length;
    }
    this.chars.set(store, chars);
    this.staged.get(store)!.clear();
  }
}

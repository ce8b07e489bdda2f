import type { TopicPartitionOffset } from '../checkpoint.ts';

/** A topic-partition as a map key. */
export const tpKey = (topic: string, partition: number): string => `${partition}\u0000${topic}`;

/** Fetches beyond the expected position in a row before the position counts as unreachable. */
const MISMATCH_LIMIT = 8;

export interface Seek {
  topic: string;
  partition: number;
  offset: bigint;
}

/** What to do with a batch kafkajs fetched from `fetched`. */
export type FetchVerdict =
  /** Take its records from `from` on (those before it were handed out already). */
  | { kind: 'take'; from: bigint }
  /** kafkajs is not at our position yet (a seek not yet in effect): drop the batch, seek again. */
  | { kind: 'seek'; offset: bigint }
  /** kafkajs keeps fetching past our position: the records there are gone. */
  | { kind: 'unreachable'; expected: bigint };

/**
 * The client's own position per topic-partition, kept exact on kafkajs 2.2.4 (which has no
 * manual assignment):
 * - `yielded`: the next offset not yet handed to the trainer (what a batch's `offsets`
 *   snapshot); `fetchPos`: the next offset kafkajs is expected to fetch.
 * - On every assignment (GROUP_JOIN, emitted synchronously before kafkajs fetches), each
 *   partition with a known position is sought there; without one, kafkajs starts from the
 *   group's committed offset (or the beginning).
 * - Each fetched batch carries the offset it was fetched from (kafkajs's `fetchedOffset`). A
 *   batch fetched beyond the expected position (kafkajs not yet at the sought offset) is
 *   dropped and the seek repeated; records before the expected position are dropped. Batches
 *   of only aborted records/transaction markers, which kafkajs consumes without calling the
 *   handler, are followed through its END_BATCH_PROCESS event. A position that stays
 *   unreachable (records deleted by retention) fails the client rather than skip silently.
 *
 * @example
 *   const positions = new Positions(restored?.offsets ?? []);
 *   for (const s of positions.assign(memberAssignment, (tp) => buffer.pendingEnd(tp))) consumer.seek(…s);
 *   const verdict = positions.check(tp, BigInt(batch.fetchedOffset)); // take from, seek again, or fail
 */
export class Positions {
  private readonly yielded = new Map<string, Seek>();
  private readonly fetchPos = new Map<string, bigint>();
  private readonly mismatches = new Map<string, number>();
  private assigned = new Set<string>();
  private gen = 0;

  constructor(restored: readonly TopicPartitionOffset[]) {
    for (const o of restored) this.yielded.set(tpKey(o.topic, o.partition), { topic: o.topic, partition: o.partition, offset: BigInt(o.offset) });
  }

  /** Bumped on every assignment: a batch decoded across one is dropped. */
  get generation(): number {
    return this.gen;
  }

  /**
   * A new assignment: forgets the fetch positions of partitions lost and returns where to seek
   * the others — past what is already fetched and waiting (`pendingEnd`), else where the trainer
   * stands; a partition without either is left to kafkajs (committed offset or the beginning).
   */
  assign(assignment: Record<string, number[]>, pendingEnd: (tp: string) => bigint | undefined): Seek[] {
    const assigned = new Set<string>();
    for (const [topic, partitions] of Object.entries(assignment)) for (const partition of partitions) assigned.add(tpKey(topic, partition));
    for (const tp of [...this.fetchPos.keys()]) if (!assigned.has(tp)) this.fetchPos.delete(tp);
    const seeks: Seek[] = [];
    for (const [topic, partitions] of Object.entries(assignment)) {
      for (const partition of partitions) {
        const tp = tpKey(topic, partition);
        const position = pendingEnd(tp) ?? this.yielded.get(tp)?.offset;
        if (position === undefined) continue;
        this.fetchPos.set(tp, position);
        seeks.push({ topic, partition, offset: position });
      }
    }
    this.assigned = assigned;
    this.gen++;
    this.mismatches.clear();
    return seeks;
  }

  isAssigned(tp: string): boolean {
    return this.assigned.has(tp);
  }

  owns(topic: string, partition: number): boolean {
    return this.assigned.has(tpKey(topic, partition));
  }

  /** Checks a fetched batch against the expected position (see FetchVerdict). */
  check(tp: string, fetched: bigint): FetchVerdict {
    const expected = this.fetchPos.get(tp);
    if (expected !== undefined && fetched > expected) {
      const n = (this.mismatches.get(tp) ?? 0) + 1;
      this.mismatches.set(tp, n);
      return n > MISMATCH_LIMIT ? { kind: 'unreachable', expected } : { kind: 'seek', offset: expected };
    }
    this.mismatches.delete(tp);
    return { kind: 'take', from: expected ?? fetched };
  }

  /** A batch from `from` up to `end` was buffered: kafkajs fetches on from `end`. */
  fetched(topic: string, partition: number, from: bigint, end: bigint): void {
    const tp = tpKey(topic, partition);
    if (!this.yielded.has(tp)) this.yielded.set(tp, { topic, partition, offset: from });
    this.fetchPos.set(tp, end);
  }

  /**
   * kafkajs consumed a batch of only markers/aborted records itself: follow it if it started at
   * our position; with nothing of the partition waiting (`pending` false), the trainer's
   * position moves past the markers too.
   */
  skipFiltered(tp: string, firstOffset: string | null, lastOffset: string, pending: boolean): void {
    const expected = this.fetchPos.get(tp);
    if (expected === undefined) return;
    const first = BigInt(firstOffset ?? lastOffset);
    const end = BigInt(lastOffset) + 1n;
    if (first <= expected && end > expected) {
      this.fetchPos.set(tp, end);
      this.mismatches.delete(tp);
      if (!pending) {
        const y = this.yielded.get(tp);
        if (y !== undefined && y.offset >= first && y.offset < end) y.offset = end;
      }
    }
  }

  /** The record at `offset` was handed to the trainer. */
  handedOut(tp: string, offset: bigint): void {
    this.yielded.get(tp)!.offset = offset + 1n;
  }

  /** A fetched batch was taken whole: the position moves to its end (past trailing markers). */
  reached(tp: string, end: bigint): void {
    const y = this.yielded.get(tp)!;
    if (end > y.offset) y.offset = end;
  }

  /** Per topic-partition, the next offset to hand out: what a batch commits. Sorted by topic, then partition. */
  offsets(): TopicPartitionOffset[] {
    return [...this.yielded.values()]
      .map((p) => ({ topic: p.topic, partition: p.partition, offset: p.offset.toString() }))
      .sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition));
  }

  /** The partitions held, with the position handed out to (null: nothing read yet). */
  assignedPositions(): Array<{ topic: string; partition: number; position: string | null }> {
    return [...this.assigned].map((tp) => {
      const [partition, topic] = tp.split('\u0000') as [string, string];
      return { topic, partition: Number(partition), position: this.yielded.get(tp)?.offset.toString() ?? null };
    });
  }
}

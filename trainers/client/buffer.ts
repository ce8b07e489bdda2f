import type { Entry } from './decode.ts';

/** One fetched kafkajs batch, decoded, waiting to be taken. */
export interface Chunk {
  tp: string;
  entries: Entry[];
  /** The next entry to take. */
  next: number;
  /** The offset after the fetched batch (past trailing markers): where the partition stands once it is taken. */
  end: bigint;
}

/**
 * Fetched records waiting for the trainer, in arrival order, bounded: once `limit` records
 * wait, `flow.pause()` stops the consumer fetching; below half the limit, `flow.resume()`
 * restarts it. So fetching runs ahead of the trainer by at most about `limit` records, and the
 * consumer's heartbeats never depend on the trainer's speed.
 *
 * @example
 *   const buffer = new FetchBuffer(5000, { pause: () => consumer.pause(topics), resume: () => consumer.resume(topics) });
 *   buffer.push({ tp, entries, next: 0, end });
 *   buffer.take(256, { entry: (tp, e) => …, chunkEnd: (tp, end) => … });
 */
export class FetchBuffer {
  private chunks: Chunk[] = [];
  private waiting = 0;
  private stopped = false;

  constructor(
    private readonly limit: number,
    private readonly flow: { pause(): void; resume(): void },
  ) {}

  /** Records waiting. */
  get size(): number {
    return this.waiting;
  }

  /** Whether the consumer is paused because the buffer is full. */
  get paused(): boolean {
    return this.stopped;
  }

  push(chunk: Chunk): void {
    this.chunks.push(chunk);
    this.waiting += chunk.entries.length - chunk.next;
    if (!this.stopped && this.waiting >= this.limit) {
      this.stopped = true;
      this.flow.pause();
    }
  }

  /** Drops what waits for partitions no longer held. */
  retain(keep: (tp: string) => boolean): void {
    for (const c of this.chunks) if (!keep(c.tp)) this.waiting -= c.entries.length - c.next;
    this.chunks = this.chunks.filter((c) => keep(c.tp));
  }

  /** Where the records waiting for `tp` end, or undefined when none wait. */
  pendingEnd(tp: string): bigint | undefined {
    for (let i = this.chunks.length - 1; i >= 0; i--) if (this.chunks[i]!.tp === tp) return this.chunks[i]!.end;
    return undefined;
  }

  has(tp: string): boolean {
    return this.chunks.some((c) => c.tp === tp);
  }

  /**
   * Takes up to `max` entries in arrival order: `visit.entry` for each, then `visit.chunkEnd`
   * for each fetched batch taken whole. Returns how many were taken.
   */
  take(max: number, visit: { entry(tp: string, entry: Entry): void; chunkEnd(tp: string, end: bigint): void }): number {
    let taken = 0;
    while (taken < max && this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      while (taken < max && chunk.next < chunk.entries.length) {
        const entry = chunk.entries[chunk.next++]!;
        taken++;
        this.waiting--;
        visit.entry(chunk.tp, entry);
      }
      if (chunk.next >= chunk.entries.length) {
        visit.chunkEnd(chunk.tp, chunk.end);
        this.chunks.shift();
      }
    }
    this.maybeResume();
    return taken;
  }

  /** Resumes fetching once the trainer has taken the buffer below half its limit. */
  maybeResume(): void {
    if (this.stopped && this.waiting < this.limit / 2) {
      this.stopped = false;
      this.flow.resume();
    }
  }
}

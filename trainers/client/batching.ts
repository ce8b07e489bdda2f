import type { ModelVersions } from '../../operators/filter/staleness-filter.ts';
import type { Decision } from '../../contracts/records.ts';
import { admitByStaleness, type LagFunction, type ReplayBuffer, type ReplaySnapshot, type StalenessConfig, type StarvationMonitor } from '../admission.ts';
import type { FetchBuffer } from './buffer.ts';
import type { Counters } from './metrics.ts';
import type { Positions } from './positions.ts';
import type { Consumed, RejectedRecord, ReplayedRecord, SkippedRecord, TrainerRecord, TrainingBatch } from './types.ts';

/** The admission policies a client applies while forming batches (each null when not configured). */
export interface BatchAdmission {
  staleness: StalenessConfig | null;
  /** The policy versions staleness is measured against. */
  versions: () => ModelVersions | LagFunction | null;
  replay: ReplayBuffer<Consumed<Decision>> | null;
  /** Fed the fresh admitted count of every batch. */
  monitor: StarvationMonitor | null;
}

/** Why a batch wait ends early: the client failed (throws), or was closed or interrupted. */
export interface BatchLifecycle {
  /** The client's failure, if it failed for good. */
  failure(): Error | undefined;
  /** Closed, or the current iteration interrupted. */
  ended(): boolean;
}

/**
 * Forms training batches from the fetch buffer:
 * 1. `next` waits until `maxRecords` records are buffered, or `maxWaitMs` passed with at least
 *    one record (or a replay due, or `emptyBatches`) — or until the client fails (throws), is
 *    closed or interrupted (undefined);
 * 2. `form` takes up to `maxRecords` entries in arrival order, moving the positions past each;
 *    a skipped entry is listed, a decision is admitted by staleness or rejected with the reason;
 * 3. replays are drawn from the replay buffer, and the admitted decisions added to it;
 * 4. the batch snapshots every position (its `offsets`) and the replay buffer (for its
 *    checkpoint), and the counters and starvation monitor are fed.
 *
 * @example
 *   const batcher = new Batcher(buffer, positions, admission, counters);
 *   const batch = await batcher.next({ maxRecords: 256, maxWaitMs: 1000, emptyBatches: false }, lifecycle);
 */
export class Batcher {
  private seq = 0;
  private wake: (() => void) | undefined;
  /** The replay buffer as of each batch handed out: what its checkpoint stores. Also tells this client's batches apart. */
  private readonly replaySnapshots = new WeakMap<TrainingBatch, ReplaySnapshot<Consumed<Decision>> | null>();

  constructor(
    private readonly buffer: FetchBuffer,
    private readonly positions: Positions,
    private readonly admission: BatchAdmission,
    private readonly counters: Counters,
  ) {}

  /** Ends a wait in `next` (new records, a failure, close or interrupt). */
  notify(): void {
    this.wake?.();
  }

  /** Whether `batch` was formed by this batcher. */
  formed(batch: TrainingBatch): boolean {
    return this.replaySnapshots.has(batch);
  }

  /** The replay buffer's snapshot taken with `batch`. */
  replaySnapshot(batch: TrainingBatch): ReplaySnapshot<Consumed<Decision>> | null {
    return this.replaySnapshots.get(batch) ?? null;
  }

  async next(options: { maxRecords: number; maxWaitMs: number; emptyBatches: boolean }, lifecycle: BatchLifecycle): Promise<TrainingBatch | undefined> {
    const { maxRecords, maxWaitMs, emptyBatches } = options;
    const deadline = Date.now() + maxWaitMs;
    const replay = this.admission.replay;
    for (;;) {
      const failure = lifecycle.failure();
      if (failure) throw failure;
      if (lifecycle.ended()) return undefined;
      const now = Date.now();
      if (this.buffer.size >= maxRecords) return this.form(maxRecords, now);
      if (now >= deadline) {
        if (this.buffer.size > 0 || emptyBatches || (replay !== null && replay.eligible(now).length > 0)) return this.form(maxRecords, now);
      }
      await new Promise<void>((resolve) => {
        const timeout = setTimeout(resolve, now >= deadline ? maxWaitMs : deadline - now);
        this.wake = () => {
          clearTimeout(timeout);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Takes up to maxRecords fetched records, applies admission, draws replays (unless `draw` is false). */
  form(maxRecords: number, now: number, draw = true): TrainingBatch {
    const records: TrainerRecord[] = [];
    const rejected: RejectedRecord[] = [];
    const skipped: SkippedRecord[] = [];
    const taken = this.buffer.take(maxRecords, {
      entry: (tp, entry) => {
        this.positions.handedOut(tp, entry.offset);
        if (entry.kind === 'skipped') {
          skipped.push(entry.skipped);
          return;
        }
        const verdict = this.admit(entry.record);
        if (verdict === null) records.push(entry.record);
        else rejected.push({ record: entry.record, ...verdict });
      },
      chunkEnd: (tp, end) => this.positions.reached(tp, end),
    });
    const decisions = records.flatMap((r) => (r.kind === 'decision' ? [r] : []));
    const labels = records.flatMap((r) => (r.kind === 'label' ? [r] : []));
    const replay = this.admission.replay;
    let replayed: ReplayedRecord[] = [];
    if (replay !== null && draw) {
      replayed = replay.draw(replay.config.perBatch, now).map((d) => ({ record: d.value, uses: d.uses, priority: d.priority }));
      const scoreName = replay.config.scoreName;
      replay.add(
        decisions.map((d) => ({ id: d.value.rollout.id, value: d, at: d.value.rollout.created_at, score: scoreName === null ? 0 : (d.value.scores[scoreName] ?? 0) })),
        now,
      );
    }
    const batch: TrainingBatch = { seq: ++this.seq, records, decisions, labels, replayed, rejected, skipped, offsets: this.positions.offsets() };
    this.replaySnapshots.set(batch, replay?.snapshot() ?? null);

    const rejectedByReason: Record<string, number> = {};
    for (const r of rejected) rejectedByReason[r.reason] = (rejectedByReason[r.reason] ?? 0) + 1;
    const m = this.counters;
    m.batches++;
    m.consumed += taken;
    m.admitted += records.length;
    m.replayed += replayed.length;
    m.skipped += skipped.length;
    for (const [reason, n] of Object.entries(rejectedByReason)) m.rejected[reason] = (m.rejected[reason] ?? 0) + n;
    // Only fresh examples feed the starvation monitor: replays are what a starving trainer falls back on.
    this.admission.monitor?.record(records.length, now, rejectedByReason);
    return batch;
  }

  private admit(record: TrainerRecord): { reason: string; lag: number | undefined } | null {
    const versions = this.admission.versions();
    if (record.kind !== 'decision' || this.admission.staleness === null || versions === null) return null;
    const verdict = admitByStaleness(record.value.rollout, this.admission.staleness, versions);
    return verdict.admitted ? null : { reason: verdict.reason, lag: verdict.lag };
  }
}

import { randomUUID } from 'node:crypto';
import { AssignerProtocol, type Admin, type Kafka, type PartitionAssigner } from 'kafkajs';
import { UnavailableError } from './errors.ts';
import { topicOffsets } from './topics.ts';

/** Store contents per partition, as the changelog's last committed records have them. */
export type Restored = Map<number, Map<string, string>>;

/**
 * How far the restore of one changelog partition got: `entries` folds every record before
 * `next`. Kept by the caller across attempts, so a restore that failed (or was given up for a
 * rebalance) goes on from `next` instead of starting over.
 */
export interface RestoreProgress {
  entries: Map<string, string>;
  next: bigint;
  /** Date.now() of the last advance. */
  at: number;
}

export interface RestoreOptions {
  /** A connected admin to reuse (the caller's); otherwise one is opened for the call. */
  admin?: Admin;
  /** In and out, per partition: where an earlier attempt stopped; updated as records are folded. */
  progress?: Map<number, RestoreProgress>;
  /** Fail (retriably, keeping `progress`) once nothing was read for this long. Default 60 s. */
  stallMs?: number;
  /** Aborting stops the restore at once (e.g. the caller's group is rebalancing); `progress` is kept. */
  signal?: AbortSignal;
}

/**
 * Older progress is not resumed: compaction drops tombstones after `delete.retention.ms` (24 h by
 * default), so a delete between `next` and the end could be gone by then.
 */
const RESUME_MAX_AGE_MS = 10 * 60_000;

/**
 * Reads `partitions` of a compacted changelog topic from the beginning (or from where `progress`
 * says an earlier attempt stopped) to the end offset taken at the start, read_committed, and folds
 * them into key → value maps, tombstones deleting keys. Time and memory scale with those
 * partitions' changelogs (compacted: one record per live key, plus what compaction has not caught
 * up with), not with the topic: other partitions are never fetched.
 *
 * kafkajs has no manual partition assignment, so a consumer of a fresh, single-member group with
 * an assigner that hands it exactly `partitions` reads them, seeking to each resume offset; the
 * group is deleted afterwards. "The end" is the high watermark taken before reading; it is
 * reached when a fetched batch ends there, counting transaction markers (kafkajs reports
 * control-only batches through END_BATCH_PROCESS, not eachBatch). Callers fence the partition's
 * transactional producer first, so no open transaction holds the last stable offset below it.
 *
 * There is no overall time limit: a large changelog takes as long as it takes. The restore fails
 * with a retriable UnavailableError only when nothing was read for `stallMs`.
 *
 *   const entries = (await restoreChangelog(kafka, 'flywheel.curate.exact-dedupe-changelog', [2])).get(2)!;
 */
export async function restoreChangelog(kafka: Kafka, topic: string, partitions: readonly number[], options: RestoreOptions = {}): Promise<Restored> {
  const progress = options.progress ?? new Map<number, RestoreProgress>();
  const stallMs = options.stallMs ?? 60_000;
  const admin = options.admin ?? kafka.admin();
  if (options.admin === undefined) await admin.connect();
  let ends: Map<number, bigint>;
  try {
    const offsets = await topicOffsets(admin, topic);
    ends = new Map(offsets.filter((o) => partitions.includes(o.partition)).map((o) => [o.partition, BigInt(o.high)]));
    for (const p of partitions) {
      const low = BigInt(offsets.find((o) => o.partition === p)?.low ?? '0');
      const earlier = progress.get(p);
      // Records deleted below an earlier stop, or progress too old to trust: start over.
      if (earlier === undefined || Date.now() - earlier.at > RESUME_MAX_AGE_MS || (earlier.next > 0n && earlier.next < low)) {
        progress.set(p, { entries: new Map(), next: 0n, at: Date.now() });
      }
    }
  } finally {
    if (options.admin === undefined) await admin.disconnect();
  }
  const restored = (): Restored => new Map(partitions.map((p) => [p, progress.get(p)!.entries]));
  const pending = new Set(partitions.filter((p) => progress.get(p)!.next < (ends.get(p) ?? 0n)));
  if (pending.size === 0) return restored();
  options.signal?.throwIfAborted();

  const groupId = `flywheel-restore-${randomUUID()}`;
  const consumer = kafka.consumer({
    groupId,
    readUncommitted: false,
    maxWaitTimeInMs: 250,
    // Changelog records reach 8 MB; large fetches keep a big restore to few round trips.
    maxBytesPerPartition: 16 * 1024 * 1024,
    maxBytes: 64 * 1024 * 1024,
    partitionAssigners: [exactly(topic, [...pending])],
    retry: { retries: 5 },
  });
  let lastRead = Date.now();
  let finish!: () => void;
  let fail!: (err: unknown) => void;
  const done = new Promise<void>((resolve, reject) => ((finish = resolve), (fail = reject)));
  const advance = (partition: number, next: bigint) => {
    const state = progress.get(partition);
    if (state === undefined || !pending.has(partition)) return;
    lastRead = Date.now();
    if (next > state.next) state.next = next;
    state.at = lastRead;
    if (state.next >= ends.get(partition)!) pending.delete(partition);
    if (pending.size === 0) finish();
  };
  consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
    if (payload.topic === topic) advance(payload.partition, BigInt(payload.lastOffset) + 1n);
  });
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    if (!payload.restart) fail(new UnavailableError('kafka', topic, `restore consumer crashed: ${payload.error.message}`, { cause: payload.error }));
  });
  const onAbort = () => fail(options.signal!.reason);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const watchdog = setInterval(() => {
    if (Date.now() - lastRead <= stallMs) return;
    const at = [...pending].map((p) => `${p}: ${progress.get(p)!.next} of ${ends.get(p)}`).join(', ');
    fail(new UnavailableError('kafka', topic, `restore read nothing for ${stallMs} ms (partition ${at})`));
  }, Math.min(1000, stallMs));
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const state = progress.get(batch.partition);
        if (state === undefined || !pending.has(batch.partition)) return;
        const end = ends.get(batch.partition)!;
        for (const m of batch.messages) {
          const offset = BigInt(m.offset);
          // Before `next`: already folded (a fetch from before the seek took hold); order matters.
          if (offset < state.next) continue;
          if (offset >= end) break;
          const key = m.key?.toString('utf8');
          if (key !== undefined) {
            if (m.value === null) state.entries.delete(key);
            else state.entries.set(key, m.value.toString('utf8'));
          }
          state.next = offset + 1n;
        }
        state.at = lastRead = Date.now();
      },
    });
    for (const p of pending) {
      const next = progress.get(p)!.next;
      if (next > 0n) consumer.seek({ topic, partition: p, offset: next.toString() });
    }
    await done;
  } finally {
    clearInterval(watchdog);
    options.signal?.removeEventListener('abort', onAbort);
    await consumer.disconnect().catch(() => undefined);
    // The throwaway group would otherwise linger in the broker until its offsets expire.
    const cleanup = options.admin ?? kafka.admin();
    if (options.admin === undefined) await cleanup.connect().catch(() => undefined);
    await cleanup.deleteGroups([groupId]).catch(() => undefined);
    if (options.admin === undefined) await cleanup.disconnect().catch(() => undefined);
  }
  return restored();
}

/** Hands the group's only member exactly `partitions` of `topic`: a restore reads nothing else. */
function exactly(topic: string, partitions: number[]): PartitionAssigner {
  const name = 'FlywheelRestoreAssigner';
  return () => ({
    name,
    version: 0,
    async assign({ members }) {
      return members.map(({ memberId }, i) => ({
        memberId,
        memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 0, assignment: i === 0 ? { [topic]: partitions } : {}, userData: Buffer.alloc(0) }),
      }));
    },
    protocol({ topics }) {
      return { name, metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.alloc(0) }) };
    },
  });
}

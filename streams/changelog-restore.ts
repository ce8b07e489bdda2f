import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { topicOffsets } from './topics.ts';
import { coPartitionAssigner } from './co-partition-assigner.ts';

/** Store contents per partition, as the changelog's last committed records have them. */
export type Restored = Map<number, Map<string, string>>;

/**
 * Reads `partitions` of a compacted changelog topic from the beginning to their end
 * (read_committed) and folds them into key → value maps, tombstones deleting keys.
 *
 * kafkajs has no manual partition assignment, so a throwaway consumer group reads the topic.
 * "The end" is the high watermark taken before reading; it is reached when a fetched batch
 * ends there, counting transaction markers (kafkajs reports control-only batches through
 * END_BATCH_PROCESS, not eachBatch). Callers fence the partition's transactional producer
 * first, so no transaction is left open that would hold the watermark beyond what can be read.
 */
export async function restoreChangelog(kafka: Kafka, topic: string, partitions: readonly number[], timeoutMs = 120_000): Promise<Restored> {
  const restored: Restored = new Map(partitions.map((p) => [p, new Map<string, string>()]));
  const admin = kafka.admin();
  await admin.connect();
  let ends: Map<number, bigint>;
  try {
    const offsets = await topicOffsets(admin, topic);
    ends = new Map(offsets.filter((o) => restored.has(o.partition)).map((o) => [o.partition, BigInt(o.high)]));
  } finally {
    await admin.disconnect();
  }
  const pending = new Set(partitions.filter((p) => (ends.get(p) ?? 0n) > 0n));
  if (pending.size === 0) return restored;

  const groupId = `flywheel-restore-${randomUUID()}`;
  const consumer = kafka.consumer({
    groupId,
    readUncommitted: false,
    maxWaitTimeInMs: 500,
    partitionAssigners: [coPartitionAssigner],
    sessionTimeout: 30_000,
    retry: { retries: 5 },
  });
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  const reached = (partition: number, lastOffset: string) => {
    const end = ends.get(partition);
    if (end !== undefined && BigInt(lastOffset) >= end - 1n) pending.delete(partition);
    if (pending.size === 0) finish();
  };
  consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
    if (payload.topic === topic) reached(payload.partition, payload.lastOffset);
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const state = restored.get(batch.partition);
        if (state === undefined || !pending.has(batch.partition)) return;
        const end = ends.get(batch.partition)!;
        for (const m of batch.messages) {
          if (BigInt(m.offset) >= end) break;
          const key = m.key?.toString('utf8');
          if (key === undefined) continue;
          if (m.value === null) state.delete(key);
          else state.set(key, m.value.toString('utf8'));
        }
      },
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`restoring ${topic} partitions [${[...pending].join(', ')}] did not reach the changelog's end within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      await Promise.race([done, timeout]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await consumer.disconnect();
    // The throwaway group would otherwise linger in the broker until its offsets expire.
    const cleanup = kafka.admin();
    await cleanup.connect();
    await cleanup.deleteGroups([groupId]).catch(() => undefined);
    await cleanup.disconnect();
  }
  return restored;
}

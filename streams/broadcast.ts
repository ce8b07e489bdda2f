import { randomUUID } from 'node:crypto';
import type { Consumer, Kafka, KafkaMessage } from 'kafkajs';
import { topicOffsets } from './topics.ts';
import { coPartitionAssigner } from './co-partition-assigner.ts';

/**
 * Reads a whole topic into every worker (not split by a group): the topics that describe the
 * world rather than the work — model announcements, scorer errors, near-duplicate signatures.
 * Each worker uses a consumer group of its own and commits nothing, so every start reads the
 * topic from the beginning (these topics are compacted or short-lived). `caughtUp` resolves once
 * the records present at start have been handed to `onMessage`, so a worker can wait for the
 * current model before deciding anything.
 */
export class BroadcastReader {
  private readonly consumer: Consumer;
  private readonly groupId = `flywheel-broadcast-${randomUUID()}`;
  readonly caughtUp: Promise<void>;
  private markCaughtUp!: () => void;

  constructor(
    private readonly kafka: Kafka,
    private readonly topic: string,
    private readonly onMessage: (message: KafkaMessage, partition: number) => void | Promise<void>,
  ) {
    // A short fetch wait: stopping waits for the fetch in flight.
    this.consumer = kafka.consumer({ groupId: this.groupId, readUncommitted: false, maxWaitTimeInMs: 500, partitionAssigners: [coPartitionAssigner] });
    this.caughtUp = new Promise((resolve) => (this.markCaughtUp = resolve));
  }

  async start(): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    const ends = new Map((await topicOffsets(admin, this.topic)).map((o) => [o.partition, BigInt(o.high)]));
    await admin.disconnect();
    const pending = new Set([...ends].filter(([, end]) => end > 0n).map(([p]) => p));
    const reached = (partition: number, lastOffset: string) => {
      if (BigInt(lastOffset) >= (ends.get(partition) ?? 0n) - 1n) pending.delete(partition);
      if (pending.size === 0) this.markCaughtUp();
    };
    if (pending.size === 0) this.markCaughtUp();
    this.consumer.on(this.consumer.events.END_BATCH_PROCESS, ({ payload }) => reached(payload.partition, payload.lastOffset));
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.topic, fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      eachMessage: async ({ message, partition }) => {
        await this.onMessage(message, partition);
      },
    });
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
    const admin = this.kafka.admin();
    await admin.connect();
    await admin.deleteGroups([this.groupId]).catch(() => undefined);
    await admin.disconnect();
  }
}

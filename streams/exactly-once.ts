import type { Admin, Consumer, Kafka, KafkaMessage, Producer, TopicMessages, Transaction } from 'kafkajs';
import { mergeMap, Subscription } from 'rxjs';
import { restoreChangelog } from './changelog-restore.ts';
import { coPartitionAssigner } from './co-partition-assigner.ts';
import { kafkaBatches, type SourceBatch } from './source.ts';
import { PartitionState } from './state-store.ts';

/** What the processor knows of one input partition it owns. */
export interface PartitionContext<L> {
  partition: number;
  state: PartitionState;
  /** Built once per assignment over `state`, e.g. the partition's operator chain. */
  local: L;
}

/** What one call of `process` gets: a batch of one input topic's partition, or a tick. */
export type ProcessInput = { kind: 'records'; topic: string; messages: KafkaMessage[] } | { kind: 'tick'; now: number };

export interface ExactlyOnceOptions<L> {
  kafka: Kafka;
  /** Consumer group id; also the stem of the transactional ids. */
  groupId: string;
  /**
   * Co-partitioned input topics (same partition count, same keys → same partition): partition p
   * of all of them forms one task, with one state and one transactional id.
   */
  inputTopics: readonly string[];
  stores: readonly string[];
  changelogTopic: (store: string) => string;
  fromBeginning: boolean;
  partitionsConsumedConcurrently: number;
  maxBatchBytes: number;
  /** Runs once a taken partition's state is restored, before `assign` (e.g. seeding it). */
  prepare?: (partition: number, state: PartitionState) => Promise<void>;
  /** Builds the partition-local part (e.g. operators) once its state is restored. */
  assign: (partition: number, state: PartitionState) => L;
  /** Turns a batch (or a tick) into output records. State writes go through `context.state` and are staged. */
  process: (input: ProcessInput, context: PartitionContext<L>) => Promise<TopicMessages[]>;
  /** Every `tickMs`, each owned partition gets a tick (punctuation), in its own transaction. */
  tickMs?: number;
  /**
   * A bounded run (a replay): per input topic and partition, the first offset to process (when
   * the group has committed nothing yet) and the offset to stop before.
   */
  range?: Map<string, Map<number, { from: bigint; to: bigint }>>;
  /** With `range`: called once every partition has processed its whole range. */
  onRangeDone?: () => void;
  /** Called when the group hands this worker its partitions (after every rebalance). */
  onAssigned?: (partitions: number[]) => void;
  /** Called after each committed transaction. */
  onCommit?: (info: { partition: number; records: number; nextOffset: bigint }) => void;
}

interface Owned<L> extends PartitionContext<L> {
  producer: Producer;
  /** Per input topic, the offset of the next record to process; anything before is committed. */
  nextOffsets: Map<string, bigint>;
}

/**
 * Exactly-once consume → transform → produce on kafkajs.
 *
 * Per batch of one input partition, one Kafka transaction carries the outputs, the state
 * changes (changelog records) and the consumed offsets; downstream readers use read_committed,
 * so they see all of a batch or none of it.
 *
 * Fencing. kafkajs only speaks the old TxnOffsetCommit, which has no consumer-group-generation
 * fencing, so each task (partition p of the co-partitioned inputs, kept together by
 * coPartitionAssigner) gets its own transactional id (`<group>-task-<p>`, as Kafka Streams'
 * "exactly_once" v1 did). Whenever a partition is assigned, the processor
 * (1) creates that partition's producer, whose InitProducerId bumps the epoch: a zombie still
 * holding the partition can no longer commit, and its open transaction is aborted; (2) only then
 * reads the group's committed offset and (3) restores the partition's state from its changelog.
 * Offsets and state therefore describe exactly the last committed transaction, and records before
 * the committed offsets that kafkajs still delivers (it may fetch from an offset read before the fence,
 * see kafkajs#1046) are skipped.
 *
 * Failure. Any error in a batch aborts its transaction, drops its staged state, forgets the
 * partition (the next batch re-fences, re-reads offsets and restores) and seeks back to the last
 * committed offset; kafkajs then retries. A crash at any point leaves either a committed
 * transaction or none.
 */
export class ExactlyOnceProcessor<L> {
  private readonly consumer: Consumer;
  private readonly admin: Admin;
  private readonly owned = new Map<number, Owned<L>>();
  /** Per-partition serialisation of assignment work and batch work. */
  private readonly locks = new Map<number, Promise<unknown>>();
  private subscription: Subscription | undefined;
  private readonly rangeDone = new Set<string>();
  private ticker: NodeJS.Timeout | undefined;

  constructor(private readonly options: ExactlyOnceOptions<L>) {
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      readUncommitted: false,
      sessionTimeout: 30_000,
      rebalanceTimeout: 60_000,
      heartbeatInterval: 3_000,
      maxBytesPerPartition: options.maxBatchBytes,
      partitionAssigners: [coPartitionAssigner],
    });
    this.admin = options.kafka.admin();
    // Empty ranges are done before they start: no batch will ever arrive to say so.
    for (const [topic, partitions] of options.range ?? []) {
      for (const [partition, { from, to }] of partitions) if (from >= to) this.rangeDone.add(`${topic}:${partition}`);
    }
  }

  /** Runs until `stop()`; the promise rejects if the consumer fails for good. */
  async start(): Promise<{ stopped: Promise<void> }> {
    await this.admin.connect();
    await this.checkCoPartitioned();
    await this.consumer.connect();
    this.consumer.on(this.consumer.events.GROUP_JOIN, ({ payload }) => {
      const assigned = new Set(this.options.inputTopics.flatMap((t) => payload.memberAssignment[t] ?? []));
      this.options.onAssigned?.([...assigned].sort((a, b) => a - b));
      for (const partition of [...this.owned.keys()]) {
        if (!assigned.has(partition)) void this.withLock(partition, () => this.release(partition));
      }
    });
    const stopped = new Promise<void>((resolve, reject) => {
      this.subscription = kafkaBatches(this.consumer, {
        topics: [...this.options.inputTopics],
        fromBeginning: this.options.fromBeginning,
        partitionsConsumedConcurrently: this.options.partitionsConsumedConcurrently,
      })
        .pipe(mergeMap((source) => this.handle(source)))
        .subscribe({ error: reject, complete: resolve });
    });
    this.reportRangeDone();
    if (this.options.tickMs !== undefined) {
      this.ticker = setInterval(() => {
        const now = Date.now();
        for (const partition of this.owned.keys()) {
          void this.withLock(partition, () => this.processTick(partition, now)).catch(() => undefined);
        }
      }, this.options.tickMs);
    }
    return { stopped };
  }

  async stop(): Promise<void> {
    clearInterval(this.ticker);
    this.subscription?.unsubscribe();
    await this.consumer.disconnect();
    await Promise.all([...this.owned.keys()].map((p) => this.withLock(p, () => this.release(p))));
    await this.admin.disconnect();
  }

  private async handle(source: SourceBatch): Promise<void> {
    const { batch } = source;
    try {
      await this.withLock(batch.partition, () => this.processBatch(source));
      source.settle();
    } catch (err) {
      // kafkajs crashes for good on errors marked non-retriable (a fenced producer's
      // INVALID_PRODUCER_EPOCH among them); the batch is safe to retry, so hand back a plain Error.
      source.settle(new Error(`partition ${batch.partition} batch at ${batch.firstOffset()} failed, retrying: ${(err as Error).message}`, { cause: err }));
    }
  }

  private async processBatch({ batch, heartbeat }: SourceBatch): Promise<void> {
    const owned = this.owned.get(batch.partition) ?? (await this.acquire(batch.partition, heartbeat));
    const from = owned.nextOffsets.get(batch.topic) ?? 0n;
    const to = this.options.range?.get(batch.topic)?.get(batch.partition)?.to;
    const messages = batch.messages.filter((m) => BigInt(m.offset) >= from && (to === undefined || BigInt(m.offset) < to));
    if (messages.length === 0) return this.checkRangeDone(owned);
    const nextOffset = BigInt(messages[messages.length - 1]!.offset) + 1n;
    await this.transact(owned, { kind: 'records', topic: batch.topic, messages }, { topic: batch.topic, offset: nextOffset });
    owned.nextOffsets.set(batch.topic, nextOffset);
    this.options.onCommit?.({ partition: batch.partition, records: messages.length, nextOffset });
    this.checkRangeDone(owned);
  }

  /** A range is done per topic-partition once everything before its end is committed (or it is empty). */
  private checkRangeDone(owned: Owned<L>): void {
    if (this.options.range === undefined) return;
    for (const [topic, partitions] of this.options.range) {
      const bounds = partitions.get(owned.partition);
      if (bounds !== undefined && (owned.nextOffsets.get(topic) ?? bounds.from) >= bounds.to) this.rangeDone.add(`${topic}:${owned.partition}`);
    }
    this.reportRangeDone();
  }

  private reportRangeDone(): void {
    if (this.options.range === undefined) return;
    const total = [...this.options.range.values()].reduce((sum, partitions) => sum + partitions.size, 0);
    if (this.rangeDone.size === total) this.options.onRangeDone?.();
  }

  private async processTick(partition: number, now: number): Promise<void> {
    const owned = this.owned.get(partition);
    if (owned !== undefined) await this.transact(owned, { kind: 'tick', now });
  }

  /**
   * One transaction: the outputs of `input`, the state changes it staged and, for records, the
   * consumed offset. A tick that changed nothing commits nothing.
   */
  private async transact(owned: Owned<L>, input: ProcessInput, consumed?: { topic: string; offset: bigint }): Promise<void> {
    let transaction: Transaction | undefined;
    try {
      const outputs = await this.options.process(input, owned);
      const topicMessages = [...outputs, ...this.changelogMessages(owned)];
      if (consumed === undefined && topicMessages.length === 0) return;
      transaction = await owned.producer.transaction();
      // Sent in slices: kafkajs puts a partition's messages in one record batch, and the broker
      // refuses a batch over the topic's max.message.bytes (stateful operators can stage thousands
      // of changelog records in one batch). The slices share the transaction, in order.
      for (const slice of slices(topicMessages, SLICE_BYTES)) await transaction.sendBatch({ topicMessages: slice });
      if (consumed !== undefined) {
        await sendOffsets(transaction, {
          consumerGroupId: this.options.groupId,
          topics: [{ topic: consumed.topic, partitions: [{ partition: owned.partition, offset: consumed.offset.toString() }] }],
        });
      }
      await transaction.commit();
    } catch (err) {
      if (transaction?.isActive()) await transaction.abort().catch(() => undefined);
      owned.state.abort();
      await this.release(owned.partition);
      // kafkajs may already hold later positions for this task; rewind to what is committed.
      for (const [topic, offset] of owned.nextOffsets) this.consumer.seek({ topic, partition: owned.partition, offset: offset.toString() });
      throw err;
    }
    owned.state.commit();
  }

  private changelogMessages(owned: Owned<L>): TopicMessages[] {
    const byTopic = new Map<string, TopicMessages>();
    for (const change of owned.state.pendingChanges()) {
      const topic = this.options.changelogTopic(change.store);
      let entry = byTopic.get(topic);
      if (entry === undefined) byTopic.set(topic, (entry = { topic, messages: [] }));
      entry.messages.push({ key: change.key, value: change.value, partition: owned.partition });
    }
    return [...byTopic.values()];
  }

  /** Fence, then read the committed offsets, then restore state — in that order (see above). */
  private async acquire(partition: number, heartbeat: () => Promise<void>): Promise<Owned<L>> {
    const { inputTopics, groupId, stores } = this.options;
    const beat = setInterval(() => void heartbeat().catch(() => undefined), 3_000);
    try {
      const producer = this.options.kafka.producer({
        transactionalId: `${groupId}-task-${partition}`,
        idempotent: true,
        maxInFlightRequests: 1,
        transactionTimeout: 60_000,
      });
      await producer.connect();
      // InitProducerId is sent lazily by kafkajs; an empty transaction forces it now, so the
      // fence stands before offsets are read.
      const fence = await producer.transaction();
      await fence.abort();
      const committed = await this.admin.fetchOffsets({ groupId, topics: [...inputTopics] });
      const nextOffsets = new Map<string, bigint>();
      for (const { topic, partitions } of committed) {
        const offset = BigInt(partitions.find((p) => p.partition === partition)?.offset ?? '-1');
        const start = this.options.range?.get(topic)?.get(partition)?.from;
        if (offset >= 0n) nextOffsets.set(topic, offset);
        else if (start !== undefined) {
          // A fresh group would read from the beginning; a range starts where it says.
          nextOffsets.set(topic, start);
          this.consumer.seek({ topic, partition, offset: start.toString() });
        }
      }
      const state = new PartitionState(partition, stores);
      for (const store of stores) {
        const restored = await restoreChangelog(this.options.kafka, this.options.changelogTopic(store), [partition]);
        state.restore(store, restored.get(partition)!);
      }
      await this.options.prepare?.(partition, state);
      const owned: Owned<L> = { partition, state, producer, nextOffsets, local: this.options.assign(partition, state) };
      this.owned.set(partition, owned);
      this.checkRangeDone(owned);
      return owned;
    } finally {
      clearInterval(beat);
    }
  }

  /** Co-partitioning is a precondition, not a hope: refuse to start without it. */
  private async checkCoPartitioned(): Promise<void> {
    const { topics } = await this.admin.fetchTopicMetadata({ topics: [...this.options.inputTopics] });
    const counts = new Set(topics.map((t) => t.partitions.length));
    if (counts.size > 1) {
      throw new Error(`inputs ${topics.map((t) => `${t.name} (${t.partitions.length})`).join(', ')} must have the same number of partitions`);
    }
  }

  private async release(partition: number): Promise<void> {
    const owned = this.owned.get(partition);
    if (owned === undefined) return;
    this.owned.delete(partition);
    await owned.producer.disconnect().catch(() => undefined);
  }

  private withLock<T>(partition: number, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(partition) ?? Promise.resolve();
    const next = previous.then(work, work);
    this.locks.set(partition, next.catch(() => undefined));
    return next;
  }
}

const SLICE_BYTES = 512 * 1024;

/** Splits outputs into consecutive slices of about `maxBytes` (keys and values), order kept. */
export function slices(topicMessages: TopicMessages[], maxBytes: number): TopicMessages[][] {
  const out: TopicMessages[][] = [];
  let current: TopicMessages[] = [];
  let bytes = 0;
  for (const { topic, messages } of topicMessages) {
    for (const message of messages) {
      const size = sizeOf(message.key) + sizeOf(message.value) + 64;
      if (bytes > 0 && bytes + size > maxBytes) {
        out.push(current);
        current = [];
        bytes = 0;
      }
      const last = current[current.length - 1];
      if (last?.topic === topic) last.messages.push(message);
      else current.push({ topic, messages: [message] });
      bytes += size;
    }
  }
  if (current.length > 0) out.push(current);
  return out;
}

function sizeOf(value: Buffer | string | null | undefined): number {
  return value === null || value === undefined ? 0 : typeof value === 'string' ? Buffer.byteLength(value) : value.length;
}

/**
 * AddOffsetsToTxn can answer CONCURRENT_TRANSACTIONS while the coordinator is still completing
 * the previous transaction; kafkajs does not retry it (kafkajs#430), so this does, briefly.
 */
async function sendOffsets(transaction: Transaction, offsets: Parameters<Transaction['sendOffsets']>[0]): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await transaction.sendOffsets(offsets);
      return;
    } catch (err) {
      const type = (err as { type?: string }).type;
      if (type !== 'CONCURRENT_TRANSACTIONS' || attempt >= 10) throw err;
      await new Promise((r) => setTimeout(r, 50 * (attempt + 1)));
    }
  }
}

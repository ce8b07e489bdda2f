import type { Admin, Consumer, Kafka, KafkaMessage, Producer, TopicMessages, Transaction } from 'kafkajs';
import { mergeMap, Subscription } from 'rxjs';
import { Instrumentation } from '../contracts/events.ts';
import { logger } from '../lib/log.ts';
import { restoreChangelog, type RestoreProgress } from './changelog-restore.ts';
import { coPartitionAssigner } from './co-partition-assigner.ts';
import { errorKind, FlywheelError, RecordError, rejoinError, retriable } from './errors.ts';
import { kafkaBatches, type SourceBatch } from './source.ts';
import { PartitionState } from './state-store.ts';

/** What the processor knows of one input partition it owns. */
export interface PartitionContext<L> {
  partition: number;
  state: PartitionState;
  /** Built once per assignment over `state`, e.g. the partition's operator chain. */
  local: L;
  /**
   * Runs `effect` once the transaction `process` is building now commits, and never if it aborts
   * (a retried batch registers its effects again): for reports that must count a batch once.
   */
  afterCommit(effect: () => void): void;
}

/** What one call of `process` gets: a batch of one input topic's partition, or a tick. */
export type ProcessInput = { kind: 'records'; topic: string; messages: KafkaMessage[] } | { kind: 'tick'; now: number };

export interface ExactlyOnceOptions<L> {
  kafka: Kafka;
  /** Consumer group id; also the stem of the transactional ids (see `transactionalId`). */
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
  /** Runs once a taken partition's state is restored, before `assign` (e.g. seeding it); again after a failed batch dropped what it staged. */
  prepare?: (partition: number, state: PartitionState) => Promise<void>;
  /** Builds the partition-local part (e.g. operators) once its state is restored; rebuilt after a failed batch. */
  assign: (partition: number, state: PartitionState) => L;
  /**
   * Turns a batch (or a tick) into output records. State writes go through `context.state` and
   * are staged. A throw is classified by `retriable()` (streams/errors.ts): a retriable error
   * re-runs the batch after a backoff; any other is taken to be a record's fault and the
   * record is isolated and dead-lettered.
   */
  process: (input: ProcessInput, context: PartitionContext<L>) => Promise<TopicMessages[]>;
  /**
   * The dead letter for a record whose processing fails by itself with a non-retriable error,
   * written in place of its outputs (with its offset, in one transaction). Without it such a
   * record stops the processor for good (`stopped` rejects with a RecordError naming it).
   */
  deadLetter?: (message: KafkaMessage, topic: string, partition: number, error: Error) => TopicMessages | Promise<TopicMessages>;
  /** Backoff for retriable failures of one batch: `initialMs` doubling up to `maxMs`, at most `maxAttempts` in a row. */
  retry?: Partial<RetryPolicy>;
  /** Where retry and dead-letter lines go (default: the structured log, lib/log.ts, at warn). */
  log?: (line: string) => void;
  /**
   * Instrumentation (contracts/events.ts): batch.start / commit / abort, group.rebalance,
   * consumer.lag, state.restoring / restored, state.size and dead-letter (stage `process`).
   * Without it the processor emits into a bus of its own that nobody listens to (a map lookup
   * per event).
   */
  events?: Instrumentation;
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

export interface RetryPolicy {
  initialMs: number;
  maxMs: number;
  maxAttempts: number;
}

/** About 8 minutes of retrying one batch (0.25 s, 0.5 s, … 30 s, 30 s, …) before the processor gives up. */
const DEFAULT_RETRY: RetryPolicy = { initialMs: 250, maxMs: 30_000, maxAttempts: 20 };

/**
 * Group membership timing. A SIGKILLed worker's partitions move once the session expires (10 s)
 * plus a rejoin, instead of 30 s. Heartbeats go out every second also while a batch, a restore or
 * a retry backoff is under way (kafkajs itself only heartbeats between batches), so a long batch
 * does not cost the membership. The broker's group.min.session.timeout.ms is 6 s by default.
 */
const SESSION_TIMEOUT_MS = 10_000;
const HEARTBEAT_INTERVAL_MS = 1_000;
const REBALANCE_TIMEOUT_MS = 30_000;

/** What the processor did about failures since it started (for tests and metrics). */
export interface ProcessorCounters {
  /** Retriable failures retried (a batch re-run, a partition re-acquired), all partitions. */
  retries: number;
  /** Failing batches split to find the record at fault. */
  isolations: number;
  /** Records dead-lettered because their processing failed by itself. */
  deadLetters: number;
  /** Group joins of this processor's consumer (each rebalance it took part in). */
  groupJoins: number;
  /** kafkajs consumer crashes (each restarts the consumer: a rejoin). */
  crashes: number;
}

/** The transactional id of task `partition` of group `groupId`: `<groupId>-task-<partition>`, e.g. `flywheel.curate-task-2`. */
export function transactionalId(groupId: string, partition: number): string {
  return `${groupId}-task-${partition}`;
}

interface Owned<L> extends PartitionContext<L> {
  producer: Producer;
  /** Per input topic, the offset of the next record to process; anything before is committed. */
  nextOffsets: Map<string, bigint>;
  /** The transaction under way, if any: `release` aborts it before disconnecting. */
  transaction: Transaction | undefined;
  /** `afterCommit` effects of the transaction being built. */
  effects: (() => void)[];
}

/** A part of a batch still to commit; `poison` once it is one record that failed by itself. */
interface Pending {
  messages: KafkaMessage[];
  poison?: Error;
}

/** Where a batch failed: in `process` (nothing sent; state reset) or in the Kafka transaction (partition released). */
class StageError extends Error {
  constructor(
    readonly stage: 'process' | 'transaction',
    readonly error: Error,
  ) {
    super(error.message, { cause: error });
  }
}

/** Broker answers that mean the records themselves are too big or malformed: no retry sends them. */
const RECORD_REJECTED = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE']);

/**
 * Exactly-once consume → transform → produce on kafkajs.
 *
 * Per batch of one input partition, one Kafka transaction carries the outputs, the state
 * changes (changelog records) and the consumed offsets; downstream readers use read_committed,
 * so they see all of a batch or none of it.
 *
 * Fencing. kafkajs only speaks the old TxnOffsetCommit, which has no consumer-group-generation
 * fencing, so each task (partition p of the co-partitioned inputs, kept together by
 * coPartitionAssigner) gets its own transactional id (`transactionalId`: `<group>-task-<p>`, as
 * Kafka Streams' "exactly_once" v1 did). Whenever a partition is assigned, the processor
 * (1) creates that partition's producer, whose InitProducerId bumps the epoch: a zombie still
 * holding the partition can no longer commit, and its open transaction is aborted; (2) only then
 * reads the group's committed offset and (3) restores the partition's state from its changelog.
 * Offsets and state therefore describe exactly the last committed transaction, and records before
 * the committed offsets that kafkajs still delivers (it may fetch from an offset read before the fence,
 * see kafkajs#1046) are skipped.
 *
 * Failure, handled in place: no error reaches kafkajs (which would retry, then restart the
 * consumer and rebalance the whole group, again and again for a record that always fails).
 * - `process` throws: the staged state is dropped and the partition-local part rebuilt
 *   (`prepare`, `assign`); nothing was sent. A retriable error (streams/errors.ts) re-runs the
 *   batch after a backoff. Any other is a record's fault: the batch is split in halves, each
 *   committed in its own transaction if it can be, down to the one record that fails alone,
 *   which is dead-lettered (`deadLetter`, with the error's message as the reason) in its own
 *   transaction with its offset — once. The records around it are decided as usual.
 * - The transaction fails (broker unavailable, fenced, timed out): it is aborted, the partition
 *   released, and after a backoff taken again (fence, offsets, restore) and the batch's remaining
 *   records re-run. A broker refusing the records as too large counts as a record's fault.
 * Retries are counted (`counters`), logged (`partition 3: retry 4/20 in 2000 ms after
 * ECONNREFUSED: …`), and bounded: after `retry.maxAttempts` failures in a row the processor stops
 * for good (`stopped` rejects). A rebalance during a backoff or a restore hands the batch back to
 * kafkajs untouched, so the group is not held up. A crash at any point leaves either a committed
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
  private readonly ticking = new Set<number>();
  private readonly stopping = new AbortController();
  private readonly retryPolicy: RetryPolicy;
  private readonly log: (line: string) => void;
  private readonly events: Instrumentation;
  /** Per store, per partition: how far an unfinished restore got, so the next attempt resumes. */
  private readonly restoreProgress = new Map<string, Map<number, RestoreProgress>>();
  readonly counters: ProcessorCounters = { retries: 0, isolations: 0, deadLetters: 0, groupJoins: 0, crashes: 0 };

  constructor(private readonly options: ExactlyOnceOptions<L>) {
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      readUncommitted: false,
      sessionTimeout: SESSION_TIMEOUT_MS,
      rebalanceTimeout: REBALANCE_TIMEOUT_MS,
      heartbeatInterval: HEARTBEAT_INTERVAL_MS,
      maxBytesPerPartition: options.maxBatchBytes,
      partitionAssigners: [coPartitionAssigner],
    });
    this.admin = options.kafka.admin();
    this.retryPolicy = { ...DEFAULT_RETRY, ...options.retry };
    const warn = logger();
    this.log = options.log ?? ((line) => warn.warn(line));
    this.events = options.events ?? new Instrumentation();
    for (const store of options.stores) this.restoreProgress.set(store, new Map());
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
      this.counters.groupJoins++;
      const assigned = new Set(this.options.inputTopics.flatMap((t) => payload.memberAssignment[t] ?? []));
      this.options.onAssigned?.([...assigned].sort((a, b) => a - b));
      if (this.events.has('group.rebalance')) {
        this.events.emit('group.rebalance', {
          groupId: payload.groupId,
          memberId: payload.memberId,
          // kafkajs does not report the broker's generation id: this member's join count stands in.
          generationId: this.counters.groupJoins,
          partitions: this.options.inputTopics.flatMap((topic) => [...(payload.memberAssignment[topic] ?? [])].sort((a, b) => a - b).map((partition) => ({ topic, partition }))),
        });
      }
      for (const partition of [...this.owned.keys()]) {
        if (!assigned.has(partition)) void this.withLock(partition, () => this.release(partition));
      }
      // An unfinished restore of a partition that went elsewhere is not worth its memory.
      for (const progress of this.restoreProgress.values()) for (const partition of progress.keys()) if (!assigned.has(partition)) progress.delete(partition);
    });
    this.consumer.on(this.consumer.events.CRASH, () => void this.counters.crashes++);
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
          // One tick waiting per partition at most: a batch in a long backoff holds the lock.
          if (this.ticking.has(partition)) continue;
          this.ticking.add(partition);
          void this.withLock(partition, () => this.processTick(partition, now)).finally(() => this.ticking.delete(partition));
        }
      }, this.options.tickMs);
    }
    return { stopped };
  }

  async stop(): Promise<void> {
    clearInterval(this.ticker);
    this.stopping.abort(new Error('the processor is stopping'));
    this.subscription?.unsubscribe();
    await this.consumer.disconnect();
    await Promise.all([...this.owned.keys()].map((p) => this.withLock(p, () => this.release(p))));
    await this.admin.disconnect();
  }

  /**
   * One fetched batch, under its partition's lock, with heartbeats going out meanwhile. Settles
   * it when done, hands it back when a rebalance or a stop interrupted; rejects (failing the
   * processor for good) only when the retries are spent or a poison record has no dead letter.
   */
  private async handle(source: SourceBatch): Promise<void> {
    const rejoin = new AbortController();
    const beat = setInterval(() => {
      source.heartbeat().catch((err: unknown) => {
        // Heartbeat answers that mean this member must rejoin: the batch is handed back.
        if (rejoinError(err) !== undefined) rejoin.abort(err);
      });
    }, HEARTBEAT_INTERVAL_MS);
    const interrupted = AbortSignal.any([rejoin.signal, this.stopping.signal]);
    let outcome: 'done' | 'handed back';
    try {
      outcome = await this.withLock(source.batch.partition, () => this.processBatch(source, interrupted));
    } catch (err) {
      source.handBack();
      throw err;
    } finally {
      clearInterval(beat);
    }
    if (outcome === 'done') source.settle();
    else source.handBack();
  }

  private async processBatch({ batch, isRunning }: SourceBatch, interrupted: AbortSignal): Promise<'done' | 'handed back'> {
    const { topic, partition } = batch;
    const to = this.options.range?.get(topic)?.get(partition)?.to;
    // The batch's records still to commit, in offset order; a part that fails is split in two.
    let queue: Pending[] = [{ messages: batch.messages }];
    let attempt = 0;
    if (batch.messages.length > 0 && this.events.has('batch.start')) {
      this.events.emit('batch.start', { topic, partition, records: batch.messages.length, firstOffset: batch.firstOffset()!, lastOffset: batch.lastOffset() });
    }
    for (;;) {
      if (interrupted.aborted || !isRunning()) return 'handed back';
      let head: Pending | undefined;
      try {
        const owned = this.owned.get(partition) ?? (await this.acquire(partition, interrupted));
        const from = owned.nextOffsets.get(topic) ?? 0n;
        const wanted = (m: KafkaMessage) => BigInt(m.offset) >= from && (to === undefined || BigInt(m.offset) < to);
        queue = queue.map((p) => ({ ...p, messages: p.messages.filter(wanted) })).filter((p) => p.messages.length > 0);
        head = queue[0];
        if (head === undefined) {
          this.checkRangeDone(owned);
          if (this.events.has('consumer.lag')) {
            const next = owned.nextOffsets.get(topic);
            const lag = next === undefined ? 0 : Math.max(0, Number(BigInt(batch.highWatermark) - next));
            this.events.emit('consumer.lag', { topic, partition, groupId: this.options.groupId, lag });
          }
          return 'done';
        }
        if (head.poison !== undefined) await this.commitDeadLetter(owned, topic, head.messages[0]!, head.poison);
        else await this.commitRecords(owned, topic, head.messages);
        queue.shift();
        attempt = 0;
      } catch (err) {
        if (interrupted.aborted) return 'handed back';
        const cause = err instanceof StageError ? err.error : (err as Error);
        // `attempt + 1`: this failure's place among the failures in a row of the part at the head.
        const abort = (retried: boolean) => {
          if (this.events.has('batch.abort')) this.events.emit('batch.abort', { topic, partition, records: head?.messages.length ?? 0, reason: cause.message, retriable: retried, attempt: attempt + 1 });
        };
        // A poison record with nowhere to go: stop for good rather than loop.
        if (err instanceof RecordError) {
          abort(false);
          throw err;
        }
        if (head !== undefined && head.poison === undefined && err instanceof StageError && recordsAtFault(err)) {
          abort(false);
          queue.splice(0, 1, ...this.isolate(partition, head, err.error));
          continue;
        }
        abort(attempt + 1 <= this.retryPolicy.maxAttempts);
        if (++attempt > this.retryPolicy.maxAttempts) {
          throw new FlywheelError(`${this.options.groupId} partition ${partition}: giving up after ${this.retryPolicy.maxAttempts} retries: ${cause.message}`, { retriable: true, cause });
        }
        const delay = Math.min(this.retryPolicy.maxMs, this.retryPolicy.initialMs * 2 ** (attempt - 1));
        this.counters.retries++;
        this.log(`${this.options.groupId} partition ${partition}: retry ${attempt}/${this.retryPolicy.maxAttempts} in ${delay} ms after ${errorKind(cause)}: ${cause.message}`);
        await sleep(delay, interrupted);
      }
    }
  }

  /**
   * A part of a batch failed by the records' fault: its two halves go on separately, so the
   * records that can commit do, and the one that fails alone becomes poison (dead-lettered next).
   */
  private isolate(partition: number, failed: Pending, error: Error): Pending[] {
    const { messages } = failed;
    if (messages.length === 1) {
      this.log(`${this.options.groupId} partition ${partition}: record at offset ${messages[0]!.offset} fails by itself (${errorKind(error)}: ${error.message}); dead-lettering it`);
      return [{ messages, poison: error }];
    }
    this.counters.isolations++;
    this.log(`${this.options.groupId} partition ${partition}: batch at offsets ${messages[0]!.offset}–${messages[messages.length - 1]!.offset} fails (${errorKind(error)}: ${error.message}); splitting it to find the record at fault`);
    const half = Math.ceil(messages.length / 2);
    return [{ messages: messages.slice(0, half) }, { messages: messages.slice(half) }];
  }

  private async commitRecords(owned: Owned<L>, topic: string, messages: KafkaMessage[]): Promise<void> {
    const nextOffset = BigInt(messages[messages.length - 1]!.offset) + 1n;
    const started = performance.now();
    const { outputs, commitMs } = await this.transact(owned, { kind: 'records', topic, messages }, { topic, offset: nextOffset });
    owned.nextOffsets.set(topic, nextOffset);
    this.options.onCommit?.({ partition: owned.partition, records: messages.length, nextOffset });
    this.committed(owned, topic, messages.length, outputs, started, commitMs);
    this.checkRangeDone(owned);
  }

  /** The events of a committed transaction: batch.commit, then the partition's store sizes. */
  private committed(owned: Owned<L>, topic: string, records: number, outputs: number, started: number, commitMs: number): void {
    const { partition } = owned;
    if (this.events.has('batch.commit')) this.events.emit('batch.commit', { topic, partition, records, outputs, durationMs: performance.now() - started, commitMs });
    if (this.events.has('state.size')) for (const size of owned.state.sizes()) this.events.emit('state.size', { topic, partition, ...size });
  }

  /** The poison record's dead letter and its offset, in one transaction (with whatever `prepare` staged). */
  private async commitDeadLetter(owned: Owned<L>, topic: string, message: KafkaMessage, error: Error): Promise<void> {
    const { partition } = owned;
    if (this.options.deadLetter === undefined) {
      throw new RecordError(`${topic}[${partition}] offset ${message.offset} cannot be processed and there is no dead-letter topic: ${error.message}`, {
        record: { topic, partition, offset: message.offset },
        cause: error,
      });
    }
    const started = performance.now();
    const dead = await this.options.deadLetter(message, topic, partition, error);
    const nextOffset = BigInt(message.offset) + 1n;
    const sent = [dead, ...this.changelogMessages(owned)];
    const commitMs = await this.send(owned, sent, { topic, offset: nextOffset });
    owned.state.commit();
    owned.nextOffsets.set(topic, nextOffset);
    this.counters.deadLetters++;
    this.log(`${this.options.groupId} partition ${partition}: dead-lettered offset ${message.offset}: ${error.message}`);
    this.options.onCommit?.({ partition, records: 1, nextOffset });
    if (this.events.has('dead-letter')) this.events.emit('dead-letter', { topic, partition, offset: message.offset, stage: 'process', reason: error.message });
    this.committed(owned, topic, 1, dead.messages.length, started, commitMs);
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

  /** A tick is not retried in place: the next one comes soon. A failure is logged. */
  private async processTick(partition: number, now: number): Promise<void> {
    const owned = this.owned.get(partition);
    if (owned === undefined) return;
    try {
      await this.transact(owned, { kind: 'tick', now });
    } catch (err) {
      const cause = err instanceof StageError ? err.error : (err as Error);
      this.log(`${this.options.groupId} partition ${partition}: tick failed (${errorKind(cause)}: ${cause.message})`);
    }
  }

  /**
   * One transaction: the outputs of `input`, the state changes it staged and, for records, the
   * consumed offset. A tick that changed nothing commits nothing. Throws a StageError saying
   * where it failed, after cleaning up for the retry: a failed `process` leaves the state as
   * committed and the local part rebuilt; a failed transaction is aborted and the partition
   * released.
   */
  private async transact(owned: Owned<L>, input: ProcessInput, consumed?: { topic: string; offset: bigint }): Promise<{ outputs: number; commitMs: number }> {
    let outputs: TopicMessages[];
    owned.effects = [];
    try {
      outputs = await this.options.process(input, owned);
    } catch (err) {
      owned.effects = [];
      await this.reset(owned);
      throw new StageError('process', err as Error);
    }
    const topicMessages = [...outputs, ...this.changelogMessages(owned)];
    const effects = owned.effects;
    owned.effects = [];
    if (consumed === undefined && topicMessages.length === 0) {
      for (const effect of effects) effect();
      return { outputs: 0, commitMs: 0 };
    }
    const commitMs = await this.send(owned, topicMessages, consumed);
    owned.state.commit();
    for (const effect of effects) effect();
    return { outputs: outputs.reduce((n, t) => n + t.messages.length, 0), commitMs };
  }

  /**
   * Sends `topicMessages` and the consumed offset in one transaction and commits it, returning how
   * long that took in ms; on failure aborts and releases.
   */
  private async send(owned: Owned<L>, topicMessages: TopicMessages[], consumed?: { topic: string; offset: bigint }): Promise<number> {
    const started = performance.now();
    try {
      const transaction = (owned.transaction = await owned.producer.transaction());
      // Sent in slices: kafkajs puts a partition's messages in one record batch, and the broker
      // refuses a batch over the topic's max.message.bytes (stateful operators can stage thousands
      // of changelog records in one batch). The slices share the transaction, in order.
      const outputs = async () => {
        for (const slice of slices(topicMessages, SLICE_BYTES)) await transaction.sendBatch({ topicMessages: slice });
      };
      // The offsets (AddOffsetsToTxn, then TxnOffsetCommit) go alongside the outputs
      // (AddPartitionsToTxn, then Produce), not after them: each is a round trip the commit
      // waits for, and neither depends on the other; EndTxn commits both or neither. Both are
      // settled before the commit or the abort.
      const [sent, offsets] = await Promise.allSettled([
        outputs(),
        consumed === undefined
          ? Promise.resolve()
          : sendOffsets(transaction, {
              consumerGroupId: this.options.groupId,
              topics: [{ topic: consumed.topic, partitions: [{ partition: owned.partition, offset: consumed.offset.toString() }] }],
            }),
      ]);
      if (sent.status === 'rejected') throw sent.reason;
      if (offsets.status === 'rejected') throw offsets.reason;
      await transaction.commit();
      owned.transaction = undefined;
      return performance.now() - started;
    } catch (err) {
      owned.state.abort();
      // Whether the commit landed is unknown: the partition is taken again (fence, offsets, restore).
      await this.release(owned.partition);
      throw new StageError('transaction', err as Error);
    }
  }

  /** After a failed `process`: drop what it staged, and rebuild what it may have changed in memory. */
  private async reset(owned: Owned<L>): Promise<void> {
    owned.state.abort();
    try {
      await this.options.prepare?.(owned.partition, owned.state);
      owned.local = this.options.assign(owned.partition, owned.state);
    } catch {
      // Taken again from scratch by the next attempt.
      await this.release(owned.partition);
    }
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

  /**
   * Fence, then read the committed offsets, then restore state — in that order (see above).
   * A restore interrupted (rebalance, stop) or failed keeps its progress for the next attempt.
   */
  private async acquire(partition: number, interrupted: AbortSignal): Promise<Owned<L>> {
    const { inputTopics, groupId, stores } = this.options;
    const producer = this.options.kafka.producer({
      transactionalId: transactionalId(groupId, partition),
      idempotent: true,
      // Two: the offsets' request may wait on the connection next to the outputs' (see `send`),
      // so the broker takes it as soon as it answers the other, without a client round trip in
      // between. Produce requests never overlap: a transaction sends its slices one after another.
      maxInFlightRequests: 2,
      transactionTimeout: 60_000,
      retry: SEND_RETRY,
    });
    try {
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
      const restoreStarted = performance.now();
      if (stores.length > 0 && this.events.has('state.restoring')) this.events.emit('state.restoring', { topic: inputTopics[0]!, partition, stores: stores.length });
      const restored = await Promise.all(
        stores.map((store) =>
          restoreChangelog(this.options.kafka, this.options.changelogTopic(store), [partition], { admin: this.admin, progress: this.restoreProgress.get(store)!, signal: interrupted }),
        ),
      );
      stores.forEach((store, i) => {
        state.restore(store, restored[i]!.get(partition)!);
        this.restoreProgress.get(store)!.delete(partition);
      });
      if (stores.length > 0 && this.events.has('state.restored')) {
        const records = restored.reduce((n, r) => n + r.get(partition)!.size, 0);
        this.events.emit('state.restored', { topic: inputTopics[0]!, partition, stores: stores.length, records, durationMs: performance.now() - restoreStarted });
      }
      await this.options.prepare?.(partition, state);
      const owned: Owned<L> = {
        partition,
        state,
        producer,
        nextOffsets,
        transaction: undefined,
        local: this.options.assign(partition, state),
        effects: [],
        afterCommit: (effect) => void owned.effects.push(effect),
      };
      this.owned.set(partition, owned);
      this.checkRangeDone(owned);
      return owned;
    } catch (err) {
      await producer.disconnect().catch(() => undefined);
      throw err;
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

  /**
   * Gives the partition up. An open transaction is aborted first: left open, it would hold every
   * read_committed reader of the outputs until the transaction timeout (60 s).
   */
  private async release(partition: number): Promise<void> {
    const owned = this.owned.get(partition);
    if (owned === undefined) return;
    this.owned.delete(partition);
    if (owned.transaction?.isActive()) await owned.transaction.abort().catch(() => undefined);
    owned.transaction = undefined;
    await owned.producer.disconnect().catch(() => undefined);
  }

  private withLock<T>(partition: number, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(partition) ?? Promise.resolve();
    const next = previous.then(work, work);
    this.locks.set(partition, next.catch(() => undefined));
    return next;
  }
}

/** Whether a batch failed by its records' fault (isolate them) rather than the services' (retry). */
function recordsAtFault(err: StageError): boolean {
  if (err.stage === 'process') return !retriable(err.error);
  return RECORD_REJECTED.has((err.error as { type?: string }).type ?? '');
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

const SLICE_BYTES = 512 * 1024;

/**
 * The transactional producers' send retries start at 20 ms instead of the client's 300 ms.
 * A transaction's first send to a partition (AddPartitionsToTxn) right after the previous commit
 * is often answered CONCURRENT_TRANSACTIONS while the coordinator still writes that commit's
 * markers, a few ms; kafkajs retries it with the send retrier, so 300 ms there stalled the
 * partition — and, since kafkajs fetches again only once every batch of a fetch is settled,
 * every partition — about one transaction in 25 (Kafka's Java producer retries this case after
 * 20 ms too). The backoff still doubles to the client's 10 s; retries stay unbounded, as kafkajs
 * has them for an idempotent producer (the transaction timeout ends a send that never lands).
 */
const SEND_RETRY = { initialRetryTime: 20, retries: Number.MAX_SAFE_INTEGER };

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
      // Markers take a few ms to write: retry soon, then back off (about 4 s in all).
      await new Promise((r) => setTimeout(r, Math.min(1000, 10 * 2 ** attempt)));
    }
  }
}

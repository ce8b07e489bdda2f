import type { Admin, Batch, Consumer, Producer } from 'kafkajs';
import type { Decision, Label, ModelUpdate } from '../contracts/records.ts';
import { logger, type Logger } from '../lib/log.ts';
import { AnnouncedVersions, type ModelVersions } from '../operators/filter/staleness-filter.ts';
import type { BroadcastReader } from '../streams/broadcast.ts';
import { coPartitionAssigner } from '../streams/co-partition-assigner.ts';
import { decisionSerde, labelSerde, modelUpdateSerde, type TopicSerde } from '../streams/serde.ts';
import { ReplayBuffer, replayDefaults, StarvationMonitor, starvationDefaults, stalenessDefaults, type LagFunction } from './admission.ts';
import { readCheckpointFile, type Checkpoint } from './checkpoint.ts';
import { Batcher } from './client/batching.ts';
import { FetchBuffer } from './client/buffer.ts';
import { Committer, type ClientCheckpointAdmission } from './client/commit.ts';
import { decodeMessage, type Decoders, type Entry } from './client/decode.ts';
import { newCounters, type Counters } from './client/metrics.ts';
import { Positions, tpKey } from './client/positions.ts';
import { followModelUpdates, Publisher, StarvationWatch } from './client/publish.ts';
import type { BatchOptions, CheckpointWriter, CommitResult, Consumed, TrainerClientOptions, TrainerMetrics, TrainingBatch } from './client/types.ts';

export type {
  AdmissionOptions,
  BatchOptions,
  CheckpointWriter,
  CommitResult,
  Consumed,
  RejectedRecord,
  ReplayedRecord,
  SkippedRecord,
  TrainerClientOptions,
  TrainerMetrics,
  TrainerRecord,
  TrainingBatch,
} from './client/types.ts';

/**
 * The trainer client: what any trainer process (this repo's reference trainer, or a GPU trainer
 * that embeds the same protocol) uses to read training data from Flywheel exactly once.
 *
 *   const client = await TrainerClient.open({ kafka, registry, catalog, groupId, trainer, checkpointPath });
 *   const model = client.restored ? load(client.restored) : fresh();
 *   for await (const batch of client.batches({ maxRecords: 256, maxWaitMs: 1000 })) {
 *     train(model, batch.decisions);
 *     await client.commit(batch, (cp) => cp.write(model.state(), model.arrays()));
 *   }
 *
 * Protocol. `commit(batch, checkpoint)` first has the trainer write its checkpoint — its model
 * state together with the offsets the batch covers, through `cp.write`, which replaces the
 * checkpoint file atomically — and only then commits those offsets to the consumer group. On
 * `open`, the checkpoint file is read and its offsets win: every partition it names is read
 * from exactly that offset (a seek), whatever the group has committed. So a trainer that dies
 * anywhere — before the checkpoint, between checkpoint and Kafka commit, or after — resumes
 * exactly after its last checkpoint with the model state of that checkpoint: no example
 * trained twice, none skipped. The Kafka commit is for monitoring (lag) and for partitions the
 * checkpoint does not know.
 *
 * Reads are read_committed: the pipeline writes the accepted/decisions topics in transactions,
 * and records of aborted transactions are never seen.
 *
 * Positions are kept exact on kafkajs 2.2.4, which has no manual assignment, by seeking on every
 * assignment and checking where each fetched batch starts (client/positions.ts).
 * Fetching runs ahead of the trainer by a bounded buffer (`bufferRecords`); beyond it the
 * consumer pauses (client/buffer.ts). Heartbeats never depend on the trainer's speed.
 *
 * Several consumers in one group (see docs/trainer-contract.md): partitions are split between
 * them, each member checkpoints what it trained, and its own position wins for partitions it
 * has a position for. Per member, each record it reads is trained once by its model; but when
 * a partition moves between members, the records the old owner read after its last commit are
 * read again by the new owner (from the group's committed offset), so across the group the
 * guarantee is at-least-once. One consumer per group is the exact case.
 *
 * The parts, by responsibility (trainers/client/): types.ts (the public types, re-exported
 * here), positions.ts (positions and seek repair), decode.ts, buffer.ts (the bounded fetch
 * buffer), batching.ts (batches, admission, replay), commit.ts (the commit protocol),
 * publish.ts (model updates, control messages, the starvation watch), metrics.ts. This class
 * wires them to one kafkajs consumer, producer and admin client.
 */

export class TrainerClient {
  /** The checkpoint read at open: the trainer's state to resume from (undefined: start fresh). */
  readonly restored: Checkpoint | undefined;

  private readonly consumer: Consumer;
  private readonly producer: Producer;
  private readonly admin: Admin;
  private readonly topics: string[];
  private readonly decoders: Decoders;
  private readonly log: Logger;
  private readonly versions: ModelVersions | LagFunction | null;
  /** The versions this client follows itself (from model-updates), when none were injected. */
  private readonly localVersions: AnnouncedVersions | null;
  private readonly replay: ReplayBuffer<Consumed<Decision>> | null;
  private readonly monitor: StarvationMonitor | null;
  private readonly counters: Counters;
  private readonly positions: Positions;
  private readonly buffer: FetchBuffer;
  private readonly batcher: Batcher;
  private readonly committer: Committer;
  private readonly publisher: Publisher;
  private readonly starvation: StarvationWatch | null;
  private joined = false;
  private announcements: BroadcastReader | undefined;

  private closed = false;
  private iterating = false;
  private interrupted = false;
  private failure: Error | undefined;

  private constructor(
    private readonly options: TrainerClientOptions,
    private readonly serdes: { decisions: TopicSerde<Decision> | null; labels: TopicSerde<Label> | null; modelUpdates: TopicSerde<ModelUpdate> },
    restored: Checkpoint | undefined,
  ) {
    this.restored = restored;
    const { kafka, catalog } = options;
    const choice = options.decisions === undefined ? 'accepted' : options.decisions;
    const decisionTopic = choice === null ? null : choice === 'accepted' ? catalog.accepted : catalog.decisions;
    this.topics = [...(decisionTopic ? [decisionTopic] : []), ...(options.labels ? [catalog.labels] : [])];
    if (this.topics.length === 0) throw new Error('trainer client: nothing to read (decisions: null and labels: false)');
    this.decoders = { decisionTopic, decisions: serdes.decisions, labels: serdes.labels };
    this.log = logger({ component: `trainer ${options.trainer}` });
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      readUncommitted: false,
      sessionTimeout: options.sessionTimeout ?? 10_000,
      heartbeatInterval: options.heartbeatInterval ?? 1_000,
      rebalanceTimeout: 30_000,
      maxBytesPerPartition: options.maxBytesPerPartition ?? 1_048_576,
      maxWaitTimeInMs: options.maxWaitTimeInMs ?? 500,
      allowAutoTopicCreation: false,
      // As every Flywheel consumer: a decision's partition and its label's partition go to the
      // same trainer, and a join before the topics' metadata is there is retried, not left idle.
      partitionAssigners: [coPartitionAssigner],
    });
    this.producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
    this.admin = kafka.admin();

    const a = options.admission ?? {};
    const staleness = a.staleness ? { ...stalenessDefaults, ...a.staleness } : null;
    const replayConfig = a.replay ? { ...replayDefaults, ...a.replay } : null;
    const saved = (restored?.admission as ClientCheckpointAdmission | null | undefined)?.replay ?? null;
    this.replay = replayConfig === null ? null : saved ? ReplayBuffer.fromSnapshot(replayConfig, saved) : new ReplayBuffer(replayConfig);
    const starvationConfig = a.starvation ? { ...starvationDefaults, ...a.starvation } : null;
    this.monitor = starvationConfig ? new StarvationMonitor(options.trainer, starvationConfig, Date.now()) : null;
    this.localVersions = staleness && options.versions === undefined ? new AnnouncedVersions() : null;
    this.versions = options.versions ?? this.localVersions;

    this.counters = newCounters(options.trainer, options.groupId);
    this.positions = new Positions(restored?.offsets ?? []);
    const topics = this.topics.map((t) => ({ topic: t }));
    this.buffer = new FetchBuffer(options.bufferRecords ?? 5000, { pause: () => this.consumer.pause(topics), resume: () => this.consumer.resume(topics) });
    const versions = this.versions;
    this.batcher = new Batcher(this.buffer, this.positions, { staleness, versions: () => versions, replay: this.replay, monitor: this.monitor }, this.counters);
    this.committer = new Committer({
      checkpointPath: options.checkpointPath,
      groupId: options.groupId,
      consumer: this.consumer,
      positions: this.positions,
      batcher: this.batcher,
      counters: this.counters,
      failure: () => this.failure,
      log: this.log,
    });
    this.publisher = new Publisher(this.producer, catalog, serdes.modelUpdates, this.localVersions);
    this.starvation = this.monitor && starvationConfig ? new StarvationWatch(options.trainer, this.monitor, starvationConfig, this.publisher, this.counters, this.log) : null;
  }

  /** Reads the checkpoint, connects, joins the group and starts fetching. */
  static async open(options: TrainerClientOptions): Promise<TrainerClient> {
    const { registry, catalog } = options;
    const choice = options.decisions === undefined ? 'accepted' : options.decisions;
    const [decisions, labels, modelUpdates] = await Promise.all([
      choice === null ? null : decisionSerde(registry, choice === 'accepted' ? catalog.accepted : catalog.decisions),
      options.labels ? labelSerde(registry, catalog.labels) : null,
      modelUpdateSerde(registry, catalog.modelUpdates),
    ]);
    const restored = await readCheckpointFile(options.checkpointPath);
    if (restored !== undefined && restored.group !== options.groupId) {
      throw new Error(`checkpoint ${options.checkpointPath} belongs to consumer group "${restored.group}", not "${options.groupId}"`);
    }
    const client = new TrainerClient(options, { decisions, labels, modelUpdates }, restored);
    try {
      await client.start();
    } catch (err) {
      await client.close().catch(() => undefined);
      throw err;
    }
    return client;
  }

  private async start(): Promise<void> {
    await this.admin.connect();
    const existing = new Set(await this.admin.listTopics());
    const missing = [...this.topics, this.options.catalog.modelUpdates].filter((t) => !existing.has(t));
    if (missing.length > 0) throw new Error(`trainer client: topics ${missing.join(', ')} do not exist (the pipeline creates them: flywheel run)`);
    await this.producer.connect();
    if (this.localVersions !== null) {
      this.announcements = await followModelUpdates(this.options.kafka, this.options.catalog.modelUpdates, this.serdes.modelUpdates, this.localVersions, this.log);
    }
    this.consumer.on(this.consumer.events.GROUP_JOIN, ({ payload }) => this.onAssignment(payload.memberAssignment));
    this.consumer.on(this.consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      if (payload.batchSize === 0) {
        const tp = tpKey(payload.topic, payload.partition);
        this.positions.skipFiltered(tp, payload.firstOffset, payload.lastOffset, this.buffer.has(tp));
      }
    });
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => {
      if (!payload.restart) this.fail(payload.error);
    });
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: this.topics, fromBeginning: this.options.fromBeginning ?? true });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: async ({ batch, resolveOffset, isRunning, isStale }) => {
        if (this.closed || !isRunning() || isStale()) return;
        await this.onBatch(batch, resolveOffset, isStale);
      },
    });
  }

  // ─── Fetching ─────────────────────────────────────────────────────────────────────────────

  /** A new assignment: seek the kept partitions to our position; drop what was fetched for partitions lost. */
  private onAssignment(assignment: Record<string, number[]>): void {
    // The starvation clock starts with the first assignment: a trainer still joining its group
    // (which takes seconds on a loaded broker) is not yet starved of data.
    if (!this.joined) {
      this.joined = true;
      this.monitor?.restartClock(Date.now());
      this.starvation?.start();
    }
    const seeks = this.positions.assign(assignment, (tp) => this.buffer.pendingEnd(tp));
    this.buffer.retain((tp) => this.positions.isAssigned(tp));
    for (const s of seeks) this.consumer.seek({ topic: s.topic, partition: s.partition, offset: s.offset.toString() });
    this.buffer.maybeResume();
  }

  private async onBatch(batch: Batch, resolveOffset: (offset: string) => void, isStale: () => boolean): Promise<void> {
    const { topic, partition } = batch;
    const tp = tpKey(topic, partition);
    const fetchedRaw = (batch as Batch & { fetchedOffset?: string }).fetchedOffset;
    if (fetchedRaw === undefined) throw new Error('kafkajs batch has no fetchedOffset: unsupported kafkajs version');
    const fetched = BigInt(fetchedRaw);
    const verdict = this.positions.check(tp, fetched);
    if (verdict.kind === 'unreachable') {
      this.fail(new Error(`${topic}[${partition}]: offset ${verdict.expected} cannot be read (kafkajs keeps fetching from ${fetched}); records there were probably deleted by retention — resuming would skip them`));
      return;
    }
    if (verdict.kind === 'seek') {
      // kafkajs fetched past our position (the seek has not taken effect yet): never skip.
      this.consumer.seek({ topic, partition, offset: verdict.offset.toString() });
      return;
    }
    const { from } = verdict;
    const generation = this.positions.generation;
    const entries: Entry[] = [];
    for (const message of batch.messages) {
      const offset = BigInt(message.offset);
      if (offset < from) continue;
      entries.push(await decodeMessage(this.decoders, topic, partition, message, offset));
    }
    // A rebalance or a seek while decoding: this batch may no longer be ours; kafkajs refetches.
    if (this.closed || generation !== this.positions.generation || isStale()) return;
    const last = BigInt(batch.lastOffset()) + 1n;
    const end = last > from ? last : from;
    this.positions.fetched(topic, partition, from, end);
    this.buffer.push({ tp, entries, next: 0, end });
    resolveOffset(batch.lastOffset());
    this.batcher.notify();
  }

  // ─── Batches ──────────────────────────────────────────────────────────────────────────────

  /** Training batches until `close()`; throws if the consumer fails for good. One iteration at a time. */
  async *batches(options: BatchOptions = {}): AsyncGenerator<TrainingBatch, void, undefined> {
    const maxRecords = options.maxRecords ?? 256;
    const maxWaitMs = options.maxWaitMs ?? 1000;
    if (maxRecords < 1) throw new Error('maxRecords must be at least 1');
    if (this.iterating) throw new Error('trainer client: batches() is already being iterated');
    this.iterating = true;
    this.interrupted = false;
    const lifecycle = { failure: () => this.failure, ended: () => this.closed || this.interrupted };
    try {
      for (;;) {
        const batch = await this.batcher.next({ maxRecords, maxWaitMs, emptyBatches: options.emptyBatches ?? false }, lifecycle);
        if (batch === undefined) return;
        yield batch;
      }
    } finally {
      this.iterating = false;
    }
  }

  /**
   * A batch with no records at the current position: to checkpoint between batches (e.g. on
   * shutdown) when every batch handed out has been trained.
   */
  emptyBatch(): TrainingBatch {
    return this.batcher.form(0, Date.now(), false);
  }

  // ─── Commit ───────────────────────────────────────────────────────────────────────────────

  /**
   * Checkpoint, then Kafka commit (client/commit.ts). `checkpoint` must call
   * `cp.write(state, arrays)` with the model state after training on everything up to `batch`
   * (and nothing after it); if it throws, or returns without writing, nothing is committed and
   * the error propagates — the previous checkpoint stands. Commits are serialised. A Kafka
   * commit failure after a written checkpoint is reported in the result and the metrics, not thrown.
   */
  commit(batch: TrainingBatch, checkpoint: (cp: CheckpointWriter) => Promise<void>): Promise<CommitResult> {
    return this.committer.commit(batch, checkpoint);
  }

  // ─── Publishing ───────────────────────────────────────────────────────────────────────────

  /** Publishes a model update (Avro, registry wire format) keyed by model name, and waits for the broker. */
  announce(update: ModelUpdate): Promise<void> {
    return this.publisher.announce(update);
  }

  /** Publishes a JSON message on the control topic. */
  publishControl(key: string, value: object): Promise<void> {
    return this.publisher.publishControl(key, value);
  }

  /** Publishes a JSON message on any existing topic (e.g. trainer progress). */
  publishJson(topic: string, key: string, value: object): Promise<void> {
    return this.publisher.publishJson(topic, key, value);
  }

  async topicExists(topic: string): Promise<boolean> {
    return (await this.admin.listTopics()).includes(topic);
  }

  // ─── State ────────────────────────────────────────────────────────────────────────────────

  /** A snapshot of the client's counters, admission and starvation state. */
  get metrics(): TrainerMetrics {
    return {
      ...this.counters,
      rejected: { ...this.counters.rejected },
      buffered: this.buffer.size,
      paused: this.buffer.paused,
      assigned: this.positions.assignedPositions(),
      replayBuffer: this.replay?.size ?? 0,
      starvation: this.monitor?.status(Date.now()) ?? null,
    };
  }

  /** Policy-version lags as this client knows them (from model-updates, or the injected function). */
  lag(model: string, version: string): number | undefined {
    const v = this.versions;
    if (v === null) return undefined;
    return typeof v === 'function' ? v(model, version) : v.lag(model, version);
  }

  /**
   * Ends the current `batches()` iteration after the batch in hand (or at once, if it is
   * waiting), keeping the client open: commits and announcements still work.
   */
  interrupt(): void {
    this.interrupted = true;
    this.batcher.notify();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.batcher.notify();
  }

  /**
   * Leaves the group and disconnects. Commits nothing: what was not committed is read again
   * by the next run, from the checkpoint.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.starvation?.stop();
    this.batcher.notify();
    await this.committer.settled;
    await Promise.allSettled([this.consumer.disconnect(), this.producer.disconnect(), this.announcements?.stop()]);
    await this.admin.disconnect().catch(() => undefined);
  }
}

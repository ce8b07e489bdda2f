import type { Admin, Batch, Consumer, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { SchemaRegistryClient } from '@confluentinc/schemaregistry';
import { AnnouncedVersions, type ModelVersions } from '../operators/filter/staleness-filter.ts';
import { BroadcastReader } from '../streams/broadcast.ts';
import { coPartitionAssigner } from '../streams/co-partition-assigner.ts';
import { RecordError } from '../streams/errors.ts';
import type { Decision, Label, ModelUpdate } from '../contracts/records.ts';
import { decisionSerde, labelSerde, modelUpdateSerde, type TopicSerde } from '../streams/serde.ts';
import type { TopicCatalog } from '../streams/topics.ts';
import {
  admitByStaleness,
  ReplayBuffer,
  replayDefaults,
  StarvationMonitor,
  starvationDefaults,
  stalenessDefaults,
  type LagFunction,
  type ReplayConfig,
  type ReplaySnapshot,
  type StalenessConfig,
  type StarvationConfig,
  type StarvationSignal,
  type StarvationStatus,
} from './admission.ts';
import { readCheckpointFile, writeCheckpointFile, type Checkpoint, type CheckpointArray, type TopicPartitionOffset } from './checkpoint.ts';

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
 * How positions are kept exact on kafkajs 2.2.4 (which has no manual assignment):
 * - The client keeps its own position per topic-partition: `yielded` (next offset not yet
 *   handed to the trainer; what a batch's `offsets` snapshot) and `fetchPos` (next offset it
 *   expects kafkajs to fetch).
 * - On every assignment (GROUP_JOIN, emitted synchronously before kafkajs fetches), each
 *   partition with a known position is sought there; without one, kafkajs starts from the
 *   group's committed offset (or the beginning).
 * - Each fetched batch carries the offset it was fetched from (kafkajs's `fetchedOffset`). A
 *   batch fetched beyond the expected position (kafkajs not yet at the sought offset) is
 *   dropped and the seek repeated; records before the expected position are dropped. Batches
 *   of only aborted records/transaction markers, which kafkajs consumes without calling the
 *   handler, are followed through its END_BATCH_PROCESS event. A position that stays
 *   unreachable (records deleted by retention) fails the client rather than skip silently.
 * Fetching runs ahead of the trainer by a bounded buffer (`bufferRecords`); beyond it the
 * consumer pauses. Heartbeats never depend on the trainer's speed.
 *
 * Several consumers in one group (see docs/trainer-contract.md): partitions are split between
 * them, each member checkpoints what it trained, and its own position wins for partitions it
 * has a position for. Per member, each record it reads is trained once by its model; but when
 * a partition moves between members, the records the old owner read after its last commit are
 * read again by the new owner (from the group's committed offset), so across the group the
 * guarantee is at-least-once. One consumer per group is the exact case.
 */

export interface Consumed<T> {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  /** The Kafka record timestamp, epoch ms. */
  timestamp: number;
  value: T;
}

export type TrainerRecord = ({ kind: 'decision' } & Consumed<Decision>) | ({ kind: 'label' } & Consumed<Label>);

export interface RejectedRecord {
  record: TrainerRecord;
  reason: string;
  lag: number | undefined;
}

export interface SkippedRecord {
  topic: string;
  partition: number;
  offset: string;
  reason: string;
}

export interface ReplayedRecord {
  record: Consumed<Decision>;
  /** Replays of this record so far, this one included. */
  uses: number;
  priority: number;
}

/** One training batch. Its records are covered by `offsets` once committed. */
export interface TrainingBatch {
  /** 1, 2, … per client. */
  readonly seq: number;
  /** Fresh admitted records in arrival order (offset order within each partition). */
  readonly records: readonly TrainerRecord[];
  /** The admitted Decision records of `records`. */
  readonly decisions: ReadonlyArray<Consumed<Decision>>;
  /** The Label records of `records` (labels are not subject to admission). */
  readonly labels: ReadonlyArray<Consumed<Label>>;
  /** Records drawn again from the replay buffer (not new input: they move no offset). */
  readonly replayed: readonly ReplayedRecord[];
  /** Consumed but not admitted: covered by the offsets, never trained. */
  readonly rejected: readonly RejectedRecord[];
  /** Not decodable (not in the registry's wire format, or not the expected record). */
  readonly skipped: readonly SkippedRecord[];
  /**
   * Per topic-partition, the next offset after this batch — cumulative over everything the
   * client has handed out (and everything the restored checkpoint covered): what a commit of
   * this batch records.
   */
  readonly offsets: readonly TopicPartitionOffset[];
}

export interface CheckpointWriter {
  /** The offsets this checkpoint covers (those of the batch being committed). */
  readonly offsets: readonly TopicPartitionOffset[];
  readonly batch: number;
  /**
   * Writes the checkpoint file atomically: `state` (JSON) and `arrays` (stored binary, bit
   * exact) with `offsets`. Call it once the model reflects every record up to the batch.
   */
  write(state: unknown, arrays?: Record<string, CheckpointArray>): Promise<void>;
}

export interface CommitResult {
  offsets: readonly TopicPartitionOffset[];
  /** The Kafka commit is best effort after the checkpoint (the checkpoint is authoritative). */
  kafka: 'committed' | 'failed' | 'nothing-assigned';
}

export interface TrainerMetrics {
  trainer: string;
  group: string;
  batches: number;
  /** Records consumed (admitted + rejected + skipped). */
  consumed: number;
  admitted: number;
  rejected: Record<string, number>;
  replayed: number;
  skipped: number;
  checkpoints: number;
  kafkaCommits: number;
  kafkaCommitFailures: number;
  lastKafkaCommitError: string | null;
  /** Records fetched and waiting for the trainer. */
  buffered: number;
  paused: boolean;
  /** The partitions this member holds, with the position it has handed out to (null: nothing read yet). */
  assigned: Array<{ topic: string; partition: number; position: string | null }>;
  replayBuffer: number;
  starvation: StarvationStatus | null;
  /** The last starvation signal (also published on the control topic when configured). */
  lastStarvationSignal: StarvationSignal | null;
}

export interface AdmissionOptions {
  staleness?: Partial<StalenessConfig>;
  replay?: Partial<ReplayConfig>;
  starvation?: Partial<StarvationConfig>;
}

export interface TrainerClientOptions {
  kafka: Kafka;
  registry: SchemaRegistryClient;
  catalog: TopicCatalog;
  /** The consumer group: one per trainer (job), shared only by members training one model. */
  groupId: string;
  /** This trainer's name: in control messages and client ids. */
  trainer: string;
  /** The checkpoint file (its directory must exist). */
  checkpointPath: string;
  /** Which Decision topic to read: the accepted samples (default), every decision, or none. */
  decisions?: 'accepted' | 'decisions' | null;
  /** Also read the labels topic. */
  labels?: boolean;
  /** Without a checkpoint or committed offset: from the beginning (default) or only new records. */
  fromBeginning?: boolean;
  admission?: AdmissionOptions;
  /**
   * Policy versions for the staleness admission. Default: the client follows the
   * model-updates topic (every announcement, in order) when staleness admission is configured.
   */
  versions?: ModelVersions | LagFunction;
  /** Records fetched ahead of the trainer before the consumer pauses (default 5000). */
  bufferRecords?: number;
  sessionTimeout?: number;
  heartbeatInterval?: number;
  maxBytesPerPartition?: number;
  /** How long a fetch waits for data at the broker (default 500): also bounds how long close() waits. */
  maxWaitTimeInMs?: number;
}

export interface BatchOptions {
  /** Largest number of fresh records in one batch (default 256). */
  maxRecords?: number;
  /** A batch is handed out with fewer records once this long passed (default 1000). */
  maxWaitMs?: number;
  /** Hand out empty batches when nothing arrived within maxWaitMs (default false: wait on). */
  emptyBatches?: boolean;
}

type Entry = { kind: 'record'; offset: bigint; record: TrainerRecord } | { kind: 'skipped'; offset: bigint; skipped: SkippedRecord };

/** One fetched kafkajs batch, decoded, waiting to be taken. */
interface Chunk {
  tp: string;
  topic: string;
  partition: number;
  entries: Entry[];
  next: number;
  /** The offset after the fetched batch (past trailing markers): where the partition stands once it is taken. */
  end: bigint;
}

interface ClientCheckpointAdmission {
  replay: ReplaySnapshot<Consumed<Decision>> | null;
}

const tpKey = (topic: string, partition: number) => `${partition}\u0000${topic}`;
const MISMATCH_LIMIT = 8;

export class TrainerClient {
  /** The checkpoint read at open: the trainer's state to resume from (undefined: start fresh). */
  readonly restored: Checkpoint | undefined;

  private readonly consumer: Consumer;
  private readonly producer: Producer;
  private readonly admin: Admin;
  private readonly topics: string[];
  private readonly decisionTopic: string | null;
  private readonly staleness: StalenessConfig | null;
  private readonly replay: ReplayBuffer<Consumed<Decision>> | null;
  private readonly monitor: StarvationMonitor | null;
  private readonly starvationConfig: StarvationConfig | null;
  private versions: ModelVersions | LagFunction | null;
  private readonly localVersions: AnnouncedVersions | null;
  private announcements: BroadcastReader | undefined;
  private readonly bufferLimit: number;

  private readonly yielded = new Map<string, { topic: string; partition: number; offset: bigint }>();
  private readonly fetchPos = new Map<string, bigint>();
  private readonly mismatches = new Map<string, number>();
  private assignedTps = new Set<string>();
  /** Bumped on every assignment: a batch decoded across one is dropped. */
  private generation = 0;
  private chunks: Chunk[] = [];
  private buffered = 0;
  private paused = false;
  private seq = 0;
  private lastCommittedSeq = 0;
  private closed = false;
  private iterating = false;
  private interrupted = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private commitChain: Promise<unknown> = Promise.resolve();
  private readonly replaySnapshots = new WeakMap<TrainingBatch, ReplaySnapshot<Consumed<Decision>> | null>();
  private readonly m: Omit<TrainerMetrics, 'buffered' | 'paused' | 'assigned' | 'replayBuffer' | 'starvation'>;

  private constructor(
    private readonly options: TrainerClientOptions,
    private readonly serdes: { decisions: TopicSerde<Decision> | null; labels: TopicSerde<Label> | null; modelUpdates: TopicSerde<ModelUpdate> },
    restored: Checkpoint | undefined,
  ) {
    this.restored = restored;
    const { kafka, catalog } = options;
    const choice = options.decisions === undefined ? 'accepted' : options.decisions;
    this.decisionTopic = choice === null ? null : choice === 'accepted' ? catalog.accepted : catalog.decisions;
    this.topics = [...(this.decisionTopic ? [this.decisionTopic] : []), ...(options.labels ? [catalog.labels] : [])];
    if (this.topics.length === 0) throw new Error('trainer client: nothing to read (decisions: null and labels: false)');
    this.bufferLimit = options.bufferRecords ?? 5000;
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
    this.staleness = a.staleness ? { ...stalenessDefaults, ...a.staleness } : null;
    const replayConfig = a.replay ? { ...replayDefaults, ...a.replay } : null;
    const saved = (restored?.admission as ClientCheckpointAdmission | null | undefined)?.replay ?? null;
    this.replay = replayConfig === null ? null : saved ? ReplayBuffer.fromSnapshot(replayConfig, saved) : new ReplayBuffer(replayConfig);
    this.starvationConfig = a.starvation ? { ...starvationDefaults, ...a.starvation } : null;
    this.monitor = this.starvationConfig ? new StarvationMonitor(options.trainer, this.starvationConfig, Date.now()) : null;
    this.localVersions = this.staleness && options.versions === undefined ? new AnnouncedVersions() : null;
    this.versions = options.versions ?? this.localVersions;

    for (const o of restored?.offsets ?? []) this.yielded.set(tpKey(o.topic, o.partition), { topic: o.topic, partition: o.partition, offset: BigInt(o.offset) });
    this.m = {
      trainer: options.trainer,
      group: options.groupId,
      batches: 0,
      consumed: 0,
      admitted: 0,
      rejected: {},
      replayed: 0,
      skipped: 0,
      checkpoints: 0,
      kafkaCommits: 0,
      kafkaCommitFailures: 0,
      lastKafkaCommitError: null,
      lastStarvationSignal: null,
    };
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
      const versions = this.localVersions;
      const serde = this.serdes.modelUpdates;
      this.announcements = new BroadcastReader(this.options.kafka, this.options.catalog.modelUpdates, async (message) => {
        try {
          const update = await serde.deserialize(message.value!);
          versions.announce({ model: update.model, version: update.version, announcedAt: update.at });
        } catch (err) {
          process.stderr.write(`[trainer ${this.options.trainer}] skipping a model update that does not decode: ${(err as Error).message}\n`);
        }
      });
      await this.announcements.start();
      await this.announcements.caughtUp;
    }
    this.consumer.on(this.consumer.events.GROUP_JOIN, ({ payload }) => this.onAssignment(payload.memberAssignment));
    this.consumer.on(this.consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      if (payload.batchSize === 0) this.onFilteredBatch(payload.topic, payload.partition, payload.firstOffset, payload.lastOffset);
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
    if (this.monitor !== null) {
      this.timer = setInterval(() => void this.checkStarvation(), this.starvationConfig!.checkEveryMs);
      this.timer.unref();
    }
  }

  // ─── Fetching ─────────────────────────────────────────────────────────────────────────────

  /** A new assignment: drop what was fetched for partitions lost; seek the kept ones to our position. */
  private onAssignment(assignment: Record<string, number[]>): void {
    const assigned = new Set<string>();
    const seeks: Array<{ topic: string; partition: number; offset: bigint }> = [];
    for (const [topic, partitions] of Object.entries(assignment)) {
      for (const partition of partitions) assigned.add(tpKey(topic, partition));
    }
    const dropped = this.chunks.filter((c) => !assigned.has(c.tp));
    this.chunks = this.chunks.filter((c) => assigned.has(c.tp));
    for (const c of dropped) this.buffered -= c.entries.length - c.next;
    for (const tp of [...this.fetchPos.keys()]) if (!assigned.has(tp)) this.fetchPos.delete(tp);
    for (const [topic, partitions] of Object.entries(assignment)) {
      for (const partition of partitions) {
        const tp = tpKey(topic, partition);
        const pending = this.chunks.filter((c) => c.tp === tp);
        const position = pending.length > 0 ? pending[pending.length - 1]!.end : this.yielded.get(tp)?.offset;
        if (position === undefined) continue;
        this.fetchPos.set(tp, position);
        seeks.push({ topic, partition, offset: position });
      }
    }
    this.assignedTps = assigned;
    this.generation++;
    this.mismatches.clear();
    for (const s of seeks) this.consumer.seek({ topic: s.topic, partition: s.partition, offset: s.offset.toString() });
    this.maybeResume();
  }

  /** kafkajs consumed a batch of only markers/aborted records itself: follow it if it started at our position. */
  private onFilteredBatch(topic: string, partition: number, firstOffset: string | null, lastOffset: string): void {
    const tp = tpKey(topic, partition);
    const expected = this.fetchPos.get(tp);
    if (expected === undefined) return;
    const first = BigInt(firstOffset ?? lastOffset);
    const end = BigInt(lastOffset) + 1n;
    if (first <= expected && end > expected) {
      this.fetchPos.set(tp, end);
      this.mismatches.delete(tp);
      // Nothing of this partition waiting: the trainer's position moves past the markers too.
      if (!this.chunks.some((c) => c.tp === tp)) {
        const y = this.yielded.get(tp);
        if (y !== undefined && y.offset >= first && y.offset < end) y.offset = end;
      }
    }
  }

  private async onBatch(batch: Batch, resolveOffset: (offset: string) => void, isStale: () => boolean): Promise<void> {
    const { topic, partition } = batch;
    const tp = tpKey(topic, partition);
    const fetchedRaw = (batch as Batch & { fetchedOffset?: string }).fetchedOffset;
    if (fetchedRaw === undefined) throw new Error('kafkajs batch has no fetchedOffset: unsupported kafkajs version');
    const fetched = BigInt(fetchedRaw);
    const expected = this.fetchPos.get(tp);
    if (expected !== undefined && fetched > expected) {
      // kafkajs fetched past our position (the seek has not taken effect yet): never skip.
      const n = (this.mismatches.get(tp) ?? 0) + 1;
      this.mismatches.set(tp, n);
      if (n > MISMATCH_LIMIT) {
        this.fail(new Error(`${topic}[${partition}]: offset ${expected} cannot be read (kafkajs keeps fetching from ${fetched}); records there were probably deleted by retention — resuming would skip them`));
        return;
      }
      this.consumer.seek({ topic, partition, offset: expected.toString() });
      return;
    }
    this.mismatches.delete(tp);
    const from = expected ?? fetched;
    const generation = this.generation;
    const entries: Entry[] = [];
    for (const message of batch.messages) {
      const offset = BigInt(message.offset);
      if (offset < from) continue;
      entries.push(await this.decode(topic, partition, message, offset));
    }
    // A rebalance or a seek while decoding: this batch may no longer be ours; kafkajs refetches.
    if (this.closed || generation !== this.generation || isStale()) return;
    if (!this.yielded.has(tp)) this.yielded.set(tp, { topic, partition, offset: from });
    const last = BigInt(batch.lastOffset()) + 1n;
    const end = last > from ? last : from;
    this.chunks.push({ tp, topic, partition, entries, next: 0, end });
    this.buffered += entries.length;
    this.fetchPos.set(tp, end);
    resolveOffset(batch.lastOffset());
    if (!this.paused && this.buffered >= this.bufferLimit) {
      this.paused = true;
      this.consumer.pause(this.topics.map((t) => ({ topic: t })));
    }
    this.wake?.();
  }

  private async decode(topic: string, partition: number, message: KafkaMessage, offset: bigint): Promise<Entry> {
    const base = { topic, partition, offset: message.offset, key: message.key?.toString('utf8') ?? null, timestamp: Number(message.timestamp) };
    const skipped = (reason: string): Entry => ({ kind: 'skipped', offset, skipped: { topic, partition, offset: message.offset, reason } });
    if (message.value === null || message.value.length === 0) return skipped('empty record value');
    if (message.value[0] !== 0 || message.value.length < 5) return skipped(`not in the registry's wire format (first byte 0x${message.value[0]!.toString(16).padStart(2, '0')})`);
    try {
      if (topic === this.decisionTopic) return { kind: 'record', offset, record: { kind: 'decision', ...base, value: await this.serdes.decisions!.deserialize(message.value) } };
      return { kind: 'record', offset, record: { kind: 'label', ...base, value: await this.serdes.labels!.deserialize(message.value) } };
    } catch (err) {
      // An unreachable registry (the serde's UnavailableError) is not the record's fault: fail
      // the fetch, kafkajs retries it. A RecordError is the record's: skip it.
      if (!(err instanceof RecordError)) throw err;
      return skipped(`does not decode: ${(err as Error).message}`);
    }
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
    try {
      for (;;) {
        const batch = await this.nextBatch(maxRecords, maxWaitMs, options.emptyBatches ?? false);
        if (batch === undefined) return;
        yield batch;
      }
    } finally {
      this.iterating = false;
    }
  }

  private async nextBatch(maxRecords: number, maxWaitMs: number, emptyBatches: boolean): Promise<TrainingBatch | undefined> {
    const deadline = Date.now() + maxWaitMs;
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.closed || this.interrupted) return undefined;
      const now = Date.now();
      if (this.buffered >= maxRecords) return this.form(maxRecords, now);
      if (now >= deadline) {
        if (this.buffered > 0 || emptyBatches || (this.replay !== null && this.replay.eligible(now).length > 0)) return this.form(maxRecords, now);
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

  /** Takes up to maxRecords fetched records, applies admission, draws replays. */
  private form(maxRecords: number, now: number, draw = true): TrainingBatch {
    const records: TrainerRecord[] = [];
    const rejected: RejectedRecord[] = [];
    const skipped: SkippedRecord[] = [];
    let taken = 0;
    while (taken < maxRecords && this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      const y = this.yielded.get(chunk.tp)!;
      while (taken < maxRecords && chunk.next < chunk.entries.length) {
        const entry = chunk.entries[chunk.next++]!;
        taken++;
        this.buffered--;
        y.offset = entry.offset + 1n;
        if (entry.kind === 'skipped') {
          skipped.push(entry.skipped);
          continue;
        }
        const verdict = this.admit(entry.record);
        if (verdict === null) records.push(entry.record);
        else rejected.push({ record: entry.record, ...verdict });
      }
      if (chunk.next >= chunk.entries.length) {
        if (chunk.end > y.offset) y.offset = chunk.end;
        this.chunks.shift();
      }
    }
    this.maybeResume();
    const decisions = records.flatMap((r) => (r.kind === 'decision' ? [r] : []));
    const labels = records.flatMap((r) => (r.kind === 'label' ? [r] : []));
    let replayed: ReplayedRecord[] = [];
    if (this.replay !== null && draw) {
      replayed = this.replay.draw(this.replay.config.perBatch, now).map((d) => ({ record: d.value, uses: d.uses, priority: d.priority }));
      const scoreName = this.replay.config.scoreName;
      this.replay.add(
        decisions.map((d) => ({ id: d.value.rollout.id, value: d, at: d.value.rollout.created_at, score: scoreName === null ? 0 : (d.value.scores[scoreName] ?? 0) })),
        now,
      );
    }
    const offsets = [...this.yielded.values()]
      .map((p) => ({ topic: p.topic, partition: p.partition, offset: p.offset.toString() }))
      .sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition));
    const batch: TrainingBatch = { seq: ++this.seq, records, decisions, labels, replayed, rejected, skipped, offsets };
    this.replaySnapshots.set(batch, this.replay?.snapshot() ?? null);

    const rejectedByReason: Record<string, number> = {};
    for (const r of rejected) rejectedByReason[r.reason] = (rejectedByReason[r.reason] ?? 0) + 1;
    this.m.batches++;
    this.m.consumed += taken;
    this.m.admitted += records.length;
    this.m.replayed += replayed.length;
    this.m.skipped += skipped.length;
    for (const [reason, n] of Object.entries(rejectedByReason)) this.m.rejected[reason] = (this.m.rejected[reason] ?? 0) + n;
    // Only fresh examples feed the starvation monitor: replays are what a starving trainer falls back on.
    this.monitor?.record(records.length, now, rejectedByReason);
    return batch;
  }

  /**
   * A batch with no records at the current position: to checkpoint between batches (e.g. on
   * shutdown) when every batch handed out has been trained.
   */
  emptyBatch(): TrainingBatch {
    return this.form(0, Date.now(), false);
  }

  private maybeResume(): void {
    if (this.paused && this.buffered < this.bufferLimit / 2) {
      this.paused = false;
      this.consumer.resume(this.topics.map((t) => ({ topic: t })));
    }
  }

  private admit(record: TrainerRecord): { reason: string; lag: number | undefined } | null {
    if (record.kind !== 'decision' || this.staleness === null || this.versions === null) return null;
    const verdict = admitByStaleness(record.value.rollout, this.staleness, this.versions);
    return verdict.admitted ? null : { reason: verdict.reason, lag: verdict.lag };
  }

  // ─── Commit ───────────────────────────────────────────────────────────────────────────────

  /**
   * Checkpoint, then Kafka commit. `checkpoint` must call `cp.write(state, arrays)` with the
   * model state after training on everything up to `batch` (and nothing after it); if it
   * throws, or returns without writing, nothing is committed and the error propagates — the
   * previous checkpoint stands. Commits are serialised. A Kafka commit failure after a
   * written checkpoint is reported in the result and the metrics, not thrown.
   */
  async commit(batch: TrainingBatch, checkpoint: (cp: CheckpointWriter) => Promise<void>): Promise<CommitResult> {
    const run = async (): Promise<CommitResult> => {
      if (this.failure) throw this.failure;
      if (!this.replaySnapshots.has(batch)) throw new Error('commit: this batch did not come from this client');
      // An older batch's offsets under newer state would re-read (and re-train) what lies between.
      if (batch.seq < this.lastCommittedSeq) throw new Error(`commit: batch ${batch.seq} is older than the committed batch ${this.lastCommittedSeq}`);
      const replay = this.replaySnapshots.get(batch);
      let written = false;
      const writer: CheckpointWriter = {
        offsets: batch.offsets,
        batch: batch.seq,
        write: async (state, arrays = {}) => {
          const admission: ClientCheckpointAdmission = { replay: replay ?? null };
          await writeCheckpointFile(this.options.checkpointPath, { group: this.options.groupId, savedAt: Date.now(), offsets: [...batch.offsets], state, arrays, admission });
          written = true;
        },
      };
      await checkpoint(writer);
      if (!written) throw new Error(`checkpoint callback for batch ${batch.seq} returned without writing the checkpoint: nothing committed`);
      this.m.checkpoints++;
      this.lastCommittedSeq = batch.seq;
      const owned = batch.offsets.filter((o) => this.assignedTps.has(tpKey(o.topic, o.partition)));
      if (owned.length === 0) return { offsets: batch.offsets, kafka: 'nothing-assigned' };
      try {
        await this.consumer.commitOffsets(owned.map((o) => ({ topic: o.topic, partition: o.partition, offset: o.offset })));
        this.m.kafkaCommits++;
        return { offsets: batch.offsets, kafka: 'committed' };
      } catch (err) {
        this.m.kafkaCommitFailures++;
        this.m.lastKafkaCommitError = (err as Error).message;
        process.stderr.write(`[trainer ${this.options.trainer}] checkpoint written, Kafka offset commit failed (the checkpoint stands): ${(err as Error).message}\n`);
        return { offsets: batch.offsets, kafka: 'failed' };
      }
    };
    const result = this.commitChain.then(run, run);
    this.commitChain = result.catch(() => undefined);
    return result;
  }

  // ─── Publishing ───────────────────────────────────────────────────────────────────────────

  /** Publishes a model update (Avro, registry wire format) keyed by model name, and waits for the broker. */
  async announce(update: ModelUpdate): Promise<void> {
    if (update.model === '' || update.version === '') throw new Error('a model update needs a model name and a version');
    const value = await this.serdes.modelUpdates.serialize(update);
    await this.producer.send({ topic: this.options.catalog.modelUpdates, acks: -1, messages: [{ key: update.model, value }] });
    this.localVersions?.announce({ model: update.model, version: update.version, announcedAt: update.at });
  }

  /** Publishes a JSON message on the control topic. */
  async publishControl(key: string, value: object): Promise<void> {
    await this.publishJson(this.options.catalog.control, key, value);
  }

  /** Publishes a JSON message on any existing topic (e.g. trainer progress). */
  async publishJson(topic: string, key: string, value: object): Promise<void> {
    await this.producer.send({ topic, acks: -1, messages: [{ key, value: JSON.stringify(value) }] });
  }

  async topicExists(topic: string): Promise<boolean> {
    return (await this.admin.listTopics()).includes(topic);
  }

  private async checkStarvation(): Promise<void> {
    if (this.monitor === null || this.closed) return;
    const signal = this.monitor.check(Date.now());
    if (signal === null) return;
    this.m.lastStarvationSignal = signal;
    if (!this.starvationConfig!.publish) return;
    try {
      await this.publishControl(`starvation.${this.options.trainer}`, signal);
    } catch (err) {
      process.stderr.write(`[trainer ${this.options.trainer}] could not publish ${signal.kind}: ${(err as Error).message}\n`);
    }
  }

  // ─── State ────────────────────────────────────────────────────────────────────────────────

  /** A snapshot of the client's counters, admission and starvation state. */
  get metrics(): TrainerMetrics {
    return {
      ...this.m,
      rejected: { ...this.m.rejected },
      buffered: this.buffered,
      paused: this.paused,
      assigned: [...this.assignedTps].map((tp) => {
        const [partition, topic] = tp.split('\u0000') as [string, string];
        const y = this.yielded.get(tp);
        return { topic, partition: Number(partition), position: y?.offset.toString() ?? null };
      }),
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
    this.wake?.();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.wake?.();
  }

  /**
   * Leaves the group and disconnects. Commits nothing: what was not committed is read again
   * by the next run, from the checkpoint.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.wake?.();
    await this.commitChain;
    await Promise.allSettled([this.consumer.disconnect(), this.producer.disconnect(), this.announcements?.stop()]);
    await this.admin.disconnect().catch(() => undefined);
  }
}

import type { Admin, Consumer, IHeaders, Kafka, KafkaMessage } from 'kafkajs';
import { Instrumentation } from '../contracts/events.ts';
import { logger } from '../lib/log.ts';
import type { Decision, Label } from '../contracts/records.ts';
import type { TopicSerde } from '../streams/serde.ts';
import { errorKind, FlywheelError, RecordError, rejoinError } from '../streams/errors.ts';
import { kafkaBatches, type SourceBatch } from '../streams/source.ts';
import { LABELS_TABLE, sinkHighWater } from './clickhouse/schema.ts';
import { TRAINER_PROGRESS_TABLE } from '../contracts/trainer-progress.ts';
import type { ClickHouseStore } from './clickhouse/store.ts';
import { ClickHouseStoreError } from './clickhouse/sql.ts';
import { DLQ_HEADERS } from '../contracts/dead-letter.ts';
import { mergeMap, type Subscription } from 'rxjs';
import { coPartitionAssigner } from '../streams/co-partition-assigner.ts';

export interface ClickHouseSinkOptions {
  kafka: Kafka;
  store: ClickHouseStore;
  groupId: string;
  decisions: TopicSerde<Decision>;
  deadLetterTopic: string;
  /** Trainers' progress reports (JSON TrainerProgressRow), stored in `trainer_progress`. */
  trainerProgressTopic: string;
  /**
   * Late labels (Avro `Label`, `<prefix>.labels`), stored in `labels` exactly once like the
   * decisions (one block per offset range); the analytics views join them by rollout id.
   */
  labels?: TopicSerde<Label>;
  /**
   * Instrumentation (contracts/events.ts): `sink.insert` after each block stored (`ok: true`,
   * `durationMs` including retries) and after each failed attempt (`ok: false`); `dead-letter`
   * (stage `clickhouse-sink`) for a record whose row ClickHouse rejects; `consumer.lag` (the
   * sink's group) after each batch stored.
   */
  events?: Instrumentation;
  /** Called before each retry of a failed INSERT (also logged, lib/log.ts). */
  onRetry?: (info: { table: string; range: string; attempt: number; error: Error }) => void;
  /** Called for each record dead-lettered because ClickHouse rejects its row. */
  onDeadLetter?: (info: { topic: string; partition: number; offset: string; reason: string }) => void;
  /**
   * How long the sink's fetch may wait for `SINK_MIN_FETCH_BYTES` of new records before it takes
   * what there is (kafkajs `maxWaitTimeInMs` with `minBytes`; default `SINK_FLUSH_INTERVAL_MS`).
   * Rows reach ClickHouse up to this much later at a low rate; at a high one the bytes are there
   * at once. Why: an INSERT costs a part whatever its size, so at a trickle a sink inserting
   * every few records spends a core on parts, and that core may be the pipeline's.
   */
  flushIntervalMs?: number;
  /** Per INSERT attempt; must stay well under the session timeout (default 10 000 ms). */
  insertTimeoutMs?: number;
  /** The consumer group session (default 30 000 ms); heartbeats go on during an INSERT. */
  sessionTimeoutMs?: number;
  /** Heartbeat interval (default 3 000 ms). */
  heartbeatIntervalMs?: number;
  /** Backoff between INSERT retries: doubles from `initialMs` up to `maxMs` (default 250 → 10 000). */
  retry?: { initialMs: number; maxMs: number };
}

const log = logger();

/** Bytes per partition fetch, so one range (one INSERT) holds up to about this much of a partition. */
export const SINK_FETCH_BYTES = 8 * 1024 * 1024;

/** What a sink fetch waits for (up to its flush interval): a block worth an INSERT. */
export const SINK_MIN_FETCH_BYTES = 1024 * 1024;

/** The default flush interval, as ClickHouse's own async inserts wait about a second. */
export const SINK_FLUSH_INTERVAL_MS = 1000;

/** Partitions whose batches the sink handles at once. */
export const SINK_CONCURRENCY = 3;

/** Metadata of an intent commit: the last offset of the range about to be inserted. */
const INTENT = 'flywheel-sink-range:';

/** This member no longer owns the partition (rebalanced, or its session expired): stop, rejoin. Retriable: the partition's next owner goes on. */
class FencedError extends FlywheelError {
  override readonly name = 'FencedError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { retriable: true, cause: options.cause });
  }
}

/** A range of one partition, inserted as one block: every record in [from, to], in order. */
interface Range {
  from: bigint;
  to: bigint;
  messages: KafkaMessage[];
}

interface PartitionState {
  /** The group generation (GROUP_JOIN count) this state belongs to. */
  generation: number;
  /**
   * A range announced (by an earlier owner, or by this member before a failed attempt) that may
   * be in the store or on its way there: it must be re-sent exactly, before anything else.
   */
  pending?: Range;
}

/**
 * ClickHouse error codes caused by a row's content (parse errors, bad values): retrying the same
 * block cannot help, so its records are isolated and the culprit dead-lettered. Every other
 * failure (no answer, refused, timeout, ZooKeeper, too many parts, …) is retried with backoff.
 */
const DATA_ERROR_CODES = new Set([6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 130, 131, 321]);

/** True when retrying cannot cure `err`: the rows, not the store, are at fault. */
export function isRowError(err: unknown): boolean {
  if (err instanceof ClickHouseStoreError) return err.code !== undefined && DATA_ERROR_CODES.has(err.code);
  return err instanceof RowError;
}

/** A record that cannot become a row (does not decode, non-finite numbers): the record's fault. */
class RowError extends RecordError {
  override readonly name = 'RowError';
}

/**
 * Copies the decisions, dead-letter and (when given) labels topics (read_committed) into ClickHouse, exactly once
 * whatever the timing: a stalled INSERT that lands after another sink took the partition over
 * adds nothing.
 *
 * - Each INSERT is one block of every record in an offset range [a, b] of one partition, built
 *   deterministically (rows in offset order, fixed columns, `inserted_at` = the record's Kafka
 *   timestamp, no now()), so every copy of it is byte-identical and the engine drops all but one
 *   (chdb: token `<topic>:<partition>:<a>-<b>`; server: ReplicatedMergeTree's block checksum;
 *   see schema.ts).
 * - Before inserting [a, b] the sink commits the group offset a with metadata `b` (the intent).
 *   The commit carries the group generation, so it fails once this member lost the partition:
 *   the ownership check. A new owner reads the committed offset and metadata and first re-sends
 *   exactly [a, b] (dropped if the old owner's copy landed), then continues.
 * - The highest stored sink offset per partition (sinkHighWater) skips ranges already stored
 *   (restarts re-read the last range).
 * - An INSERT attempt times out after `insertTimeoutMs` and is retried with backoff, heartbeating
 *   meanwhile; each retry is counted and logged. A row ClickHouse rejects (parse error) is no
 *   loop: the range is retried record by record and the culprit stored in `dead_letters` (stage
 *   `clickhouse-sink`) instead.
 * - The store may be down at start ({@link LazyStore}): the sink retries until it comes back.
 * - A member told it lost its generation (a commit or heartbeat answered REBALANCE_IN_PROGRESS,
 *   UNKNOWN_MEMBER_ID, …; also a heartbeat during an INSERT) stores nothing more in that
 *   generation and hands kafkajs that error, so it rejoins at once instead of fetching on with
 *   a dead membership. A range whose INSERT failed after it was announced stays pending: in this
 *   generation too, the partition goes on only by re-sending exactly that range.
 */
export class ClickHouseSink {
  private readonly consumer: Consumer;
  private readonly admin: Admin;
  private highWater = new Map<string, Promise<Map<number, number>>>();
  private readonly partitions = new Map<string, PartitionState>();
  private generation = 0;
  /** The group error that ended `generation` for this member, until kafkajs has rejoined. */
  private fenced: { generation: number; error: Error } | undefined;
  private assigned = new Set<string>();
  private subscription: Subscription | undefined;
  private stopping = false;
  private readonly insertTimeoutMs: number;
  private readonly sessionTimeoutMs: number;
  private readonly retry: { initialMs: number; maxMs: number };
  /** INSERT retries so far (store unavailable, timeouts). */
  retries = 0;
  /** Ranges re-sent because an earlier owner had announced them. */
  resent = 0;
  /** Ranges an earlier owner announced and had stored already (nothing re-sent). */
  announcedStored = 0;
  private readonly events: Instrumentation;

  constructor(private readonly options: ClickHouseSinkOptions) {
    const sessionTimeout = options.sessionTimeoutMs ?? 30_000;
    this.insertTimeoutMs = options.insertTimeoutMs ?? 10_000;
    this.events = options.events ?? new Instrumentation();
    this.sessionTimeoutMs = sessionTimeout;
    if (this.insertTimeoutMs * 2 > sessionTimeout) {
      throw new Error(`ClickHouse sink: insertTimeoutMs (${this.insertTimeoutMs}) must be at most half the session timeout (${sessionTimeout})`);
    }
    this.retry = options.retry ?? { initialMs: 250, maxMs: 10_000 };
    const flushIntervalMs = options.flushIntervalMs ?? SINK_FLUSH_INTERVAL_MS;
    const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 3_000;
    // kafkajs heartbeats between fetches: a fetch held longer would let the session lapse.
    if (!(Number.isInteger(flushIntervalMs) && flushIntervalMs >= 0 && flushIntervalMs <= heartbeatIntervalMs)) {
      throw new Error(`ClickHouse sink: flushIntervalMs (${flushIntervalMs}) must be an integer from 0 to the heartbeat interval (${heartbeatIntervalMs})`);
    }
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      readUncommitted: false,
      partitionAssigners: [coPartitionAssigner],
      sessionTimeout,
      heartbeatInterval: heartbeatIntervalMs,
      // Big fetches make big ranges: an INSERT costs a part (and a deduplication entry) whatever
      // its size, so fewer, larger blocks are what keeps the sink near a bulk INSERT's rate.
      maxBytesPerPartition: SINK_FETCH_BYTES,
      maxBytes: 2 * SINK_FETCH_BYTES,
      // For the same reason, at a low rate the fetch waits (up to the flush interval) for a block
      // worth an INSERT: in the bench at 1,500 records/s this made 36 INSERTs where there were
      // 200–320, and halved the pipeline's produce → accepted p50 on the shared core.
      minBytes: SINK_MIN_FETCH_BYTES,
      maxWaitTimeInMs: flushIntervalMs,
    });
    this.admin = options.kafka.admin();
  }

  async start(): Promise<{ stopped: Promise<void> }> {
    await this.admin.connect();
    await this.consumer.connect();
    this.consumer.on(this.consumer.events.GROUP_JOIN, ({ payload }) => {
      // Another sink may have stored more, or announced ranges, since we last looked.
      this.generation += 1;
      this.fenced = undefined;
      this.highWater = new Map();
      this.partitions.clear();
      this.assigned = new Set(Object.entries(payload.memberAssignment).flatMap(([t, ps]) => ps.map((p) => `${t}:${p}`)));
    });
    const stopped = new Promise<void>((resolve, reject) => {
      this.subscription = kafkaBatches(this.consumer, {
        topics: [this.options.decisions.topic, this.options.deadLetterTopic, this.options.trainerProgressTopic, ...(this.options.labels ? [this.options.labels.topic] : [])],
        fromBeginning: true,
        // One partition's rows are built while another's INSERT is in the store: the sink then
        // keeps both this process and the store busy. Each partition still has one range in flight.
        partitionsConsumedConcurrently: SINK_CONCURRENCY,
      })
        .pipe(
          mergeMap(async (source) => {
            try {
              await this.store(source);
              source.settle();
              // The sink's own lag (kafka_consumergroup_lag of its group): what is left to store.
              if (this.events.has('consumer.lag')) {
                const { topic, partition, highWatermark } = source.batch;
                this.events.emit('consumer.lag', { topic, partition, groupId: this.options.groupId, lag: Math.max(0, Number(BigInt(highWatermark) - BigInt(source.batch.lastOffset()) - 1n)) });
              }
            } catch (err) {
              // Only a lost partition (or stop) gets here. A group error goes to kafkajs as is,
              // so that it rejoins now; kafkajs re-reads the partitions it is then given.
              const group = rejoinError(err) ?? (this.fenced?.generation === this.generation ? this.fenced.error : undefined);
              if (group !== undefined) {
                this.fence(group, source);
                source.settle(group);
              } else {
                source.settle(new Error(`ClickHouse sink: ${source.batch.topic}[${source.batch.partition}]: ${(err as Error).message}`, { cause: err }));
              }
            }
          }),
        )
        .subscribe({ error: reject, complete: resolve });
    });
    return { stopped };
  }

  /** Partitions (of all three topics) this sink owns now. */
  get ownedPartitions(): number {
    return this.assigned.size;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.subscription?.unsubscribe();
    await Promise.allSettled([this.consumer.disconnect(), this.admin.disconnect()]);
  }

  /** Records the group error that ended this generation (once): every batch of it fails with it. */
  private fence(error: Error, source: SourceBatch): void {
    if (this.fenced?.generation === this.generation) return;
    this.fenced = { generation: this.generation, error };
    log.warn(`ClickHouse sink: ${source.batch.topic}[${source.batch.partition}]: this member lost its group generation (${errorKind(error)}: ${error.message}); storing nothing more until it has rejoined`);
  }

  private async store(source: SourceBatch): Promise<void> {
    const { topic, partition, messages } = source.batch;
    if (this.fenced?.generation === this.generation) throw this.fenced.error;
    if (topic === this.options.trainerProgressTopic) return this.storeProgress(source);
    const table = topic === this.options.deadLetterTopic ? 'dead_letters' : topic === this.options.labels?.topic ? LABELS_TABLE : 'samples';
    const key = `${topic}:${partition}`;
    const generation = this.generation;
    let state = this.partitions.get(key);
    if (state === undefined || state.generation !== generation) {
      state = { generation, pending: await this.announced(topic, partition) };
      this.partitions.set(key, state);
    }
    // A read may wait longer than an INSERT (heartbeats go on): it changes nothing, and a stalled
    // server answers it before the INSERTs queued with it are applied, whose ranges this decides on.
    const hw = BigInt((await this.withRetry(table, `${key} high-water`, source, () => this.storedOffsets(table, topic), this.sessionTimeoutMs)).get(partition) ?? -1);
    let rest = messages;
    const pending = state.pending;
    if (pending !== undefined) {
      // Complete the announced range first, exactly as announced (it may span fetches, and a
      // batch handed out again repeats records it already holds).
      const last = pending.messages[pending.messages.length - 1];
      const next = last === undefined ? pending.from : BigInt(last.offset) + 1n;
      pending.messages.push(...rest.filter((m) => BigInt(m.offset) >= next && BigInt(m.offset) <= pending.to));
      rest = rest.filter((m) => BigInt(m.offset) > pending.to);
      const complete = BigInt(source.batch.lastOffset()) >= pending.to;
      if (!complete) return;
      state.pending = undefined;
      if (hw >= pending.to) {
        // The earlier owner's copy landed.
        this.announcedStored += 1;
      } else {
        if (hw >= pending.from) {
          log.info(`ClickHouse sink: ${key} announced [${pending.from}, ${pending.to}] but ${hw} is stored; sending the rest`);
        }
        this.resent += 1;
        await this.insertRange(source, table, generation, { ...pending, messages: pending.messages.filter((m) => BigInt(m.offset) > hw) }, true);
      }
    }
    const fresh = rest.filter((m) => BigInt(m.offset) > hw);
    if (fresh.length > 0) {
      await this.insertRange(source, table, generation, { from: BigInt(fresh[0]!.offset), to: BigInt(fresh[fresh.length - 1]!.offset), messages: fresh }, false);
    }
  }

  /** The range an earlier owner committed as its intent for this partition, if any. */
  private async announced(topic: string, partition: number): Promise<Range | undefined> {
    const [offsets] = await this.admin.fetchOffsets({ groupId: this.options.groupId, topics: [topic] });
    const p = offsets?.partitions.find((x) => x.partition === partition);
    if (p === undefined || !p.metadata?.startsWith(INTENT) || Number(p.offset) < 0) return undefined;
    const to = BigInt(p.metadata.slice(INTENT.length));
    return { from: BigInt(p.offset), to, messages: [] };
  }

  /**
   * Announces `range` (the ownership check), then inserts it as one block, retrying until it is
   * stored. `announced`: the intent is already committed (by an earlier owner).
   */
  private async insertRange(source: SourceBatch, table: string, generation: number, range: Range, announced: boolean): Promise<void> {
    const { topic, partition } = source.batch;
    if (range.messages.length === 0) return;
    if (!announced) await this.announce(topic, partition, generation, range);
    try {
      await this.sendRange(source, table, generation, range);
    } catch (err) {
      // Announced, so a copy may be in the store or on its way: if this member goes on with the
      // partition in this generation (kafkajs hands the batch out again), it re-sends exactly
      // this range first, never a longer one that the engine would not take for a copy.
      const state = this.partitions.get(`${topic}:${partition}`);
      if (state?.generation === generation) state.pending = { ...range, messages: [...range.messages] };
      throw err;
    }
  }

  /** Inserts an announced `range` as one block (retrying until it is stored), or isolates the row ClickHouse rejects. */
  private async sendRange(source: SourceBatch, table: string, generation: number, range: Range): Promise<void> {
    const { topic, partition } = source.batch;
    const label = `${topic}:${partition}:${range.from}-${range.to}`;
    // Writer schemas fetched once per id; the registry being down is retried like the store.
    if (table === 'samples') await this.withRetry(table, `${label} schemas`, source, () => this.options.decisions.prepare(range.messages.map((m) => m.value)));
    if (table === LABELS_TABLE) await this.withRetry(table, `${label} schemas`, source, () => this.options.labels!.prepare(range.messages.map((m) => m.value)));
    let body: Buffer | string;
    try {
      body = this.encode(table, topic, partition, range.messages);
    } catch (err) {
      if (!isRowError(err)) throw err;
      return this.isolate(source, table, generation, range, err as Error);
    }
    const started = performance.now();
    try {
      await this.withRetry(
        table,
        label,
        source,
        () =>
          this.options.store.insertFormatted(table, table === 'samples' ? SAMPLE_COLUMNS : table === LABELS_TABLE ? LABEL_COLUMNS : DEAD_LETTER_COLUMNS, table === 'samples' ? 'TabSeparated' : 'JSONEachRow', body, {
            dedupToken: label,
            timeoutMs: this.insertTimeoutMs,
          }),
        this.insertTimeoutMs,
        range.messages.length,
      );
    } catch (err) {
      if (!isRowError(err)) throw err;
      return this.isolate(source, table, generation, range, err as Error);
    }
    (await this.storedOffsets(table, topic)).set(partition, Number(range.to));
    this.inserted(table, range.messages.length, started);
  }

  /**
   * A block ClickHouse rejects for its content never lands, so no copy of it is in flight and the
   * range may be split: one record per range, and the record whose row is rejected is stored as
   * a dead letter instead.
   */
  private async isolate(source: SourceBatch, table: string, generation: number, range: Range, err: Error): Promise<void> {
    const { topic, partition } = source.batch;
    if (range.messages.length > 1) {
      for (const m of range.messages) await this.insertRange(source, table, generation, { from: BigInt(m.offset), to: BigInt(m.offset), messages: [m] }, false);
      return;
    }
    const m = range.messages[0]!;
    const reason = `ClickHouse rejects the row: ${err.message}`.slice(0, 2000);
    log.warn(`ClickHouse sink: dead-lettering ${topic}[${partition}]@${m.offset}: ${reason}`);
    const row = JSON.stringify({
      pipeline_run: header(m.headers, DLQ_HEADERS.run),
      source_topic: topic,
      source_partition: partition,
      source_offset: Number(m.offset),
      stage: 'clickhouse-sink',
      reason,
      payload_base64: m.value?.toString('base64') ?? '',
      sink_topic: topic,
      sink_partition: partition,
      sink_offset: Number(m.offset),
      inserted_at: seconds(Number(m.timestamp)),
    });
    const started = performance.now();
    await this.withRetry(
      'dead_letters',
      `${topic}:${partition}:${m.offset}`,
      source,
      () => this.options.store.insertFormatted('dead_letters', DEAD_LETTER_COLUMNS, 'JSONEachRow', `${row}\n`, { dedupToken: `dead:${topic}:${partition}:${m.offset}`, timeoutMs: this.insertTimeoutMs }),
      this.insertTimeoutMs,
      1,
    );
    (await this.storedOffsets(table, topic)).set(partition, Number(m.offset));
    this.inserted('dead_letters', 1, started);
    this.options.onDeadLetter?.({ topic, partition, offset: m.offset, reason });
    if (this.events.has('dead-letter')) this.events.emit('dead-letter', { topic, partition, offset: m.offset, stage: 'clickhouse-sink', reason });
  }

  /** Commits offset `from` with metadata `to`: fails when this member no longer owns the partition. */
  private async announce(topic: string, partition: number, generation: number, range: Range): Promise<void> {
    this.checkOwner(topic, partition, generation);
    try {
      await this.consumer.commitOffsets([{ topic, partition, offset: String(range.from), metadata: `${INTENT}${range.to}` }]);
    } catch (err) {
      throw new FencedError(`cannot announce [${range.from}, ${range.to}] (${(err as Error).message}); leaving the partition to its new owner`, { cause: err });
    }
    this.checkOwner(topic, partition, generation);
  }

  private checkOwner(topic: string, partition: number, generation: number): void {
    if (this.stopping) throw new FencedError('stopping');
    if (this.fenced?.generation === generation) throw this.fenced.error;
    if (generation !== this.generation || !this.assigned.has(`${topic}:${partition}`)) {
      throw new FencedError(`${topic}[${partition}] was reassigned`);
    }
  }

  /** A block of `rows` rows stored in `table`, `started` (performance.now()) before its first attempt. */
  private inserted(table: string, rows: number, started: number): void {
    if (this.events.has('sink.insert')) this.events.emit('sink.insert', { table, rows, durationMs: performance.now() - started, ok: true });
  }

  /**
   * Runs `attempt` until it succeeds, a row error (thrown), or the partition is lost (FencedError).
   * Heartbeats go on meanwhile, so a slow store does not cost the group membership; a failed
   * heartbeat (rebalance) ends the loop: another sink re-sends the announced range. With `rows`
   * (an INSERT of that many rows) each failed attempt is a `sink.insert` event with `ok: false`.
   */
  private async withRetry<T>(table: string, what: string, source: SourceBatch, attempt: () => Promise<T>, timeoutMs = this.insertTimeoutMs, rows?: number): Promise<T> {
    let delay = this.retry.initialMs;
    for (let n = 1; ; n += 1) {
      // A heartbeat answered with a group error ends the wait: the attempt's outcome no longer
      // matters to this member (the next owner re-sends the announced range), its rejoin does.
      let lost: (err: Error) => void = () => undefined;
      const fenced = new Promise<never>((_, reject) => (lost = reject));
      const beat = setInterval(
        () =>
          void source.heartbeat().catch((err: unknown) => {
            if (rejoinError(err) !== undefined) lost(new FencedError(`lost the partition during ${what} (${(err as Error).message})`, { cause: err }));
          }),
        1000,
      );
      let timer: NodeJS.Timeout | undefined;
      const started = performance.now();
      try {
        // Queries take no abort signal: a read that hangs (frozen server) is given up on here.
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs + 500);
        });
        return await Promise.race([attempt(), timeout, fenced]);
      } catch (err) {
        if (rows !== undefined && this.events.has('sink.insert')) this.events.emit('sink.insert', { table, rows, durationMs: performance.now() - started, ok: false });
        if (isRowError(err) || err instanceof FencedError) throw err;
        if (this.stopping) throw new FencedError('stopping', { cause: err });
        this.retries += 1;
        const error = err as Error;
        log.warn(`ClickHouse sink: ${table} ${what}: store unavailable (attempt ${n}, retries so far ${this.retries}), retrying in ${delay} ms: ${error.message}`);
        this.options.onRetry?.({ table, range: what, attempt: n, error });
      } finally {
        clearInterval(beat);
        clearTimeout(timer);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, this.retry.maxMs);
      try {
        await source.heartbeat();
      } catch (err) {
        throw new FencedError(`lost the partition while retrying (${(err as Error).message})`, { cause: err });
      }
    }
  }

  private encode(table: string, topic: string, partition: number, messages: KafkaMessage[]): Buffer | string {
    if (table === 'samples') {
      // The lines written as bytes into one buffer (SampleBlock), sized from the records.
      let bytes = 0;
      for (const m of messages) bytes += m.value?.length ?? 0;
      const block = new SampleBlock(bytes);
      for (const m of messages) {
        let d: Decision;
        try {
          d = this.options.decisions.decode(m.value!);
        } catch (err) {
          throw new RowError(`record ${m.offset} does not decode: ${(err as Error).message}`);
        }
        block.add(d, topic, partition, m.offset, m.timestamp);
      }
      return block.bytes();
    }
    let body = '';
    if (table === LABELS_TABLE) {
      for (const m of messages) {
        let l: Label;
        try {
          l = this.options.labels!.decode(m.value!);
        } catch (err) {
          throw new RowError(`record ${m.offset} does not decode: ${(err as Error).message}`);
        }
        body += `${JSON.stringify(labelRow(l, topic, partition, m.offset, m.timestamp))}\n`;
      }
      return body;
    }
    for (const m of messages) body += `${JSON.stringify(deadLetterRow(m, topic, partition))}\n`;
    return body;
  }

  /**
   * Progress reports are small and keyed by (trainer, model version, step): a report stored
   * twice after a crash collapses in the ReplacingMergeTree, so at-least-once suffices here.
   * A report that is not valid JSON is skipped with a message — it is telemetry, not data.
   */
  private async storeProgress(source: SourceBatch): Promise<void> {
    const { topic, partition, messages } = source.batch;
    const rows: Record<string, unknown>[] = [];
    for (const m of messages) {
      try {
        const row = JSON.parse(m.value!.toString()) as Record<string, unknown>;
        rows.push({ ...row, at: new Date(Number(row.at ?? Date.now())) });
      } catch (err) {
        log.warn(`skipping a trainer progress report at ${topic}[${partition}]@${m.offset}: ${(err as Error).message}`);
      }
    }
    if (rows.length > 0) {
      const started = performance.now();
      try {
        await this.withRetry(TRAINER_PROGRESS_TABLE, `${topic}:${partition}`, source, () => this.options.store.insert(TRAINER_PROGRESS_TABLE, rows, { timeoutMs: this.insertTimeoutMs }), this.insertTimeoutMs, rows.length);
        this.inserted(TRAINER_PROGRESS_TABLE, rows.length, started);
      } catch (err) {
        if (!isRowError(err)) throw err;
        log.warn(`skipping trainer progress reports at ${topic}[${partition}]: ${(err as Error).message}`);
      }
    }
    const last = messages[messages.length - 1];
    if (last !== undefined) await this.consumer.commitOffsets([{ topic, partition, offset: String(BigInt(last.offset) + 1n) }]);
  }

  private storedOffsets(table: string, topic: string): Promise<Map<number, number>> {
    let offsets = this.highWater.get(topic);
    if (offsets === undefined) {
      offsets = sinkHighWater(this.options.store, table, topic);
      this.highWater.set(topic, offsets);
      offsets.catch(() => this.highWater.delete(topic));
    }
    return offsets;
  }
}

const seconds = (ms: number) => Math.floor(ms / 1000);

/** The columns of the sink's `samples` blocks (TabSeparated), in the order sampleLine writes them. */
export const SAMPLE_COLUMNS: readonly string[] = [
  'pipeline_run', 'id', 'rollout_run', 'prompt_id', 'prompt', 'group_id', 'response', 'model_name', 'model_version',
  'reward_names', 'reward_values', 'score_names', 'score_values', 'tag_keys', 'tag_values', 'token_count', 'created_at',
  'duplicate_of', 'dedupe_method', 'reasons', 'decision', 'reason', 'config_hash', 'scorer_version', 'annotation_keys',
  'annotation_values', 'source_topic', 'source_partition', 'source_offset', 'sink_topic', 'sink_partition', 'sink_offset',
  'inserted_at',
];

/** The columns of the sink's `dead_letters` blocks (JSONEachRow: few, and arbitrary texts), in deadLetterRow's order. */
export const DEAD_LETTER_COLUMNS: readonly string[] = [
  'pipeline_run', 'source_topic', 'source_partition', 'source_offset', 'stage', 'reason', 'payload_base64',
  'sink_topic', 'sink_partition', 'sink_offset', 'inserted_at',
];

/** The columns of the sink's `labels` blocks (JSONEachRow), in labelRow's order. */
export const LABEL_COLUMNS: readonly string[] = ['rollout_id', 'value', 'verifier', 'at', 'sink_topic', 'sink_partition', 'sink_offset', 'inserted_at'];

/**
 * The `labels` row of the label at `sinkOffset`: deterministic (times from the record), so a
 * re-sent range is byte-identical. A value that is not finite is the record's fault (RowError).
 *
 *   labelRow({ rollout_id: 'r-1', value: 1, verifier: 'tests', at: 1700000000000 }, 'p.labels', 0, '7', '1700000000500')
 *   // { rollout_id: 'r-1', value: 1, verifier: 'tests', at: 1700000000, sink_topic: 'p.labels', …, inserted_at: 1700000000 }
 */
export function labelRow(l: Label, sinkTopic: string, sinkPartition: number, sinkOffset: string, timestamp: string): Record<string, unknown> {
  if (!Number.isFinite(l.value)) throw new RowError(`record ${sinkOffset}: label value ${l.value} is not finite`);
  const at = seconds(l.at);
  if (!Number.isFinite(at) || at < 0) throw new RowError(`record ${sinkOffset}: label time ${l.at} is not a time`);
  return {
    rollout_id: l.rollout_id,
    value: l.value,
    verifier: l.verifier,
    at,
    sink_topic: sinkTopic,
    sink_partition: sinkPartition,
    sink_offset: Number(sinkOffset),
    inserted_at: seconds(Number(timestamp)),
  };
}

/**
 * The checks of a `samples` row, before any of it is written (SampleBlock.add, sampleValues):
 * created_at is a time, every reward and score is finite. Returns created_at in seconds; throws
 * RowError naming the value ClickHouse cannot store.
 */
function checkSample(d: Decision, rewardKeys: readonly string[], scoreKeys: readonly string[], sinkOffset: string): number {
  const r = d.rollout;
  const createdAt = seconds(r.created_at);
  if (!Number.isFinite(createdAt)) throw new RowError(`record ${sinkOffset}: created_at ${r.created_at} is not a time`);
  checkFinite(r.rewards, rewardKeys, 'rewards', sinkOffset);
  checkFinite(d.scores, scoreKeys, 'scores', sinkOffset);
  return createdAt;
}

function checkFinite(map: Record<string, number>, keys: readonly string[], what: string, offset: string): void {
  for (const k of keys) {
    const v = map[k]!;
    if (!Number.isFinite(v)) throw new RowError(`record ${offset}: ${what} holds ${v}, which ClickHouse cannot store`);
  }
}

/** The values of a `samples` row for the decision at `sinkOffset`, checked (checkSample), for sampleRow. */
function sampleValues(d: Decision, sinkOffset: string) {
  const r = d.rollout;
  const rewardNames = Object.keys(r.rewards);
  const scoreNames = Object.keys(d.scores);
  const tagKeys = Object.keys(r.tags);
  const annotationKeys = Object.keys(d.annotations);
  const createdAt = checkSample(d, rewardNames, scoreNames, sinkOffset);
  return {
    response: r.response ?? r.steps.map((s) => `${s.role}: ${s.content}`).join('\n'),
    rewardNames,
    rewardValues: rewardNames.map((k) => r.rewards[k]!),
    scoreNames,
    scoreValues: scoreNames.map((k) => d.scores[k]!),
    tagKeys,
    tagValues: tagKeys.map((k) => r.tags[k]!),
    annotationKeys,
    annotationValues: annotationKeys.map((k) => d.annotations[k]!),
    createdAt,
  };
}

/**
 * One TabSeparated line of `samples` (SAMPLE_COLUMNS, in that order) for the decision at
 * `sinkOffset`: `SampleBlock.add`'s bytes as a string (one line of a block).
 *
 *   sampleLine(decision, 'decisions', 0, '42', '1700000000000') // 'live\tr-1\t…\t1700000000\n'
 */
export function sampleLine(d: Decision, sinkTopic: string, sinkPartition: number, sinkOffset: string, timestamp: string): string {
  const block = new SampleBlock(0);
  block.add(d, sinkTopic, sinkPartition, sinkOffset, timestamp);
  return block.bytes().toString('utf8');
}

/**
 * The TabSeparated body of one `samples` INSERT, written as UTF-8 bytes straight into one
 * growing Buffer: every field escaped and encoded in the same pass over its UTF-16 code units
 * (no escaped copy, no string per line, no joined string to encode again). Deterministic, so a
 * re-sent range is byte-identical; `inserted_at` is the record's Kafka timestamp (when the
 * decision was written), not the INSERT's time.
 *
 * Per line (`add`): 1. checkSample, before anything is written — created_at a time, every
 * reward and score finite — so a RowError leaves the block as it was;
 * 2. the fields in SAMPLE_COLUMNS order, tab-separated, ending in "\n": a String escapes \\, tab,
 * newline, CR and NUL as \\\\, \\t, \\n, \\r, \\0; an Array(String) is `['a','it\\'s']` (' escaped
 * too); an Array(Float64) is `[0.5,1]`; numbers are written as String(n) writes them; a lone
 * surrogate becomes U+FFFD, as Buffer.from(string) encodes it.
 *
 *   const block = new SampleBlock(0);
 *   block.add(decision, 'decisions', 0, '42', '1700000000000');
 *   block.bytes()   // <Buffer 6c 69 76 65 09 …>: 'live\tr-1\t…\t1700000000\n'
 */
export class SampleBlock {
  #buf: Buffer;
  #at = 0;

  /** `capacityHint`: bytes expected (e.g. the records' encoded size); the buffer grows past it as needed. */
  constructor(capacityHint: number) {
    this.#buf = Buffer.allocUnsafe(Math.max(1024, Math.ceil(capacityHint * 1.25)));
  }

  /** The bytes written so far (a view: valid while nothing more is added). */
  bytes(): Buffer {
    return this.#buf.subarray(0, this.#at);
  }

  /** Appends the line of the decision at `sinkOffset`; throws RowError (and writes nothing) for a value ClickHouse cannot store. */
  add(d: Decision, sinkTopic: string, sinkPartition: number, sinkOffset: string, timestamp: string): void {
    const r = d.rollout;
    const rewardKeys = Object.keys(r.rewards);
    const scoreKeys = Object.keys(d.scores);
    const createdAt = checkSample(d, rewardKeys, scoreKeys, sinkOffset);
    this.#text(d.pipeline_run, TAB);
    this.#text(r.id, TAB);
    this.#text(r.run_id, TAB);
    this.#text(r.prompt_id, TAB);
    this.#text(r.prompt, TAB);
    this.#text(r.group_id, TAB);
    this.#text(r.response ?? r.steps.map((s) => `${s.role}: ${s.content}`).join('\n'), TAB);
    this.#text(r.model_name, TAB);
    this.#text(r.model_version, TAB);
    this.#map(r.rewards, rewardKeys, true);
    this.#map(d.scores, scoreKeys, true);
    this.#map(r.tags, Object.keys(r.tags), false);
    this.#number(r.token_count, TAB);
    this.#number(createdAt, TAB);
    this.#text(d.duplicate_of ?? '', TAB);
    this.#text(d.dedupe_method ?? '', TAB);
    this.#array(d.reasons);
    this.#text(d.decision, TAB);
    this.#text(d.reason, TAB);
    this.#text(d.config_hash, TAB);
    this.#text(d.scorer_version ?? '', TAB);
    this.#map(d.annotations, Object.keys(d.annotations), false);
    this.#text(d.source.topic, TAB);
    this.#number(d.source.partition, TAB);
    this.#number(Number(d.source.offset), TAB);
    this.#text(sinkTopic, TAB);
    this.#number(sinkPartition, TAB);
    this.#number(Number(sinkOffset), TAB);
    this.#number(seconds(Number(timestamp)), NEWLINE);
  }

  /** Room for `bytes` more. */
  #ensure(bytes: number): void {
    if (this.#buf.length - this.#at >= bytes) return;
    const grown = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#at + bytes));
    this.#buf.copy(grown, 0, 0, this.#at);
    this.#buf = grown;
  }

  /** A String field (unquoted) or an array element (quoted: in '…', with ' escaped too), then `end` (0: nothing). */
  #text(s: string, end: number, quoted = false): void {
    const n = s.length;
    // At most 3 bytes per code unit (an escape is 2, UTF-8 is at most 3 per unit), quotes, end.
    this.#ensure(3 * n + 3);
    const buf = this.#buf;
    const escapes = quoted ? QUOTED_ESCAPES : TSV_ESCAPES;
    let at = this.#at;
    if (quoted) buf[at++] = QUOTE;
    // A longer text with nothing to escape (the usual prompt and response) goes to the native
    // encoder in one call (`write`), which beats the loop below past a few dozen units.
    if (n > LONG_TEXT && plain(s, escapes)) {
      at += buf.write(s, at, 'utf8');
      if (quoted) buf[at++] = QUOTE;
      if (end !== 0) buf[at++] = end;
      this.#at = at;
      return;
    }
    for (let i = 0; i < n; i++) {
      let c = s.charCodeAt(i);
      if (c < 0x80) {
        const e = escapes[c]!;
        if (e === 0) buf[at++] = c;
        else {
          buf[at++] = BACKSLASH;
          buf[at++] = e;
        }
      } else if (c < 0x800) {
        buf[at++] = 0xc0 | (c >> 6);
        buf[at++] = 0x80 | (c & 0x3f);
      } else {
        if ((c & 0xf800) === 0xd800) {
          const low = i + 1 < n ? s.charCodeAt(i + 1) : 0;
          if (c < 0xdc00 && (low & 0xfc00) === 0xdc00) {
            c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
            i++;
            buf[at++] = 0xf0 | (c >> 18);
            buf[at++] = 0x80 | ((c >> 12) & 0x3f);
            buf[at++] = 0x80 | ((c >> 6) & 0x3f);
            buf[at++] = 0x80 | (c & 0x3f);
            continue;
          }
          c = 0xfffd; // a lone surrogate
        }
        buf[at++] = 0xe0 | (c >> 12);
        buf[at++] = 0x80 | ((c >> 6) & 0x3f);
        buf[at++] = 0x80 | (c & 0x3f);
      }
    }
    if (quoted) buf[at++] = QUOTE;
    if (end !== 0) buf[at++] = end;
    this.#at = at;
  }

  /** A number as String(n) writes it, then `end`: a non-negative safe integer (the usual case) digit by digit. */
  #number(v: number, end: number): void {
    if (!(Number.isSafeInteger(v) && v >= 0)) return this.#ascii(String(v), end);
    this.#ensure(17);
    const buf = this.#buf;
    let digits = 1;
    for (let rest = v; rest >= 10; rest = Math.floor(rest / 10)) digits++;
    let at = this.#at + digits;
    this.#at = at + 1;
    buf[at] = end;
    let rest = v;
    do {
      buf[--at] = 0x30 + (rest % 10);
      rest = Math.floor(rest / 10);
    } while (rest > 0);
  }

  /** Text known to be ASCII with nothing to escape (a number's String), then `end`. */
  #ascii(s: string, end: number): void {
    const n = s.length;
    this.#ensure(n + 1);
    const buf = this.#buf;
    let at = this.#at;
    for (let i = 0; i < n; i++) buf[at++] = s.charCodeAt(i);
    buf[at++] = end;
    this.#at = at;
  }

  /** An Array(String) field and a tab. */
  #array(values: readonly string[]): void {
    this.#ensure(1);
    this.#buf[this.#at++] = OPEN;
    for (let i = 0; i < values.length; i++) this.#text(values[i]!, i + 1 < values.length ? COMMA : 0, true);
    this.#ensure(2);
    this.#buf[this.#at++] = CLOSE;
    this.#buf[this.#at++] = TAB;
  }

  /** A map's two array fields, keys then values (`Object.keys` order), each followed by a tab. */
  #map(map: Record<string, number> | Record<string, string>, keys: readonly string[], numbers: boolean): void {
    this.#array(keys);
    this.#ensure(1);
    this.#buf[this.#at++] = OPEN;
    for (let i = 0; i < keys.length; i++) {
      const end = i + 1 < keys.length ? COMMA : 0;
      const v = map[keys[i]!]!;
      if (numbers) this.#ascii(String(v), end === 0 ? CLOSE : end);
      else this.#text(v as string, end, true);
    }
    this.#ensure(2);
    if (numbers && keys.length > 0) this.#buf[this.#at++] = TAB;
    else {
      this.#buf[this.#at++] = CLOSE;
      this.#buf[this.#at++] = TAB;
    }
  }
}

/** Code units past which `#text` checks a text and hands it to `Buffer.write` whole. */
const LONG_TEXT = 32;

/** True when `s` holds no ASCII code unit that `escapes` escapes. */
function plain(s: string, escapes: Uint8Array): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80 && escapes[c] !== 0) return false;
  }
  return true;
}

const TAB = 9;
const NEWLINE = 10;
const QUOTE = 39;
const BACKSLASH = 92;
const COMMA = 44;
const OPEN = 91;
const CLOSE = 93;
/** Per ASCII code unit: 0, or the letter that follows a backslash in its escape. */
const TSV_ESCAPES = new Uint8Array(0x80);
TSV_ESCAPES[0] = 0x30; // \0
TSV_ESCAPES[9] = 0x74; // \t
TSV_ESCAPES[10] = 0x6e; // \n
TSV_ESCAPES[13] = 0x72; // \r
TSV_ESCAPES[BACKSLASH] = BACKSLASH;
const QUOTED_ESCAPES = TSV_ESCAPES.slice();
QUOTED_ESCAPES[QUOTE] = QUOTE;

/** sampleLine's row as an object (insert() takes rows), for callers that build rows one by one. */
export function sampleRow(d: Decision, sinkTopic: string, sinkPartition: number, sinkOffset: string, timestamp = String(Date.now())): Record<string, unknown> {
  const r = d.rollout;
  const v = sampleValues(d, sinkOffset);
  return {
    pipeline_run: d.pipeline_run,
    id: r.id,
    rollout_run: r.run_id,
    prompt_id: r.prompt_id,
    prompt: r.prompt,
    group_id: r.group_id,
    response: v.response,
    model_name: r.model_name,
    model_version: r.model_version,
    reward_names: v.rewardNames,
    reward_values: v.rewardValues,
    score_names: v.scoreNames,
    score_values: v.scoreValues,
    tag_keys: v.tagKeys,
    tag_values: v.tagValues,
    token_count: r.token_count,
    created_at: v.createdAt,
    duplicate_of: d.duplicate_of ?? '',
    dedupe_method: d.dedupe_method ?? '',
    reasons: d.reasons,
    decision: d.decision,
    reason: d.reason,
    config_hash: d.config_hash,
    scorer_version: d.scorer_version ?? '',
    annotation_keys: v.annotationKeys,
    annotation_values: v.annotationValues,
    source_topic: d.source.topic,
    source_partition: d.source.partition,
    source_offset: Number(d.source.offset),
    sink_topic: sinkTopic,
    sink_partition: sinkPartition,
    sink_offset: Number(sinkOffset),
    inserted_at: seconds(Number(timestamp)),
  };
}

function header(headers: IHeaders | undefined, name: string): string {
  const value = headers?.[name];
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined ? '' : first.toString();
}

export function deadLetterRow(m: KafkaMessage, sinkTopic: string, sinkPartition: number): Record<string, unknown> {
  return {
    pipeline_run: header(m.headers, DLQ_HEADERS.run),
    source_topic: header(m.headers, DLQ_HEADERS.topic),
    source_partition: Number(header(m.headers, DLQ_HEADERS.partition) || 0),
    source_offset: Number(header(m.headers, DLQ_HEADERS.offset) || 0),
    stage: header(m.headers, DLQ_HEADERS.stage),
    reason: header(m.headers, DLQ_HEADERS.reason),
    payload_base64: m.value?.toString('base64') ?? '',
    sink_topic: sinkTopic,
    sink_partition: sinkPartition,
    sink_offset: Number(m.offset),
    inserted_at: seconds(Number(m.timestamp)),
  };
}

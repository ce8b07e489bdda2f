import type { Consumer, IHeaders, Kafka, KafkaMessage } from 'kafkajs';
import type { Decision } from '../streams/records.ts';
import type { TopicSerde } from '../streams/serde.ts';
import { kafkaBatches } from '../streams/source.ts';
import { sinkHighWater } from './clickhouse/schema.ts';
import { TRAINER_PROGRESS_TABLE } from './clickhouse/views.ts';
import type { ClickHouseStore } from './clickhouse/store.ts';
import { DLQ_HEADERS } from './kafka-outputs.ts';
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
  /** Called after rows are stored, with how many. */
  onInsert?: (info: { table: string; rows: number }) => void;
}

/**
 * Copies the decisions and dead-letter topics (read_committed) into ClickHouse, exactly once.
 *
 * ClickHouse takes part in no Kafka transaction, so the Kafka offset of every stored row is
 * stored with it (`sink_topic`, `sink_partition`, `sink_offset`) and is the source of truth:
 * on each assignment the sink reads the highest stored offset per partition and skips records
 * at or below it, so a batch retried after a crash between the INSERT and the offset commit is
 * not stored twice. One INSERT per batch is atomic. This works the same on the embedded engine
 * and on an old server, which has no insert deduplication tokens. Committing offsets to Kafka
 * as well only saves re-reading on restart. The tables are ReplacingMergeTree keyed by the
 * record, as a backstop.
 */
export class ClickHouseSink {
  private readonly consumer: Consumer;
  private highWater = new Map<string, Promise<Map<number, number>>>();
  private subscription: Subscription | undefined;

  constructor(private readonly options: ClickHouseSinkOptions) {
    this.consumer = options.kafka.consumer({ groupId: options.groupId, readUncommitted: false, partitionAssigners: [coPartitionAssigner] });
  }

  async start(): Promise<{ stopped: Promise<void> }> {
    await this.consumer.connect();
    // Another sink worker (sharing a ClickHouse server) may have stored more since we last looked.
    this.consumer.on(this.consumer.events.GROUP_JOIN, () => (this.highWater = new Map()));
    const stopped = new Promise<void>((resolve, reject) => {
      this.subscription = kafkaBatches(this.consumer, {
        topics: [this.options.decisions.topic, this.options.deadLetterTopic, this.options.trainerProgressTopic],
        fromBeginning: true,
        partitionsConsumedConcurrently: 1,
      })
        .pipe(
          mergeMap(async (source) => {
            try {
              await this.store(source.batch.topic, source.batch.partition, source.batch.messages);
              source.settle();
            } catch (err) {
              source.settle(new Error(`ClickHouse sink: storing ${source.batch.topic}[${source.batch.partition}] failed, retrying: ${(err as Error).message}`, { cause: err }));
            }
          }),
        )
        .subscribe({ error: reject, complete: resolve });
    });
    return { stopped };
  }

  async stop(): Promise<void> {
    this.subscription?.unsubscribe();
    await this.consumer.disconnect();
  }

  private async store(topic: string, partition: number, messages: KafkaMessage[]): Promise<void> {
    if (topic === this.options.trainerProgressTopic) return this.storeProgress(topic, partition, messages);
    const table = topic === this.options.deadLetterTopic ? 'dead_letters' : 'samples';
    const stored = await this.storedOffsets(table, topic);
    const after = stored.get(partition) ?? -1;
    const fresh = messages.filter((m) => Number(m.offset) > after);
    if (fresh.length > 0) {
      // Writer schemas learnt once per batch, then a synchronous decode per record.
      if (table === 'samples') await this.options.decisions.prepare(fresh.map((m) => m.value));
      const rows =
        table === 'samples'
          ? fresh.map((m) => sampleRow(this.options.decisions.decode(m.value!), topic, partition, m.offset))
          : fresh.map((m) => deadLetterRow(m, topic, partition));
      await this.options.store.insert(table, rows);
      stored.set(partition, Number(fresh[fresh.length - 1]!.offset));
      this.options.onInsert?.({ table, rows: rows.length });
    }
    const last = messages[messages.length - 1];
    if (last !== undefined) await this.consumer.commitOffsets([{ topic, partition, offset: String(BigInt(last.offset) + 1n) }]);
  }

  /**
   * Progress reports are small and keyed by (trainer, model version, step): a report stored
   * twice after a crash collapses in the ReplacingMergeTree, so at-least-once suffices here.
   * A report that is not valid JSON is skipped with a message — it is telemetry, not data.
   */
  private async storeProgress(topic: string, partition: number, messages: KafkaMessage[]): Promise<void> {
    const rows: Record<string, unknown>[] = [];
    for (const m of messages) {
      try {
        const row = JSON.parse(m.value!.toString()) as Record<string, unknown>;
        rows.push({ ...row, at: new Date(Number(row.at ?? Date.now())) });
      } catch (err) {
        process.stderr.write(`[flywheel] skipping a trainer progress report at ${topic}[${partition}]@${m.offset}: ${(err as Error).message}\n`);
      }
    }
    if (rows.length > 0) {
      await this.options.store.insert(TRAINER_PROGRESS_TABLE, rows);
      this.options.onInsert?.({ table: TRAINER_PROGRESS_TABLE, rows: rows.length });
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

export function sampleRow(d: Decision, sinkTopic: string, sinkPartition: number, sinkOffset: string): Record<string, unknown> {
  const r = d.rollout;
  const rewards = Object.entries(r.rewards);
  const scores = Object.entries(d.scores);
  const tags = Object.entries(r.tags);
  const annotations = Object.entries(d.annotations);
  return {
    pipeline_run: d.pipeline_run,
    id: r.id,
    rollout_run: r.run_id,
    prompt_id: r.prompt_id,
    prompt: r.prompt,
    group_id: r.group_id,
    response: r.response ?? r.steps.map((s) => `${s.role}: ${s.content}`).join('\n'),
    model_name: r.model_name,
    model_version: r.model_version,
    reward_names: rewards.map(([k]) => k),
    reward_values: rewards.map(([, v]) => v),
    score_names: scores.map(([k]) => k),
    score_values: scores.map(([, v]) => v),
    tag_keys: tags.map(([k]) => k),
    tag_values: tags.map(([, v]) => v),
    token_count: r.token_count,
    created_at: seconds(r.created_at),
    duplicate_of: d.duplicate_of ?? '',
    dedupe_method: d.dedupe_method ?? '',
    reasons: d.reasons,
    decision: d.decision,
    reason: d.reason,
    config_hash: d.config_hash,
    scorer_version: d.scorer_version ?? '',
    annotation_keys: annotations.map(([k]) => k),
    annotation_values: annotations.map(([, v]) => v),
    source_topic: d.source.topic,
    source_partition: d.source.partition,
    source_offset: Number(d.source.offset),
    sink_topic: sinkTopic,
    sink_partition: sinkPartition,
    sink_offset: Number(sinkOffset),
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
  };
}

/*
 * Instrumentation events, in KafkaJS's style: a typed `on(type, listener)` that returns its own
 * remover, each event `{ type, timestamp, payload }`. The processor, the pipeline, the sinks and
 * the trainers emit them; the CLI's progress lines, the metrics endpoint and the dashboard listen.
 * Listeners run synchronously on the hot path: keep them cheap (count, set a gauge), never throw
 * (a throwing listener is reported once on `listener.error` and otherwise ignored).
 */

export interface TopicPartitionRef {
  topic: string;
  partition: number;
}

/** Every event type and its payload. */
export interface FlywheelEventMap {
  /** A fetched batch enters the pipeline. */
  'batch.start': TopicPartitionRef & { records: number; firstOffset: string; lastOffset: string };
  /** Its transaction committed: outputs written, offsets committed. */
  'batch.commit': TopicPartitionRef & { records: number; outputs: number; durationMs: number; commitMs: number };
  /** Its transaction was aborted; `retriable` says whether it will be retried in place. */
  'batch.abort': TopicPartitionRef & { records: number; reason: string; retriable: boolean; attempt: number };
  /** The consumer group rebalanced; `partitions` is this worker's new assignment. */
  'group.rebalance': { groupId: string; memberId: string; generationId: number; partitions: TopicPartitionRef[] };
  /**
   * A taken partition starts restoring its state (the processor takes a partition at its first
   * batch); `state.restored` follows. Readiness waits for every partition restoring to finish.
   */
  'state.restoring': TopicPartitionRef & { stores: number };
  /** A partition's state was restored from its changelogs. */
  'state.restored': TopicPartitionRef & { stores: number; records: number; durationMs: number };
  /** After a batch: a store's or index's size on one partition. */
  'state.size': TopicPartitionRef & { store: string; entries: number; bytes: number };
  /** Consumer lag of one partition: high watermark minus the next offset to process. */
  'consumer.lag': TopicPartitionRef & { groupId: string; lag: number };
  /** One operator's share of one batch. */
  'operator.timing': TopicPartitionRef & { operator: string; index: number; records: number; durationMs: number };
  /** Decisions of one batch, counted by decision and reason. */
  decisions: TopicPartitionRef & { counts: { decision: string; reason: string; count: number }[] };
  /** A record went to the dead-letter topic. */
  'dead-letter': TopicPartitionRef & { offset: string; stage: string; reason: string };
  /** A scorer's model at start-up, before any announcement is applied (then `model.swap`). */
  'model.loaded': { operator: string; version: string };
  /** A scorer loaded a new model (or refused one: `refused` says why). */
  'model.swap': { operator: string; from: string | null; to: string; refused?: string };
  /** The ClickHouse sink inserted one block (or failed to). */
  'sink.insert': { table: string; rows: number; durationMs: number; ok: boolean };
  /** A trainer reported a step. */
  'trainer.progress': { trainer: string; modelVersion: string; step: number; examples: number; loss: number };
  /** A listener threw; the error is reported here once per listener and type. */
  'listener.error': { type: string; message: string };
}

export type FlywheelEventType = keyof FlywheelEventMap;

export interface FlywheelEvent<K extends FlywheelEventType = FlywheelEventType> {
  type: K;
  /** Epoch milliseconds at emission. */
  timestamp: number;
  payload: FlywheelEventMap[K];
}

export type FlywheelListener<K extends FlywheelEventType> = (event: FlywheelEvent<K>) => void;

/**
 * The event bus one worker shares among its parts.
 *
 * 1. `on(type, listener)` adds a listener and returns the function that removes it.
 * 2. `emit(type, payload)` stamps the time and calls the type's listeners in the order added;
 *    with no listener it costs a map lookup (emitters may also ask `has(type)` before building
 *    a payload).
 *
 * @example
 * const events = new Instrumentation();
 * const off = events.on('batch.commit', (e) => console.log(e.payload.partition, e.payload.records));
 * events.emit('batch.commit', { topic: 't', partition: 0, records: 10, outputs: 20, durationMs: 3, commitMs: 1 });
 * off();
 */
export class Instrumentation {
  private readonly listeners = new Map<FlywheelEventType, FlywheelListener<never>[]>();
  private readonly reported = new Set<string>();

  on<K extends FlywheelEventType>(type: K, listener: FlywheelListener<K>): () => void {
    const list = (this.listeners.get(type) ?? []) as FlywheelListener<K>[];
    this.listeners.set(type, [...list, listener] as FlywheelListener<never>[]);
    return () => {
      const now = (this.listeners.get(type) ?? []) as FlywheelListener<K>[];
      this.listeners.set(type, now.filter((l) => l !== listener) as FlywheelListener<never>[]);
    };
  }

  has(type: FlywheelEventType): boolean {
    return (this.listeners.get(type)?.length ?? 0) > 0;
  }

  emit<K extends FlywheelEventType>(type: K, payload: FlywheelEventMap[K]): void {
    const list = this.listeners.get(type) as FlywheelListener<K>[] | undefined;
    if (list === undefined || list.length === 0) return;
    const event: FlywheelEvent<K> = { type, timestamp: Date.now(), payload };
    for (const listener of list) {
      try {
        listener(event);
      } catch (err) {
        const key = `${type}\u0000${list.indexOf(listener)}`;
        if (type === 'listener.error' || this.reported.has(key)) continue;
        this.reported.add(key);
        this.emit('listener.error', { type, message: (err as Error).message });
      }
    }
  }
}

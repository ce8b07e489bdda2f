import type { Batch, Consumer } from 'kafkajs';
import { Observable } from 'rxjs';

/** One fetched batch of one partition, handed downstream; the consumer waits for `settle`. */
export interface SourceBatch {
  batch: Batch;
  /** Keeps the consumer's group membership alive during long work on this batch. */
  heartbeat(): Promise<void>;
  /** Downstream is done with the batch: success lets the partition move on, an error retries it. */
  settle(error?: Error): void;
  /**
   * Downstream did not finish the batch and hands it back untouched (its partition is being
   * revoked, or the processor stops): kafkajs's position stays at the batch, nothing is thrown
   * at kafkajs, and a rebalance in progress proceeds from the heartbeat that follows.
   */
  handBack(): void;
  /** False once the consumer is stopping. */
  isRunning(): boolean;
}

export interface SourceOptions {
  topics: string[];
  fromBeginning: boolean;
  /** How many partitions may have a batch in flight at once. */
  partitionsConsumedConcurrently: number;
}

/**
 * A kafkajs consumer as an Observable of partition batches, with backpressure.
 *
 * Each partition has at most one batch in flight: the consumer's eachBatch does not return
 * until downstream settles the batch, and kafkajs fetches nothing new for a partition whose
 * batch is still being handled — so memory stays bounded by
 * partitionsConsumedConcurrently × maxBytesPerPartition however slow downstream is, and each
 * partition's records are seen in offset order. (kafkajs has one fetcher per broker, which
 * fetches again only once every batch of its last fetch is settled: holding eachBatch is the
 * pause, with nothing prefetched behind it.) A settled batch moves kafkajs's in-memory position;
 * nothing is committed here: the exactly-once processor commits offsets in its transactions.
 * A batch settled with an error is thrown back to kafkajs, which retries from its position (and,
 * once its retries are spent, restarts the consumer: a rejoin, so a rebalance of the whole group —
 * which is why the exactly-once processor retries in place and only ever hands batches back).
 *
 * The caller owns the consumer and disconnects it to stop; a consumer crash that kafkajs will
 * not restart from errors the Observable.
 */
export function kafkaBatches(consumer: Consumer, options: SourceOptions): Observable<SourceBatch> {
  return new Observable<SourceBatch>((subscriber) => {
    let closed = false;
    const crash = consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (!payload.restart) subscriber.error(payload.error);
    });
    (async () => {
      await consumer.subscribe({ topics: options.topics, fromBeginning: options.fromBeginning });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: options.partitionsConsumedConcurrently,
        eachBatch: async ({ batch, heartbeat, resolveOffset, isRunning, isStale }) => {
          if (closed || !isRunning() || isStale()) return;
          const done = await new Promise<boolean>((resolve, reject) => {
            subscriber.next({ batch, heartbeat, isRunning, settle: (error) => (error ? reject(error) : resolve(true)), handBack: () => resolve(false) });
          });
          // Moves kafkajs's in-memory position only; the processor commits offsets itself.
          if (done) resolveOffset(batch.lastOffset());
          await heartbeat();
        },
      });
    })().catch((err: unknown) => subscriber.error(err));
    return () => {
      closed = true;
      crash();
    };
  });
}

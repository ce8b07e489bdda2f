import { concatMap, defer, mergeMap, Observable } from 'rxjs';
import type { Curator, Envelope } from './envelope.ts';

export interface MicroBatchConfig {
  /** Most envelopes in one batch (samples and pass-through envelopes alike). */
  maxBatch: number;
  /** Longest time an envelope waits for its batch to fill, in milliseconds. */
  latencyMs: number;
}

/**
 * Micro-batching for operators that call a model, with `bufferTime(latencyMs, null, maxBatch)`
 * bounds:
 * 1. envelopes of every kind are buffered in arrival order;
 * 2. the buffer is flushed when it holds `maxBatch` envelopes, `latencyMs` after its first
 *    envelope arrived, when a tick arrives (the tick ends the batch), and when the input
 *    completes — so a finite input is never left waiting on a timer;
 * 3. batches go through `process` one at a time, in order, and its output (which must keep
 *    the batch's order) is emitted envelope by envelope; `process` starts only when the batch
 *    before has been emitted, so it sees any state the previous batch left;
 * 4. an error from `process` errors the stream.
 * The timer only decides batch boundaries, never a result: outputs do not depend on timing.
 */
export function microBatch(config: MicroBatchConfig, process: (batch: Envelope[]) => Promise<Envelope[]>): Curator {
  return (source) =>
    new Observable<Envelope[]>((subscriber) => {
      let buffer: Envelope[] = [];
      let timer: ReturnType<typeof setTimeout> | undefined;
      const flush = () => {
        clearTimeout(timer);
        timer = undefined;
        if (buffer.length === 0) return;
        const batch = buffer;
        buffer = [];
        subscriber.next(batch);
      };
      const subscription = source.subscribe({
        next: (envelope) => {
          buffer.push(envelope);
          if (envelope.kind === 'tick' || buffer.length >= config.maxBatch) flush();
          else timer ??= setTimeout(flush, config.latencyMs);
        },
        error: (err: unknown) => {
          clearTimeout(timer);
          subscriber.error(err);
        },
        complete: () => {
          flush();
          subscriber.complete();
        },
      });
      return () => {
        clearTimeout(timer);
        subscription.unsubscribe();
      };
    }).pipe(concatMap((batch) => defer(() => process(batch)).pipe(mergeMap((out) => out))));
}

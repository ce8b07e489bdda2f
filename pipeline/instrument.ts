import { defer, Observable } from 'rxjs';
import type { Instrumentation, TopicPartitionRef } from '../contracts/events.ts';
import type { Curator, Envelope } from '../lib/envelope.ts';

/**
 * `curator`, reporting its share of each batch as an `operator.timing` event.
 *
 * 1. Per subscription (one batch, or one tick, through the partition's chain) it checks
 *    `events.has('operator.timing')`; without a listener the curator runs as it is, unwrapped.
 * 2. Otherwise it measures the operator's own time: the time its input callbacks take, plus the
 *    time from the end of its input to its completion (an async operator awaiting a model), minus
 *    the time its outputs spend downstream. Operators in a chain run nested (an upstream `next`
 *    calls all the way down), so without that subtraction each would be charged for the rest.
 * 3. On completion it emits `{ operator, index, records, durationMs }`, `records` counting the
 *    envelopes in other than ticks; a batch with none (a bare tick) is not reported.
 * Errors pass through unreported (the processor's batch.abort tells of them).
 *
 * @example
 * const chain = pipe(timed(events, 'validate', 0, validate(cfg), where), timed(events, 'exact-dedupe', 1, exactDedupe(cfg, store), where));
 */
export function timed(events: Instrumentation, operator: string, index: number, curator: Curator, where: TopicPartitionRef): Curator {
  return (source) =>
    defer(() => {
      if (!events.has('operator.timing')) return curator(source);
      let own = 0;
      let downstream = 0;
      let records = 0;
      let inputDone = 0;
      const input = new Observable<Envelope>((inner) =>
        source.subscribe({
          next: (envelope) => {
            if (envelope.kind !== 'tick') records++;
            const start = performance.now();
            inner.next(envelope);
            own += performance.now() - start;
          },
          error: (err: unknown) => inner.error(err),
          complete: () => {
            inputDone = performance.now();
            inner.complete();
          },
        }),
      );
      return new Observable<Envelope>((out) =>
        curator(input).subscribe({
          next: (envelope) => {
            const start = performance.now();
            out.next(envelope);
            downstream += performance.now() - start;
          },
          error: (err: unknown) => out.error(err),
          complete: () => {
            if (inputDone > 0) own += performance.now() - inputDone;
            if (records > 0) events.emit('operator.timing', { ...where, operator, index, records, durationMs: Math.max(0, own - downstream) });
            out.complete();
          },
        }),
      );
    });
}

import { Observable } from 'rxjs';
import type { Curator, Envelope } from './envelope.ts';

/**
 * What one subscription of a session operator does. A session lives exactly as long as one
 * subscription (the processor subscribes once per batch), so anything it keeps in memory is
 * scratch for that batch; what must outlive the batch goes to a KeyValueStore.
 */
export interface Session {
  /** Pushes the envelopes to emit for `envelope`, in order (none while holding it). */
  next(envelope: Envelope, out: Envelope[]): void;
  /** The input completed: pushes what is still to emit and writes back state, before complete is forwarded. */
  complete?(out: Envelope[]): void;
}

/**
 * Builds a curator from a session factory: one session per subscription; each input envelope
 * yields zero or more outputs, emitted synchronously in order; on completion the session
 * flushes first, then complete goes downstream (RxJS `finalize` would run too late for that).
 * An error thrown by the session fails the stream, so sessions catch per-sample failures
 * themselves and turn them into dead letters.
 */
export function sessionCurator(open: () => Session): Curator {
  return (source) =>
    new Observable<Envelope>((subscriber) => {
      const session = open();
      const emit = (step: (out: Envelope[]) => void): boolean => {
        const out: Envelope[] = [];
        try {
          step(out);
        } catch (err) {
          subscriber.error(err);
          return false;
        }
        for (const envelope of out) subscriber.next(envelope);
        return true;
      };
      return source.subscribe({
        // After a failure the batch is lost anyway; later input must not touch state.
        next: (envelope) => void (subscriber.closed || emit((out) => session.next(envelope, out))),
        error: (err: unknown) => subscriber.error(err),
        complete: () => {
          if (emit((out) => session.complete?.(out))) subscriber.complete();
        },
      });
    });
}

/** A ratio as an annotation: four decimals are enough to read and to group by. */
export function ratioText(value: number): string {
  return String(Math.round(value * 10_000) / 10_000);
}

import { concatMap } from 'rxjs';
import type { KeyValueStore } from '../streams/state-store.ts';
import { deadLetter, type Curator, type Envelope, type Sample } from './envelope.ts';

/**
 * Like mapSamples, but one envelope may become zero or more (a held sample released later, a
 * report emitted beside it). Outputs are emitted synchronously, in order. An exception while
 * handling a sample dead-letters that sample; one while handling a tick fails the batch (it
 * means corrupt state, and the processor retries from the changelog).
 */
export function flatMapEnvelopes(stage: string, handle: (envelope: Envelope) => Envelope[]): Curator {
  return concatMap((envelope) => {
    try {
      return handle(envelope);
    } catch (err) {
      if (envelope.kind !== 'sample') throw err;
      return [deadLetter(envelope, stage, (err as Error).message)];
    }
  });
}

export function readJson<T>(store: KeyValueStore, key: string, fallback: T): T {
  const text = store.get(key);
  return text === undefined ? fallback : (JSON.parse(text) as T);
}

/** Writes only a changed value, so an idle tick adds nothing to the changelog. */
export function writeJson(store: KeyValueStore, key: string, value: unknown): void {
  const text = JSON.stringify(value);
  if (store.get(key) !== text) store.put(key, text);
}

/** Where a numeric value of a sample comes from. */
export type NumericRef = { score: string } | { reward: string } | { field: 'token_count' };

/** Where a label of a sample comes from: a rollout tag or an annotation of an earlier operator. */
export type LabelRef = { tag: string } | { annotation: string };

export function numericOf(sample: Sample, ref: NumericRef): number | undefined {
  if ('score' in ref) return sample.scores[ref.score];
  if ('reward' in ref) return sample.rollout.rewards[ref.reward];
  return sample.rollout.token_count;
}

export function labelOf(sample: Sample, ref: LabelRef): string | undefined {
  return 'tag' in ref ? sample.rollout.tags[ref.tag] : sample.annotations[ref.annotation];
}

/** Descending by score (a missing score ranks last), ties by id: a deterministic ranking. */
export function byScoreThenId(score: string): (a: Sample, b: Sample) => number {
  return (a, b) => {
    const sa = rankable(a.scores[score]);
    const sb = rankable(b.scores[score]);
    if (sa !== sb) return sb - sa;
    return a.rollout.id < b.rollout.id ? -1 : a.rollout.id > b.rollout.id ? 1 : 0;
  };
}

function rankable(value: number | undefined): number {
  return value === undefined || Number.isNaN(value) ? Number.NEGATIVE_INFINITY : value;
}

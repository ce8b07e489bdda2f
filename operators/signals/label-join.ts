import { concatMap, type OperatorFunction } from 'rxjs';
import type { KeyValueStore } from '../../streams/state-store.ts';

/** What the curating pipeline records about a model-scored sample, keyed by rollout id. */
export interface ScoredSample {
  id: string;
  /** The model's raw score, before any error compensation. */
  raw: number;
  model_version: string;
  /** The error memory's key for this sample (features), base64 Float32. */
  vector: string;
  /** Epoch milliseconds of the decision (processing time, as labels' `at`). */
  at: number;
}

/** A scorer error, once a verified label met the score it judges. */
export interface ScorerError extends ScoredSample {
  label: number;
  /** label − raw: what the score should have been higher by. */
  error: number;
}

export type JoinInput =
  | { kind: 'scored'; scored: ScoredSample }
  | { kind: 'label'; id: string; value: number; at: number }
  | { kind: 'tick'; now: number };

export interface LabelJoinConfig {
  /** How long a score waits for its label (and a label for its score), by the newest time seen. */
  ttlMs: number;
}

export const labelJoinStores = { scored: { name: 'label-join-scored' }, labels: { name: 'label-join-labels' } } as const;

/**
 * Joins verified labels with the scores they judge, whichever arrives first: each side waits in
 * its store for the other, and a match emits a ScorerError and forgets both. Unmatched entries
 * expire after `ttlMs` (checked on ticks against the entry's own time, so a stalled stream does
 * not keep them forever). A second label for the same id, after the join, is ignored — the
 * error was recorded once.
 *
 * @example
 *   input$.pipe(labelJoin({ ttlMs: 3_600_000 }, { scored: state.store(labelJoinStores.scored.name), labels: state.store(labelJoinStores.labels.name) }))
 *   // in:  { kind: 'scored', scored: { id: 'r1', raw: 0.7, … } }, then { kind: 'label', id: 'r1', value: 1, at }
 *   // out: { id: 'r1', raw: 0.7, …, label: 1, error: 0.3 }   (the same if the label comes first)
 *   // a score whose label never comes → forgotten on the first tick past ttlMs, nothing emitted
 */
export function labelJoin(config: LabelJoinConfig, stores: { scored: KeyValueStore; labels: KeyValueStore }): OperatorFunction<JoinInput, ScorerError> {
  // Arrival order is a queue in the store (`#head`, `#tail`, `#q:<seq>` → key), so expiry pops
  // the oldest entries in O(expired); entries already joined are skipped when popped.
  const expiry = (store: KeyValueStore, now: number) => {
    const start = Number(store.get('#head') ?? 0);
    let head = start;
    const tail = Number(store.get('#tail') ?? 0);
    while (head < tail) {
      const key = store.get(`#q:${head}`)!;
      const entry = store.get(key);
      if (entry !== undefined && now - atOf(entry) <= config.ttlMs) break;
      if (entry !== undefined) store.delete(key);
      store.delete(`#q:${head}`);
      head++;
    }
    // Idle ticks write nothing, so they commit nothing.
    if (head !== start) store.put('#head', String(head));
  };
  const remember = (store: KeyValueStore, key: string, value: string) => {
    if (store.get(key) === undefined) {
      const tail = Number(store.get('#tail') ?? 0);
      store.put(`#q:${tail}`, key);
      store.put('#tail', String(tail + 1));
    }
    store.put(key, value);
  };
  const joined = (scored: ScoredSample, value: number): ScorerError => ({ ...scored, label: value, error: value - scored.raw });

  return concatMap((input): Iterable<ScorerError> => {
    if (input.kind === 'tick') {
      expiry(stores.scored, input.now);
      expiry(stores.labels, input.now);
      return [];
    }
    if (input.kind === 'scored') {
      const waiting = stores.labels.get(input.scored.id);
      if (waiting !== undefined) {
        stores.labels.delete(input.scored.id);
        return [joined(input.scored, (JSON.parse(waiting) as { value: number }).value)];
      }
      remember(stores.scored, input.scored.id, JSON.stringify(input.scored));
      return [];
    }
    const scored = stores.scored.get(input.id);
    if (scored !== undefined) {
      stores.scored.delete(input.id);
      return [joined(JSON.parse(scored) as ScoredSample, input.value)];
    }
    remember(stores.labels, input.id, JSON.stringify({ value: input.value, at: input.at }));
    return [];
  });
}

/** Both stored sides carry their time in `at`. */
function atOf(entry: string): number {
  return (JSON.parse(entry) as { at: number }).at;
}

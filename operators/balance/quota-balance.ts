import type { KeyValueStore } from '../../streams/state-store.ts';
import { defaultMaxSkewMs, deserializeSample, eventTimeOf, isRejected, serializeSample, type Curator, type Envelope, type Sample } from '../../lib/envelope.ts';
import { byScoreThenId, flatMapEnvelopes, labelOf, readJson, writeJson, type LabelRef } from '../../lib/balance-internals.ts';

export interface QuotaBalanceConfig {
  /** What a bucket is: a rollout tag (skill, source…) or an earlier operator's annotation (cluster…). */
  bucketBy: LabelRef;
  /** The bucket of samples that lack that tag or annotation. */
  unknownBucket: string;
  /** Samples accepted per bucket per window. */
  quota: number;
  /** Per-bucket overrides of `quota`. */
  quotas: Record<string, number>;
  /** Ranks a window's candidates: higher is better, a missing score ranks last, ties go by rollout id. */
  score: string;
  /** Window length in event time (rollout.created_at, epoch ms). */
  windowMs: number;
  /** Event time follows created_at at most this far beyond the broker's record timestamp (see eventTimeOf). */
  maxSkewMs: number;
  /** Hop of sliding windows; must divide windowMs. Absent: tumbling windows. */
  slideMs?: number;
  /** The watermark trails the largest event time seen by this much. */
  maxOutOfOrdernessMs: number;
  /** A window is held this much longer after the watermark passes its end. */
  allowedLatenessMs: number;
  /** Processing-time bound on holding: a window is released once a tick shows it held this long. */
  maxDelayMs: number;
  /** How long (event time, behind the watermark) accepted counts of released windows are kept for late samples. */
  retentionMs: number;
  /** Most samples held at once; beyond it the oldest windows are released early. */
  maxHeld: number;
  /** Most released-window counts kept; beyond it the oldest are forgotten. */
  maxWindows: number;
}

export const quotaBalanceDefaults: QuotaBalanceConfig = {
  bucketBy: { tag: 'skill' },
  unknownBucket: 'unknown',
  quota: 100,
  quotas: {},
  score: 'rule',
  windowMs: 3_600_000,
  maxSkewMs: defaultMaxSkewMs,
  maxOutOfOrdernessMs: 60_000,
  allowedLatenessMs: 0,
  maxDelayMs: 300_000,
  retentionMs: 86_400_000,
  maxHeld: 10_000,
  maxWindows: 10_000,
};

/** Held samples, open and released windows, watermark and tick time (changelog-backed). */
export const quotaBalanceStore = { name: 'quota-balance' } as const;

/**
 * Balances buckets: per bucket and event-time window, at most `quota` samples are accepted,
 * the best by `score`. Step by step:
 *
 * 1. A sample's bucket is its `bucketBy` label (or `unknownBucket`); its pane is the slide-long
 *    interval of its event time it falls in (tumbling: the window itself). Event time is
 *    created_at capped at maxSkewMs past the broker's record timestamp, so a producer's wrong
 *    clock cannot release every window at once or expire their counts. It is annotated
 *    `quota.bucket` and `quota.window` (`<paneStartMs>/<paneEndMs>`).
 * 2. Every sample advances the watermark = max event time seen on this partition −
 *    maxOutOfOrdernessMs. Panes whose end + allowedLatenessMs ≤ watermark are released.
 * 3. A sample already rejected passes at once and consumes no quota. Any other sample is held
 *    in the store with its (bucket, pane) until the pane is released.
 * 4. Release ranks the pane's held samples and accepts as many as the budget allows; the rest
 *    get `quota:<bucket>`. Budget = quota − the largest accepted count of any window containing
 *    the pane (its other panes released earlier). Tumbling: the top `quota` of the window.
 *    Sliding: the top of each pane, earlier-released panes served first — no window of
 *    windowMs aligned to slideMs ever accepts more than `quota`.
 * 5. Bounded delay: a pane's arrival is the latest tick time seen when its first sample came
 *    (or the next tick); a tick with now > arrival + maxDelayMs releases it. So a sample waits
 *    at most maxDelayMs plus one tick interval, even if the watermark stalls.
 * 6. Late samples — for a pane already released, or whose end + allowedLatenessMs the watermark
 *    already passed — are decided at once against what remains of the budget (annotated
 *    `quota.late` = `1`). Accepted counts of released panes are kept until the watermark is
 *    retentionMs past their end + allowedLatenessMs; a sample whose windows' counts are gone is
 *    rejected (`quota:<bucket>`, `quota.late` = `expired`) rather than risk breaking the quota.
 * 7. Bounds: more than maxHeld held samples release the oldest panes early; more than
 *    maxWindows released-pane counts forget the oldest (which expires their windows as in 6).
 *
 * Released samples come out before the envelope that released them, except the sample itself
 * when it is released along with its pane; within a pane, in arrival order.
 *
 * @example
 *   quotaBalance({ ...quotaBalanceDefaults, bucketBy: { tag: 'skill' }, quota: 2, score: 'combined',
 *     windowMs: 3_600_000, maxOutOfOrdernessMs: 60_000 }, state.store(quotaBalanceStore.name))
 *   // `addition` samples at 10:05, 10:20, 10:40 scoring 0.9, 0.2, 0.7 → held;
 *   // a sample at 11:01 moves the watermark to 11:00 → the three come out, the 0.2 one with `quota:addition`
 */
export function quotaBalance(config: QuotaBalanceConfig, store: KeyValueStore): Curator {
  const slide = config.slideMs ?? config.windowMs;
  if (!(slide > 0 && config.windowMs % slide === 0)) {
    throw new Error(`quota-balance: windowMs (${config.windowMs}) must be a positive multiple of slideMs (${slide})`);
  }
  const panesPerWindow = config.windowMs / slide;
  const rank = byScoreThenId(config.score);

  const load = (): State => ({
    meta: readJson<Meta>(store, 'meta', { maxEvent: null, now: null, horizon: null }),
    open: readJson<OpenPane[]>(store, 'open', []),
    closed: readJson<ClosedPane[]>(store, 'closed', []),
  });
  const save = (state: State) => {
    writeJson(store, 'meta', state.meta);
    writeJson(store, 'open', state.open);
    writeJson(store, 'closed', state.closed);
  };

  const watermark = (state: State) => (state.meta.maxEvent === null ? Number.NEGATIVE_INFINITY : state.meta.maxEvent - config.maxOutOfOrdernessMs);
  // The first pane of the earliest window containing pane `start` must still have its count.
  const expired = (state: State, start: number) => state.meta.horizon !== null && start - config.windowMs + 2 * slide <= state.meta.horizon;
  const raiseHorizon = (state: State, to: number) => {
    if (state.meta.horizon !== null && state.meta.horizon >= to) return;
    state.meta.horizon = to;
    state.closed = state.closed.filter((c) => c.s + slide > to);
  };
  const budget = (state: State, bucket: string, start: number): number => {
    const accepted = new Map(state.closed.filter((c) => c.b === bucket).map((c) => [c.s, c.acc]));
    let fullest = 0;
    for (let k = 0; k < panesPerWindow; k++) {
      const windowStart = start - k * slide;
      let sum = 0;
      for (let j = 0; j < panesPerWindow; j++) sum += accepted.get(windowStart + j * slide) ?? 0;
      fullest = Math.max(fullest, sum);
    }
    return Math.max(0, (config.quotas[bucket] ?? config.quota) - fullest);
  };
  const reject = (sample: Sample, bucket: string): Sample => ({ ...sample, reasons: [...sample.reasons, `quota:${bucket}`] });

  const releasePane = (state: State, pane: OpenPane, out: Envelope[]) => {
    const held: Sample[] = [];
    for (let i = 0; i < pane.n; i++) {
      const key = heldKey(pane.b, pane.s, i);
      const text = store.get(key);
      if (text === undefined) throw new Error(`quota-balance: held sample ${key} is missing from the store`);
      held.push(deserializeSample(text));
      store.delete(key);
    }
    state.open = state.open.filter((p) => p !== pane);
    if (expired(state, pane.s)) {
      for (const s of held) out.push(reject({ ...s, annotations: { ...s.annotations, 'quota.late': 'expired' } }, pane.b));
      return;
    }
    const winners = new Set(
      held
        .map((s, i) => ({ s, i }))
        .sort((x, y) => rank(x.s, y.s))
        .slice(0, budget(state, pane.b, pane.s))
        .map(({ i }) => i),
    );
    state.closed.push({ b: pane.b, s: pane.s, acc: winners.size });
    held.forEach((s, i) => out.push(winners.has(i) ? s : reject(s, pane.b)));
  };
  const releaseWhere = (state: State, due: (pane: OpenPane) => boolean, out: Envelope[]) => {
    for (const pane of state.open.filter(due).sort(oldestFirst)) releasePane(state, pane, out);
  };

  const decideLate = (state: State, sample: Sample, bucket: string, start: number): Sample => {
    if (expired(state, start)) return reject({ ...sample, annotations: { ...sample.annotations, 'quota.late': 'expired' } }, bucket);
    const late = { ...sample, annotations: { ...sample.annotations, 'quota.late': '1' } };
    let record = state.closed.find((c) => c.b === bucket && c.s === start);
    if (record === undefined) state.closed.push((record = { b: bucket, s: start, acc: 0 }));
    if (budget(state, bucket, start) < 1) return reject(late, bucket);
    record.acc += 1;
    return late;
  };

  const onSample = (state: State, input: Sample, out: Envelope[]) => {
    const bucket = labelOf(input, config.bucketBy) ?? config.unknownBucket;
    const at = eventTimeOf(input, config.maxSkewMs);
    const start = Math.floor(at / slide) * slide;
    const sample = { ...input, annotations: { ...input.annotations, 'quota.bucket': bucket, 'quota.window': `${start}/${start + slide}` } };

    state.meta.maxEvent = Math.max(state.meta.maxEvent ?? at, at);
    const wm = watermark(state);
    releaseWhere(state, (p) => p.s + slide + config.allowedLatenessMs <= wm, out);
    raiseHorizon(state, wm - config.allowedLatenessMs - config.retentionMs);

    if (isRejected(sample)) {
      out.push(sample);
      return;
    }
    let pane = state.open.find((p) => p.b === bucket && p.s === start);
    const closed = state.closed.some((c) => c.b === bucket && c.s === start) || start + slide + config.allowedLatenessMs <= wm;
    if (pane === undefined && (closed || expired(state, start))) {
      out.push(decideLate(state, sample, bucket, start));
      return;
    }
    if (pane === undefined) state.open.push((pane = { b: bucket, s: start, n: 0, a: state.meta.now }));
    store.put(heldKey(bucket, start, pane.n), serializeSample(sample));
    pane.n += 1;
  };

  return flatMapEnvelopes('quota-balance', (envelope) => {
    if (envelope.kind !== 'sample' && envelope.kind !== 'tick') return [envelope];
    const state = load();
    const out: Envelope[] = [];
    if (envelope.kind === 'tick') {
      const now = envelope.now;
      state.meta.now = now;
      for (const pane of state.open) pane.a ??= now;
      releaseWhere(state, (p) => p.a !== null && now > p.a + config.maxDelayMs, out);
    } else {
      onSample(state, envelope, out);
    }
    let held = state.open.reduce((sum, p) => sum + p.n, 0);
    while (held > config.maxHeld) {
      const oldest = [...state.open].sort(oldestFirst)[0]!;
      held -= oldest.n;
      releasePane(state, oldest, out);
    }
    const forget = state.closed.length - config.maxWindows;
    if (forget > 0) raiseHorizon(state, Math.max(...[...state.closed].sort(oldestFirst).slice(0, forget).map((c) => c.s + slide)));
    save(state);
    if (envelope.kind === 'tick') out.push(envelope);
    return out;
  });
}

interface Meta {
  /** Largest event time seen (eventTimeOf); the watermark trails it. */
  maxEvent: number | null;
  /** Latest tick time seen: the arrival time of samples until the next tick. */
  now: number | null;
  /** Released-pane counts ending at or before this event time are forgotten. */
  horizon: number | null;
}

/** A pane with held samples: bucket, start, held count, arrival (tick time). */
interface OpenPane {
  b: string;
  s: number;
  n: number;
  a: number | null;
}

/** A released pane: bucket, start, samples accepted from it. */
interface ClosedPane {
  b: string;
  s: number;
  acc: number;
}

interface State {
  meta: Meta;
  open: OpenPane[];
  closed: ClosedPane[];
}

function heldKey(bucket: string, start: number, index: number): string {
  return `held/${JSON.stringify([bucket, start, index])}`;
}

function oldestFirst(x: { b: string; s: number }, y: { b: string; s: number }): number {
  return x.s - y.s || (x.b < y.b ? -1 : x.b > y.b ? 1 : 0);
}

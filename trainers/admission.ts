import type { ModelVersions } from '../operators/filter/staleness-filter.ts';
import type { Rollout } from '../contracts/records.ts';

/**
 * Admission for trainers: which consumed examples a trainer trains on, which it trains on
 * again, and when it is running out of them. Pure functions and classes over explicit times
 * (`now` is always passed in), so they are deterministic and testable; the trainer client
 * (client.ts) drives them.
 */

// ─── Staleness ────────────────────────────────────────────────────────────────────────────────

/** How far a policy version is behind the newest announced one; undefined = never announced. */
export type LagFunction = (model: string, version: string) => number | undefined;

export interface StalenessConfig {
  /** The rollout tag that names the dataset/source an example came from. */
  tag: string;
  /** Largest model-version lag admitted, per value of `tag` (Infinity: no limit). */
  maxLag: Record<string, number>;
  /** For sources not listed in `maxLag`, and rollouts without the tag. */
  defaultMaxLag: number;
  /** A version no announcement named (or one forgotten): admitted or rejected. */
  onUnknown: 'admit' | 'reject';
}

export const stalenessDefaults: StalenessConfig = { tag: 'source', maxLag: {}, defaultMaxLag: Number.POSITIVE_INFINITY, onUnknown: 'admit' };

export type StalenessVerdict =
  | { admitted: true; source: string; lag: number | undefined }
  | { admitted: false; source: string; lag: number | undefined; reason: 'stale:model_version' | 'stale:unknown_version' };

/**
 * Staleness tolerance per dataset/source: the lag of the rollout's policy version
 * (`model_name`/`model_version`) behind the newest version announced on the model-updates
 * topic, against the tolerance of the rollout's source (`tags[config.tag]`). Lag 0 = the newest
 * version. The reasons match the pipeline's staleness filter.
 */
export function admitByStaleness(rollout: Rollout, config: StalenessConfig, versions: ModelVersions | LagFunction): StalenessVerdict {
  const source = rollout.tags[config.tag] ?? '';
  const lag = typeof versions === 'function' ? versions(rollout.model_name, rollout.model_version) : versions.lag(rollout.model_name, rollout.model_version);
  if (lag === undefined) {
    return config.onUnknown === 'admit' ? { admitted: true, source, lag } : { admitted: false, source, lag, reason: 'stale:unknown_version' };
  }
  const max = Object.hasOwn(config.maxLag, source) ? config.maxLag[source]! : config.defaultMaxLag;
  return lag <= max ? { admitted: true, source, lag } : { admitted: false, source, lag, reason: 'stale:model_version' };
}

// ─── Seeded randomness with a state that can be checkpointed ──────────────────────────────────

/** mulberry32 (as cli/synthetic.ts), with its 32-bit state exposed so it can be checkpointed. */
export class SeededRandom {
  constructor(public state: number) {
    this.state = state >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

// ─── Priority replay buffer ───────────────────────────────────────────────────────────────────

export interface ReplayConfig {
  /** Most items kept; beyond it the lowest-priority items are evicted. */
  capacity: number;
  /** How many times an item may be replayed after its first (fresh) use. */
  maxReuse: number;
  /** Least time between two uses of one item, the fresh use included. */
  coolDownMs: number;
  /** Replayed items added to each training batch (at most). */
  perBatch: number;
  /** Recency term: weight × 0.5^(age / halfLife), age = now − the item's time. */
  recencyWeight: number;
  recencyHalfLifeMs: number;
  /** Score term: weight × max(0, score). */
  scoreWeight: number;
  /** Which Decision score is an item's score (missing → 0); null: no score term. */
  scoreName: string | null;
  /** Sampling probability ∝ priority^alpha: 0 is uniform, larger is greedier. */
  alpha: number;
  seed: number;
}

export const replayDefaults: ReplayConfig = {
  capacity: 10_000,
  maxReuse: 2,
  coolDownMs: 60_000,
  perBatch: 16,
  recencyWeight: 1,
  recencyHalfLifeMs: 15 * 60_000,
  scoreWeight: 1,
  scoreName: null,
  alpha: 1,
  seed: 1,
};

export interface ReplayItem<T> {
  id: string;
  value: T;
  /** The item's time for recency (e.g. the rollout's created_at), epoch ms. */
  at: number;
  score: number;
  /** Replays so far (the fresh use is not counted). */
  uses: number;
  /** When it was last used, fresh use included. */
  lastUsed: number;
  /** Insertion sequence: ties are broken by it, so eviction and sampling are deterministic. */
  seq: number;
}

export interface ReplaySnapshot<T> {
  items: Array<ReplayItem<T>>;
  random: number;
  seq: number;
}

/** Smallest priority, so an item with no recency and no score can still be drawn. */
const PRIORITY_FLOOR = 1e-9;

/**
 * A bounded priority replay buffer. Items enter when they are first used (fresh), may be drawn
 * again up to `maxReuse` times, never within `coolDownMs` of their last use, and leave when
 * used up or evicted (lowest priority first when over `capacity`). Drawing is weighted
 * sampling without replacement (Efraimidis–Spirakis: each eligible item gets key u^(1/w) with
 * w = priority^alpha, the n largest keys win) from a seeded generator: the same additions,
 * draws and times give the same items, and `snapshot`/`fromSnapshot` continue the sequence
 * exactly (the trainer client checkpoints it with the offsets).
 */
export class ReplayBuffer<T> {
  private readonly items = new Map<string, ReplayItem<T>>();
  private readonly random: SeededRandom;
  private seq = 0;

  constructor(readonly config: ReplayConfig) {
    this.random = new SeededRandom(config.seed);
  }

  static fromSnapshot<T>(config: ReplayConfig, snapshot: ReplaySnapshot<T>): ReplayBuffer<T> {
    const buffer = new ReplayBuffer<T>(config);
    for (const item of snapshot.items) buffer.items.set(item.id, { ...item });
    buffer.random.state = snapshot.random >>> 0;
    buffer.seq = snapshot.seq;
    return buffer;
  }

  snapshot(): ReplaySnapshot<T> {
    return { items: [...this.items.values()].map((item) => ({ ...item })), random: this.random.state, seq: this.seq };
  }

  get size(): number {
    return this.items.size;
  }

  has(id: string): boolean {
    return this.items.has(id);
  }

  uses(id: string): number | undefined {
    return this.items.get(id)?.uses;
  }

  priority(item: Pick<ReplayItem<T>, 'at' | 'score'>, now: number): number {
    const c = this.config;
    const age = Math.max(0, now - item.at);
    const recency = c.recencyHalfLifeMs > 0 ? 0.5 ** (age / c.recencyHalfLifeMs) : 0;
    return c.recencyWeight * recency + c.scoreWeight * Math.max(0, item.score) + PRIORITY_FLOOR;
  }

  /**
   * Adds items at their fresh use (`now`). An id already held is left as it is. With
   * `maxReuse` 0 nothing is kept. Over capacity, the lowest priorities at `now` are evicted
   * (ties: the oldest insertion first).
   */
  add(entries: Iterable<{ id: string; value: T; at: number; score: number }>, now: number): void {
    if (this.config.maxReuse <= 0 || this.config.capacity <= 0) return;
    for (const e of entries) {
      if (this.items.has(e.id)) continue;
      this.items.set(e.id, { id: e.id, value: e.value, at: e.at, score: Number.isFinite(e.score) ? e.score : 0, uses: 0, lastUsed: now, seq: this.seq++ });
    }
    const excess = this.items.size - this.config.capacity;
    if (excess <= 0) return;
    const ranked = [...this.items.values()].map((item) => ({ item, p: this.priority(item, now) })).sort((a, b) => a.p - b.p || a.item.seq - b.item.seq);
    for (let i = 0; i < excess; i++) this.items.delete(ranked[i]!.item.id);
  }

  /** Items that may be drawn at `now`: not used up and out of their cool-down. */
  eligible(now: number): Array<ReplayItem<T>> {
    const out: Array<ReplayItem<T>> = [];
    for (const item of this.items.values()) if (item.uses < this.config.maxReuse && now - item.lastUsed >= this.config.coolDownMs) out.push(item);
    return out;
  }

  /**
   * Draws up to `n` eligible items (priority-weighted, without replacement) and counts the use:
   * each drawn item's `uses` goes up by one and its cool-down starts again; an item that
   * reaches `maxReuse` leaves the buffer. Returned in draw-key order (highest first).
   */
  draw(n: number, now: number): Array<{ id: string; value: T; uses: number; priority: number }> {
    if (n <= 0) return [];
    const candidates = this.eligible(now);
    if (candidates.length === 0) return [];
    const alpha = this.config.alpha;
    const keyed = candidates.map((item) => {
      const p = this.priority(item, now);
      const w = alpha === 0 ? 1 : p ** alpha;
      // log(u)/w orders like u^(1/w) and does not underflow; 1 − u keeps u in (0, 1].
      const u = 1 - this.random.next();
      return { item, p, key: Math.log(u) / w };
    });
    keyed.sort((a, b) => b.key - a.key || a.item.seq - b.item.seq);
    const chosen = keyed.slice(0, n);
    return chosen.map(({ item, p }) => {
      item.uses += 1;
      item.lastUsed = now;
      if (item.uses >= this.config.maxReuse) this.items.delete(item.id);
      return { id: item.id, value: item.value, uses: item.uses, priority: p };
    });
  }
}

// ─── Starvation ───────────────────────────────────────────────────────────────────────────────

export interface StarvationConfig {
  /** Starving when no example was admitted for longer than this. */
  idleMs: number;
  /** Starving when fewer examples per second than this were admitted over `windowMs` (null: off). */
  minRate: number | null;
  windowMs: number;
  /** While starving, the signal is repeated at most this often (generators that start late see it). */
  repeatMs: number;
  /** How often the client checks (its timer). */
  checkEveryMs: number;
  /** Publish the signals on the control topic (the metrics object has them either way). */
  publish: boolean;
}

export const starvationDefaults: StarvationConfig = { idleMs: 30_000, minRate: null, windowMs: 60_000, repeatMs: 30_000, checkEveryMs: 1_000, publish: true };

/** What the monitor publishes on the control topic (JSON, key `starvation.<trainer>`). */
export interface StarvationSignal {
  kind: 'starvation' | 'starvation-cleared';
  trainer: string;
  /** Start of the dry spell, epoch ms: the last admitted example (or the start), or the start of the slow window. */
  since: number;
  /** When this signal was made, epoch ms. */
  at: number;
  /** Why it is starving: nothing admitted for `idle_ms`, or the rate below `min_rate`. */
  reason: 'idle' | 'rate' | null;
  /** Examples admitted per second over the last `window_ms` (or since the start, if shorter). */
  admitted_rate: number;
  min_rate: number | null;
  window_ms: number;
  idle_ms: number;
  last_admitted_at: number | null;
  /** Examples consumed but not admitted during the window, by reason (e.g. stale:model_version). */
  rejected: Record<string, number>;
}

export interface StarvationStatus {
  starving: boolean;
  reason: 'idle' | 'rate' | null;
  since: number | null;
  admitted_rate: number;
  last_admitted_at: number | null;
  idle_ms: number;
  admitted_total: number;
}

/**
 * Watches the admitted-example rate of one trainer. `record` is called with each batch's
 * admitted count (and rejections); `check(now)` says when to signal: on entering starvation
 * (kind "starvation"), again every `repeatMs` while it lasts, and once on leaving it
 * ("starvation-cleared"). The rate condition needs a full window of observation first, so a
 * trainer is not declared slow in its first seconds; the idle condition counts from the start (or the
 * restartClock call: the client makes it on joining its group).
 */
export class StarvationMonitor {
  private readonly window: Array<{ t: number; admitted: number; rejected: Record<string, number> }> = [];
  private lastAdmittedAt: number | null = null;
  private admittedTotal = 0;
  private starving: { reason: 'idle' | 'rate'; since: number; lastSignal: number } | null = null;

  constructor(
    readonly trainer: string,
    readonly config: StarvationConfig,
    private start: number,
  ) {}

  /** Counts idleness and rate from `now` on, as if the monitor were made then (nothing recorded yet). */
  restartClock(now: number): void {
    if (this.window.length === 0 && this.lastAdmittedAt === null) this.start = now;
  }

  record(admitted: number, now: number, rejected: Record<string, number> = {}): void {
    this.window.push({ t: now, admitted, rejected });
    if (admitted > 0) {
      this.lastAdmittedAt = now;
      this.admittedTotal += admitted;
    }
    this.prune(now);
  }

  private prune(now: number): void {
    while (this.window.length > 0 && now - this.window[0]!.t > this.config.windowMs) this.window.shift();
  }

  private rate(now: number): number {
    const span = Math.min(this.config.windowMs, Math.max(1, now - this.start));
    let admitted = 0;
    for (const e of this.window) admitted += e.admitted;
    return admitted / (span / 1000);
  }

  private condition(now: number): { reason: 'idle' | 'rate'; since: number } | null {
    const lastOrStart = this.lastAdmittedAt ?? this.start;
    if (now - lastOrStart > this.config.idleMs) return { reason: 'idle', since: lastOrStart };
    const { minRate, windowMs } = this.config;
    if (minRate !== null && now - this.start >= windowMs && this.rate(now) < minRate) return { reason: 'rate', since: now - windowMs };
    return null;
  }

  status(now: number): StarvationStatus {
    this.prune(now);
    const condition = this.condition(now);
    return {
      starving: condition !== null,
      reason: condition?.reason ?? null,
      since: this.starving?.since ?? condition?.since ?? null,
      admitted_rate: this.rate(now),
      last_admitted_at: this.lastAdmittedAt,
      idle_ms: now - (this.lastAdmittedAt ?? this.start),
      admitted_total: this.admittedTotal,
    };
  }

  /** The signal to publish at `now`, if any (see the class comment). */
  check(now: number): StarvationSignal | null {
    this.prune(now);
    const condition = this.condition(now);
    if (condition === null) {
      if (this.starving === null) return null;
      const since = this.starving.since;
      this.starving = null;
      return this.signal('starvation-cleared', null, since, now);
    }
    if (this.starving === null) {
      this.starving = { ...condition, lastSignal: now };
      return this.signal('starvation', condition.reason, condition.since, now);
    }
    this.starving.reason = condition.reason;
    if (now - this.starving.lastSignal < this.config.repeatMs) return null;
    this.starving.lastSignal = now;
    return this.signal('starvation', condition.reason, this.starving.since, now);
  }

  private signal(kind: StarvationSignal['kind'], reason: StarvationSignal['reason'], since: number, now: number): StarvationSignal {
    const rejected: Record<string, number> = {};
    for (const e of this.window) for (const [r, n] of Object.entries(e.rejected)) rejected[r] = (rejected[r] ?? 0) + n;
    return {
      kind,
      trainer: this.trainer,
      since,
      at: now,
      reason,
      admitted_rate: this.rate(now),
      min_rate: this.config.minRate,
      window_ms: this.config.windowMs,
      idle_ms: now - (this.lastAdmittedAt ?? this.start),
      last_admitted_at: this.lastAdmittedAt,
      rejected,
    };
  }
}

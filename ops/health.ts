/*
 * Liveness and readiness of one worker, for /healthz and /readyz (ops/server.ts).
 *
 * Alive: the process answers HTTP at all, i.e. its event loop is not stuck.
 * Ready: (1) the consumer group gave this worker partitions (group.rebalance), (2) no partition
 * it took is still restoring its state (state.restoring … state.restored; the processor takes a
 * partition, and restores it, at its first batch), (3) the ClickHouse store answers a ping.
 */
import type { FlywheelEventMap, Instrumentation } from '../contracts/events.ts';

export interface ReadinessReport {
  ready: boolean;
  /** What keeps the worker from being ready, in words, e.g. "no partitions assigned yet". */
  missing: string[];
  partitions: { ok: boolean; assigned: string[] };
  state: { ok: boolean; restoring: string[]; restored: string[] };
  store: { ok: boolean; error?: string };
}

export interface ReadinessOptions {
  /** Resolves when the store answers (e.g. `() => store.query('SELECT 1')`); none: not checked. */
  ping?: () => Promise<unknown>;
  /** A ping slower than this counts as unreachable; default 2000 ms. */
  pingTimeoutMs?: number;
  /** The consumer group whose assignment counts (others, e.g. the sink's, are ignored); default: every group. */
  groupId?: string;
}

export interface Readiness {
  check(): Promise<ReadinessReport>;
  /** Stops listening to the events. */
  detach(): void;
}

const name = (p: { topic: string; partition: number }) => `${p.topic}:${p.partition}`;

/**
 * Follows the events that make a worker ready and pings the store when asked.
 *
 * @example
 * const readiness = trackReadiness(events, { ping: () => store.query('SELECT 1'), groupId });
 * (await readiness.check()).missing; // ["no partitions assigned yet", …] until the group assigns some
 */
export function trackReadiness(events: Instrumentation, options: ReadinessOptions = {}): Readiness {
  let assigned: Set<string> | undefined;
  const restoring = new Set<string>();
  const restored = new Set<string>();
  const counts = (groupId: string) => options.groupId === undefined || options.groupId === groupId;

  const onRebalance = ({ payload }: { payload: FlywheelEventMap['group.rebalance'] }) => {
    if (!counts(payload.groupId)) return;
    assigned = new Set(payload.partitions.map(name));
    // A partition that went elsewhere is neither restoring here nor restored.
    for (const set of [restoring, restored]) for (const p of set) if (!assigned.has(p)) set.delete(p);
  };
  const offs = [
    events.on('group.rebalance', onRebalance),
    events.on('state.restoring', ({ payload }) => {
      restored.delete(name(payload));
      restoring.add(name(payload));
    }),
    events.on('state.restored', ({ payload }) => {
      restoring.delete(name(payload));
      restored.add(name(payload));
    }),
  ];

  // One ping at a time however many probes ask at once.
  let pinging: Promise<{ ok: boolean; error?: string }> | undefined;
  const ping = (): Promise<{ ok: boolean; error?: string }> => {
    if (options.ping === undefined) return Promise.resolve({ ok: true });
    const timeoutMs = options.pingTimeoutMs ?? 2000;
    let timer: NodeJS.Timeout | undefined;
    pinging ??= Promise.race([
      options.ping().then(() => ({ ok: true })),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs))),
    ])
      // A URL's user:password, should a client error quote one, stays out of the answer.
      .catch((err: unknown) => ({ ok: false, error: (err as Error).message.replace(/\/\/[^/@\s]*@/g, '//***@') }))
      .finally(() => {
        clearTimeout(timer);
        pinging = undefined;
      });
    return pinging;
  };

  return {
    async check() {
      const store = await ping();
      const partitions = { ok: assigned !== undefined && assigned.size > 0, assigned: [...(assigned ?? [])].sort() };
      const state = { ok: restoring.size === 0, restoring: [...restoring].sort(), restored: [...restored].sort() };
      const missing = [
        ...(assigned === undefined ? ['no partitions assigned yet'] : assigned.size === 0 ? ['the consumer group assigned this worker no partitions'] : []),
        ...(state.ok ? [] : [`state of ${state.restoring.join(', ')} still restoring`]),
        ...(store.ok ? [] : [`ClickHouse store unreachable: ${store.error}`]),
      ];
      return { ready: missing.length === 0, missing, partitions, state, store };
    },
    detach: () => offs.forEach((off) => off()),
  };
}

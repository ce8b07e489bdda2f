import type { KeyValueStore } from '../../streams/state-store.ts';
import { deadLetter, eventTimeOf, type Curator, type Emit, type Sample } from '../../lib/envelope.ts';
import { ratioText, sessionCurator } from '../../lib/filters-internals.ts';

export interface WeaknessTrackerConfig {
  /** The verifier reward that says whether an attempt passed. */
  reward: string;
  /** An attempt passes when the reward is at least this. */
  passThreshold: number;
  /** Outcomes remembered per prompt (K): the pass rate is over the last K attempts. */
  window: number;
  /** Fewest attempts in the window before a prompt can be called weak. */
  minAttempts: number;
  /** A prompt is weak when its pass rate is at most this. */
  maxPassRate: number;
  /** After reporting a prompt, further attempts needed before reporting it again. */
  cooldownAttempts: number;
  /** …and event time (created_at, capped at the broker timestamp: eventTimeOf) that must pass too; 0: none. */
  cooldownMs: number;
  /** Bound on prompts tracked; the least recently seen is forgotten first. */
  maxPrompts: number;
  /** Prompt text kept for the report, truncated to bound state. */
  maxPromptChars: number;
}

export const weaknessTrackerDefaults: WeaknessTrackerConfig = {
  reward: 'correct',
  passThreshold: 1,
  window: 20,
  minAttempts: 8,
  maxPassRate: 0.2,
  cooldownAttempts: 20,
  cooldownMs: 0,
  maxPrompts: 100_000,
  maxPromptChars: 2000,
};

/** Per-prompt outcome windows and their recency list (changelog-backed). */
export const weaknessTrackerStore = { name: 'weakness-tracker' } as const;

/** What the `weaknesses` side output carries for a prompt. */
export interface WeaknessReport {
  prompt_id: string;
  prompt: string;
  /** Attempts in the window. */
  attempts: number;
  pass_rate: number;
  by_version: Record<string, { attempts: number; pass_rate: number }>;
  /** Latest created_at among its attempts. */
  last_seen: number;
}

interface PromptState {
  prompt: string;
  /** The last `window` outcomes, oldest first: [passed, model_version]. */
  recent: Array<[0 | 1, string]>;
  attemptsSinceReport: number;
  /** created_at of the attempt that triggered the last report. */
  lastReportAt: number | null;
  lastSeen: number;
}

/**
 * Tracks how often the policy solves each prompt, to find what it is weak at:
 *
 * 1. A sample carrying the reward is an attempt at its `prompt_id` (whether or not earlier
 *    operators rejected it: weakness is about the policy, not the curation); it passes when
 *    reward ≥ passThreshold. Samples without the reward are not attempts.
 * 2. The prompt's window keeps the last `window` outcomes with their model versions; the
 *    sample leaves unchanged but for the annotation `weakness.pass_rate`.
 * 3. When the window holds ≥ minAttempts and the pass rate is ≤ maxPassRate, an Emit
 *    {output: 'weaknesses', key: prompt_id, value: WeaknessReport} follows the sample — again for
 *    the same prompt only after `cooldownAttempts` further attempts and `cooldownMs` of event time.
 *
 * Other envelopes pass through. State lives in the store: one entry per prompt plus a
 * doubly-linked recency list (O(1) store writes per sample). Bound: maxPrompts prompts, each
 * holding ≤ window outcomes and ≤ maxPromptChars of prompt; beyond it the least recently seen
 * prompt (arrival order) is forgotten.
 *
 * @example
 *   weaknessTracker({ ...weaknessTrackerDefaults, minAttempts: 4, maxPassRate: 0.25 }, state.store(weaknessTrackerStore.name))
 *   // prompt p7 attempted 4 times, rewards.correct 0, 0, 1, 0
 *   //   → each sample annotated 'weakness.pass_rate' (the 4th: '0.25'), and after the 4th
 *   //     Emit{ output: 'weaknesses', key: 'p7', value: { prompt_id: 'p7', attempts: 4, pass_rate: 0.25, by_version, … } }
 */
export function weaknessTracker(config: WeaknessTrackerConfig, store: KeyValueStore): Curator {
  const recency = new StoreRecency(store, config.maxPrompts);
  return sessionCurator(() => ({
    next(envelope, out) {
      if (envelope.kind !== 'sample') return void out.push(envelope);
      try {
        const report = recordAttempt(envelope, config, store);
        if (report === undefined) return void out.push(envelope);
        for (const forgotten of recency.touch(report.prompt_id)) store.delete(promptKey(forgotten));
        out.push({ ...envelope, annotations: { ...envelope.annotations, 'weakness.pass_rate': ratioText(report.pass_rate) } });
        if (report.weak) out.push({ kind: 'emit', output: 'weaknesses', key: report.prompt_id, value: { ...report.value } } satisfies Emit);
      } catch (err) {
        out.push(deadLetter(envelope, 'weakness-tracker', (err as Error).message));
      }
    },
  }));
}

const promptKey = (id: string) => `p:${id}`;

function recordAttempt(sample: Sample, config: WeaknessTrackerConfig, store: KeyValueStore) {
  const r = sample.rollout;
  const reward = r.rewards[config.reward];
  if (reward === undefined) return undefined;
  // A far-future created_at as lastReportAt would silence the prompt for good.
  const at = eventTimeOf(sample);
  const stored = store.get(promptKey(r.prompt_id));
  const state: PromptState = stored === undefined
    ? { prompt: r.prompt.slice(0, config.maxPromptChars), recent: [], attemptsSinceReport: 0, lastReportAt: null, lastSeen: at }
    : (JSON.parse(stored) as PromptState);
  state.recent.push([reward >= config.passThreshold ? 1 : 0, r.model_version]);
  if (state.recent.length > config.window) state.recent.splice(0, state.recent.length - config.window);
  state.attemptsSinceReport += 1;
  state.lastSeen = Math.max(state.lastSeen, at);
  const value = report(r.prompt_id, state);
  const cooledDown =
    state.lastReportAt === null || (state.attemptsSinceReport >= config.cooldownAttempts && at - state.lastReportAt >= config.cooldownMs);
  const weak = value.attempts >= config.minAttempts && value.pass_rate <= config.maxPassRate && cooledDown;
  if (weak) {
    state.attemptsSinceReport = 0;
    state.lastReportAt = at;
  }
  store.put(promptKey(r.prompt_id), JSON.stringify(state));
  return { prompt_id: r.prompt_id, pass_rate: value.pass_rate, weak, value };
}

function report(promptId: string, state: PromptState): WeaknessReport {
  const versions = new Map<string, { attempts: number; passes: number }>();
  for (const [passed, version] of state.recent) {
    const v = versions.get(version) ?? { attempts: 0, passes: 0 };
    versions.set(version, { attempts: v.attempts + 1, passes: v.passes + passed });
  }
  const passes = state.recent.reduce((sum, [passed]) => sum + passed, 0);
  return {
    prompt_id: promptId,
    prompt: state.prompt,
    attempts: state.recent.length,
    pass_rate: passes / state.recent.length,
    by_version: Object.fromEntries([...versions].map(([version, v]) => [version, { attempts: v.attempts, pass_rate: v.passes / v.attempts }])),
    last_seen: state.lastSeen,
  };
}

interface RecencyEnds {
  /** Least recently seen. */
  head: string | null;
  /** Most recently seen. */
  tail: string | null;
  size: number;
}

/**
 * A least-recently-seen list kept in a store as a doubly-linked list (`l:<id>` → [prev, next],
 * `recency` → ends and size), so touching an id costs a handful of small writes however many
 * ids there are.
 */
class StoreRecency {
  constructor(
    private readonly store: KeyValueStore,
    private readonly capacity: number,
  ) {}

  /** Marks `id` most recent; returns the ids dropped to stay within capacity. */
  touch(id: string): string[] {
    const ends = this.ends();
    if (ends.tail === id) return [];
    const links = this.links(id);
    if (links === undefined) ends.size += 1;
    else this.unlink(ends, links);
    this.setLinks(id, [ends.tail, null]);
    if (ends.tail === null) ends.head = id;
    else this.setLinks(ends.tail, [this.links(ends.tail)![0], id]);
    ends.tail = id;
    const dropped: string[] = [];
    while (ends.size > this.capacity && ends.head !== null) {
      const oldest = ends.head;
      this.unlink(ends, this.links(oldest)!);
      this.store.delete(linkKey(oldest));
      ends.size -= 1;
      dropped.push(oldest);
    }
    this.store.put(ENDS_KEY, JSON.stringify(ends));
    return dropped;
  }

  private unlink(ends: RecencyEnds, [prev, next]: Link): void {
    if (prev === null) ends.head = next;
    else this.setLinks(prev, [this.links(prev)![0], next]);
    if (next === null) ends.tail = prev;
    else this.setLinks(next, [prev, this.links(next)![1]]);
  }

  private ends(): RecencyEnds {
    const text = this.store.get(ENDS_KEY);
    return text === undefined ? { head: null, tail: null, size: 0 } : (JSON.parse(text) as RecencyEnds);
  }

  private links(id: string): Link | undefined {
    const text = this.store.get(linkKey(id));
    return text === undefined ? undefined : (JSON.parse(text) as Link);
  }

  private setLinks(id: string, link: Link): void {
    this.store.put(linkKey(id), JSON.stringify(link));
  }
}

type Link = [prev: string | null, next: string | null];
const ENDS_KEY = 'recency';
const linkKey = (id: string) => `l:${id}`;

import type { Rollout } from '../../contracts/records.ts';
import type { Curator, Emit, Envelope, Sample } from '../../lib/envelope.ts';
import { sessionCurator } from '../../lib/filters-internals.ts';

export interface PreferencePairsConfig {
  /** The verifier reward: at least `threshold` is right, below it wrong. */
  reward: string;
  threshold: number;
  /** The score that ranks samples (the best right one is chosen first); null: the reward itself. */
  score: string | null;
  maxPairsPerGroup: number;
  /** Reason prefixes that keep a sample out of every pair (a copy of an eval item, a duplicate). */
  excludeReasons: string[];
  /** Reason prefixes about the group or the budget, not the response: they neither disqualify a chosen sample nor make one rejected. */
  neutralReasons: string[];
}

export const preferencePairsDefaults: PreferencePairsConfig = {
  reward: 'correct',
  threshold: 1,
  score: null,
  maxPairsPerGroup: 4,
  excludeReasons: ['contamination:', 'duplicate'],
  neutralReasons: ['group:', 'quota:', 'stale:'],
};

/** What the `preferencePairs` side output carries. */
export interface PreferencePair {
  group_id: string;
  prompt: string;
  chosen: { id: string; response: string; score: number };
  rejected: { id: string; response: string; score: number };
  /** chosen.score − rejected.score; negative when a wrong answer outscored a right one. */
  margin: number;
}

interface Candidate {
  id: string;
  response: string;
  score: number;
}

/**
 * Turns prompt groups into preference pairs for DPO-style training. Samples pass through
 * unchanged; the operator only watches them:
 *
 * 1. Consecutive samples with the same `group_id` form a group. The group ends when a sample of
 *    another group arrives, on a tick, or when the input completes; its pairs are emitted then,
 *    before that sample, tick or completion.
 * 2. Chosen candidates: right (reward ≥ threshold) and not rejected, best score first.
 *    Rejected candidates: wrong, or rejected for any reason not in `neutralReasons`, worst
 *    score first. Samples with an `excludeReasons` reason, or without the score, take no part.
 * 3. The k-th best chosen pairs with the k-th worst rejected, for k < maxPairsPerGroup, each
 *    as Emit {output: 'preferencePairs', key: group_id, value: PreferencePair}.
 *
 * Place it after group-filter (which releases each group whole and contiguous, within one
 * batch) and last in the chain, so it sees every reason the filters gave. A group split across
 * batches or interleaved with another yields pairs per contiguous run. The group being
 * collected is scratch for one batch; no store is needed.
 *
 * @example
 *   preferencePairs({ ...preferencePairsDefaults, score: 'combined' })
 *   // group g: a (correct 1, combined 0.9), b (correct 0, combined 0.4), c (correct 1, combined 0.6), then a sample of group h
 *   //   → a, b, c pass unchanged; before h's sample, Emit{ output: 'preferencePairs', key: 'g',
 *   //     value: { chosen: a, rejected: b, margin: 0.5, … } }   (c has no wrong answer left to pair with)
 */
export function preferencePairs(config: PreferencePairsConfig): Curator {
  const hasPrefix = (prefixes: string[]) => (reason: string) => prefixes.some((p) => reason.startsWith(p));
  const excluded = hasPrefix(config.excludeReasons);
  const neutral = hasPrefix(config.neutralReasons);
  return sessionCurator(() => {
    let group: { id: string; prompt: string; chosen: Candidate[]; rejected: Candidate[] } | undefined;
    const flush = (out: Envelope[]) => {
      if (group === undefined) return;
      const chosen = group.chosen.sort((a, b) => b.score - a.score);
      const rejected = group.rejected.sort((a, b) => a.score - b.score);
      const pairs = Math.min(chosen.length, rejected.length, config.maxPairsPerGroup);
      for (let k = 0; k < pairs; k++) {
        const value: PreferencePair = { group_id: group.id, prompt: group.prompt, chosen: chosen[k]!, rejected: rejected[k]!, margin: chosen[k]!.score - rejected[k]!.score };
        out.push({ kind: 'emit', output: 'preferencePairs', key: group.id, value: { ...value } } satisfies Emit);
      }
      group = undefined;
    };
    const collect = (sample: Sample) => {
      const r = sample.rollout;
      const current = group?.id === r.group_id ? group : (group = { id: r.group_id, prompt: r.prompt, chosen: [], rejected: [] });
      if (sample.reasons.some(excluded)) return;
      const reward = r.rewards[config.reward];
      const score = config.score === null ? reward : sample.scores[config.score];
      if (score === undefined) return;
      const candidate = { id: r.id, response: responseText(r), score };
      const qualityRejected = sample.reasons.some((reason) => !neutral(reason));
      if (qualityRejected || (reward !== undefined && reward < config.threshold)) current.rejected.push(candidate);
      else if (reward !== undefined) current.chosen.push(candidate);
    };
    return {
      next(envelope, out) {
        if (envelope.kind === 'tick' || (envelope.kind === 'sample' && envelope.rollout.group_id !== group?.id)) flush(out);
        if (envelope.kind === 'sample') collect(envelope);
        out.push(envelope);
      },
      complete: flush,
    };
  });
}

function responseText(r: Rollout): string {
  return r.response ?? r.steps.map((s) => `${s.role}: ${s.content}`).join('\n');
}

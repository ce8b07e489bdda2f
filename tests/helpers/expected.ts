import { expect } from 'vitest';
import type { Fate, SyntheticData } from '../../cli/synthetic.ts';
import type { Decision } from '../../contracts/records.ts';

/** The ids the synthetic data's fates say must be accepted, and the reasons the rest get. */
export function expectedOutcome(data: SyntheticData) {
  const accepted = new Set<string>();
  const byFate = new Map<Fate, number>();
  for (const [id, fate] of data.fates) {
    byFate.set(fate, (byFate.get(fate) ?? 0) + 1);
    if (fate === 'accept') accepted.add(id);
  }
  return {
    accepted,
    decided: data.rollouts.length - (byFate.get('invalid') ?? 0),
    dead: (byFate.get('invalid') ?? 0) + data.garbage.length,
    duplicates: byFate.get('duplicate') ?? 0,
  };
}

/**
 * What a worker crash or a rebalance must not change: every input decided exactly once, the
 * accepted set exactly the expected one; returns the late duplicates' decisions (`-late` ids).
 */
export function expectDecidedOnce(decided: Decision[], total: number, accepted: Set<string>): Decision[] {
  const ids = decided.map((d) => d.rollout.id);
  expect(ids.length, 'no decision twice').toBe(new Set(ids).size);
  expect(ids.length).toBe(total);
  expect(new Set(decided.filter((d) => d.decision === 'accepted').map((d) => d.rollout.id))).toEqual(accepted);
  return decided.filter((d) => d.rollout.id.endsWith('-late'));
}

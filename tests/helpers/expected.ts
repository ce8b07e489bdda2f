import type { Fate, SyntheticData } from '../../cli/synthetic.ts';

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

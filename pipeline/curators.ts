import { identity, pipe } from 'rxjs';
import type { Curator } from '../operators/envelope.ts';
import { exactDedupe, exactDedupeStore } from '../operators/exact-dedupe.ts';
import { ruleScore } from '../operators/rule-score.ts';
import { thresholdFilter } from '../operators/threshold-filter.ts';
import { validate } from '../operators/validate.ts';
import type { PartitionState, StoreSpec } from '../streams/state-store.ts';
import type { OperatorConfig } from './config.ts';

/** The state stores the configured operators need, each declared once. */
export function declaredStores(operators: readonly OperatorConfig[]): StoreSpec[] {
  const stores = new Map<string, StoreSpec>();
  for (const op of operators) {
    if (op.type === 'exact-dedupe') stores.set(exactDedupeStore.name, exactDedupeStore);
  }
  return [...stores.values()];
}

/** One partition's operator chain, in config order, over that partition's state. */
export function buildCurators(operators: readonly OperatorConfig[], state: PartitionState): Curator {
  const steps = operators.map((op): Curator => {
    switch (op.type) {
      case 'validate':
        return validate(op);
      case 'rule-score':
        return ruleScore(op);
      case 'exact-dedupe':
        return exactDedupe(op, state.store(exactDedupeStore.name));
      case 'threshold-filter':
        return thresholdFilter(op);
    }
  });
  return steps.reduce<Curator>((chain, step) => pipe(chain, step), identity);
}

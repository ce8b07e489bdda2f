import { mapSamples, type Curator, type Sample } from '../../lib/envelope.ts';
import { parseExpression } from '../../lib/scoring-expression.ts';

export interface RewardCombineConfig {
  /** The score written: `scores[name]`. */
  name: string;
  /**
   * "weighted": Σ weight·value (÷ Σ weight when `normalize`) over `weights`;
   * "min" / "max": the least / greatest of `inputs`;
   * "expression": `expression` (see scoring-expression.ts for the language).
   */
  mode: 'weighted' | 'min' | 'max' | 'expression';
  /** weighted: input name → weight. */
  weights: Record<string, number>;
  /** weighted: divide by the sum of the weights, giving a weighted mean. */
  normalize: boolean;
  /** min / max: the input names. */
  inputs: string[];
  /** expression: e.g. `min(correct, rule.format) * (certainty.confidence > 0.5)`. */
  expression: string;
  /** An input neither scored nor rewarded: write no score ("skip") or read it as 0 ("zero"). */
  onMissing: 'skip' | 'zero';
}

export const rewardCombineDefaults: RewardCombineConfig = {
  name: 'combined',
  mode: 'weighted',
  weights: {},
  normalize: true,
  inputs: [],
  expression: '',
  onMissing: 'skip',
};

/**
 * Combines scores and verifier rewards into one score, `scores[name]`:
 * 1. an input name is looked up in `sample.scores` first, then in `rollout.rewards`;
 * 2. if an input is missing, `onMissing` decides: no score is written ("skip", so a later
 *    threshold filter's own onMissing applies) or the input counts as 0 ("zero");
 * 3. a non-finite result (e.g. division by zero) writes no score either.
 * The config is checked and the expression parsed once, when the operator is built; a bad
 * expression throws an ExpressionError naming the position. Scores only; filters decide.
 */
export function rewardCombine(config: RewardCombineConfig): Curator {
  const { names, combine } = combiner(config);
  return mapSamples('reward-combine', (sample) => {
    const values: number[] = [];
    for (const name of names) {
      const value = lookup(sample, name) ?? (config.onMissing === 'zero' ? 0 : undefined);
      if (value === undefined) return sample;
      values.push(value);
    }
    const result = combine(values);
    if (!Number.isFinite(result)) return sample;
    return { ...sample, scores: { ...sample.scores, [config.name]: result } };
  });
}

function lookup(sample: Sample, name: string): number | undefined {
  // Own properties only: a name like "constructor" must not find Object.prototype's.
  if (Object.hasOwn(sample.scores, name)) return sample.scores[name];
  if (Object.hasOwn(sample.rollout.rewards, name)) return sample.rollout.rewards[name];
  return undefined;
}

function combiner(config: RewardCombineConfig): { names: readonly string[]; combine: (values: readonly number[]) => number } {
  const where = `reward-combine "${config.name}"`;
  switch (config.mode) {
    case 'weighted': {
      const entries = Object.entries(config.weights);
      if (entries.length === 0) throw new Error(`${where}: mode "weighted" needs at least one entry in weights`);
      const total = entries.reduce((sum, [, w]) => sum + w, 0);
      if (config.normalize && !(total > 0)) throw new Error(`${where}: weights must sum to more than 0 to normalize (sum ${total}); set normalize: false`);
      const divisor = config.normalize ? total : 1;
      return {
        names: entries.map(([name]) => name),
        combine: (values) => entries.reduce((sum, [, w], i) => sum + w * values[i]!, 0) / divisor,
      };
    }
    case 'min':
    case 'max': {
      if (config.inputs.length === 0) throw new Error(`${where}: mode "${config.mode}" needs at least one name in inputs`);
      const pick = config.mode === 'min' ? Math.min : Math.max;
      return { names: [...new Set(config.inputs)], combine: (values) => pick(...values) };
    }
    case 'expression': {
      const expression = parseExpression(config.expression);
      return { names: expression.names, combine: expression.evaluate };
    }
  }
}

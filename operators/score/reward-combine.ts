import { mapSamples, type Curator, type Sample } from '../../lib/envelope.ts';
import { compileExpression, sampleVocabulary, scoreOrReward } from '../../lib/expression.ts';

export interface RewardCombineConfig {
  /** The score written: `scores[name]`. */
  name: string;
  /**
   * "weighted": Σ weight·value (÷ Σ weight when `normalize`) over `weights`;
   * "min" / "max": the least / greatest of `inputs`;
   * "expression": `expression`, in the expression language of lib/expression.ts.
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
 * 1. the config is checked and the expression parsed and type-checked once, when the operator
 *    is built; a bad expression throws an ExpressionError naming the field (`expression`) and
 *    the column;
 * 2. weighted / min / max: an input name is looked up in `sample.scores` first, then in
 *    `rollout.rewards`; if an input is missing, `onMissing` decides: no score is written
 *    ("skip", so a later threshold filter's own onMissing applies) or the input counts as 0 ("zero");
 * 3. expression: names read as in rule-filter (a bare name is a score, else a reward; `scores.x`,
 *    `rewards.x`, `token_count`…), a boolean counts as 1 or 0; a missing score or reward is
 *    unknown ("skip") or 0 ("zero"), and an unknown result writes no score;
 * 4. a non-finite result (e.g. division by zero) writes no score either.
 * Scores only; filters decide. Dead letters and ticks pass through unchanged.
 *
 * @example
 *   rewardCombine({ ...rewardCombineDefaults, name: 'combined', mode: 'expression',
 *     expression: 'min(correct, rule.format) * (certainty.confidence > 0.5)' })
 *   // rewards { correct: 1 }, scores { 'rule.format': 0.8, 'certainty.confidence': 0.9 } → scores.combined = 0.8
 *   // certainty.confidence missing → no `combined` score (onMissing: 'skip')
 */
export function rewardCombine(config: RewardCombineConfig): Curator {
  const combine = combiner(config);
  return mapSamples('reward-combine', (sample) => {
    const result = combine(sample);
    if (result === null || !Number.isFinite(result)) return sample;
    return { ...sample, scores: { ...sample.scores, [config.name]: result } };
  });
}

/** The combined value of one sample, or null when it cannot be computed. */
type Combine = (sample: Sample) => number | null;

function combiner(config: RewardCombineConfig): Combine {
  const where = `reward-combine "${config.name}"`;
  // The inputs' values in `names` order, or null when one is missing and onMissing is "skip".
  const inputs = (names: readonly string[]) => (sample: Sample): number[] | null => {
    const values: number[] = [];
    for (const name of names) {
      const value = scoreOrReward(sample, name) ?? (config.onMissing === 'zero' ? 0 : undefined);
      if (value === undefined) return null;
      values.push(value);
    }
    return values;
  };
  switch (config.mode) {
    case 'weighted': {
      const entries = Object.entries(config.weights);
      if (entries.length === 0) throw new Error(`${where}: mode "weighted" needs at least one entry in weights`);
      const total = entries.reduce((sum, [, w]) => sum + w, 0);
      if (config.normalize && !(total > 0)) throw new Error(`${where}: weights must sum to more than 0 to normalize (sum ${total}); set normalize: false`);
      const divisor = config.normalize ? total : 1;
      const read = inputs(entries.map(([name]) => name));
      return (sample) => {
        const values = read(sample);
        return values === null ? null : entries.reduce((sum, [, w], i) => sum + w * values[i]!, 0) / divisor;
      };
    }
    case 'min':
    case 'max': {
      if (config.inputs.length === 0) throw new Error(`${where}: mode "${config.mode}" needs at least one name in inputs`);
      const pick = config.mode === 'min' ? Math.min : Math.max;
      const read = inputs([...new Set(config.inputs)]);
      return (sample) => {
        const values = read(sample);
        return values === null ? null : pick(...values);
      };
    }
    case 'expression': {
      const vocabulary = sampleVocabulary({ missing: config.onMissing === 'zero' ? 'zero' : 'unknown' });
      const expression = compileExpression(config.expression, { field: 'expression', vocabulary, result: 'number' });
      return (sample) => expression.evaluate(sample);
    }
  }
}

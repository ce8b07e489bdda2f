import { mapSamples, type Curator } from '../../lib/envelope.ts';
import type { Rollout } from '../../contracts/records.ts';

export interface RuleScoreConfig {
  /** Score name prefix: writes `<name>.reward`, `<name>.format` and `<name>`. */
  name: string;
  /** Reward name → weight; the reward score is their weighted mean (a missing reward counts 0). */
  rewards: Record<string, number>;
  format: {
    /** A regular expression the response must match, e.g. an answer marker. */
    pattern?: string;
    minChars?: number;
    maxChars?: number;
  };
}

/**
 * Scores each sample by rules: `<name>.reward` from verifier rewards, `<name>.format` as 1 or 0
 * for the format checks, and `<name>` = reward × format. Scores only; filters decide.
 *
 * @example
 *   ruleScore({ name: 'rule', rewards: { correct: 3, style: 1 }, format: { pattern: 'Answer:', maxChars: 4000 } })
 *   // rewards { correct: 1, style: 0 }, response "… Answer: 4" → scores { 'rule.reward': 0.75, 'rule.format': 1, rule: 0.75 }
 *   // the same without "Answer:"                              → scores { 'rule.reward': 0.75, 'rule.format': 0, rule: 0 }
 */
export function ruleScore(config: RuleScoreConfig): Curator {
  const pattern = config.format.pattern === undefined ? undefined : new RegExp(config.format.pattern, 's');
  const weights = Object.entries(config.rewards);
  const totalWeight = weights.reduce((sum, [, w]) => sum + w, 0);
  return mapSamples(config.name, (sample) => {
    const reward = totalWeight === 0 ? 0 : weights.reduce((sum, [k, w]) => sum + w * (Object.hasOwn(sample.rollout.rewards, k) ? sample.rollout.rewards[k]! : 0), 0) / totalWeight;
    const format = formatPasses(sample.rollout, config.format, pattern) ? 1 : 0;
    return {
      ...sample,
      scores: {
        ...sample.scores,
        [`${config.name}.reward`]: reward,
        [`${config.name}.format`]: format,
        [config.name]: reward * format,
      },
    };
  });
}

function formatPasses(r: Rollout, format: RuleScoreConfig['format'], pattern: RegExp | undefined): boolean {
  const text = r.response ?? r.steps.map((s) => s.content).join('\n');
  if (format.minChars !== undefined && text.length < format.minChars) return false;
  if (format.maxChars !== undefined && text.length > format.maxChars) return false;
  return pattern === undefined || pattern.test(text);
}

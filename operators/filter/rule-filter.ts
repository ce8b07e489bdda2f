import { mapSamples, type Curator, type Sample } from '../../lib/envelope.ts';
import { compileExpression, sampleVocabulary } from '../../lib/expression.ts';

export interface Rule {
  /** Names the reason: `rule:<name>`. */
  name: string;
  /** A condition that rejects the sample when true, e.g. `rule.reward < 0.5 or token_count > 4000`. */
  when: string;
}

export interface RuleFilterConfig {
  rules: Rule[];
  /** A rule that cannot be decided because a value it needs is missing: let through, or rejected (`rule:<name>:missing`). */
  onMissing: 'pass' | 'reject';
}

export const ruleFilterDefaults: RuleFilterConfig = { rules: [], onMissing: 'pass' };

/**
 * Rejects samples by named rule conditions:
 * 1. every rule is parsed and type-checked once, when the operator is built; a bad rule throws an
 *    ExpressionError naming its field (`rules[i].when`) and the column;
 * 2. per sample, each rule is evaluated in the expression language of lib/expression.ts
 *    (names such as `scores.x`, `rewards.x`, `tags.x`, `annotations.x`, the rollout's fields;
 *    strings in single quotes; three-valued logic, a missing value being unknown);
 * 3. a rule that holds adds `rule:<name>` (each rule its own reason, so analytics count each);
 *    a rule that ends unknown is decided by `onMissing`: nothing ("pass") or `rule:<name>:missing`;
 * 4. dead letters and ticks pass through unchanged.
 *
 * @example
 *   ruleFilter({ rules: [{ name: 'weak', when: "rule.reward < 0.5 and tags.source == 'web'" }], onMissing: 'pass' })
 *   // { scores: { 'rule.reward': 0.2 }, tags: { source: 'web' } } → reasons ['rule:weak']
 *   // { scores: {},                    tags: { source: 'web' } } → unknown → passes (onMissing: 'pass')
 */
export function ruleFilter(config: RuleFilterConfig): Curator {
  const names = new Set<string>();
  const rules = config.rules.map((rule, i) => {
    if (rule.name.trim() === '') throw new Error(`rules[${i}]: every rule needs a name: it becomes the reason rule:<name>`);
    if (names.has(rule.name)) throw new Error(`rules[${i}]: rule "${rule.name}" is defined twice`);
    names.add(rule.name);
    return { name: rule.name, test: compileRule(rule.when, `rules[${i}].when`) };
  });
  return mapSamples('rule-filter', (sample) => {
    const reasons: string[] = [];
    for (const rule of rules) {
      const holds = rule.test(sample);
      if (holds === true) reasons.push(`rule:${rule.name}`);
      else if (holds === null && config.onMissing === 'reject') reasons.push(`rule:${rule.name}:missing`);
    }
    return reasons.length === 0 ? sample : { ...sample, reasons: [...sample.reasons, ...reasons] };
  });
}

/** True, false, or null when the rule is unknown (a value it needs is missing). */
export type CompiledRule = (sample: Sample) => boolean | null;

/** Parses and type-checks one rule condition; throws an ExpressionError naming `field`. */
export function compileRule(source: string, field = 'when'): CompiledRule {
  const expression = compileExpression(source, { field, vocabulary: sampleVocabulary(), result: 'boolean' });
  return (sample) => expression.evaluate(sample);
}

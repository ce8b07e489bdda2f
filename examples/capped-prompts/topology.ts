/**
 * The example's pipeline, built in code: the repo's example curation (validate, rule score,
 * exact dedupe, threshold) with our own `capPerPrompt` as the last step.
 */
import { exactDedupe, ruleScore, thresholdFilter, topology, validate, type Topology } from 'flywheel';
import { capPerPrompt } from './cap-per-prompt.ts';

export interface CappedOptions {
  /** Topic prefix: reads `<prefix>.rollouts`, writes `<prefix>.decisions`, `<prefix>.accepted`… */
  prefix: string;
  /** Samples accepted per prompt at most. */
  k: number;
  /** The embedded ClickHouse store's directory (or `url` for a server). */
  clickhouse: { path?: string; url?: string; database?: string };
  partitions?: number;
  /** Upper bound of one fetched batch per partition (small: many transactions). */
  maxBatchBytes?: number;
}

export function cappedPrompts(o: CappedOptions): Topology {
  return topology({ name: 'capped-prompts', run: o.prefix, topics: { prefix: o.prefix, partitions: o.partitions ?? 3 } })
    .source('rollouts', o.maxBatchBytes === undefined ? {} : { maxBatchBytes: o.maxBatchBytes })
    .pipe(
      validate({ maxChars: 200_000 }),
      ruleScore({ name: 'rule', rewards: { correct: 1 }, format: { pattern: 'Answer:\\s*-?\\d+' } }),
      exactDedupe({ scope: 'global' }),
      thresholdFilter({ min: { rule: 1 } }),
      capPerPrompt(o.k),
    )
    .sink({ clickhouse: o.clickhouse });
}

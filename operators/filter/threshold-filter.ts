import { mapSamples, type Curator } from '../../lib/envelope.ts';

export interface ThresholdFilterConfig {
  /** Score name → smallest score accepted. */
  min: Record<string, number>;
  /** Score name → largest score accepted. */
  max: Record<string, number>;
  /** A sample without a named score: rejected (`missing:<score>`) or let through. */
  onMissing: 'reject' | 'pass';
}

/**
 * Rejects samples whose scores fall outside the bounds. Every bound that fails adds its own
 * reason (`below_min:<score>`, `above_max:<score>`, `missing:<score>`), so analytics can count
 * them separately; already rejected samples collect further reasons too.
 *
 * @example
 *   thresholdFilter({ min: { 'rule.reward': 0.5 }, max: { 'heuristic.repetition': 0.3 }, onMissing: 'reject' })
 *   // scores { 'rule.reward': 0.9, 'heuristic.repetition': 0.1 } → passes
 *   // scores { 'rule.reward': 0.2, 'heuristic.repetition': 0.4 } → reasons ['below_min:rule.reward', 'above_max:heuristic.repetition']
 *   // scores {}                                                  → reasons ['missing:rule.reward', 'missing:heuristic.repetition']
 */
export function thresholdFilter(config: ThresholdFilterConfig): Curator {
  const bounds: Array<[string, 'min' | 'max', number]> = [
    ...Object.entries(config.min).map(([k, v]): [string, 'min', number] => [k, 'min', v]),
    ...Object.entries(config.max).map(([k, v]): [string, 'max', number] => [k, 'max', v]),
  ];
  return mapSamples('threshold-filter', (sample) => {
    const reasons: string[] = [];
    for (const [score, side, bound] of bounds) {
      // Own properties only: a score named `constructor` must not read Object.prototype's.
      const value = Object.hasOwn(sample.scores, score) ? sample.scores[score] : undefined;
      if (value === undefined) {
        if (config.onMissing === 'reject') reasons.push(`missing:${score}`);
      } else if (side === 'min' ? value < bound : value > bound) {
        reasons.push(`${side === 'min' ? 'below_min' : 'above_max'}:${score}`);
      }
    }
    return reasons.length === 0 ? sample : { ...sample, reasons: [...sample.reasons, ...reasons] };
  });
}

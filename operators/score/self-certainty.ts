import { mapSamples, type Curator } from '../../lib/envelope.ts';
import { logprobStats } from '../../contracts/features.ts';

export interface SelfCertaintyConfig {
  /** Score name prefix: writes `<name>.mean_logprob`, `<name>.min_logprob`, `<name>.confidence`. */
  name: string;
}

export const selfCertaintyDefaults: SelfCertaintyConfig = { name: 'certainty' };

/**
 * The model's confidence in its own response, from the per-token log-probs of the tokens it
 * chose:
 * - `<name>.mean_logprob`: mean log-prob (≤ 0);
 * - `<name>.min_logprob`: the least likely token's log-prob — one confused step shows here;
 * - `<name>.confidence`: exp(mean log-prob), the geometric-mean token probability, in (0, 1].
 * Limitation: self-certainty proper (KL divergence of each next-token distribution from
 * uniform) and entropy need the full distribution at every step; rollouts carry only the
 * chosen tokens' log-probs, so those cannot be computed here.
 * A rollout without log-probs (null or empty) gets no scores, not zeros: "unknown" must not
 * read as "unsure". A non-finite log-prob dead-letters the sample.
 *
 * @example
 *   selfCertainty({ name: 'certainty' })
 *   // logprobs [-0.2, -2, -0.2] → scores { 'certainty.mean_logprob': -0.8, 'certainty.min_logprob': -2, 'certainty.confidence': 0.449 }
 *   // logprobs null             → no scores
 *   // logprobs [NaN]            → dead letter "log-prob NaN is not finite"
 */
export function selfCertainty(config: SelfCertaintyConfig): Curator {
  return mapSamples('self-certainty', (sample) => {
    const stats = logprobStats(sample.rollout.logprobs);
    if (stats === null) return sample;
    return {
      ...sample,
      scores: {
        ...sample.scores,
        [`${config.name}.mean_logprob`]: stats.mean,
        [`${config.name}.min_logprob`]: stats.min,
        [`${config.name}.confidence`]: Math.exp(stats.mean),
      },
    };
  });
}

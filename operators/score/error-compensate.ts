import { mapSamples, type Curator, type Sample } from '../../lib/envelope.ts';
import type { ErrorMemory, Vector } from '../../lib/error-memory.ts';

export interface ErrorCompensateConfig {
  /** The score to correct, e.g. `model`. */
  score: string;
  /** Neighbours averaged per correction. */
  k: number;
  /** Stored errors less similar than this (cosine) are ignored. */
  minSimilarity: number;
  /** The corrected score is clamped to [min, max], the range of the labels. */
  min: number;
  max: number;
}

export const errorCompensateDefaults: ErrorCompensateConfig = { score: 'model', k: 16, minSimilarity: 0.8, min: 0, max: 1 };

/**
 * Corrects a scorer's recent errors before it is retrained (ReLoop2, arXiv 2306.08591). For each
 * sample with `scores[score]`: looks up the errors the scorer recently made on similar samples
 * (`memory.compensation(vectorOf(sample), k, minSimilarity)`) and writes
 * `<score>.raw` = the raw score, `<score>.correction` = the correction and
 * `<score>` = clamp(raw + correction, min, max). Samples without the score pass unchanged; no
 * neighbours means a correction of 0. The memory is shared and fed elsewhere: this operator only
 * reads it, so it has no store. `vectorOf` throwing (e.g. no features) dead-letters the sample.
 *
 * @example
 *   errorCompensate({ ...errorCompensateDefaults, score: 'model' }, memory, (s) => featurize(s.rollout, features))
 *   // scores.model 0.7, the memory's similar neighbours were scored 0.2 too high
 *   //   → scores { 'model.raw': 0.7, 'model.correction': -0.2, model: 0.5 }
 *   // scores.model 0.95, neighbours 0.2 too low → model = 1 (clamped to max)
 */
export function errorCompensate(config: ErrorCompensateConfig, memory: ErrorMemory, vectorOf: (s: Sample) => Vector): Curator {
  return mapSamples('error-compensate', (sample) => {
    const raw = sample.scores[config.score];
    if (raw === undefined) return sample;
    const { correction } = memory.compensation(vectorOf(sample), config.k, config.minSimilarity);
    const corrected = Math.min(config.max, Math.max(config.min, raw + correction));
    return {
      ...sample,
      scores: { ...sample.scores, [`${config.score}.raw`]: raw, [`${config.score}.correction`]: correction, [config.score]: corrected },
    };
  });
}

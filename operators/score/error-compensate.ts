import { mapSamples, type Curator, type Sample } from '../../lib/envelope.ts';
import type { ErrorMemory, Similarity, Vector } from '../../lib/error-memory.ts';

/** How stored errors are matched to a sample: see `similarityOf`. */
export type SimilarityKind = 'blocks' | 'text' | 'standardized' | 'whole';

export interface ErrorCompensateConfig {
  /** The score to correct, e.g. `model`. */
  score: string;
  /** Neighbours averaged per correction. */
  k: number;
  /** Stored errors less similar than this are ignored. */
  minSimilarity: number;
  /**
   * `blocks` (default): the mean of the hashed-text block's cosine and the standardized cosine
   * (z-scored by the memory's running statistics) of the numeric tail, so text and
   * length/reward/log-prob features both count, neither by its scale;
   * `text`: cosine over the hashed-text block of the feature vector only;
   * `standardized`: cosine of the whole vector z-scored by the running statistics;
   * `whole`: cosine of the raw whole vector, whose numeric tail makes every pair look alike.
   */
  similarity: SimilarityKind;
  /**
   * When the scorer is retrained, an older error stays (with its new residual) only if the new
   * model still misses its label by at least this much; otherwise it is retired to an error of
   * 0 (`ErrorMemory.reassess`).
   */
  minResidual: number;
  /** The corrected score is clamped to [min, max], the range of the labels. */
  min: number;
  max: number;
  /**
   * Pseudo-neighbours of error 0 (similarity 1) in each weighted mean: a correction resting on
   * few or distant neighbours is shrunk toward 0 (with 16 neighbours at similarity 0.8 and
   * shrinkage 2, by 2/14.8 ≈ 14 %; with one at 0.6, by 77 %). 0 (default): the plain mean.
   * Worth it where single labels are noisy (0/1 verdicts); on clean labels it only biases.
   */
  shrinkage: number;
  /**
   * Scale each correction by the memory's measured gain for this lookup (`ErrorMemory.assess`):
   * how well its corrections predicted the errors of the labels that came after, in [0, 1].
   * false: apply corrections as they are.
   */
  calibrate: boolean;
}

export const errorCompensateDefaults: ErrorCompensateConfig = { score: 'model', k: 16, minSimilarity: 0.1, similarity: 'blocks', minResidual: 0.25, min: 0, max: 1, shrinkage: 0, calibrate: true };

/** The memory's `Similarity` for a config, given the length of the layout's hashed-text block. */
export function similarityOf(kind: SimilarityKind, textDims: number): Similarity {
  if (kind === 'blocks') return { kind: 'blocks', dims: textDims };
  if (kind === 'text') return { kind: 'cosine', dims: textDims };
  return kind === 'standardized' ? { kind: 'standardized' } : { kind: 'cosine' };
}

/**
 * Corrects a scorer's recent errors before it is retrained (ReLoop2, arXiv 2306.08591). For each
 * sample with `scores[score]`: looks up the errors the scorer recently made on similar samples
 * (`memory.compensation(vectorOf(sample), k, minSimilarity, similarityOf(similarity, textDims),
 * shrinkage)`, `textDims` = the feature layout's `dims`), scales it by the memory's measured
 * gain for that lookup when `calibrate` (so corrections that have not predicted errors are not
 * applied), and writes `<score>.raw` = the raw score, `<score>.correction` = the (scaled)
 * correction and `<score>` = clamp(raw + correction, min, max).
 * Samples without the score pass unchanged; no neighbours means a correction of 0. The memory
 * is shared and fed elsewhere: this operator only reads it, so it has no store. `vectorOf`
 * throwing (e.g. no features) dead-letters the sample.
 *
 * @example
 *   errorCompensate({ ...errorCompensateDefaults, score: 'model' }, memory, (s) => featurize(s.rollout, features), features.dims)
 *   // scores.model 0.7, the memory's similar neighbours were scored 0.2 too high
 *   //   → scores { 'model.raw': 0.7, 'model.correction': -0.2, model: 0.5 }
 *   // scores.model 0.95, neighbours 0.2 too low → model = 1 (clamped to max)
 */
export function errorCompensate(config: ErrorCompensateConfig, memory: ErrorMemory, vectorOf: (s: Sample) => Vector, textDims: number): Curator {
  const similarity = similarityOf(config.similarity, textDims);
  const { shrinkage } = config;
  const assessment = config.calibrate ? memory.assess({ k: config.k, minSimilarity: config.minSimilarity, similarity, shrinkage }) : undefined;
  return mapSamples('error-compensate', (sample) => {
    const raw = sample.scores[config.score];
    if (raw === undefined) return sample;
    const found = memory.compensation(vectorOf(sample), config.k, config.minSimilarity, similarity, shrinkage);
    const correction = assessment === undefined ? found.correction : found.correction * assessment.gain;
    const corrected = Math.min(config.max, Math.max(config.min, raw + correction));
    return {
      ...sample,
      scores: { ...sample.scores, [`${config.score}.raw`]: raw, [`${config.score}.correction`]: correction, [config.score]: corrected },
    };
  });
}

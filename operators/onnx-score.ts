import { deadLetter, isRejected, type Curator, type Envelope, type Sample } from './envelope.ts';
import { featureDefaults, featurize, type FeatureConfig } from './features.ts';
import type { ModelHolder } from './model-holder.ts';
import { microBatch, type MicroBatchConfig } from './scoring-batch.ts';

export interface OnnxScoreConfig extends MicroBatchConfig {
  /** The score written: `scores[name]`. */
  name: string;
  /** How rollouts become the model's input; must match what the model was trained on. */
  features: FeatureConfig;
  /** Leave samples an earlier operator rejected unscored, saving model time. */
  skipRejected: boolean;
}

export const onnxScoreDefaults: OnnxScoreConfig = {
  name: 'model',
  features: featureDefaults,
  skipRejected: false,
  maxBatch: 64,
  latencyMs: 20,
};

/**
 * Scores samples with the holder's current model, in micro-batches (see `microBatch`: at most
 * `maxBatch` envelopes, at most `latencyMs` of waiting, flushed on a tick and at completion;
 * every envelope leaves in arrival order). For each batch:
 * 1. the model is taken from the holder once, so a swap between batches changes the model for
 *    whole batches and no sample is dropped or scored twice;
 * 2. each sample is featurized (`features.ts`); a sample whose features cannot be computed
 *    (non-finite reward or log-prob) is dead-lettered alone;
 * 3. the rest are scored in one call: `scores[name]` = the model's output, `scorerVersion` =
 *    the model's version.
 * A model failure (it throws, or gives a wrong count or non-finite scores) errors the stream
 * instead of dead-lettering: a broken model is not the data's fault, and failing the batch
 * makes the processor abort its transaction and retry the records, where dead letters would
 * lose good data.
 */
export function onnxScore(config: OnnxScoreConfig, holder: ModelHolder): Curator {
  return microBatch(config, async (batch) => {
    const out: Envelope[] = [...batch];
    const scored: Array<{ at: number; sample: Sample; features: Float32Array }> = [];
    batch.forEach((envelope, at) => {
      if (envelope.kind !== 'sample' || (config.skipRejected && isRejected(envelope))) return;
      try {
        scored.push({ at, sample: envelope, features: featurize(envelope.rollout, config.features) });
      } catch (err) {
        out[at] = deadLetter(envelope, 'onnx-score', `features: ${(err as Error).message}`);
      }
    });
    if (scored.length === 0) return out;
    const lease = holder.acquire();
    try {
      const { model } = lease;
      const scores = await model.score(scored.map((s) => s.features));
      if (scores.length !== scored.length) throw new Error(`model ${model.version} returned ${scores.length} scores for ${scored.length} samples`);
      scored.forEach(({ at, sample }, i) => {
        const score = scores[i]!;
        if (!Number.isFinite(score)) throw new Error(`model ${model.version} returned a non-finite score (${score}) for ${sample.rollout.id}`);
        out[at] = { ...sample, scores: { ...sample.scores, [config.name]: score }, scorerVersion: model.version };
      });
      return out;
    } finally {
      lease.release();
    }
  });
}

import { defer } from 'rxjs';
import { deadLetter, isRejected, type Curator, type Envelope, type Sample } from '../../lib/envelope.ts';
import { featureDefaults, featureSize, featurizeInto, type FeatureConfig } from '../../contracts/features.ts';
import type { ModelHolder, ModelLease } from '../../lib/model-holder.ts';
import { microBatch, type MicroBatchConfig } from '../../lib/micro-batch.ts';
import { isTextScoringModel } from '../../lib/text-model.ts';

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
 * 2. each sample's features (`featurizeInto`, `features.ts`) are written straight into row r
 *    of the operator's batch buffer — one Float32Array per subscription, grown to the largest
 *    batch and reused, so scoring allocates nothing per row and the model reads the rows in
 *    place; a sample whose features cannot be computed (non-finite reward or log-prob) is
 *    dead-lettered alone and its row reused;
 * 3. the rows are scored in one call: `scores[name]` = the model's output, `scorerVersion` =
 *    the model's version.
 * A model failure (it throws, or gives a wrong count or non-finite scores) errors the stream
 * instead of dead-lettering: a broken model is not the data's fault, and failing the batch
 * makes the processor abort its transaction and retry the records, where dead letters would
 * lose good data.
 * The rows are not cached per rollout: a later `featurize` of the same rollout (error memory,
 * label join) computes it once more, which costs less than keeping a vector per sample.
 *
 * @example
 *   samples$.pipe(onnxScore({ ...onnxScoreDefaults, features }, new ModelHolder(await OnnxScoringModel.load(path))))
 *   // each sample → scores.model = the model's output for its features, scorerVersion = the model's version
 *   // a sample with rewards.correct NaN → dead letter (its features cannot be computed); the rest of the batch is scored
 */
export function onnxScore(config: OnnxScoreConfig, holder: ModelHolder): Curator {
  const width = featureSize(config.features);
  return (source) =>
    defer(() => {
      // Per subscription: batches of one subscription run one at a time (microBatch), so the
      // buffer is free again when the next batch starts; two partitions never share one.
      let input = new Float32Array(0);
      const rowAt: number[] = [];
      return source.pipe(
        microBatch(config, async (batch) => {
          if (isTextScoringModel(holder.current())) return scoreTextBatch(batch, config, holder.acquire());
          if (input.length < batch.length * width) input = new Float32Array(batch.length * width);
          let rows = 0;
          for (let at = 0; at < batch.length; at++) {
            const envelope = batch[at]!;
            if (envelope.kind !== 'sample' || (config.skipRejected && isRejected(envelope))) continue;
            try {
              featurizeInto(envelope.rollout, config.features, input, rows * width);
              rowAt[rows++] = at;
            } catch (err) {
              batch[at] = deadLetter(envelope, 'onnx-score', `features: ${(err as Error).message}`);
            }
          }
          if (rows === 0) return batch;
          const lease = holder.acquire();
          try {
            const { model } = lease;
            // Swapped to a text model since the rows were made: score this batch with it.
            if (isTextScoringModel(model)) return await scoreTextBatch(batch, config, lease);
            const scores = await model.scoreRows(input, rows, width);
            if (scores.length !== rows) throw new Error(`model ${model.version} returned ${scores.length} scores for ${rows} samples`);
            for (let row = 0; row < rows; row++) {
              const at = rowAt[row]!;
              const sample = batch[at] as Sample;
              const score = scores[row]!;
              if (!Number.isFinite(score)) throw new Error(`model ${model.version} returned a non-finite score (${score}) for ${sample.rollout.id}`);
              batch[at] = { ...sample, scores: { ...sample.scores, [config.name]: score }, scorerVersion: model.version };
            }
            return batch;
          } finally {
            lease.release();
          }
        }),
      );
    });
}

/**
 * A batch scored by a text model (`TextScoringModel`: a tokenizer and a token-id model, which
 * read the rollouts' text, not the feature vectors): the same lease, version and failure rules
 * as the feature path above; there is nothing to dead-letter per sample, since any text can be
 * tokenized.
 */
async function scoreTextBatch(batch: Envelope[], config: OnnxScoreConfig, lease: ModelLease): Promise<Envelope[]> {
  try {
    const { model } = lease;
    // Checked and leased in one tick, so a feature model here is a caller's bug.
    if (!isTextScoringModel(model)) throw new Error(`model ${model.version} is not a text model`);
    const at: number[] = [];
    batch.forEach((e, i) => {
      if (e.kind === 'sample' && !(config.skipRejected && isRejected(e))) at.push(i);
    });
    if (at.length === 0) return batch;
    const scores = await model.scoreRollouts(at.map((i) => (batch[i] as Sample).rollout));
    if (scores.length !== at.length) throw new Error(`model ${model.version} returned ${scores.length} scores for ${at.length} samples`);
    at.forEach((i, row) => {
      const sample = batch[i] as Sample;
      const score = scores[row]!;
      if (!Number.isFinite(score)) throw new Error(`model ${model.version} returned a non-finite score (${score}) for ${sample.rollout.id}`);
      batch[i] = { ...sample, scores: { ...sample.scores, [config.name]: score }, scorerVersion: model.version };
    });
    return batch;
  } finally {
    lease.release();
  }
}

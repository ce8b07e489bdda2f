import { responseText } from '../contracts/features.ts';
import type { Rollout } from '../contracts/records.ts';
import type { ScoringModel } from './model-holder.ts';

/*
 * The pure half of text models (token-id models with their own tokenizer): which text of a
 * rollout a model reads, how token sequences are grouped into batches by a token budget, how
 * hidden states are pooled and how a model's logits become a score. pipeline/text-models.ts
 * holds the I/O half (tokenizer file, onnxruntime session).
 */

/** How a text model's hidden states [N, seq, D] become one vector per text. */
export type Pooling = 'mean' | 'cls';

/**
 * How a classifier's output [N, K] becomes one score per text:
 * - 'logit': output[n, 0] as it is;  'sigmoid': 1 / (1 + e^-output[n, 0]);
 * - 'softmax:<k>': the softmax probability of class k (e.g. 'softmax:1', the "positive" class);
 * - 'regression': output[n, 0], for a model trained to predict the score itself (K = 1).
 */
export type Head = 'logit' | 'sigmoid' | 'regression' | `softmax:${number}`;

/**
 * Which text a model reads from a rollout: 'response', 'prompt+response' (a text pair: the
 * prompt as the first sequence, the response as the second, with the tokenizer's pair template
 * and token type ids), or a template where `{prompt}` and `{response}` are replaced, e.g.
 * 'Question: {prompt}\nAnswer: {response}'.
 */
export type TextSource = 'response' | 'prompt+response' | string;

/** A text input: one sequence, or a pair the tokenizer joins with its own template. */
export type TextInput = string | readonly [string, string];

/** The text input `source` names for `rollout` (see TextSource). */
export function rolloutText(rollout: Rollout, source: TextSource): TextInput {
  const response = responseText(rollout);
  if (source === 'response') return response;
  if (source === 'prompt+response') return [rollout.prompt, response];
  return source.replaceAll('{prompt}', rollout.prompt).replaceAll('{response}', response);
}

/**
 * Groups sequences into batches in order, each padded to its longest sequence, so that
 * rows × longest ≤ `batchTokens` (a batch of one longer sequence is allowed alone): padding is
 * computed by the model too, so a token budget bounds a batch's cost where a row count does not.
 *
 *   tokenBudgetBatches([10, 12, 100, 8], 64)  // → [[0, 1], [2], [3]]  (3 × 12 > 64 would not fit)
 */
export function tokenBudgetBatches(lengths: readonly number[], batchTokens: number): number[][] {
  const batches: number[][] = [];
  let current: number[] = [];
  let longest = 0;
  for (let i = 0; i < lengths.length; i++) {
    const length = lengths[i]!;
    const wider = Math.max(longest, length);
    if (current.length > 0 && (current.length + 1) * wider > batchTokens) {
      batches.push(current);
      current = [];
      longest = 0;
    }
    current.push(i);
    longest = Math.max(longest, length);
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/**
 * Pools `hidden` [rows, seq, dim] (row-major) into one vector per row: 'mean' averages the
 * vectors of attended tokens (mask 1), as sentence-transformers' mean pooling does; 'cls' takes
 * the first token's. With `normalize` each vector is scaled to unit length (cosine = dot).
 */
export function poolHidden(
  hidden: Float32Array,
  mask: ArrayLike<bigint | number>,
  rows: number,
  seq: number,
  dim: number,
  pooling: Pooling,
  normalize: boolean,
): Float32Array[] {
  const out: Float32Array[] = [];
  for (let r = 0; r < rows; r++) {
    const v = new Float32Array(dim);
    if (pooling === 'cls') {
      v.set(hidden.subarray(r * seq * dim, r * seq * dim + dim));
    } else {
      // Summed in float64, as numpy's reference does with float32 inputs only to ~1e-7 relative.
      const sum = new Float64Array(dim);
      let count = 0;
      for (let t = 0; t < seq; t++) {
        if (Number(mask[r * seq + t]) === 0) continue;
        count++;
        const at = (r * seq + t) * dim;
        for (let d = 0; d < dim; d++) sum[d]! += hidden[at + d]!;
      }
      const n = Math.max(count, 1e-9);
      for (let d = 0; d < dim; d++) v[d] = sum[d]! / n;
    }
    if (normalize) {
      let norm = 0;
      for (let d = 0; d < dim; d++) norm += v[d]! * v[d]!;
      norm = Math.max(Math.sqrt(norm), 1e-12);
      for (let d = 0; d < dim; d++) v[d] = v[d]! / norm;
    }
    out.push(v);
  }
  return out;
}

/**
 * One score per row of `logits` [rows, k] (see Head).
 *
 *   applyHead(Float32Array.of(0, 2), 1, 2, 'softmax:1')  // → [0.8808]
 */
export function applyHead(logits: Float32Array, rows: number, k: number, head: Head): Float32Array {
  const out = new Float32Array(rows);
  const cls = head.startsWith('softmax:') ? Number(head.slice('softmax:'.length)) : 0;
  if (!Number.isInteger(cls) || cls < 0 || cls >= k) throw new RangeError(`head ${head}: the model has ${k} output classes`);
  for (let r = 0; r < rows; r++) {
    const row = logits.subarray(r * k, (r + 1) * k);
    if (head === 'sigmoid') out[r] = 1 / (1 + Math.exp(-row[0]!));
    else if (head.startsWith('softmax:')) {
      let max = -Infinity;
      for (const x of row) max = Math.max(max, x);
      let sum = 0;
      for (const x of row) sum += Math.exp(x - max);
      out[r] = Math.exp(row[cls]! - max) / sum;
    } else out[r] = row[0]!;
  }
  return out;
}

/**
 * A scoring model that reads rollouts' text (a tokenizer and a token-id model) instead of the
 * pipeline's feature vectors; onnx-score hands it the rollouts of a batch. Its `scoreRows`
 * refuses feature vectors.
 */
export interface TextScoringModel extends ScoringModel {
  readonly input: 'text';
  scoreRollouts(rollouts: readonly Rollout[]): Promise<Float32Array>;
}

export function isTextScoringModel(model: ScoringModel): model is TextScoringModel {
  return (model as Partial<TextScoringModel>).input === 'text';
}

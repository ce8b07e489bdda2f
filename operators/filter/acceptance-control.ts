import type { KeyValueStore } from '../../streams/state-store.ts';
import { deadLetter, isRejected, type Curator, type Envelope, type Sample } from '../../lib/envelope.ts';
import { sessionCurator } from '../../lib/filters-internals.ts';
import { stepThreshold } from '../../lib/adaptive-threshold.ts';

export interface AcceptanceControlConfig {
  /** The score that ranks samples (any score: a model's, a rule's, a combination). */
  score: string;
  /**
   * `rate`: accept the target fraction of candidates through an adaptive threshold.
   * `top-k`: accept the k best of each prompt group (needs a group-filter before it).
   */
  mode: 'rate' | 'top-k';
  /** rate: the accepted fraction of candidates to hold, e.g. 0.5. */
  target: number;
  /** rate: the first threshold; null: the first candidate's score. */
  initial: number | null;
  /** rate: threshold move per candidate, in units of the score's spread, × (accepted − target). */
  gain: number;
  /** rate: samples over which the score's spread (mean absolute deviation) is averaged. */
  window: number;
  /** rate: bounds of the threshold (null: none). */
  min: number | null;
  max: number | null;
  /** top-k: samples accepted per group. */
  k: number;
  /** A candidate without a finite value of the score: rejected (`acceptance:no_score`) or passed. */
  onMissing: 'reject' | 'pass';
}

export const acceptanceControlDefaults: AcceptanceControlConfig = {
  score: 'model',
  mode: 'rate',
  target: 0.5,
  initial: null,
  gain: 0.05,
  window: 500,
  min: null,
  max: null,
  k: 1,
  onMissing: 'reject',
};

/** The threshold and the score's running mean and spread, per input partition (changelog-backed). */
export const acceptanceControlStore = { name: 'acceptance-control' } as const;

interface RateState {
  threshold: number | null;
  mean: number;
  spread: number;
  candidates: number;
}

const STATE_KEY = 'rate';

/**
 * Acceptance control: compare filter configurations at equal acceptance, which is how filters
 * are judged, instead of letting a fixed threshold's accepted count float with the scores.
 * Candidates are samples not rejected upstream; rejected samples pass unchanged.
 *
 * - `rate`: a candidate is accepted when its score ≥ the threshold (else reason
 *   `acceptance:below_threshold`); the threshold used is annotated `acceptance.threshold`. After
 *   each candidate the threshold takes one proportional step (lib/adaptive-threshold.ts, as the
 *   explore-exploit controller's) on the error (accepted ? 1 : 0) − target, with gain
 *   `gain × spread` (spread: the score's running mean absolute deviation over about `window`
 *   samples, so the step suits any score's scale). That is a stochastic-approximation tracker of
 *   the score's (1 − target) quantile: the accepted fraction converges to the target and follows
 *   a drifting score distribution. State (threshold, mean, spread) lives in the named store,
 *   read when a batch starts and written when its input completes, so a restart keeps it.
 * - `top-k`: the group filter releases a group's samples together, annotated `group.size`; the
 *   operator collects those consecutive samples and accepts the k candidates with the highest
 *   scores (ties: arrival order), rejecting the others with `acceptance:not_top_k`; `acceptance.rank`
 *   (1 = best) is annotated. A sample without `group.size` is dead-lettered (no group filter before it; a config
 *   saying so is refused at start, `operatorOrderProblems`).
 *
 * @example
 *   acceptanceControl({ ...acceptanceControlDefaults, score: 'model', target: 0.3 }, store)
 *   // scores drifting upwards: the threshold follows, ~30 % of candidates keep being accepted
 *   acceptanceControl({ ...acceptanceControlDefaults, mode: 'top-k', score: 'model', k: 2 }, store)
 *   // a released group of 8 → its 2 best-scored samples accepted, 6 get ['acceptance:not_top_k']
 */
export function acceptanceControl(config: AcceptanceControlConfig, store: KeyValueStore): Curator {
  return config.mode === 'rate' ? rateControl(config, store) : topK(config);
}

function scoreOf(sample: Sample, name: string): number | null {
  const v = sample.scores[name];
  return v !== undefined && Number.isFinite(v) ? v : null;
}

const reject = (sample: Sample, reason: string, annotations: Record<string, string> = {}): Sample => ({
  ...sample,
  reasons: [...sample.reasons, reason],
  annotations: { ...sample.annotations, ...annotations },
});

function rateControl(config: AcceptanceControlConfig, store: KeyValueStore): Curator {
  const alpha = 1 / config.window;
  return sessionCurator(() => {
    const text = store.get(STATE_KEY);
    const state: RateState = text === undefined ? { threshold: config.initial, mean: 0, spread: 0, candidates: 0 } : (JSON.parse(text) as RateState);
    let dirty = false;
    const onSample = (sample: Sample): Sample => {
      if (isRejected(sample)) return sample;
      const score = scoreOf(sample, config.score);
      if (score === null) return config.onMissing === 'reject' ? reject(sample, 'acceptance:no_score') : sample;
      dirty = true;
      // Running mean and mean absolute deviation; the first samples average over what there is.
      const a = Math.max(alpha, 1 / (state.candidates + 1));
      state.mean += a * (score - state.mean);
      state.spread += a * (Math.abs(score - state.mean) - state.spread);
      state.candidates += 1;
      const threshold = state.threshold ?? score;
      const accepted = score >= threshold;
      const spread = Math.max(state.spread, 1e-9);
      state.threshold = stepThreshold(threshold, (accepted ? 1 : 0) - config.target, { gain: config.gain * spread, maxStep: spread, deadBand: 0, min: config.min, max: config.max });
      const annotations = { 'acceptance.threshold': String(threshold) };
      return accepted ? { ...sample, annotations: { ...sample.annotations, ...annotations } } : reject(sample, 'acceptance:below_threshold', annotations);
    };
    return {
      next(envelope: Envelope, out: Envelope[]) {
        if (envelope.kind !== 'sample') return void out.push(envelope);
        try {
          out.push(onSample(envelope));
        } catch (err) {
          out.push(deadLetter(envelope, 'acceptance-control', (err as Error).message));
        }
      },
      complete() {
        if (dirty) store.put(STATE_KEY, JSON.stringify(state));
      },
    };
  });
}

function topK(config: AcceptanceControlConfig): Curator {
  return sessionCurator(() => {
    // The group being collected: the group filter emits a released group's samples consecutively.
    let held: Sample[] = [];
    let size = 0;
    const judge = (out: Envelope[]) => {
      const candidates = held.filter((s) => !isRejected(s));
      const scored = candidates.filter((s) => scoreOf(s, config.score) !== null);
      const ranked = scored.map((s, i) => [s, i] as const).sort(([a, i], [b, j]) => scoreOf(b, config.score)! - scoreOf(a, config.score)! || i - j);
      const rank = new Map(ranked.map(([s], i) => [s, i + 1]));
      for (const s of held) {
        if (isRejected(s)) out.push(s);
        else if (!rank.has(s)) out.push(config.onMissing === 'reject' ? reject(s, 'acceptance:no_score') : s);
        else {
          const r = rank.get(s)!;
          const annotations = { 'acceptance.rank': String(r) };
          out.push(r <= config.k ? { ...s, annotations: { ...s.annotations, ...annotations } } : reject(s, 'acceptance:not_top_k', annotations));
        }
      }
      held = [];
      size = 0;
    };
    return {
      next(envelope: Envelope, out: Envelope[]) {
        if (envelope.kind !== 'sample') return void out.push(envelope);
        const groupSize = Number(envelope.annotations['group.size']);
        if (!(Number.isInteger(groupSize) && groupSize > 0)) {
          out.push(deadLetter(envelope, 'acceptance-control', 'top-k needs whole groups: put a group-filter before acceptance-control (no group.size annotation)'));
          return;
        }
        // A new group begins: the previous one is complete as far as this batch goes.
        if (held.length > 0 && held[0]!.rollout.group_id !== envelope.rollout.group_id) judge(out);
        held.push(envelope);
        size = groupSize;
        if (held.length >= size) judge(out);
      },
      complete(out: Envelope[]) {
        // The group filter never splits a released group across batches; judge what is left.
        if (held.length > 0) judge(out);
      },
    };
  });
}

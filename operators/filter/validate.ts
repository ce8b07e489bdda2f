import type { Rollout } from '../../contracts/records.ts';
import { deadLetter, mapSamples, type Curator, type Sample } from '../../lib/envelope.ts';

/**
 * Where `created_at` may lie. Relative bounds are measured from the broker's record timestamp
 * (skipped when the sample has none); the absolute ones always apply.
 */
export interface CreatedAtBounds {
  /** Most `created_at` may be ahead of the broker timestamp; null: no bound. */
  maxFutureMs: number | null;
  /** Most it may be behind it; null: no bound (a backfill sends rollouts generated long ago). */
  maxPastMs: number | null;
  /** Earliest `created_at` accepted, epoch ms. */
  min: number;
  /** Latest `created_at` accepted, epoch ms: by default the end of ClickHouse's DateTime, past which the stored time wraps. */
  max: number;
  /**
   * A `created_at` outside the bounds: "reject" (reason `invalid:created_at_skew`), or "clamp":
   * replace it by the broker timestamp (by the bound it broke when that is not usable) and let
   * the sample go on, annotated `created_at.clamped_from`. The broker time, not the nearest
   * bound: a clamped sample a day ahead would still move every event-time clock by a day.
   */
  onSkew: 'reject' | 'clamp';
}

export interface ValidateConfig {
  /** Longest prompt, response or trajectory (all step contents together) accepted, in characters. */
  maxChars: number;
  createdAt: CreatedAtBounds;
}

const DAY_MS = 86_400_000;

export const createdAtDefaults: CreatedAtBounds = {
  maxFutureMs: DAY_MS,
  maxPastMs: null,
  min: Date.UTC(2000, 0, 1),
  max: 4_294_967_295_000,
  // Kafka Streams drops a record its timestamp extractor or grace period refuses (and counts it);
  // it never rewrites event time unless asked to. Rejecting, with the reason in the decision, is that.
  onSkew: 'reject',
};

export const validateDefaults: ValidateConfig = { maxChars: 200_000, createdAt: createdAtDefaults };

/** The rejection reason of a sample whose `created_at` is outside `createdAt`'s bounds. */
export const CREATED_AT_SKEW = 'invalid:created_at_skew';

/**
 * Checks what the Avro schema cannot: required text present, numbers finite and in range.
 * A rollout that fails goes to the dead-letter topic with every problem named, e.g.
 * `invalid rollout: id is empty; rewards.correct is NaN`.
 *
 * A well-formed rollout whose `created_at` is outside `createdAt` (by default: more than a day
 * ahead of the broker's record timestamp, before 2000, or past ClickHouse's DateTime) is a
 * decision, not a dead letter: rejected with `invalid:created_at_skew`, or clamped, and
 * annotated `created_at.skew` either way. Event time drives the state of later operators, so a
 * producer's wrong clock must not reach them.
 *
 * @example
 *   validate(validateDefaults)
 *   // { id: '', rewards: { correct: NaN }, … }  → dead letter "invalid rollout: id is empty; rewards.correct is NaN"
 *   // created_at 8.64e15, broker time 1.7e12     → reasons ['invalid:created_at_skew'], annotation `created_at.skew` =
 *   //   "created_at 8640000000000000 is after 1700086400000 (broker time + 86400000 ms)"
 *   // with createdAt.onSkew 'clamp' instead     → created_at = 1700000000000, annotated `created_at.clamped_from`
 */
export function validate(config: ValidateConfig = validateDefaults): Curator {
  return mapSamples('validate', (sample) => {
    const problems = rolloutProblems(sample.rollout, config);
    return problems.length === 0 ? checkCreatedAt(sample, config.createdAt) : deadLetter(sample, 'validate', `invalid rollout: ${problems.join('; ')}`);
  });
}

export function rolloutProblems(r: Rollout, config: Pick<ValidateConfig, 'maxChars'>): string[] {
  const problems: string[] = [];
  for (const field of ['id', 'prompt_id', 'group_id', 'model_version'] as const) {
    if (r[field].trim() === '') problems.push(`${field} is empty`);
  }
  if (r.prompt.trim() === '') problems.push('prompt is empty');
  if ((r.response ?? '').trim() === '' && r.steps.length === 0) problems.push('neither response nor trajectory steps');
  if (r.prompt.length > config.maxChars) problems.push(`prompt longer than ${config.maxChars} chars`);
  if ((r.response ?? '').length > config.maxChars) problems.push(`response longer than ${config.maxChars} chars`);
  // The trajectory is the response of an agentic rollout: its steps count together, as one text.
  const stepChars = r.steps.reduce((sum, step) => sum + step.content.length, 0);
  if (stepChars > config.maxChars) problems.push(`trajectory steps longer than ${config.maxChars} chars in total (${stepChars})`);
  for (const [name, value] of Object.entries(r.rewards)) {
    if (!Number.isFinite(value)) problems.push(`rewards.${name} is ${value}`);
  }
  if (r.logprobs?.some((lp) => !Number.isFinite(lp) || lp > 1e-6)) problems.push('logprobs must be finite and <= 0');
  if (!Number.isInteger(r.token_count) || r.token_count < 0) problems.push(`token_count ${r.token_count} is not a count`);
  if (!Number.isFinite(r.created_at) || r.created_at <= 0) problems.push(`created_at ${r.created_at} is not a timestamp`);
  return problems;
}

/** Rejects or clamps a sample whose created_at is out of bounds; others pass unchanged. */
function checkCreatedAt(sample: Sample, bounds: CreatedAtBounds): Sample {
  const at = sample.rollout.created_at;
  let lo = { at: bounds.min, what: 'the earliest allowed' };
  let hi = { at: bounds.max, what: 'the latest allowed' };
  const broker = sample.brokerTimestamp;
  let trusted = false;
  if (broker !== undefined) {
    const past = bounds.maxPastMs === null ? undefined : { at: broker - bounds.maxPastMs, what: `broker time - ${bounds.maxPastMs} ms` };
    const future = bounds.maxFutureMs === null ? undefined : { at: broker + bounds.maxFutureMs, what: `broker time + ${bounds.maxFutureMs} ms` };
    const relLo = past !== undefined && past.at > lo.at ? past : lo;
    const relHi = future !== undefined && future.at < hi.at ? future : hi;
    // A broker time outside the absolute range itself is not to be trusted: keep the absolute bounds.
    trusted = broker >= bounds.min && broker <= bounds.max && relLo.at <= relHi.at;
    if (trusted) [lo, hi] = [relLo, relHi];
  }
  if (at >= lo.at && at <= hi.at) return sample;
  const bound = at < lo.at ? lo : hi;
  const skew = `created_at ${at} is ${at < lo.at ? 'before' : 'after'} ${bound.at} (${bound.what})`;
  if (bounds.onSkew === 'reject') {
    return { ...sample, reasons: [...sample.reasons, CREATED_AT_SKEW], annotations: { ...sample.annotations, 'created_at.skew': skew } };
  }
  return {
    ...sample,
    rollout: { ...sample.rollout, created_at: trusted && broker !== undefined ? broker : bound.at },
    annotations: { ...sample.annotations, 'created_at.skew': skew, 'created_at.clamped_from': String(at) },
  };
}

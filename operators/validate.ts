import type { Rollout } from '../streams/records.ts';
import { deadLetter, mapSamples, type Curator } from './envelope.ts';

export interface ValidateConfig {
  /** Longest prompt or response accepted, in characters. */
  maxChars: number;
}

export const validateDefaults: ValidateConfig = { maxChars: 200_000 };

/**
 * Checks what the Avro schema cannot: required text present, numbers finite and in range.
 * A rollout that fails goes to the dead-letter topic with every problem named, e.g.
 * `invalid rollout: id is empty; rewards.correct is NaN`.
 */
export function validate(config: ValidateConfig = validateDefaults): Curator {
  return mapSamples('validate', (sample) => {
    const problems = rolloutProblems(sample.rollout, config);
    return problems.length === 0 ? sample : deadLetter(sample, 'validate', `invalid rollout: ${problems.join('; ')}`);
  });
}

export function rolloutProblems(r: Rollout, config: ValidateConfig): string[] {
  const problems: string[] = [];
  for (const field of ['id', 'prompt_id', 'group_id', 'model_version'] as const) {
    if (r[field].trim() === '') problems.push(`${field} is empty`);
  }
  if (r.prompt.trim() === '') problems.push('prompt is empty');
  if ((r.response ?? '').trim() === '' && r.steps.length === 0) problems.push('neither response nor trajectory steps');
  if (r.prompt.length > config.maxChars) problems.push(`prompt longer than ${config.maxChars} chars`);
  if ((r.response ?? '').length > config.maxChars) problems.push(`response longer than ${config.maxChars} chars`);
  for (const [name, value] of Object.entries(r.rewards)) {
    if (!Number.isFinite(value)) problems.push(`rewards.${name} is ${value}`);
  }
  if (r.logprobs?.some((lp) => !Number.isFinite(lp) || lp > 1e-6)) problems.push('logprobs must be finite and <= 0');
  if (!Number.isInteger(r.token_count) || r.token_count < 0) problems.push(`token_count ${r.token_count} is not a count`);
  if (!Number.isFinite(r.created_at) || r.created_at <= 0) problems.push(`created_at ${r.created_at} is not a timestamp`);
  return problems;
}

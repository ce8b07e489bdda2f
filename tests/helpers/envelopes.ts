import { from, lastValueFrom, toArray } from 'rxjs';
import { newSample, type Curator, type Envelope, type Sample } from '../../lib/envelope.ts';
import type { Decision, Rollout } from '../../contracts/records.ts';

export function rollout(overrides: Partial<Rollout> = {}): Rollout {
  return {
    id: 'r1',
    run_id: 'run',
    prompt_id: 'p1',
    prompt: 'What is 2 + 2?',
    group_id: 'p1',
    response: 'Two plus two.\nAnswer: 4',
    steps: [],
    model_name: 'policy',
    model_version: 'v1',
    rewards: { correct: 1 },
    logprobs: null,
    token_count: 5,
    created_at: 1_700_000_000_000,
    tags: {},
    ...overrides,
  };
}

/** An accepted Decision of `rollout(rolloutOverrides)`, as the sink reads them; `overrides` replace its fields. */
export function decision(rolloutOverrides: Partial<Rollout> = {}, overrides: Partial<Decision> = {}): Decision {
  return {
    rollout: rollout(rolloutOverrides),
    scores: {},
    duplicate_of: null,
    dedupe_method: null,
    reasons: [],
    decision: 'accepted',
    reason: 'accepted',
    config_hash: 'h',
    scorer_version: null,
    annotations: {},
    pipeline_run: 'run',
    source: { topic: 't', partition: 0, offset: '0' },
    ...overrides,
  };
}

let offset = 0;
export function sample(overrides: Partial<Rollout> = {}, extra: Partial<Sample> = {}): Sample {
  return { ...newSample(rollout(overrides), { topic: 't', partition: 0, offset: String(offset++) }, Buffer.from('payload'), null), ...extra };
}

export function through(curator: Curator, input: Envelope[]): Promise<Envelope[]> {
  return lastValueFrom(from(input).pipe(curator, toArray()));
}

export function samplesOf(envelopes: Envelope[]): Sample[] {
  return envelopes.filter((e): e is Sample => e.kind === 'sample');
}

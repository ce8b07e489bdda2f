import type { Decision } from '../contracts/records.ts';
import type { Sample } from './envelope.ts';

export interface DecisionContext {
  configHash: string;
  pipelineRun: string;
}

/** The final verdict: accepted when no operator gave a reason to reject. */
export function toDecision(sample: Sample, context: DecisionContext): Decision {
  const accepted = sample.reasons.length === 0;
  return {
    rollout: sample.rollout,
    scores: sample.scores,
    duplicate_of: sample.duplicateOf,
    dedupe_method: sample.dedupeMethod,
    reasons: sample.reasons,
    decision: accepted ? 'accepted' : 'rejected',
    reason: accepted ? 'accepted' : sample.reasons[0]!,
    config_hash: context.configHash,
    scorer_version: sample.scorerVersion,
    annotations: sample.annotations,
    pipeline_run: context.pipelineRun,
    source: sample.source,
  };
}

/**
 * A stateful operator of our own: accept at most `k` samples per prompt. Each sample that is
 * still a candidate when it reaches the operator counts against its prompt (`prompt_id`), in the
 * named store `prompt-counts`; from the (k+1)-th on, candidates are rejected with the reason
 * `cap:per-prompt`. Samples already rejected upstream pass untouched and are not counted.
 *
 * The count lives in a Flywheel store, not in a closure: it is per input partition (topics are
 * keyed by group id, so a prompt's samples share a partition), written in the same Kafka
 * transaction as the decisions, and restored from its changelog when the worker restarts or the
 * partition moves — so a crash neither forgets a prompt's count nor counts a sample twice.
 *
 *   const steps = [validate(), ruleScore({ rewards: { correct: 1 } }), capPerPrompt(2)];
 */
import { defineStore, isRejected, mapSamples, operator, type Sample, type UserOperator } from 'flywheel';

/** Accepted-so-far count per prompt id. */
export const promptCounts = defineStore<number>('prompt-counts');

export const CAP_REASON = 'cap:per-prompt';

export function capPerPrompt(k: number): UserOperator {
  if (!Number.isInteger(k) || k < 1) throw new Error(`capPerPrompt: k must be a positive integer, got ${k}`);
  return operator({ name: 'cap-per-prompt', stores: [promptCounts], version: `k=${k}` }, (ctx) => {
    const counts = ctx.store(promptCounts);
    return mapSamples('cap-per-prompt', (sample: Sample) => {
      if (isRejected(sample)) return sample;
      const seen = counts.get(sample.rollout.prompt_id) ?? 0;
      if (seen >= k) return { ...sample, reasons: [...sample.reasons, CAP_REASON] };
      counts.put(sample.rollout.prompt_id, seen + 1);
      return sample;
    });
  });
}

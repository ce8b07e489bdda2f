import type { TrainerMetrics } from './types.ts';

/** The counters of TrainerMetrics; the rest (buffer, assignment, replay, starvation) is read live. */
export type Counters = Omit<TrainerMetrics, 'buffered' | 'paused' | 'assigned' | 'replayBuffer' | 'starvation'>;

/**
 * Zeroed counters for one client; batching, the commit protocol and the starvation watch each
 * bump their own.
 *
 * @example
 *   const counters = newCounters('reference', 'flywheel.trainer');
 *   counters.checkpoints++;
 */
export function newCounters(trainer: string, group: string): Counters {
  return {
    trainer,
    group,
    batches: 0,
    consumed: 0,
    admitted: 0,
    rejected: {},
    replayed: 0,
    skipped: 0,
    checkpoints: 0,
    kafkaCommits: 0,
    kafkaCommitFailures: 0,
    lastKafkaCommitError: null,
    lastStarvationSignal: null,
  };
}

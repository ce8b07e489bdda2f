/*
 * What a trainer reports after a step (on the trainer-progress topic) and what the ClickHouse sink
 * stores of it: trainers write it, the sink and the analytics read it.
 */

export const TRAINER_PROGRESS_TABLE = 'trainer_progress';

/** A row of `trainer_progress`: one report per trainer, model version and step. */
export interface TrainerProgressRow {
  trainer: string;
  /** The model version the trainer is producing. */
  model_version: string;
  step: number;
  /** Training examples consumed so far (cumulative). */
  examples: number;
  loss: number;
  /** Further metrics, as parallel arrays (no Map on 18.16). */
  metric_names: string[];
  metric_values: number[];
  /** The accepted topic the trainer reads, and per partition the next offset it committed with this step. */
  committed_topic: string;
  committed_partitions: number[];
  committed_offsets: number[];
  /** 'YYYY-MM-DD hh:mm:ss' (UTC) as read; insert() also takes a Date. */
  at: string;
  inserted_at: string;
}

/** A progress report as a trainer sends it: `at` in epoch milliseconds. */
export type TrainerProgress = Omit<TrainerProgressRow, 'at' | 'inserted_at'> & { at: number };

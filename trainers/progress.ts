import type { Producer } from 'kafkajs';
import type { TrainerProgress } from '../contracts/trainer-progress.ts';

/**
 * Reports a trainer's step on `<prefix>.trainer-progress` (JSON, keyed by trainer); the
 * pipeline's ClickHouse sink stores it in `trainer_progress`, which the `trainer_status` and
 * `trainer_metrics` views read.
 */
export async function publishProgress(producer: Producer, topic: string, report: TrainerProgress): Promise<void> {
  await producer.send({ topic, messages: [{ key: report.trainer, value: JSON.stringify(report) }] });
}

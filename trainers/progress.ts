import type { Producer } from 'kafkajs';
import type { Instrumentation } from '../contracts/events.ts';
import type { TrainerProgress } from '../contracts/trainer-progress.ts';

/**
 * Reports a trainer's step on `<prefix>.trainer-progress` (JSON, keyed by trainer); the
 * pipeline's ClickHouse sink stores it in `trainer_progress`, which the `trainer_status` and
 * `trainer_metrics` views read. With `events`, a `trainer.progress` event follows the send.
 *
 *   await publishProgress(producer, catalog.trainerProgress, report, events);
 */
export async function publishProgress(producer: Producer, topic: string, report: TrainerProgress, events?: Instrumentation): Promise<void> {
  await producer.send({ topic, messages: [{ key: report.trainer, value: JSON.stringify(report) }] });
  events?.emit('trainer.progress', { trainer: report.trainer, modelVersion: report.model_version, step: report.step, examples: report.examples, loss: report.loss });
}

import type { Instrumentation } from '../contracts/events.ts';
import { log as defaultLog, type Logger } from '../lib/log.ts';

export interface ProgressLinesOptions {
  /** The pipeline's name, which starts the assignment lines. */
  name: string;
  /** How often the totals line may be written (only when it changed); default 2000 ms. */
  everyMs?: number;
  log?: Logger;
}

/**
 * A worker's progress lines, from its instrumentation events (no polling of the pipeline):
 * 1. each `group.rebalance`: `<name>: partitions [0, 2] of <topic>` — tests and people count
 *    these to see how often a worker joined its group;
 * 2. every `everyMs`, when the totals changed: `processed N rollouts · stored S samples, D dead
 *    letters` — records of committed batches (`batch.commit`) and rows stored (`sink.insert`);
 * 3. each `listener.error`: which listener type failed, at warn.
 * Attach it before the pipeline starts, so the first assignment is not missed. Returns the
 * function that detaches it.
 *
 * @example
 * const events = new Instrumentation();
 * const detach = progressLines(events, { name: config.name });
 * const pipeline = await startPipeline(config, connections, { events });
 */
export function progressLines(events: Instrumentation, options: ProgressLinesOptions): () => void {
  const log = options.log ?? defaultLog;
  const totals = { processed: 0, samples: 0, deadLetters: 0 };
  const offs = [
    events.on('group.rebalance', ({ payload }) => {
      const topics = [...new Set(payload.partitions.map((p) => p.topic))];
      const partitions = payload.partitions.map((p) => p.partition).join(', ');
      log.info(`${options.name}: partitions [${partitions}] of ${topics.length > 0 ? topics.join(', ') : `group ${payload.groupId}`}`);
    }),
    events.on('batch.commit', ({ payload }) => void (totals.processed += payload.records)),
    events.on('sink.insert', ({ payload }) => {
      if (!payload.ok) return;
      if (payload.table === 'samples') totals.samples += payload.rows;
      else if (payload.table === 'dead_letters') totals.deadLetters += payload.rows;
    }),
    events.on('listener.error', ({ payload }) => log.warn(`an instrumentation listener of ${payload.type} failed: ${payload.message}`)),
  ];
  let last = '';
  const timer = setInterval(() => {
    const line = `processed ${totals.processed} rollouts · stored ${totals.samples} samples, ${totals.deadLetters} dead letters`;
    if (line !== last) log.info(line);
    last = line;
  }, options.everyMs ?? 2000);
  timer.unref();
  return () => {
    clearInterval(timer);
    for (const off of offs) off();
  };
}

/*
 * The dead-letter topic's contract, shared by the processor that writes it, the sink that stores
 * it and anyone who replays it: the value is the input's bytes as they arrived, the headers say why.
 */

/** Dead-letter headers: the original bytes stay the value, the why goes alongside. */
export const DLQ_HEADERS = {
  stage: 'flywheel.stage',
  reason: 'flywheel.reason',
  topic: 'flywheel.source.topic',
  partition: 'flywheel.source.partition',
  offset: 'flywheel.source.offset',
  run: 'flywheel.run',
} as const;

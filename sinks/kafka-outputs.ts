import type { Message, TopicMessages } from 'kafkajs';
import { toDecision, type DecisionContext } from '../operators/decision.ts';
import type { DeadLetter, Envelope, SideOutput } from '../operators/envelope.ts';
import type { Decision } from '../streams/records.ts';
import type { TopicSerde } from '../streams/serde.ts';

export interface OutputTopics {
  decisions: TopicSerde<Decision>;
  accepted: TopicSerde<Decision>;
  deadLetter: string;
  /** Side outputs carry JSON values. */
  side: Record<SideOutput, string>;
}

/** Dead-letter headers: the original bytes stay the value, the why goes alongside. */
export const DLQ_HEADERS = {
  stage: 'flywheel.stage',
  reason: 'flywheel.reason',
  topic: 'flywheel.source.topic',
  partition: 'flywheel.source.partition',
  offset: 'flywheel.source.offset',
  run: 'flywheel.run',
} as const;

/**
 * Turns one processed batch into the records its transaction writes (the processor adds the
 * state changes). Every output goes to the
 * input's partition number: topics are co-partitioned, so a group's records stay together and
 * a partition's outputs stay in input order.
 */
export async function encodeOutputs(
  envelopes: readonly Envelope[],
  partition: number,
  topics: OutputTopics,
  context: DecisionContext,
): Promise<TopicMessages[]> {
  const decisions: Message[] = [];
  const accepted: Message[] = [];
  const dead: Message[] = [];
  const side = new Map<string, Message[]>();
  for (const envelope of envelopes) {
    if (envelope.kind === 'tick') continue;
    if (envelope.kind === 'dead') {
      dead.push(deadLetterMessage(envelope, context.pipelineRun, partition));
      continue;
    }
    if (envelope.kind === 'emit') {
      const topic = topics.side[envelope.output];
      let list = side.get(topic);
      if (list === undefined) side.set(topic, (list = []));
      list.push({ key: envelope.key, value: JSON.stringify({ ...envelope.value, pipeline_run: context.pipelineRun }) });
      continue;
    }
    const decision = toDecision(envelope, context);
    const key = decision.rollout.group_id;
    decisions.push({ key, partition, value: await topics.decisions.serialize(decision) });
    if (decision.decision === 'accepted') accepted.push({ key, partition, value: await topics.accepted.serialize(decision) });
  }
  return [
    { topic: topics.decisions.topic, messages: decisions },
    { topic: topics.accepted.topic, messages: accepted },
    { topic: topics.deadLetter, messages: dead },
    ...[...side].map(([topic, messages]) => ({ topic, messages })),
  ].filter((t) => t.messages.length > 0);
}

function deadLetterMessage(dead: DeadLetter, run: string, partition: number): Message {
  return {
    key: dead.key,
    value: dead.payload,
    partition,
    headers: {
      [DLQ_HEADERS.stage]: dead.stage,
      [DLQ_HEADERS.reason]: dead.reason,
      [DLQ_HEADERS.topic]: dead.source.topic,
      [DLQ_HEADERS.partition]: String(dead.source.partition),
      [DLQ_HEADERS.offset]: dead.source.offset,
      [DLQ_HEADERS.run]: run,
    },
  };
}

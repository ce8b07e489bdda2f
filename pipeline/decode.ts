import type { KafkaMessage } from 'kafkajs';
import { newSample, type Envelope } from '../lib/envelope.ts';
import type { Rollout } from '../contracts/records.ts';
import { RecordError } from '../streams/errors.ts';
import { wireFormatProblem, type TopicSerde } from '../streams/serde.ts';

/**
 * Decodes one input batch, in order. First the serde learns every writer schema id the batch
 * names that it has not seen (one registry round trip per new id, in parallel); then each
 * record decodes synchronously, resolved from its writer's schema to Flywheel's Rollout
 * schema (defaults filled). Anything that is not a rollout — an empty value, bytes without the
 * magic byte, an unknown schema id, a writer schema that does not resolve, a body that does not
 * fit — becomes a dead letter saying what is wrong, original bytes kept. A registry that
 * cannot be reached is not the records' fault: that error is thrown, and the batch is retried.
 *
 *   const envelopes = await decodeRollouts(batch.messages, 'flywheel.rollouts', 0, serde);
 */
export async function decodeRollouts(messages: readonly KafkaMessage[], topic: string, partition: number, serde: TopicSerde<Rollout>): Promise<Envelope[]> {
  await serde.prepare(messages.map((m) => m.value));
  return messages.map((m) => decodeRollout(m, topic, partition, serde));
}

/** One record of a batch whose payloads `serde.prepare` has seen. */
export function decodeRollout(message: KafkaMessage, topic: string, partition: number, serde: TopicSerde<Rollout>): Envelope {
  const source = { topic, partition, offset: message.offset };
  const dead = (reason: string): Envelope => ({ kind: 'dead', source, payload: message.value, key: message.key, stage: 'decode', reason });
  const problem = wireFormatProblem(message.value);
  if (problem !== undefined) return dead(problem);
  try {
    const rollout = serde.decode(message.value!);
    const sample = newSample(rollout, source, message.value!, message.key, brokerTimestamp(message));
    // Written with the reader's schema: the decision can embed these bytes (sinks/kafka-outputs.ts).
    if (serde.readerBody(message.value!) !== undefined) sample.wireRollout = rollout;
    return sample;
  } catch (err) {
    if (err instanceof RecordError) return dead(`not a rollout: ${err.message}`);
    throw err;
  }
}

/** CreateTime or LogAppendTime in epoch ms; kafkajs gives "-1" (or nothing) when the record has none. */
function brokerTimestamp(message: KafkaMessage): number | undefined {
  const at = Number(message.timestamp);
  return Number.isFinite(at) && at >= 0 ? at : undefined;
}

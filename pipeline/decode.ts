import type { KafkaMessage } from 'kafkajs';
import type { Envelope } from '../operators/envelope.ts';
import type { Rollout } from '../streams/records.ts';
import type { TopicSerde } from '../streams/serde.ts';

/**
 * Decodes one input record. Anything that is not a rollout in the registry's wire format —
 * an empty value, bytes without the magic byte, an unknown schema id, a record that does not
 * fit the schema — becomes a dead letter with the decoder's reason, original bytes kept.
 */
export async function decodeRollout(message: KafkaMessage, topic: string, partition: number, serde: TopicSerde<Rollout>): Promise<Envelope> {
  const source = { topic, partition, offset: message.offset };
  if (message.value === null || message.value.length === 0) {
    return { kind: 'dead', source, payload: message.value, key: message.key, stage: 'decode', reason: 'empty record value' };
  }
  try {
    const rollout = await serde.deserialize(message.value);
    if (rollout === null || typeof rollout !== 'object') throw new Error('decoded to no record');
    return {
      kind: 'sample',
      rollout,
      source,
      payload: message.value,
      key: message.key,
      scores: {},
      duplicateOf: null,
      dedupeMethod: null,
      reasons: [],
    };
  } catch (err) {
    return { kind: 'dead', source, payload: message.value, key: message.key, stage: 'decode', reason: `not a rollout in the registry's wire format: ${(err as Error).message}` };
  }
}

import type { KafkaMessage } from 'kafkajs';
import { newSample, type Envelope } from '../operators/envelope.ts';
import type { Rollout } from '../streams/records.ts';
import type { TopicSerde } from '../streams/serde.ts';

/**
 * Decodes one input record. Anything that is not a rollout in the registry's wire format —
 * an empty value, bytes without the magic byte, an unknown schema id, a record that does not
 * fit the schema — becomes a dead letter with the decoder's reason, original bytes kept. A
 * registry that cannot be reached is not the record's fault: that error is thrown, and the
 * batch is retried.
 */
export async function decodeRollout(message: KafkaMessage, topic: string, partition: number, serde: TopicSerde<Rollout>): Promise<Envelope> {
  const source = { topic, partition, offset: message.offset };
  if (message.value === null || message.value.length === 0) {
    return { kind: 'dead', source, payload: message.value, key: message.key, stage: 'decode', reason: 'empty record value' };
  }
  if (message.value[0] !== 0 || message.value.length < 5) {
    const first = message.value[0]!.toString(16).padStart(2, '0');
    return { kind: 'dead', source, payload: message.value, key: message.key, stage: 'decode', reason: `not in the registry's wire format: first byte is 0x${first}, not the magic byte 0x00 followed by a schema id` };
  }
  try {
    const rollout = await serde.deserialize(message.value);
    if (rollout === null || typeof rollout !== 'object') throw new Error('decoded to no record');
    return newSample(rollout, source, message.value, message.key);
  } catch (err) {
    // The registry being unreachable says nothing about the record: retry the batch instead.
    if (registryUnavailable(err)) throw err;
    return { kind: 'dead', source, payload: message.value, key: message.key, stage: 'decode', reason: `not a rollout: ${(err as Error).message}` };
  }
}

function registryUnavailable(err: unknown): boolean {
  const e = err as { status?: number; code?: string; cause?: { code?: string } };
  if (typeof e.status === 'number') return e.status >= 500 || e.status === 429;
  const code = e.code ?? e.cause?.code;
  return typeof code === 'string' && /^(ECONN|ETIMEDOUT|EAI_AGAIN|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|ERR_NETWORK)/.test(code);
}

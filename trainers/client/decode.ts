import type { KafkaMessage } from 'kafkajs';
import type { Decision, Label } from '../../contracts/records.ts';
import { RecordError } from '../../streams/errors.ts';
import type { TopicSerde } from '../../streams/serde.ts';
import type { SkippedRecord, TrainerRecord } from './types.ts';

/** One fetched message, decoded: a record for the trainer, or skipped with the reason. */
export type Entry = { kind: 'record'; offset: bigint; record: TrainerRecord } | { kind: 'skipped'; offset: bigint; skipped: SkippedRecord };

export interface Decoders {
  /** The Decision topic read (accepted or decisions), or null. */
  decisionTopic: string | null;
  decisions: TopicSerde<Decision> | null;
  labels: TopicSerde<Label> | null;
}

/**
 * Decodes one message of the decision or labels topic:
 * 1. an empty value, or one not in the registry's wire format (magic byte 0, schema id), is skipped;
 * 2. a value the serde rejects as the record's fault (RecordError) is skipped with its message;
 * 3. any other failure (the registry unreachable: UnavailableError) is thrown, so kafkajs
 *    fetches the batch again instead of the record being skipped.
 *
 * @example
 *   const entry = await decodeMessage(decoders, 'flywheel.accepted', 0, message, BigInt(message.offset));
 *   if (entry.kind === 'skipped') entry.skipped.reason; // e.g. "empty record value"
 */
export async function decodeMessage(decoders: Decoders, topic: string, partition: number, message: KafkaMessage, offset: bigint): Promise<Entry> {
  const base = { topic, partition, offset: message.offset, key: message.key?.toString('utf8') ?? null, timestamp: Number(message.timestamp) };
  const skipped = (reason: string): Entry => ({ kind: 'skipped', offset, skipped: { topic, partition, offset: message.offset, reason } });
  if (message.value === null || message.value.length === 0) return skipped('empty record value');
  if (message.value[0] !== 0 || message.value.length < 5) return skipped(`not in the registry's wire format (first byte 0x${message.value[0]!.toString(16).padStart(2, '0')})`);
  try {
    if (topic === decoders.decisionTopic) return { kind: 'record', offset, record: { kind: 'decision', ...base, value: await decoders.decisions!.deserialize(message.value) } };
    return { kind: 'record', offset, record: { kind: 'label', ...base, value: await decoders.labels!.deserialize(message.value) } };
  } catch (err) {
    if (!(err instanceof RecordError)) throw err;
    return skipped(`does not decode: ${err.message}`);
  }
}

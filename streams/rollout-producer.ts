import type { Kafka, Message } from 'kafkajs';
import type { Rollout } from '../contracts/records.ts';
import type { TopicSerde } from './serde.ts';

/**
 * Sends rollouts encoded in the registry's wire format, keyed by group id (so a prompt's
 * samples share a partition), with an idempotent producer: a retried send is not duplicated.
 * `raw` records go as they are — the way to feed the pipeline bytes that are not rollouts.
 */
export async function produceRollouts(
  kafka: Kafka,
  serde: TopicSerde<Rollout>,
  rollouts: readonly Rollout[],
  options: { raw?: readonly Buffer[]; chunk?: number; onProgress?: (sent: number) => void } = {},
): Promise<number> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const chunk = options.chunk ?? 500;
  let sent = 0;
  try {
    for (let i = 0; i < rollouts.length; i += chunk) {
      const messages: Message[] = rollouts.slice(i, i + chunk).map((r) => ({ key: r.group_id, value: serde.encode(r) }));
      await producer.send({ topic: serde.topic, messages });
      sent += messages.length;
      options.onProgress?.(sent);
    }
    if (options.raw !== undefined && options.raw.length > 0) {
      await producer.send({ topic: serde.topic, messages: options.raw.map((value, i) => ({ key: `raw-${i}`, value })) });
      sent += options.raw.length;
    }
  } finally {
    await producer.disconnect();
  }
  return sent;
}

import { randomUUID } from 'node:crypto';
import type { Kafka, KafkaMessage } from 'kafkajs';
import { connectionsFromEnv } from '../../streams/connections.ts';
import { createKafka } from '../../streams/kafka.ts';
import { catalogTopicConfigs, ensureTopics, type TopicCatalog } from '../../streams/topics.ts';

/** The services `npm test` started (deploy/test-env.sh), or those the environment names. */
export const connections = connectionsFromEnv();

export function testKafka(name: string): Kafka {
  return createKafka(connections, `flywheel-test-${name}`);
}

/** Creates a catalog's topics (3 partitions) before anything produces to them. */
export async function createCatalogTopics(kafka: Kafka, catalog: TopicCatalog, partitions = 3): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await ensureTopics(admin, catalogTopicConfigs(catalog, partitions));
  } finally {
    await admin.disconnect();
  }
}

/** A topic prefix no other test (or earlier run) uses. */
export function uniquePrefix(name: string): string {
  return `t-${name}-${randomUUID().slice(0, 8)}`;
}

export type ConsumedMessage = KafkaMessage & { partition: number };

/**
 * Reads a topic from the beginning, read_committed, as a downstream consumer would, until
 * `until` holds and then `settleMs` more, so that records beyond the expected ones (duplicates)
 * would be seen too.
 */
export async function consumeTopic(
  kafka: Kafka,
  topic: string,
  until: (messages: ConsumedMessage[]) => boolean,
  { settleMs = 1500, timeoutMs = 120_000 } = {},
): Promise<ConsumedMessage[]> {
  const consumer = kafka.consumer({ groupId: `test-reader-${randomUUID()}`, readUncommitted: false, maxWaitTimeInMs: 500 });
  const messages: ConsumedMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message, partition }) => void messages.push({ ...message, partition }) });
    const deadline = Date.now() + timeoutMs;
    while (!until(messages)) {
      if (Date.now() > deadline) throw new Error(`reading ${topic}: condition not met within ${timeoutMs} ms (${messages.length} records read)`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, settleMs));
  } finally {
    await consumer.disconnect();
  }
  return messages;
}

/** Polls `condition`; `what` (or what it returns, evaluated at the timeout) says what was awaited. */
export async function waitUntil(condition: () => boolean | Promise<boolean>, what: string | (() => string), timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

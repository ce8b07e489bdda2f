// First, before kafkajs loads (as pipeline/run.ts does).
import { linearGrouping } from '../streams/kafkajs-grouping.ts';
import { readFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { Partitioners } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ensureTopics } from '../streams/topics.ts';
import { consumeTopic, testKafka, uniquePrefix } from './helpers/kafka.ts';

const require = createRequire(import.meta.url);
type Group = (args: { topic: string; partitionMetadata: unknown[]; messages: unknown[]; partitioner: (a: { message: unknown }) => number }) => Record<string, unknown[]>;

/** kafkajs's own groupMessagesPerPartition, compiled from its file (the cache holds the replacement). */
function originalGrouping(): Group {
  const path = require.resolve('kafkajs/src/producer/groupMessagesPerPartition.js');
  const m = new Module(path) as Module & { _compile(source: string, filename: string): void };
  m._compile(readFileSync(path, 'utf8'), path);
  return m.exports as Group;
}

describe('kafkajs producer grouping (linear replacement)', () => {
  it('is in effect and groups exactly as kafkajs does: per partition, in message order', () => {
    expect(linearGrouping).toBe(true);
    const replaced = require('kafkajs/src/producer/groupMessagesPerPartition.js') as Group;
    const original = originalGrouping();
    expect(replaced).not.toBe(original);
    const partitionMetadata = [0, 1, 2].map((partitionId) => ({ partitionId, leader: 1 }));
    const partitioner = Partitioners.DefaultPartitioner() as unknown as (a: { message: unknown }) => number;
    // Explicit partitions and keyed ones (murmur2), interleaved.
    const messages = Array.from({ length: 500 }, (_, i) => (i % 3 === 0 ? { key: `k${i % 17}`, value: `v${i}` } : { partition: i % 3, value: `v${i}` }));
    const args = { topic: 't', partitionMetadata, messages, partitioner };
    expect(replaced(args)).toEqual(original(args));
    expect(replaced({ ...args, partitionMetadata: [] })).toEqual(original({ ...args, partitionMetadata: [] }));
  });

  it('a transactional send of thousands of records to three partitions arrives complete and in order', async () => {
    const kafka = testKafka('grouping');
    const topic = `${uniquePrefix('grouping')}.out`;
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [{ topic, numPartitions: 3, replicationFactor: -1 }]).finally(() => admin.disconnect());
    const producer = kafka.producer({ transactionalId: `${topic}-tx`, idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      const transaction = await producer.transaction();
      await transaction.sendBatch({ topicMessages: [{ topic, messages: Array.from({ length: 6000 }, (_, i) => ({ partition: i % 3, value: String(i) })) }] });
      await transaction.commit();
    } finally {
      await producer.disconnect();
    }
    const read = await consumeTopic(kafka, topic, (m) => m.length >= 6000, { settleMs: 300 });
    expect(read).toHaveLength(6000);
    for (const p of [0, 1, 2]) {
      const values = read.filter((m) => m.partition === p).map((m) => Number(m.value!.toString()));
      expect(values).toEqual(Array.from({ length: 2000 }, (_, i) => 3 * i + p));
    }
  });
});

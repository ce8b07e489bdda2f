// First, before kafkajs loads (as pipeline/run.ts does).
import { fastRecordEncoder, fastRecords, kafkajsRecord, linearGrouping } from '../streams/kafkajs-producer.ts';
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

describe('kafkajs producer path (linear grouping, record encoder)', () => {
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

  it('encodes every record exactly as kafkajs does, and is the encoder kafkajs produces with', () => {
    expect(fastRecords).toBe(true);
    expect(require('kafkajs/src/protocol/recordBatch/record/v0/index.js')).toBe(fastRecordEncoder);
    const bytes = (e: { buf: Buffer; offset: number }) => e.buf.subarray(0, e.offset);
    const keys = [null, undefined, '', 'g-1', 'ключ 🚀', Buffer.from([0, 1, 2]), Buffer.alloc(0), 'k'.repeat(200)];
    const values = [null, '', '{"a":1}', 'x'.repeat(70_000), Buffer.from('wire'), Buffer.alloc(20_000, 7), 'é'.repeat(100)];
    const deltas = [0, 1, 63, 64, 8191, 8192, -1, -64, -65, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 1.5e12, Number.NaN];
    let cases = 0;
    for (const key of keys) {
      for (const value of values) {
        for (const [i, timestampDelta] of deltas.entries()) {
          const offsetDelta = [0, 5, 127, 128, 16_384, 2 ** 31 - 1][i % 6]!;
          const args = { key, value, timestampDelta, offsetDelta };
          if (Number.isNaN(timestampDelta)) continue;
          expect(bytes(fastRecordEncoder(args)).equals(bytes(kafkajsRecord(args)))).toBe(true);
          cases++;
        }
      }
    }
    expect(cases).toBeGreaterThan(700);
    // Headers (dead letters) go through kafkajs's own encoder: the same bytes by construction.
    const withHeaders = { key: 'k', value: Buffer.from('v'), headers: { 'flywheel.stage': 'decode', multi: ['a', 'b'] }, offsetDelta: 3 };
    expect(bytes(fastRecordEncoder(withHeaders)).equals(bytes(kafkajsRecord(withHeaders)))).toBe(true);
    expect(bytes(fastRecordEncoder({ key: 'k', value: 'v', headers: {} })).equals(bytes(kafkajsRecord({ key: 'k', value: 'v' })))).toBe(true);
  });

  it('a transactional send of thousands of records to three partitions arrives complete, in order, keys and values intact', async () => {
    const kafka = testKafka('grouping');
    const topic = `${uniquePrefix('grouping')}.out`;
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [{ topic, numPartitions: 3, replicationFactor: -1 }]).finally(() => admin.disconnect());
    const producer = kafka.producer({ transactionalId: `${topic}-tx`, idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      const transaction = await producer.transaction();
      await transaction.sendBatch({ topicMessages: [{ topic, messages: Array.from({ length: 6000 }, (_, i) => ({ partition: i % 3, key: i % 2 === 0 ? `k${i}` : null, value: i % 5 === 0 ? Buffer.from(String(i)) : String(i) })) }] });
      await transaction.commit();
    } finally {
      await producer.disconnect();
    }
    const read = await consumeTopic(kafka, topic, (m) => m.length >= 6000, { settleMs: 300 });
    expect(read).toHaveLength(6000);
    for (const p of [0, 1, 2]) {
      const values = read.filter((m) => m.partition === p).map((m) => Number(m.value!.toString()));
      expect(values).toEqual(Array.from({ length: 2000 }, (_, i) => 3 * i + p));
      expect(read.filter((m) => m.partition === p).map((m) => m.key?.toString() ?? null)).toEqual(Array.from({ length: 2000 }, (_, i) => ((3 * i + p) % 2 === 0 ? `k${3 * i + p}` : null)));
    }
  });
});

// First, before kafkajs loads (as pipeline/run.ts does).
import { crc32c, crc32cPortable, encodeProduceRequest, nativeChecksum, fastFraming, fastProduceRequests, fastRecordEncoder, fastRecords, kafkajsFraming, kafkajsRecord, linearGrouping } from '../streams/kafkajs-producer.ts';
import { readFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { Partitioners } from 'kafkajs';
import { describe, expect, it, vi } from 'vitest';
import { ensureTopics } from '../streams/topics.ts';
import { consumeTopic, testKafka, uniquePrefix } from './helpers/kafka.ts';

const require = createRequire(import.meta.url);
type Group = (args: { topic: string; partitionMetadata: unknown[]; messages: unknown[]; partitioner: (a: { message: unknown }) => number }) => Record<string, unknown[]>;

/** A kafkajs module as kafkajs ships it, compiled from its file (the cache holds the replacement). */
function original<T>(file: string): T {
  const path = require.resolve(`kafkajs/src/${file}`);
  const m = new Module(path) as Module & { _compile(source: string, filename: string): void };
  m.filename = path;
  m.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path);
  m._compile(readFileSync(path, 'utf8'), path);
  return m.exports as T;
}
const originalGrouping = () => original<Group>('producer/groupMessagesPerPartition.js');

type Encoded = { buf: Buffer; offset: number };
type ProduceBuilder = (args: unknown) => { encode: () => Promise<Encoded>; apiKey: number; apiVersion: number };

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

  it('writes Produce requests byte for byte as kafkajs does: topics, partitions, keys, values, timestamps, headers, ids', async () => {
    expect(fastProduceRequests).toBe(true);
    // kafkajs's own v3 request (its records through the replaced, byte-equal record encoder above).
    const kafkajsV3 = original<ProduceBuilder>('protocol/requests/produce/v3/request.js');
    const replaced = require('kafkajs/src/protocol/requests/produce/v3/request.js') as ProduceBuilder;
    expect(replaced).not.toBe(kafkajsV3);
    const Long = require('kafkajs/src/utils/long.js') as { fromValue(v: unknown): unknown };
    const message = (i: number, timestamps: boolean) => ({
      key: [null, `k${i}`, Buffer.from([i & 255, 1]), 'ключ', undefined][i % 5],
      value: [`v${i}`, Buffer.alloc(i % 300, i & 255), null, 'x'.repeat(9000), '{"é":1}'][i % 5],
      ...(timestamps ? { timestamp: String(1_700_000_000_000 + ((i * 7919) % 5000)) } : {}),
      ...(i % 97 === 0 ? { headers: { 'flywheel.stage': 'decode', multi: ['a', 'b'] } } : {}),
    });
    const topicData = (timestamps: boolean) => [
      { topic: 'flywheel.decisions', partitions: [0, 1, 2].map((partition) => ({ partition, firstSequence: 40 * partition, messages: Array.from({ length: 300 + partition }, (_, i) => message(i + partition, timestamps)) })) },
      { topic: 'ч.changelog', partitions: [{ partition: 1, messages: [message(3, timestamps)] }] },
    ];
    const cases = [
      { acks: -1, timeout: 30_000, transactionalId: 'flywheel.curate-task-2', producerId: Long.fromValue(4711), producerEpoch: 3, topicData: topicData(true) },
      { acks: -1, timeout: 30_000, transactionalId: 'tx', producerId: Long.fromValue('9007199254740993'), producerEpoch: 0, topicData: topicData(false) },
      { acks: 1, timeout: 5_000, topicData: topicData(false) },
      { acks: 1, timeout: 5_000, transactionalId: '', topicData: topicData(true) },
    ];
    // Records without timestamps take "now": one fixed now for both sides.
    const now = vi.spyOn(Date, 'now').mockReturnValue(1_800_000_000_123);
    try {
      for (const args of cases) {
        const ours = await replaced(args).encode();
        const theirs = await kafkajsV3(args).encode();
        expect(ours.buf.subarray(0, ours.offset).equals(theirs.buf.subarray(0, theirs.offset))).toBe(true);
        expect(encodeProduceRequest(args as Parameters<typeof encodeProduceRequest>[0]).offset).toBe(theirs.offset);
      }
    } finally {
      now.mockRestore();
    }
    // Compressed requests are kafkajs's own.
    expect(replaced({ ...cases[0], compression: 1 }).encode.toString()).toBe(kafkajsV3({ ...cases[0], compression: 1 }).encode.toString());
  });

  it('computes CRC32C as kafkajs does, and frames requests byte for byte as kafkajs does', async () => {
    const kafkajsCrc = require('kafkajs/src/protocol/recordBatch/crc32C/crc32C.js') as (b: Buffer) => number;
    for (const length of [0, 1, 7, 8, 9, 63, 1000, 65_537]) {
      const buf = Buffer.from(Array.from({ length }, (_, i) => (i * 131 + length) & 255));
      for (const crc of [crc32c, crc32cPortable]) {
        expect(crc(buf)).toBe(kafkajsCrc(buf));
        if (length > 3) expect(crc(buf, 2, length - 1)).toBe(kafkajsCrc(buf.subarray(2, length - 1)));
      }
    }
    // On this platform (linux-x64) the native checksum loads; elsewhere the portable one serves.
    if (process.platform === 'linux' && process.arch === 'x64') expect(nativeChecksum).toBe(true);
    expect(fastFraming).toBe(true);
    const Encoder = require('kafkajs/src/protocol/encoder.js') as new () => Encoded & { writeString(s: string): Encoded };
    const framed = require('kafkajs/src/protocol/request.js') as typeof kafkajsFraming;
    expect(framed).not.toBe(kafkajsFraming);
    for (const clientId of ['flywheel-curate', null, 'клиент']) {
      const body = new Encoder().writeString('x'.repeat(3000));
      const request = { apiKey: 0, apiVersion: 7, encode: async () => body };
      const ours = await framed({ correlationId: 12_345, clientId, request });
      const theirs = await kafkajsFraming({ correlationId: 12_345, clientId, request });
      expect(ours.buf.subarray(0, ours.offset).equals(theirs.buf.subarray(0, theirs.offset))).toBe(true);
    }
  });
});

import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mergeMap } from 'rxjs';
import { kafkaBatches } from '../streams/source.ts';
import { ensureTopics } from '../streams/topics.ts';
import { testKafka, uniquePrefix } from './helpers/kafka.ts';

describe('kafkaBatches: a consumer as an Observable with backpressure', () => {
  const kafka = testKafka('source');
  const topic = `${uniquePrefix('source')}.in`;
  const partitions = 3;
  const perPartition = 600;
  const consumer = kafka.consumer({ groupId: `test-source-${randomUUID()}`, maxBytesPerPartition: 16_384, maxBytes: 65_536 });

  beforeAll(async () => {
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [{ topic, numPartitions: partitions, replicationFactor: -1 }]);
    await admin.disconnect();
    const producer = kafka.producer();
    await producer.connect();
    // Small sends: a fetch returns at least one whole record batch, whatever its size.
    for (let p = 0; p < partitions; p++) {
      for (let i = 0; i < perPartition; i += 20) {
        await producer.send({ topic, messages: Array.from({ length: 20 }, (_, j) => ({ partition: p, value: `${i + j}:${'x'.repeat(200)}` })) });
      }
    }
    await producer.disconnect();
  });

  afterAll(() => consumer.disconnect());

  it('holds the consumer while downstream is slow: bounded in-flight data, order kept, every record once', async () => {
    await consumer.connect();
    let inFlight = 0;
    let maxInFlight = 0;
    let maxInFlightBytes = 0;
    let inFlightBytes = 0;
    const seen = new Map<number, number[]>();
    await new Promise<void>((resolve, reject) => {
      const subscription = kafkaBatches(consumer, { topics: [topic], fromBeginning: true, partitionsConsumedConcurrently: 2 })
        .pipe(
          mergeMap(async (source) => {
            const bytes = source.batch.messages.reduce((sum, m) => sum + (m.value?.length ?? 0), 0);
            inFlight++;
            inFlightBytes += bytes;
            maxInFlight = Math.max(maxInFlight, inFlight);
            maxInFlightBytes = Math.max(maxInFlightBytes, inFlightBytes);
            await new Promise((r) => setTimeout(r, 25)); // a deliberately slow downstream
            const list = seen.get(source.batch.partition) ?? [];
            for (const m of source.batch.messages) list.push(Number(m.value!.toString().split(':')[0]));
            seen.set(source.batch.partition, list);
            inFlight--;
            inFlightBytes -= bytes;
            source.settle();
          }),
        )
        .subscribe({ error: reject });
      const poll = setInterval(() => {
        const total = [...seen.values()].reduce((sum, l) => sum + l.length, 0);
        if (total >= partitions * perPartition) {
          clearInterval(poll);
          subscription.unsubscribe();
          resolve();
        }
      }, 50);
    });
    // At most one batch per partition, and no more partitions than allowed, are ever held.
    expect(maxInFlight).toBeLessThanOrEqual(2);
    // Bounded by the fetch size, not by the topic: well under the 360 KB produced.
    expect(maxInFlightBytes).toBeLessThanOrEqual(2 * 16_384 + 1024);
    for (let p = 0; p < partitions; p++) {
      expect(seen.get(p)).toEqual(Array.from({ length: perPartition }, (_, i) => i));
    }
  });
});

// The ClickHouse sink at a trickle, on embedded chdb: decisions arriving a few at a time are
// stored in blocks of many (its fetch waits up to the flush interval for a block worth an
// INSERT), not in an INSERT each, and every one of them is stored.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Instrumentation } from '../contracts/events.ts';
import { ClickHouseSink } from '../sinks/clickhouse-sink.ts';
import { migrate } from '../sinks/clickhouse/schema.ts';
import { openStore } from '../sinks/clickhouse/store.ts';
import { decisionSerde, registryClient } from '../streams/serde.ts';
import { topicCatalog } from '../streams/topics.ts';
import { decision } from './helpers/envelopes.ts';
import { connections, createCatalogTopics, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';

const cleanup: Array<() => Promise<unknown> | void> = [];
afterAll(async () => {
  for (const step of cleanup.reverse()) await step();
});

describe('ClickHouse sink flush interval', () => {
  it('stores records sent one at a time in a few blocks, all of them', async () => {
    const prefix = uniquePrefix('chflush');
    const catalog = topicCatalog(prefix);
    await createCatalogTopics(kafka(), catalog);
    const dir = mkdtempSync(join(tmpdir(), 'flywheel-chflush-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const store = await openStore({ path: join(dir, 'clickhouse') });
    cleanup.push(() => store.close());
    await migrate(store);
    const decisions = await decisionSerde(registryClient(connections.schemaRegistryUrl), catalog.decisions);
    const events = new Instrumentation();
    const blocks: number[] = [];
    events.on('sink.insert', ({ payload: { table, rows, ok } }) => ok && table === 'samples' && blocks.push(rows));
    const sink = new ClickHouseSink({
      kafka: kafka(),
      store,
      groupId: `${prefix}.sink`,
      decisions,
      deadLetterTopic: catalog.deadLetter,
      trainerProgressTopic: catalog.trainerProgress,
      events,
      flushIntervalMs: 2000,
    });
    cleanup.push(() => sink.stop());
    await sink.start();
    await waitUntil(() => sink.ownedPartitions > 0, 'the sink to own its partitions');

    const producer = kafka().producer();
    await producer.connect();
    cleanup.push(() => producer.disconnect());
    // The trickle itself: one record every 50 ms (the input's pace, not a wait for an outcome).
    // Without the wait each fetch would return one or two of them, each its own INSERT.
    const count = 12;
    for (let i = 0; i < count; i++) {
      await producer.send({ topic: catalog.decisions, messages: [{ value: decisions.encode(decision({ id: `${prefix}-${i}`, response: `answer ${i}` }, { pipeline_run: prefix, source: { topic: `${prefix}.rollouts`, partition: 0, offset: String(i) } })), partition: 0 }] });
      await new Promise((r) => setTimeout(r, 50));
    }

    await waitUntil(() => blocks.reduce((a, b) => a + b, 0) >= count, () => `${count} rows stored (blocks so far: ${blocks.join(', ')})`);
    const rows = await store.query<{ n: number }>(`SELECT count() AS n FROM samples FINAL WHERE pipeline_run = {run:String}`, { run: prefix });
    expect(Number(rows[0]!.n)).toBe(count);
    // The records were sent within a third of the interval: one block, or two if a fetch was
    // already on its way back as the first one arrived.
    expect(blocks.length).toBeLessThanOrEqual(2);
  }, 120_000);

  it('refuses a flush interval longer than the heartbeat interval', () => {
    expect(
      () =>
        new ClickHouseSink({
          kafka: kafka(),
          store: undefined as never,
          groupId: 'g',
          decisions: undefined as never,
          deadLetterTopic: 'd',
          trainerProgressTopic: 't',
          flushIntervalMs: 5000,
          heartbeatIntervalMs: 3000,
        }),
    ).toThrow(/flushIntervalMs \(5000\) must be an integer from 0 to the heartbeat interval \(3000\)/);
  });
});

let shared: ReturnType<typeof testKafka> | undefined;
function kafka() {
  return (shared ??= testKafka('chflush'));
}

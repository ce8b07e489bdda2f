import { afterAll, describe, expect, it, onTestFailed } from 'vitest';
import type { KafkaMessage, TopicMessages } from 'kafkajs';
import { DLQ_HEADERS } from '../contracts/dead-letter.ts';
import { restoreChangelog } from '../streams/changelog-restore.ts';
import { RecordError, retriable, UnavailableError } from '../streams/errors.ts';
import { ExactlyOnceProcessor } from '../streams/exactly-once.ts';
import { changelogTopicConfig, ensureTopics } from '../streams/topics.ts';
import { consumeTopic, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';

/**
 * The exactly-once processor on the real broker, with a process callback that fails a whole
 * batch for one record's sake (a poison record: always) or for a service's (twice, then fine).
 * One store counts how often each record was decided, so a staged write of a failed attempt
 * that leaked into the committed state would show as a count of 2.
 */
describe('a batch that fails for one record (poison) or for a while (transient)', () => {
  const kafka = testKafka('poison');
  const prefix = uniquePrefix('poison');
  const input = `${prefix}.in`;
  const output = `${prefix}.out`;
  const deadLetters = `${prefix}.dead-letter`;
  const changelog = `${prefix}.seen-changelog`;
  const groupId = `${prefix}.poison`;
  const ids = Array.from({ length: 60 }, (_, i) => `r${i}`);
  const later = Array.from({ length: 10 }, (_, i) => `later${i}`);
  const poison = 'r25';
  const transient = 'r40';
  const poisonMessage = `score of ${poison} is not a number`;
  let transientLeft = 2;
  const attempts = new Map<string, number>();
  const log: string[] = [];
  let processor: ExactlyOnceProcessor<null> | undefined;

  afterAll(async () => {
    await processor?.stop();
  });

  it('dead-letters the poison record once, retries the transient failure, decides every other record once, without a rebalance', async () => {
    onTestFailed(() => console.error(`--- processor log ---\n${log.join('\n')}`));
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [
      { topic: input, numPartitions: 1, replicationFactor: -1 },
      { topic: output, numPartitions: 1, replicationFactor: -1 },
      { topic: deadLetters, numPartitions: 1, replicationFactor: -1 },
      changelogTopicConfig(changelog, 1),
    ]);
    await admin.disconnect();
    const producer = kafka.producer();
    await producer.connect();
    // One send: one record batch, so one fetched batch holds the poison record, the transient
    // one and the records around them.
    await producer.send({ topic: input, messages: ids.map((id) => ({ key: id, value: JSON.stringify({ id }), partition: 0 })) });

    processor = new ExactlyOnceProcessor<null>({
      kafka,
      groupId,
      inputTopics: [input],
      stores: ['seen'],
      changelogTopic: () => changelog,
      fromBeginning: true,
      partitionsConsumedConcurrently: 1,
      maxBatchBytes: 1_048_576,
      retry: { initialMs: 50, maxMs: 200, maxAttempts: 5 },
      log: (line) => void log.push(line),
      onCommit: ({ records, nextOffset }) => void log.push(`committed ${records} records, next offset ${nextOffset}`),
      assign: () => null,
      process: async (batch, { state }) => {
        if (batch.kind === 'tick') return [];
        const seen = state.store('seen');
        const out: TopicMessages = { topic: output, messages: [] };
        for (const m of batch.messages) {
          const { id } = JSON.parse(m.value!.toString()) as { id: string };
          attempts.set(id, (attempts.get(id) ?? 0) + 1);
          // A record's own content at fault: a plain TypeError, as a decoder or operator throws it.
          if (id === poison) throw new TypeError(poisonMessage);
          if (id === transient && transientLeft > 0) {
            transientLeft--;
            throw new UnavailableError('scorer', 'http://127.0.0.1:1', 'connect ECONNREFUSED');
          }
          const count = Number(seen.get(id) ?? '0') + 1;
          seen.put(id, String(count));
          out.messages.push({ key: id, value: JSON.stringify({ id, count }), partition: 0 });
        }
        return [out];
      },
      deadLetter: (message: KafkaMessage, topic, partition, error) => ({
        topic: deadLetters,
        messages: [
          {
            key: message.key,
            value: message.value,
            partition,
            headers: {
              [DLQ_HEADERS.stage]: 'process',
              [DLQ_HEADERS.reason]: error.message,
              [DLQ_HEADERS.topic]: topic,
              [DLQ_HEADERS.partition]: String(partition),
              [DLQ_HEADERS.offset]: message.offset,
              [DLQ_HEADERS.run]: prefix,
            },
          },
        ],
      }),
    });
    const { stopped } = await processor.start();
    stopped.catch((err: unknown) => log.push(`stopped: ${(err as Error).message}`));

    const expected = ids.filter((id) => id !== poison);
    log.push('step: reading the outputs');
    await consumeTopic(kafka, output, (m) => m.length >= expected.length, { settleMs: 0 });
    // The partition keeps flowing after the poison record: a later batch is decided too.
    await producer.send({ topic: input, messages: later.map((id) => ({ key: id, value: JSON.stringify({ id }), partition: 0 })) });
    await producer.disconnect();
    const decided = await consumeTopic(kafka, output, (m) => m.length >= expected.length + later.length, { settleMs: 2000 });
    const values = decided.map((m) => JSON.parse(m.value!.toString()) as { id: string; count: number });
    expect(values.map((v) => v.id)).toEqual([...expected, ...later]);
    // Every record's state write committed exactly once: failed attempts left nothing behind.
    expect(values.filter((v) => v.count !== 1)).toEqual([]);
    // The records around the poison one were really re-run (isolation), and the transient one retried.
    expect(attempts.get(poison)).toBeGreaterThan(1);
    expect(attempts.get(transient)).toBe(3);

    log.push('step: reading the dead letters');
    const dead = await consumeTopic(kafka, deadLetters, (m) => m.length >= 1, { settleMs: 2000 });
    expect(dead).toHaveLength(1);
    expect(dead[0]!.value!.toString()).toBe(JSON.stringify({ id: poison }));
    const header = (name: string) => dead[0]!.headers?.[name]?.toString();
    expect(header(DLQ_HEADERS.stage)).toBe('process');
    expect(header(DLQ_HEADERS.reason)).toBe(poisonMessage);
    expect(header(DLQ_HEADERS.offset)).toBe(String(ids.indexOf(poison)));

    // Retried in place: the consumer never crashed, the group formed once and never rebalanced.
    expect(processor.counters).toMatchObject({ retries: 2, deadLetters: 1, crashes: 0, groupJoins: 1 });
    expect(processor.counters.isolations).toBeGreaterThan(0);
    expect(log.filter((l) => /retry \d+\/5 in \d+ ms after ECONNREFUSED|retry \d+\/5 in \d+ ms after UnavailableError/.test(l))).toHaveLength(2);
    expect(log.some((l) => l.includes(`dead-lettered offset ${ids.indexOf(poison)}: ${poisonMessage}`))).toBe(true);

    // And the state survives a new owner: restored from the changelog, the counts are the committed ones.
    log.push('step: stopping');
    await processor.stop();
    processor = undefined;
    log.push('step: a second processor');
    const restoredCounts = new Map<string, string>();
    const second = new ExactlyOnceProcessor<null>({
      kafka,
      groupId,
      inputTopics: [input],
      stores: ['seen'],
      changelogTopic: () => changelog,
      fromBeginning: true,
      partitionsConsumedConcurrently: 1,
      maxBatchBytes: 1_048_576,
      assign: () => null,
      process: async (batch, { state }) => {
        if (batch.kind === 'records') for (const id of [...expected, ...later, poison]) restoredCounts.set(id, state.store('seen').get(id) ?? 'none');
        return [];
      },
    });
    processor = second;
    await second.start();
    // A partition is taken (and restored) when its first batch arrives.
    const probe = kafka.producer();
    await probe.connect();
    await probe.send({ topic: input, messages: [{ key: 'probe', value: JSON.stringify({ id: 'probe' }), partition: 0 }] });
    await probe.disconnect();
    await waitUntil(() => restoredCounts.size > 0, 'the second processor to take the partition');
    expect(new Set([...restoredCounts].filter(([id]) => id !== poison).map(([, n]) => n))).toEqual(new Set(['1']));
    expect(restoredCounts.get(poison)).toBe('none');
  }, 120_000);
});

describe('restoreChangelog: one partition, resumed where an earlier attempt stopped', () => {
  const kafka = testKafka('restore');
  const topic = `${uniquePrefix('restore')}.store-changelog`;

  it('folds only the asked partition, goes on from the given progress, and applies later tombstones', async () => {
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [changelogTopicConfig(topic, 2)]);
    await admin.disconnect();
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, transactionalId: `${topic}-writer` });
    await producer.connect();
    // Partition 0: k0..k99, then a tombstone for k3 and a new value for k4; partition 1: other keys.
    const transaction = await producer.transaction();
    await transaction.send({ topic, messages: Array.from({ length: 100 }, (_, i) => ({ key: `k${i}`, value: `v${i}`, partition: 0 })) });
    await transaction.send({ topic, messages: Array.from({ length: 50 }, (_, i) => ({ key: `other${i}`, value: 'x', partition: 1 })) });
    await transaction.commit();
    const second = await producer.transaction();
    await second.send({ topic, messages: [{ key: 'k3', value: null, partition: 0 }, { key: 'k4', value: 'v4-new', partition: 0 }] });
    await second.commit();
    await producer.disconnect();

    const full = (await restoreChangelog(kafka, topic, [0])).get(0)!;
    expect(full.size).toBe(99);
    expect(full.has('k3')).toBe(false);
    expect(full.get('k4')).toBe('v4-new');
    expect([...full.keys()].some((k) => k.startsWith('other'))).toBe(false);

    // An earlier attempt that stopped at offset 60: what it folded is kept, the rest is read.
    // k10 is marked: record 10 would overwrite the mark if anything before offset 60 were read again.
    const entries = new Map([...full].filter(([k]) => Number(k.slice(1)) < 60 && k !== 'k4'));
    entries.set('k3', 'v3').set('k4', 'v4').set('k10', 'marked by the earlier attempt');
    const progress = new Map([[0, { entries, next: 60n, at: Date.now() }]]);
    const resumed = (await restoreChangelog(kafka, topic, [0], { progress })).get(0)!;
    expect(resumed.get('k10')).toBe('marked by the earlier attempt');
    expect(new Map([...resumed].filter(([k]) => k !== 'k10'))).toEqual(new Map([...full].filter(([k]) => k !== 'k10')));
    expect(progress.get(0)!.next).toBeGreaterThanOrEqual(102n);

    // Nothing left to read: no consumer at all, the progress is the answer.
    expect((await restoreChangelog(kafka, topic, [0], { progress })).get(0)).toBe(resumed);
  });
});

describe('retriable(): what a retry can cure', () => {
  it('retries services (network codes, 5xx, 429, auth, kafkajs, UnavailableError, also as a cause), not records', () => {
    const coded = (code: string) => Object.assign(new Error(`connect ${code}`), { code });
    for (const err of [
      coded('ECONNREFUSED'),
      coded('ECONNRESET'),
      coded('ETIMEDOUT'),
      Object.assign(new Error('Service Unavailable'), { status: 503 }),
      Object.assign(new Error('Too Many Requests'), { response: { status: 429 } }),
      Object.assign(new Error('Unauthorized'), { status: 401 }),
      Object.assign(new Error('fenced'), { name: 'KafkaJSProtocolError', retriable: false, type: 'INVALID_PRODUCER_EPOCH' }),
      new UnavailableError('schema registry', 'http://127.0.0.1:1', 'down'),
      new Error('decode failed', { cause: coded('ECONNREFUSED') }),
    ]) {
      expect(retriable(err), err.message).toBe(true);
    }
    for (const err of [
      new TypeError("Cannot read properties of undefined (reading 'trim')"),
      new Error('Invalid message at rollout.run_id, expected "string", got undefined'),
      new RecordError('the body is truncated', { record: { topic: 't', partition: 0, offset: '7' } }),
      Object.assign(new Error('Unprocessable Entity'), { status: 422 }),
      'a string thrown',
    ]) {
      expect(retriable(err), String(err)).toBe(false);
    }
  });
});

describe('a rebalance while a batch waits out a retry backoff', () => {
  const kafka = testKafka('backoff');
  const prefix = uniquePrefix('backoff');
  const input = `${prefix}.in`;
  const groupId = `${prefix}.backoff`;
  const processors: ExactlyOnceProcessor<null>[] = [];
  const log: string[] = [];

  afterAll(async () => {
    await Promise.all(processors.map((p) => p.stop()));
  });

  it('hands the batch back at once, so the group rebalances without waiting for the backoff', async () => {
    onTestFailed(() => console.error(`--- processor log ---\n${log.join('\n')}`));
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [{ topic: input, numPartitions: 2, replicationFactor: -1 }]);
    await admin.disconnect();
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic: input, messages: [0, 1].map((partition) => ({ value: 'x', partition })) });
    await producer.disconnect();
    // Partition 0's records always meet an unavailable service; the backoff is a minute.
    const processor = (name: string) =>
      new ExactlyOnceProcessor<null>({
        kafka,
        groupId,
        inputTopics: [input],
        stores: [],
        changelogTopic: (s) => s,
        fromBeginning: true,
        partitionsConsumedConcurrently: 2,
        maxBatchBytes: 65_536,
        retry: { initialMs: 60_000, maxMs: 60_000, maxAttempts: 3 },
        log: (line) => void log.push(`${name} ${line}`),
        onAssigned: (partitions) => void log.push(`${name} assigned [${partitions.join(', ')}]`),
        assign: () => null,
        process: async (batch, { partition }) => {
          if (batch.kind === 'records' && partition === 0) throw new UnavailableError('scorer', 'http://127.0.0.1:1', 'connect ECONNREFUSED');
          return [];
        },
      });
    const first = processor('first');
    processors.push(first);
    await first.start();
    await waitUntil(() => log.some((l) => l.includes('retry 1/3 in 60000 ms')), 'the first processor to back off');
    const second = processor('second');
    processors.push(second);
    await second.start();
    // Without the hand-back the group would wait for the first member's batch until the
    // rebalance timeout threw it out, and the second would start alone with both partitions.
    await waitUntil(() => second.counters.groupJoins > 0, 'the second processor to join', 45_000);
    expect(log.find((l) => l.startsWith('second assigned')), 'both members in the first generation with the second').toMatch(/^second assigned \[\d\]$/);
    expect(log.filter((l) => /retry [2-9]\//.test(l)), 'no backoff ran out before the rebalance').toEqual([]);
    expect(first.counters.crashes + second.counters.crashes).toBe(0);
  }, 90_000);
});

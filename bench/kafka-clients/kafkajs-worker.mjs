// One measurement with kafkajs (the project's own copy, 2.2.4), in a process of its own so it can
// be pinned to a core and run under Node 20 or Node 24. Prints one JSON line: the result.
//   node kafkajs-worker.mjs '{"op":"produce","brokers":["127.0.0.1:19092"],"topic":"…",…}'
// Every op first runs once on the warm-up topic (JIT), then times the real one.
import kafkajs from 'kafkajs';
import { record } from './records.mjs';
import { CHUNK, FETCH, finish } from './worker-common.mjs';

const { Kafka, logLevel } = kafkajs;
const job = JSON.parse(process.argv[2]);
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
// The same retry schedule as the other worker: job.retryMs (kafkajs's default 300 ms), doubling.
const kafka = new Kafka({ clientId: `bench-kafkajs-${process.pid}`, brokers: job.brokers, logLevel: logLevel.ERROR, retry: { initialRetryTime: job.retryMs, retries: 10 } });
/** An idempotent producer retries without bound (kafkajs's own default for one). */
const producerRetry = { initialRetryTime: job.retryMs, retries: Number.MAX_SAFE_INTEGER };

/** acks=all, idempotent, the same 1000-record sends as the other client, one in flight. */
async function produce(topic, n) {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, retry: producerRetry });
  await producer.connect();
  const start = performance.now();
  for (let from = 0; from < n; from += CHUNK) {
    const messages = [];
    for (let i = from; i < Math.min(n, from + CHUNK); i++) messages.push(record(i, job.partitions));
    await producer.send({ topic, acks: -1, messages });
  }
  const seconds = (performance.now() - start) / 1000;
  await producer.disconnect();
  return { records: n, seconds };
}

/** From the beginning, count only; timed from the group join to the n-th record. */
async function consume(topic, n, groupId) {
  const consumer = kafka.consumer({ groupId, maxBytes: FETCH.maxBytes, maxBytesPerPartition: FETCH.maxBytesPerPartition, maxWaitTimeInMs: FETCH.maxWaitMs });
  let joined = 0;
  consumer.on(consumer.events.GROUP_JOIN, () => void (joined = performance.now()));
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let count = 0;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      count += batch.messages.length;
      if (count >= n) done(performance.now());
    },
  });
  const end = await finished;
  await consumer.disconnect();
  return { records: count, seconds: (end - joined) / 1000 };
}

/**
 * Read → transaction per partition batch → write each value unchanged → offsets in the
 * transaction → commit. As Flywheel's exactly-once runner does it with kafkajs (whose
 * TxnOffsetCommit carries no group generation): one transactional producer per input partition,
 * `idempotent`, `maxInFlightRequests: 1`, `sendOffsets`, 3 partitions consumed concurrently.
 */
async function transact(input, output, n, groupId) {
  const consumer = kafka.consumer({ groupId, readUncommitted: false, maxBytes: FETCH.maxBytes, maxBytesPerPartition: FETCH.maxBytesPerPartition, maxWaitTimeInMs: FETCH.maxWaitMs });
  let joined = 0;
  consumer.on(consumer.events.GROUP_JOIN, () => void (joined = performance.now()));
  const producers = new Map();
  const producerFor = async (partition) => {
    let p = producers.get(partition);
    if (p === undefined) {
      p = kafka.producer({ transactionalId: `${groupId}-task-${partition}`, idempotent: true, maxInFlightRequests: 1, transactionTimeout: 60_000, retry: producerRetry });
      producers.set(partition, p);
      await p.connect();
    }
    return p;
  };
  await consumer.connect();
  await consumer.subscribe({ topic: input, fromBeginning: true });
  let count = 0;
  let transactions = 0;
  let done;
  let failed;
  const finished = new Promise((resolve, reject) => ((done = resolve), (failed = reject)));
  await consumer.run({
    autoCommit: false,
    partitionsConsumedConcurrently: job.partitions,
    eachBatch: async ({ batch }) => {
      if (batch.messages.length === 0) return;
      const producer = await producerFor(batch.partition);
      const transaction = await producer.transaction();
      try {
        await transaction.send({ topic: output, acks: -1, messages: batch.messages.map((m) => ({ key: m.key, value: m.value, partition: batch.partition })) });
        await sendOffsets(transaction, { consumerGroupId: groupId, topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: (BigInt(batch.lastOffset()) + 1n).toString() }] }] });
        await transaction.commit();
      } catch (err) {
        await transaction.abort().catch(() => undefined);
        failed(err);
        throw err;
      }
      transactions++;
      count += batch.messages.length;
      if (count >= n) done(performance.now());
    },
  });
  const end = await finished;
  await consumer.disconnect();
  for (const p of producers.values()) await p.disconnect();
  return { records: count, seconds: (end - joined) / 1000, transactions };
}

/** AddOffsetsToTxn may answer CONCURRENT_TRANSACTIONS right after a commit; kafkajs does not retry it (kafkajs#430). */
async function sendOffsets(transaction, offsets) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await transaction.sendOffsets(offsets);
    } catch (err) {
      if (err.type !== 'CONCURRENT_TRANSACTIONS' || attempt >= 10) throw err;
      await new Promise((r) => setTimeout(r, 50 * (attempt + 1)));
    }
  }
}

const ops = {
  produce: (topic, n) => produce(topic, n),
  consume: (topic, n, tag) => consume(topic, n, `${job.groupId}-${tag}`),
  transact: (topic, n, tag) => transact(topic, tag === 'warm' ? job.warmOutputTopic : job.outputTopic, n, `${job.groupId}-${tag}`),
};
await finish('kafkajs', job, ops);

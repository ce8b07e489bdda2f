// One measurement with @platformatic/kafka (installed here, run by the Node 24 in
// ./node_modules/.bin), in a process of its own so it can be pinned to a core. Prints one JSON
// line: the result. Same job format, records and fetch limits as kafkajs-worker.mjs.
import { Consumer, FetchIsolationLevels, ProduceAcks, Producer } from '@platformatic/kafka';
import { record } from './records.mjs';
import { CHUNK, FETCH, finish } from './worker-common.mjs';

const job = JSON.parse(process.argv[2]);
/**
 * Retried operations, by operation id. The client's default (3 retries, 1 s apart) turns every
 * CONCURRENT_TRANSACTIONS — the coordinator still completing the previous commit — into a 1 s
 * stall, and can give up under load. Both workers use the same schedule instead: `job.retryMs`
 * (kafkajs's default 300 ms unless the bench says otherwise), doubling, as kafkajs does.
 */
const retried = {};
const retryPolicy = {
  retries: 10,
  retryDelay: (_client, operationId, attempt) => {
    retried[operationId] = (retried[operationId] ?? 0) + 1;
    return Math.min(30_000, job.retryMs * 2 ** (attempt - 1));
  },
};
function resetRetried() {
  for (const key of Object.keys(retried)) delete retried[key];
}
const base = { clientId: `bench-platformatic-${process.pid}`, bootstrapBrokers: job.brokers, ...retryPolicy };
const fetchOptions = { maxBytes: FETCH.maxBytes, maxBytesPerPartition: FETCH.maxBytesPerPartition, maxWaitTime: FETCH.maxWaitMs };

/** acks=all, idempotent, the same 1000-record sends as the other client, one in flight. */
async function produce(topic, n) {
  resetRetried();
  const producer = new Producer({ ...base, idempotent: true, acks: ProduceAcks.ALL });
  const start = performance.now();
  for (let from = 0; from < n; from += CHUNK) {
    const messages = [];
    for (let i = from; i < Math.min(n, from + CHUNK); i++) messages.push({ topic, ...record(i, job.partitions) });
    await producer.send({ messages });
  }
  const seconds = (performance.now() - start) / 1000;
  const during = { ...retried };
  await producer.close();
  return { records: n, seconds, retried: during };
}

/** From the beginning, count only; timed from the group join (consume() resolves once joined) to the n-th record. */
async function consume(topic, n, groupId) {
  resetRetried();
  const consumer = new Consumer({ ...base, groupId, ...fetchOptions });
  const stream = await consumer.consume({ topics: [topic], mode: 'earliest', autocommit: false });
  const joined = performance.now();
  let count = 0;
  const end = await new Promise((resolve, reject) => {
    stream.on('error', reject);
    stream.on('data', () => {
      if (++count === n) resolve(performance.now());
    });
  });
  // Retries while closing (a fetch in flight sees its connection closed) are not the run's.
  const during = { ...retried };
  await stream.close();
  await consumer.close(true);
  return { records: count, seconds: (end - joined) / 1000, retried: during };
}

/**
 * Read → transaction per partition batch → write each value unchanged → offsets in the
 * transaction → commit, with ONE transactional producer for the worker: the offsets go through
 * TxnOffsetCommit carrying the group generation and member id (KIP-447), so a zombie member is
 * fenced by the group coordinator, not by a per-partition transactional id.
 *
 * A batch is what one fetch delivered for a partition, as kafkajs's eachBatch: the stream is
 * paused while the batch's transactions run, then resumed. `job.scope` 'fetch' puts all the
 * fetch's partitions in one transaction instead (one producer may: KIP-447 fences by generation).
 */
async function transact(input, output, n, groupId) {
  resetRetried();
  const consumer = new Consumer({ ...base, groupId, ...fetchOptions, isolationLevel: FetchIsolationLevels.READ_COMMITTED });
  const producer = new Producer({ ...base, idempotent: true, transactionalId: `${groupId}-worker`, acks: ProduceAcks.ALL });
  const stream = await consumer.consume({ topics: [input], mode: 'committed', fallbackMode: 'earliest', autocommit: false, highWaterMark: 20_000 });
  const joined = performance.now();
  let count = 0;
  let transactions = 0;
  let pending = [];
  let scheduled = false;
  const end = await new Promise((resolve, reject) => {
    const flush = async () => {
      stream.pause();
      const batch = pending;
      pending = [];
      const byPartition = new Map();
      for (const m of batch) {
        let list = byPartition.get(m.partition);
        if (list === undefined) byPartition.set(m.partition, (list = []));
        list.push(m);
      }
      // 'partition': one transaction per partition batch, as Flywheel's tasks do (and kafkajs-worker);
      // 'fetch': one transaction for everything one fetch delivered, the loop KIP-447 allows.
      const groups = job.scope === 'fetch' ? [[...byPartition.values()]] : [...byPartition.values()].map((list) => [list]);
      for (const lists of groups) {
        const transaction = await producer.beginTransaction();
        try {
          await transaction.send({ messages: lists.flat().map((m) => ({ topic: output, key: m.key, value: m.value, partition: m.partition })) });
          await transaction.addConsumer(consumer);
          // One TxnOffsetCommit per partition: its last record (addOffset commits message.offset + 1).
          for (const list of lists) await transaction.addOffset(list[list.length - 1]);
          await transaction.commit();
        } catch (err) {
          await transaction.abort().catch(() => undefined);
          throw err;
        }
        transactions++;
        for (const list of lists) count += list.length;
      }
      if (count >= n) return resolve(performance.now());
      scheduled = false;
      if (pending.length > 0) schedule();
      stream.resume();
    };
    const schedule = () => {
      scheduled = true;
      // After the fetch's synchronous push loop: the batch is the whole fetch.
      setImmediate(() => flush().catch(reject));
    };
    stream.on('error', reject);
    stream.on('data', (message) => {
      pending.push(message);
      if (!scheduled) schedule();
    });
  });
  const during = { ...retried };
  await stream.close();
  await consumer.close(true);
  await producer.close();
  return { records: count, seconds: (end - joined) / 1000, transactions, retried: during };
}

const ops = {
  produce: (topic, n) => produce(topic, n),
  consume: (topic, n, tag) => consume(topic, n, `${job.groupId}-${tag}`),
  transact: (topic, n, tag) => transact(topic, tag === 'warm' ? job.warmOutputTopic : job.outputTopic, n, `${job.groupId}-${tag}`),
};
await finish('platformatic', job, ops);

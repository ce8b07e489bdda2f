// What both clients' workers share: the send size, the fetch limits, and the run protocol
// (warm up on the warm-up topic, then time the real topic, print one JSON line).

/** Records per produce call, for both clients (one call in flight at a time). */
export const CHUNK = 1000;

/** kafkajs's defaults, set explicitly on both clients: they decide how many records one fetch (and one transaction) carries. */
export const FETCH = { maxBytes: 10 * 1024 * 1024, maxBytesPerPartition: 1024 * 1024, maxWaitMs: 500 };

export async function finish(client, job, ops) {
  try {
    const op = ops[job.op];
    if (op === undefined) throw new Error(`unknown op ${job.op}`);
    if (job.warmTopic !== undefined) await op(job.warmTopic, job.warmRecords, 'warm');
    const result = await op(job.topic, job.records, 'run');
    process.stdout.write(`${JSON.stringify({ client, node: process.version, op: job.op, ...result })}\n`);
    process.exit(0);
  } catch (err) {
    process.stderr.write(`${client} ${job.op} failed: ${err?.stack ?? err}\n`);
    process.exit(1);
  }
}

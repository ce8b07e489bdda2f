import { EXAMPLE_CONFIG, loadConfig, withOverrides } from '../pipeline/config.ts';
import { startPipeline } from '../pipeline/run.ts';
import type { ClickHouseStore } from '../sinks/clickhouse/store.ts';
import type { Connections } from '../streams/connections.ts';
import { createKafka } from '../streams/kafka.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { registryClient, rolloutSerde } from '../streams/serde.ts';
import { reportProgress } from './run.ts';
import { syntheticRollouts } from './synthetic.ts';
import { formatTable } from './table.ts';

export interface DemoOptions {
  groups: number;
  dataDir: string;
}

/**
 * The demo: synthetic rollouts (with wrong, unformatted, duplicate, invalid and non-rollout
 * records among them) go through Kafka and the curating pipeline; the summary is read back from
 * ClickHouse, where the sink stored every decision and dead letter.
 */
export async function demo(connections: Connections, options: DemoOptions): Promise<void> {
  const run = `demo-${new Date().toISOString().replace(/[-:.TZ]/g, '').slice(0, 14)}`;
  const config = withOverrides(loadConfig(EXAMPLE_CONFIG), {
    name: 'demo',
    run,
    topics: { prefix: run, partitions: 3 },
    clickhouse: { path: `${options.dataDir}/clickhouse` },
  });
  const data = syntheticRollouts({ groups: options.groups, runId: run });
  const expected = data.rollouts.length + data.garbage.length;
  console.log(`Flywheel demo ${run}: ${data.rollouts.length} synthetic rollouts + ${data.garbage.length} non-rollout records`);

  const pipeline = await startPipeline(config, connections);
  const stopReporting = reportProgress(pipeline, 1000);
  try {
    const kafka = createKafka(connections, 'flywheel-demo');
    const serde = await rolloutSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.rollouts);
    await produceRollouts(kafka, serde, data.rollouts, { raw: data.garbage });
    console.log(`produced ${expected} records to ${pipeline.catalog.rollouts}`);
    await waitFor(() => pipeline.progress.stored.samples + pipeline.progress.stored.dead_letters >= expected, 300_000, pipeline.stopped);
    stopReporting();
    await printSummary(pipeline.store, run);
  } finally {
    stopReporting();
    await pipeline.stop();
  }
  console.log(`\nThe store is in ${options.dataDir}/clickhouse: \`flywheel sql --path ${options.dataDir}/clickhouse "SELECT …"\` queries it.`);
  console.log('Kafka and the schema registry keep running for the next run; `flywheel down` stops them.');
}

async function waitFor(done: () => boolean, timeoutMs: number, failed: Promise<void>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let failure: unknown;
  failed.catch((err: unknown) => (failure = err));
  while (!done()) {
    if (failure !== undefined) throw failure;
    if (Date.now() > deadline) throw new Error(`the demo did not finish within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function printSummary(store: ClickHouseStore, run: string): Promise<void> {
  const where = { run };
  const decisions = await store.query(
    `SELECT decision, reason, count() AS samples FROM samples FINAL WHERE pipeline_run = {run:String} GROUP BY decision, reason ORDER BY decision, samples DESC`,
    where,
  );
  const totals = await store.query<{ samples: number; accepted: number; duplicates: number }>(
    `SELECT count() AS samples, countIf(decision = 'accepted') AS accepted, countIf(duplicate_of != '') AS duplicates FROM samples FINAL WHERE pipeline_run = {run:String}`,
    where,
  );
  const dead = await store.query(
    `SELECT stage, reason, count() AS records FROM dead_letters FINAL WHERE pipeline_run = {run:String} GROUP BY stage, reason ORDER BY records DESC`,
    where,
  );
  const t = totals[0]!;
  console.log(`\nDecisions (from ClickHouse, pipeline_run = ${run}):\n${formatTable(decisions)}`);
  console.log(`\n${t.samples} samples stored, ${t.accepted} accepted, ${t.duplicates} duplicates removed`);
  console.log(`\nDead-lettered:\n${formatTable(dead)}`);
}

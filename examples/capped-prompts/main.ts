/**
 * One worker of the capped-prompts pipeline, until SIGINT/SIGTERM:
 *
 *   KAFKA_BROKERS=127.0.0.1:9092 SCHEMA_REGISTRY_URL=http://127.0.0.1:8081 npm start
 *
 * Settings from the environment: CAPPED_PREFIX (topic prefix, default "capped"), CAPPED_K
 * (samples per prompt, default 2), CAPPED_CLICKHOUSE_PATH (embedded store directory; a
 * CLICKHOUSE_URL in the environment means a server instead), CAPPED_MAX_BATCH_BYTES.
 * `--describe` prints the topology instead of running it.
 */
import { connectionsFromEnv } from 'flywheel';
import { cappedPrompts } from './topology.ts';

const env = process.env;
const pipeline = cappedPrompts({
  prefix: env.CAPPED_PREFIX ?? 'capped',
  k: Number(env.CAPPED_K ?? 2),
  clickhouse: { path: env.CAPPED_CLICKHOUSE_PATH ?? '.flywheel/capped-prompts/clickhouse' },
  maxBatchBytes: env.CAPPED_MAX_BATCH_BYTES === undefined ? undefined : Number(env.CAPPED_MAX_BATCH_BYTES),
});

if (process.argv.includes('--describe')) {
  console.log(pipeline.describe());
} else {
  const running = await pipeline.start(connectionsFromEnv());
  let committed = 0;
  running.events.on('batch.commit', (e) => (committed += e.payload.records));
  const log = (line: string) => process.stderr.write(`[capped-prompts] ${line}\n`);
  log(`running: ${running.catalog.rollouts} → ${running.catalog.decisions}`);
  const timer = setInterval(() => log(`processed ${running.progress.processed} (${committed} in committed batches)`), 5000);
  const stop = () => void running.stop();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await running.stopped;
  } finally {
    clearInterval(timer);
  }
}

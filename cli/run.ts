import { viewOptionsFrom } from '../analytics/views.ts';
import { Instrumentation } from '../contracts/events.ts';
import { mountDashboard } from '../ops/dashboard.ts';
import { trackReadiness } from '../ops/health.ts';
import { pipelineMetrics } from '../ops/metrics.ts';
import { opsHttpSettings, opsRoutes, startOpsServer, type OpsServer } from '../ops/server.ts';
import { ConfigError, type PipelineConfig } from '../pipeline/config.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import type { ClickHouseStore } from '../sinks/clickhouse/store.ts';
import type { Connections } from '../streams/connections.ts';
import { configureLogging } from '../lib/log.ts';
import { progressLines } from './progress.ts';

/**
 * The worker's ops server, started before the pipeline so that /healthz answers and /readyz
 * says 503 through a long start-up (topics, schemas, restore). Its metrics and readiness follow
 * `events`; the store is pinged once the pipeline has opened it. Undefined when configured off.
 */
async function startOps(config: PipelineConfig, events: Instrumentation, store: () => ClickHouseStore | undefined): Promise<OpsServer | undefined> {
  let http;
  try {
    http = opsHttpSettings(config.ops.http);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  if (http === undefined) return undefined;
  const metrics = pipelineMetrics(events, { labels: { pipeline: config.name } });
  const readiness = trackReadiness(events, {
    groupId: `${config.topics.prefix}.${config.name}`,
    ping: async () => {
      const s = store();
      if (s === undefined) throw new Error('not opened yet');
      await s.query('SELECT 1');
    },
  });
  const server = await startOpsServer({ ...http, routes: opsRoutes({ metrics, readiness }) });
  // Tests and scripts read the URL from this line (port 0 picks a free port).
  process.stderr.write(`[flywheel] ${config.name}: ops HTTP server at ${server.url} (/ for the dashboard, /metrics, /healthz, /readyz)\n`);
  return server;
}

/** `flywheel run`: one worker until SIGINT/SIGTERM; the embedded store is served to other processes. */
export async function runCommand(config: PipelineConfig, connections: Connections): Promise<void> {
  configureLogging(config.log);
  const events = new Instrumentation();
  // Attached before the start, so the first group join's "partitions [...]" line is not missed.
  const stopReporting = progressLines(events, { name: config.name });
  let pipeline: RunningPipeline | undefined;
  const ops = await startOps(config, events, () => pipeline?.store);
  try {
    // The pipeline emits on our bus, which the ops server already listens to.
    pipeline = await startPipeline(config, connections, { onStep: (step) => process.stderr.write(`[flywheel] ${config.name}: ${step}\n`), events });
  } catch (err) {
    await ops?.close();
    throw err;
  }
  // The store is open now: the dashboard's page and /api/dashboard join the ops server.
  if (ops !== undefined) mountDashboard(ops, { store: pipeline.store, run: config.run, events, viewOptions: viewOptionsFrom(config.operators) });
  const endpoint = await pipeline.serve();
  if (endpoint !== undefined) process.stderr.write(`[flywheel] embedded ClickHouse served at ${endpoint} for \`flywheel sql\`\n`);
  process.stderr.write(`[flywheel] ${config.name}: ${pipeline.catalog.rollouts} → ${pipeline.catalog.accepted}, ${pipeline.catalog.decisions}, ${pipeline.catalog.deadLetter}\n`);
  const running = pipeline;
  const shutdown = () => void running.stop();
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  try {
    await pipeline.stopped;
  } finally {
    stopReporting();
    await ops?.close();
  }
}

import type { PipelineConfig } from '../pipeline/config.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import type { Connections } from '../streams/connections.ts';

/** Prints what the pipeline has done so far, when it changed, every `everyMs`. */
export function reportProgress(pipeline: RunningPipeline, everyMs = 2000): () => void {
  let last = '';
  const timer = setInterval(() => {
    const { processed, stored } = pipeline.progress;
    const line = `processed ${processed} rollouts · stored ${stored.samples} samples, ${stored.dead_letters} dead letters`;
    if (line !== last) process.stderr.write(`[flywheel] ${line}\n`);
    last = line;
  }, everyMs);
  return () => clearInterval(timer);
}

/** `flywheel run`: one worker until SIGINT/SIGTERM; the embedded store is served to other processes. */
export async function runCommand(config: PipelineConfig, connections: Connections): Promise<void> {
  const pipeline = await startPipeline(config, connections, { onStep: (step) => process.stderr.write(`[flywheel] ${config.name}: ${step}\n`) });
  const endpoint = await pipeline.serve();
  if (endpoint !== undefined) process.stderr.write(`[flywheel] embedded ClickHouse served at ${endpoint} for \`flywheel sql\`\n`);
  process.stderr.write(`[flywheel] ${config.name}: ${pipeline.catalog.rollouts} → ${pipeline.catalog.accepted}, ${pipeline.catalog.decisions}, ${pipeline.catalog.deadLetter}\n`);
  const stopReporting = reportProgress(pipeline);
  const shutdown = () => void pipeline.stop();
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  try {
    await pipeline.stopped;
  } finally {
    stopReporting();
  }
}

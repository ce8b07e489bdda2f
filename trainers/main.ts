import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Instrumentation } from '../contracts/events.ts';
import { featureDefaults, type FeatureConfig } from '../contracts/features.ts';
import { opsHttpSettings, serveMetrics } from '../ops/server.ts';
import { connectionsFromEnv } from '../streams/connections.ts';
import { createKafka } from '../streams/kafka.ts';
import { registryClient } from '../streams/serde.ts';
import { topicCatalog } from '../streams/topics.ts';
import type { LearnerConfig } from './incremental.ts';
import { ReferenceTrainer, type LabelSource } from './reference-trainer.ts';

/**
 * The reference trainer as a process:
 *
 *   node --import tsx trainers/main.ts --config trainer.json
 *
 * trainer.json:
 *   { "prefix": "flywheel", "group": "flywheel.reference-trainer", "name": "reference",
 *     "checkpoint": ".flywheel/trainer/reference.ckpt", "artifactDir": ".flywheel/models",
 *     "model": "scorer", "features": { …the pipeline's features… },
 *     "learner": { "kind": "ridge", "lambda": 1, "forgetting": 0.999 },
 *     "labels": { "source": "topic", "ttlMs": 86400000, "maxPending": 100000 },
 *     "decisionsTopic": "decisions", "updateEvery": 1000, "checkpointEvery": 20,
 *     "versionPrefix": "v", "batch": { "maxRecords": 256, "maxWaitMs": 500 },
 *     "sessionTimeout": 10000 }
 *
 * `learner.forgetting` (both kinds, (0, 1], default 1 = never forget): an example n labels old
 * weighs βⁿ, so the model follows a drifting label (window ≈ 1/(1 − β) labels).
 *
 * `flywheel trainer export --config trainer.json` asks the running process for a model now: an
 * export request (key `export.<name>`) on `<prefix>.control`, which the trainer follows.
 *
 * KAFKA_BROKERS and SCHEMA_REGISTRY_URL select the services. SIGTERM/SIGINT stop it after the
 * current batch, publishing a last version of whatever was trained since the previous one.
 * Progress goes to stdout as JSON lines ({"examples":…, "version":…}).
 */

export interface TrainerProcessConfig {
  prefix: string;
  group: string;
  name: string;
  checkpoint: string;
  artifactDir: string;
  model: string;
  features: Partial<FeatureConfig>;
  learner: LearnerConfig;
  labels: LabelSource;
  decisionsTopic?: 'decisions' | 'accepted';
  updateEvery: number;
  checkpointEvery?: number;
  versionPrefix?: string;
  batch?: { maxRecords?: number; maxWaitMs?: number };
  sessionTimeout?: number;
}

function required<T>(value: T | undefined, name: string): T {
  if (value === undefined || value === null || value === '') throw new Error(`trainer config: "${name}" is required`);
  return value;
}

export async function runTrainerProcess(config: TrainerProcessConfig): Promise<void> {
  const connections = connectionsFromEnv();
  const kafka = createKafka(connections, `flywheel-trainer-${required(config.name, 'name')}`);
  // /metrics and /healthz only when FLYWHEEL_HTTP_PORT asks for them: a worker on the same
  // machine already holds the default port.
  const events = new Instrumentation();
  const ops = await serveMetrics(events, opsHttpSettings({ host: '127.0.0.1', port: null }), { trainer: config.name });
  if (ops !== undefined) process.stdout.write(`${JSON.stringify({ metrics: new URL('metrics', ops.url).href })}\n`);
  const trainer = await ReferenceTrainer.open({
    client: {
      kafka,
      registry: registryClient(connections),
      catalog: topicCatalog(required(config.prefix, 'prefix')),
      groupId: required(config.group, 'group'),
      trainer: config.name,
      checkpointPath: required(config.checkpoint, 'checkpoint'),
      sessionTimeout: config.sessionTimeout,
    },
    model: required(config.model, 'model'),
    features: { ...featureDefaults, ...config.features },
    learner: required(config.learner, 'learner'),
    labels: required(config.labels, 'labels'),
    decisionsTopic: config.decisionsTopic,
    updateEvery: required(config.updateEvery, 'updateEvery'),
    checkpointEvery: config.checkpointEvery,
    artifactDir: required(config.artifactDir, 'artifactDir'),
    versionPrefix: config.versionPrefix,
    batch: config.batch,
    events,
    onUpdate: (u) => process.stdout.write(`${JSON.stringify({ announced: u.version, examples: u.metrics.examples, artifact: u.artifact })}\n`),
  });
  process.stdout.write(`${JSON.stringify({ started: true, examples: trainer.stats.examples, version: trainer.stats.version })}\n`);
  let reported = -1;
  const progress = setInterval(() => {
    const { examples, version } = trainer.stats;
    if (examples === reported) return;
    reported = examples;
    process.stdout.write(`${JSON.stringify({ examples, version })}\n`);
  }, 200);
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= trainer.stop({ publish: true }));
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
  try {
    await trainer.run();
    await stop();
  } finally {
    clearInterval(progress);
    await ops?.close();
    process.stdout.write(`${JSON.stringify({ stopped: true, ...trainer.stats, lastUpdate: undefined })}\n`);
  }
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const { values } = parseArgs({ options: { config: { type: 'string' } } });
  if (values.config === undefined) {
    process.stderr.write('usage: node --import tsx trainers/main.ts --config <trainer.json>\n');
    process.exit(2);
  }
  runTrainerProcess(JSON.parse(readFileSync(values.config, 'utf8')) as TrainerProcessConfig).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`trainer: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}

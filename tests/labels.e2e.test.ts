import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareRuns } from '../analytics/compare.ts';
import { sqlFormat } from '../cli/sql.ts';
import { featureDefaults } from '../contracts/features.ts';
import type { Rollout } from '../contracts/records.ts';
import { parseConfig } from '../pipeline/config.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { labelRow, sampleRow } from '../sinks/clickhouse-sink.ts';
import { migrate } from '../sinks/clickhouse/schema.ts';
import { migrateViews } from '../analytics/views.ts';
import type { Decision } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { registryClient, rolloutSerde } from '../streams/serde.ts';
import { ReferenceTrainer } from '../trainers/reference-trainer.ts';
import { connections, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';

/**
 * Driving the loop from outside, on the real services (Kafka, the registry, the ClickHouse 18.16
 * server): verified outcomes sent with `flywheel label` after the decisions reach the `labels`
 * table, and the exploitation view and `flywheel compare` then measure precision against them;
 * `flywheel sql --format` prints machine-readable rows; `flywheel trainer export` makes the
 * running reference trainer export a model now.
 */

const SERVER_URL = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;

/** Runs the CLI (cli/main.ts) as a user would; resolves with its exit code and output. */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('late labels, flywheel label / sql --format / trainer export', () => {
  if (!SERVER_URL) throw new Error('FLYWHEEL_TEST_CLICKHOUSE_URL is not set: run through deploy/test-env.sh (it starts the ClickHouse 18.16 server)');
  const prefix = uniquePrefix('labels');
  const run = prefix;
  const database = `flywheel_${prefix.replace(/[^A-Za-z0-9_]/g, '_')}`;
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-labels-'));
  const kafka = testKafka('labels');
  // A proxy reward the rule score follows; the reward `correct` at decision time says every
  // sample is right (a biased verifier), the late labels say which really are.
  const rollouts: Rollout[] = Array.from({ length: 40 }, (_, i) => ({
    id: `${prefix}-r${i}`, run_id: run, prompt_id: `p${i % 10}`, prompt: `What is ${i % 10} + 1?`, group_id: `g${i % 10}`,
    response: `Answer: ${i}`, steps: [], model_name: 'm', model_version: 'v1', rewards: { proxy: ((i * 7) % 40) / 40, correct: 1 },
    logprobs: null, token_count: 3, created_at: Date.now(), tags: {},
  }));
  // The truth: right when the proxy is at least 0.7 (so some accepted ones are wrong).
  const truth = new Map(rollouts.map((r) => [r.id, r.rewards.proxy! >= 0.7 ? 1 : 0]));
  let pipeline: RunningPipeline;
  let store: ClickHouseStore;

  beforeAll(async () => {
    const config = parseConfig({
      name: 'labels',
      run,
      topics: { prefix, partitions: 2 },
      source: { tickMs: 300 },
      features: featureDefaults,
      operators: [{ type: 'validate' }, { type: 'rule-score', rewards: { proxy: 1 } }, { type: 'threshold-filter', min: { rule: 0.5 } }],
      clickhouse: { url: SERVER_URL, database },
    });
    pipeline = await startPipeline(config, connections);
    store = await openStore({ url: SERVER_URL, database });
    await produceRollouts(kafka, await rolloutSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.rollouts), rollouts);
    await waitUntil(() => pipeline.progress.stored.samples >= rollouts.length, 'the decisions stored in samples', 60_000);
  }, 120_000);

  afterAll(async () => {
    await pipeline?.stop();
    await store?.command(`DROP DATABASE IF EXISTS ${database}`);
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const exploitation = async () =>
    (await store.query<{ labelled: number; from_labels: number; label_source: string; verified_wrong: number; precision: number | null; accepted_labelled: number }>(
      `SELECT labelled, from_labels, label_source, verified_wrong, precision, accepted_labelled FROM exploitation WHERE pipeline_run = {r:String} AND score_name = 'rule'`,
      { r: run },
    ))[0]!;

  const exploration = async () =>
    (await store.query<{ labelled: number; from_labels: number; label_source: string; mean_distinct_correct: number; pass_at_1: number }>(
      `SELECT labelled, from_labels, label_source, mean_distinct_correct, pass_at_1 FROM exploration WHERE pipeline_run = {r:String}`,
      { r: run },
    ))[0]!;

  it('a label sent after the decision changes precision in the exploitation view and in compare', async () => {
    const accepted = (await store.query<{ id: string }>(`SELECT id FROM samples WHERE pipeline_run = {r:String} AND decision = 'accepted'`, { r: run })).map((r) => r.id);
    expect(accepted.length).toBeGreaterThan(0);
    expect(accepted.length).toBeLessThan(rollouts.length);
    const before = await exploitation();
    expect(before).toMatchObject({ labelled: rollouts.length, from_labels: 0, label_source: 'rewards.correct', verified_wrong: 0, precision: 1 });
    expect((await compareRuns(store, run, run)).precision[0]).toMatchObject({ precision: 1, from_labels: 0 });
    // Exploration too: at decision time every answer of the 10 groups of 4 looks right.
    expect(await exploration()).toMatchObject({ labelled: rollouts.length, from_labels: 0, label_source: 'rewards.correct', mean_distinct_correct: 4, pass_at_1: 1 });

    // flywheel label: every rollout's truth, plus two bad lines that must be reported, not dropped.
    const file = join(dir, 'labels.jsonl');
    const lines = rollouts.map((r) => JSON.stringify({ rollout_id: r.id, value: truth.get(r.id), verifier: 'tests', at: new Date().toISOString() }));
    lines.splice(3, 0, JSON.stringify({ value: 1 }), JSON.stringify({ rollout_id: 'x', value: 'yes' }));
    writeFileSync(file, `${lines.join('\n')}\n`);
    const sent = await cli(['label', '--topic', pipeline.catalog.labels, '--file', file]);
    expect(sent.code, sent.stderr).toBe(1);
    expect(sent.stderr).toContain('line 4: rollout_id');
    expect(sent.stderr).toContain('line 5: value');
    expect(sent.stdout).toContain(`sent ${rollouts.length} labels`);

    await waitUntil(async () => (await store.query<{ n: number }>('SELECT count() AS n FROM labels'))[0]!.n >= rollouts.length, 'the labels stored', 60_000);
    const right = accepted.filter((id) => truth.get(id) === 1).length;
    const after = await exploitation();
    expect(after).toMatchObject({ labelled: rollouts.length, from_labels: rollouts.length, label_source: 'labels', accepted_labelled: accepted.length });
    expect(after.verified_wrong).toBe([...truth.values()].filter((v) => v === 0).length);
    expect(after.precision).toBeCloseTo(right / accepted.length, 10);
    expect(after.precision).toBeLessThan(1);
    const compared = (await compareRuns(store, run, run)).precision[0];
    expect(compared).toMatchObject({ from_labels: rollouts.length, accepted_labelled: accepted.length, accepted_right: right });
    expect(compared.precision).toBeCloseTo(right / accepted.length, 10);
    // … and the exploration views count the answers the labels say are right (all answers differ).
    const rightPerGroup = [...new Set(rollouts.map((r) => r.group_id))].map((g) => rollouts.filter((r) => r.group_id === g && truth.get(r.id) === 1).length);
    const explored = await exploration();
    expect(explored).toMatchObject({ labelled: rollouts.length, from_labels: rollouts.length, label_source: 'labels' });
    expect(explored.mean_distinct_correct).toBeCloseTo(rightPerGroup.reduce((a, b) => a + b, 0) / rightPerGroup.length, 10);
    expect(explored.pass_at_1).toBeCloseTo(rightPerGroup.reduce((a, b) => a + b / 4, 0) / rightPerGroup.length, 10);
    expect(explored.pass_at_1).toBeLessThan(1);

    // Exactly once: the labels table holds each label record once (sink offsets distinct).
    const [stored] = await store.query<{ n: number; offsets: number }>(`SELECT count() AS n, uniqExact(sink_partition, sink_offset) AS offsets FROM labels`);
    expect(stored).toEqual({ n: rollouts.length, offsets: rollouts.length });
  }, 90_000);

  it('flywheel sql --format prints JSONEachRow and CSV; a malformed format name is refused', async () => {
    const env = { CLICKHOUSE_URL: SERVER_URL };
    const json = await cli(['sql', `SELECT decision, count() AS n FROM ${database}.samples GROUP BY decision ORDER BY decision`, '--format', 'JSONEachRow'], env);
    expect(json.code, json.stderr).toBe(0);
    const rows = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { decision: string; n: string | number });
    expect(rows.reduce((s, r) => s + Number(r.n), 0)).toBe(rollouts.length);
    const csv = await cli(['sql', `SELECT count() AS n FROM ${database}.samples`, '--format', 'CSV'], env);
    expect(csv.code, csv.stderr).toBe(0);
    expect(csv.stdout.trim()).toBe(String(rollouts.length));
    expect(() => sqlFormat('CSV; DROP')).toThrow(/--format: "CSV; DROP" is not a ClickHouse format name/);
    expect(sqlFormat(undefined)).toBe('PrettyCompact');
  }, 60_000);

  it('flywheel trainer export makes the running reference trainer export and announce a model now', async () => {
    const config = {
      prefix, group: `${prefix}.trainer`, name: 'export-test', checkpoint: join(dir, 'trainer.ckpt'), artifactDir: join(dir, 'models'), model: 'scorer',
      features: {}, learner: { kind: 'logistic' as const, lambda: 1, forgetting: 0.99 }, labels: { source: 'reward' as const, reward: 'correct' },
      updateEvery: 1_000_000, batch: { maxRecords: 64, maxWaitMs: 200 },
    };
    const trainer = await ReferenceTrainer.open({
      client: { kafka, registry: registryClient(connections.schemaRegistryUrl), catalog: pipeline.catalog, groupId: config.group, trainer: config.name, checkpointPath: config.checkpoint },
      model: config.model, features: featureDefaults, learner: config.learner, labels: config.labels, updateEvery: config.updateEvery, artifactDir: config.artifactDir, batch: config.batch,
    });
    const running = trainer.run();
    try {
      await waitUntil(() => trainer.stats.examples >= rollouts.length, 'the trainer trained every decision', 60_000);
      // updateEvery is far away: without the request nothing would be announced.
      expect(trainer.announced).toHaveLength(0);
      const configFile = join(dir, 'trainer.json');
      writeFileSync(configFile, JSON.stringify(config));
      const asked = await cli(['trainer', 'export', '--config', configFile]);
      expect(asked.code, asked.stderr).toBe(0);
      await waitUntil(() => trainer.announced.length > 0, 'an announced model', 30_000);
      expect(trainer.announced[0]).toMatchObject({ model: 'scorer', version: 'v1' });
      expect(trainer.announced[0]!.metrics.version_examples).toBe(rollouts.length);
    } finally {
      await trainer.stop();
      await running.catch(() => undefined);
    }
  }, 90_000);
});

describe('late labels in the views on the embedded engine (chdb, 26.x)', () => {
  it('exploitation and compare take the stored label over rewards.correct, as on the 18.16 server', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flywheel-labels-chdb-'));
    const store = await openStore({ path: join(dir, 'clickhouse') });
    try {
      await migrate(store);
      await migrateViews(store);
      // Six decisions scored 0.1 … 0.6, the top three accepted; rewards.correct says all are right.
      const decisions: Decision[] = Array.from({ length: 6 }, (_, i) => ({
        rollout: { id: `c${i}`, run_id: 'r', prompt_id: 'p', prompt: 'q', group_id: 'g', response: 'a', steps: [], model_name: 'm', model_version: 'v1', rewards: { correct: 1 }, logprobs: null, token_count: 1, created_at: 1_700_000_000_000, tags: {} },
        scores: { model: (i + 1) / 10 }, duplicate_of: null, dedupe_method: null, reasons: i >= 3 ? [] : ['below_min:model'], decision: i >= 3 ? 'accepted' : 'rejected',
        reason: i >= 3 ? 'accepted' : 'below_min:model', config_hash: 'h', scorer_version: null, annotations: {}, pipeline_run: 'chdb', source: { topic: 't', partition: 0, offset: String(i) },
      }));
      await store.insert('samples', decisions.map((d, i) => sampleRow(d, 't.decisions', 0, String(i))));
      const view = async () => (await store.query<{ label_source: string; from_labels: number; precision: number | null; auc: number | null }>(`SELECT label_source, from_labels, precision, auc FROM exploitation WHERE score_name = 'model'`))[0]!;
      expect(await view()).toMatchObject({ label_source: 'rewards.correct', from_labels: 0, precision: 1, auc: null });
      // Late labels for four of them: c5 and c1 wrong, c3 relabelled (first wrong, then right: the later one wins).
      const labels = [['c5', 0], ['c1', 0], ['c3', 0], ['c3', 1], ['c4', 1]] as const;
      await store.insert('labels', labels.map(([id, value], i) => labelRow({ rollout_id: id, value, verifier: 'v', at: 1_700_000_100_000 }, 't.labels', 0, String(i), '1700000100000')));
      // Accepted c3 (1), c4 (1), c5 (0): precision 2/3; labels of c0 and c2 from rewards.correct (1).
      const after = await view();
      expect(after).toMatchObject({ label_source: 'mixed', from_labels: 4 });
      expect(after.precision).toBeCloseTo(2 / 3, 12);
      // Wrong: c1 (0.2), c5 (0.6); right: c0 (0.1), c2, c3, c4 (0.3–0.5): of the 8 pairs, c2, c3 and c4 beat c1.
      expect(after.auc).toBeCloseTo(3 / 8, 12);
      const compared = (await compareRuns(store, 'chdb', 'chdb')).precision[0];
      expect(compared).toMatchObject({ from_labels: 4, accepted_labelled: 3, accepted_right: 2 });
      // exploration_groups: right are c0, c2 (rewards.correct), c3, c4 (labels), all answering 'a'.
      const [group] = await store.query<Record<string, unknown>>(`SELECT n, correct, distinct_correct, pass_at_1, from_labels, label_source FROM exploration_groups WHERE group_id = 'g'`);
      expect(group).toMatchObject({ n: 6, correct: 4, distinct_correct: 1, from_labels: 4, label_source: 'mixed' });
      expect(group!.pass_at_1).toBeCloseTo(4 / 6, 12);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

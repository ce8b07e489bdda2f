import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { featureDefaults } from '../contracts/features.ts';
import { parseConfig, type PipelineConfig } from '../pipeline/config.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import type { Decision, Rollout } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, modelUpdateSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { topicCatalog } from '../streams/topics.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil, createCatalogTopics } from './helpers/kafka.ts';
import { writeEncoder, writeScorer } from './helpers/models.ts';

/**
 * The whole operator catalogue from one config file, on the real services: every operator
 * leaves its mark (scores, reasons, annotations, side outputs) in Kafka and ClickHouse, and
 * every rollout is decided exactly once even though several operators hold samples.
 */
describe('the operator catalogue in one pipeline', () => {
  const prefix = uniquePrefix('catalogue');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-catalogue-'));
  const kafka = testKafka('catalogue');
  const catalog = topicCatalog(prefix);
  const features = { ...featureDefaults, dims: 64, rewardNames: ['correct'] };
  const data = syntheticRollouts({ groups: 150, runId: prefix, garbage: 0, invalidRate: 0 });
  // A contaminated prompt (in the eval set below), rollouts from an old policy, a near copy.
  const evalItem = 'Name the capital city of the country whose flag shows a red maple leaf on white between two red bars';
  const contaminated: Rollout = { ...data.rollouts[0]!, id: `${prefix}-contaminated`, group_id: `${prefix}-solo-1`, prompt_id: `${prefix}-solo-1`, prompt: evalItem, response: 'Ottawa.\nAnswer: 1' };
  const stale: Rollout = { ...data.rollouts[1]!, id: `${prefix}-stale`, group_id: `${prefix}-solo-2`, prompt_id: `${prefix}-solo-2`, model_version: 'v0', response: 'An old policy wrote this one.\nAnswer: 7' };
  const extra = [contaminated, stale];
  const all = [...data.rollouts, ...extra];
  let config: PipelineConfig;
  let pipeline: RunningPipeline;
  let store: ClickHouseStore;
  let decided: Decision[];

  beforeAll(async () => {
    const evalSet = join(dir, 'evalset.jsonl');
    writeFileSync(evalSet, `${JSON.stringify({ id: 'geo-7', text: evalItem })}\n`);
    config = parseConfig({
      name: 'catalogue',
      run: prefix,
      topics: { prefix, partitions: 3 },
      source: { tickMs: 500 },
      features,
      operators: [
        { type: 'validate' },
        { type: 'heuristics', format: { pattern: 'Answer:' } },
        { type: 'self-certainty' },
        { type: 'rule-score', rewards: { correct: 1 }, format: { pattern: 'Answer:\\s*-?\\d+' } },
        { type: 'onnx-score', model: { name: 'scorer', path: writeScorer(dir, features, 'v1', { 'reward:correct': 4 }, -2) } },
        { type: 'error-compensate', score: 'model' },
        { type: 'reward-combine', name: 'combined', mode: 'expression', expression: 'min(rule, model + 0.2) * (certainty.confidence > 0.1)' },
        { type: 'exact-dedupe' },
        { type: 'near-dedupe', scope: 'group', threshold: 0.7, minShingles: 3 },
        { type: 'semantic-dedupe', encoder: { path: writeEncoder(dir, features) }, scope: 'group', threshold: 0.97 },
        { type: 'contamination-filter', evalSets: [evalSet], n: 8, minN: 6 },
        { type: 'staleness-filter', maxLag: 1 },
        { type: 'rule-filter', rules: [{ name: 'too_long', when: 'token_count > 200' }] },
        { type: 'group-filter', groupSize: 4, maxWaitMs: 3000 },
        { type: 'quota-balance', bucketBy: { tag: 'skill' }, quota: 20, windowMs: 300_000, maxOutOfOrdernessMs: 10_000, maxDelayMs: 2000, score: 'combined' },
        { type: 'qd-archive', descriptors: [{ name: 'skill', label: { tag: 'skill' }, categories: ['addition', 'multiplication', 'subtraction'] }, { name: 'tokens', value: { field: 'token_count' }, edges: [16, 20] }], score: 'combined', reportEvery: 100 },
        { type: 'explore-exploit', score: 'combined', minGroups: 4, reportEvery: 100 },
        { type: 'threshold-filter', min: { rule: 1 } },
        { type: 'weakness-tracker', minAttempts: 4, maxPassRate: 0.25 },
        { type: 'preference-pairs', score: 'combined' },
      ],
      clickhouse: { path: join(dir, 'clickhouse') },
    });
    await createCatalogTopics(kafka, catalog);
    // The policy's versions, announced in order: v0 is two behind v2, beyond maxLag 1.
    const registry = registryClient(connections.schemaRegistryUrl);
    const updates = await modelUpdateSerde(registry, catalog.modelUpdates);
    const producer = kafka.producer();
    await producer.connect();
    for (const version of ['v0', 'v1', 'v2']) {
      await producer.send({ topic: catalog.modelUpdates, messages: [{ key: 'synthetic-policy', value: await updates.serialize({ model: 'synthetic-policy', version, artifact: '', checksum: '', metrics: {}, at: Date.now() }) }] });
    }
    await producer.disconnect();
    store = await openStore({ path: config.clickhouse.path });
    pipeline = await startPipeline(config, connections, { store });
    await produceRollouts(kafka, await rolloutSerde(registry, catalog.rollouts), all);
    const serde = await decisionSerde(registry, catalog.decisions);
    const messages = await consumeTopic(kafka, catalog.decisions, (m) => m.length >= all.length, { settleMs: 2000, timeoutMs: 180_000 });
    decided = await Promise.all(messages.map((m) => serde.deserialize(m.value!)));
  }, 300_000);

  afterAll(async () => {
    await pipeline?.stop();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('decides every rollout exactly once, held ones included', () => {
    const ids = decided.map((d) => d.rollout.id);
    expect(ids.length).toBe(new Set(ids).size);
    expect(new Set(ids)).toEqual(new Set(all.map((r) => r.id)));
  });

  it('scores with the ONNX model, naming its version, and every other scorer', () => {
    // Duplicates in the synthetic data carry no log-probs; pick a sample that has them.
    const d = decided.find((x) => x.rollout.logprobs !== null && !x.rollout.id.startsWith(`${prefix}-s`))!;
    expect(d.scorer_version).toBe('v1');
    for (const score of ['model', 'model.raw', 'model.correction', 'rule', 'combined', 'certainty.confidence', 'heuristic.chars', 'heuristic.repetition', 'heuristic.format']) {
      expect(d.scores[score], score).toBeTypeOf('number');
    }
    const right = decided.filter((x) => x.rollout.rewards.correct === 1).map((x) => x.scores['model.raw']!);
    const wrong = decided.filter((x) => x.rollout.rewards.correct === 0).map((x) => x.scores['model.raw']!);
    expect(Math.min(...right)).toBeGreaterThan(Math.max(...wrong));
  });

  it('gives each filter and deduper its reason', () => {
    const reasons = new Set(decided.flatMap((d) => d.reasons.map((r) => r.replace(/:(addition|multiplication|subtraction)$/, ''))));
    for (const reason of ['duplicate', 'contamination:evalset:geo-7', 'stale:model_version', 'group:no_variance', 'below_min:rule', 'quota']) {
      expect(reasons, reason).toContain(reason);
    }
    expect(decided.find((d) => d.rollout.id === contaminated.id)!.reasons).toContain('contamination:evalset:geo-7');
    expect(decided.find((d) => d.rollout.id === stale.id)!.reasons).toContain('stale:model_version');
  });

  it('annotates cells and buckets, and publishes control, weaknesses and preference pairs', async () => {
    const d = decided.find((x) => x.rollout.id === data.rollouts[5]!.id)!;
    expect(Object.keys(d.annotations)).toEqual(expect.arrayContaining(['qd.cell', 'quota.bucket', 'group.size']));
    const control = await consumeTopic(kafka, catalog.control, (m) => m.some((x) => x.key?.toString() === 'qd-coverage') && m.some((x) => x.key?.toString() === 'explore-exploit'), { settleMs: 0 });
    const report = JSON.parse(control.find((m) => m.key?.toString() === 'explore-exploit')!.value!.toString());
    expect(report).toMatchObject({ kind: 'explore_exploit', pipeline_run: prefix });
    expect(report.recommend).toHaveProperty('temperature');
    const pairs = await consumeTopic(kafka, catalog.preferencePairs, (m) => m.length > 0, { settleMs: 0 });
    const pair = JSON.parse(pairs[0]!.value!.toString());
    expect(pair.chosen.id).not.toBe(pair.rejected.id);
    const weak = await consumeTopic(kafka, catalog.weaknesses, (m) => m.length > 0, { settleMs: 0 });
    expect(JSON.parse(weak[0]!.value!.toString()).pass_rate).toBeLessThanOrEqual(0.25);
  });

  it('leaves every decision and reason queryable in ClickHouse', async () => {
    await waitUntil(() => pipeline.progress.stored.samples >= all.length, () => `the sink (${JSON.stringify(pipeline.progress)})`);
    const rows = await store.query<{ reason: string; n: number }>(
      `SELECT reason, count() AS n FROM samples WHERE pipeline_run = {run:String} GROUP BY reason ORDER BY n DESC`,
      { run: prefix },
    );
    expect(rows.reduce((sum, r) => sum + r.n, 0)).toBe(all.length);
    const [cells] = await store.query<{ cells: number }>(
      `SELECT uniqExact(annotation_values[indexOf(annotation_keys, 'qd.cell')]) AS cells FROM samples WHERE pipeline_run = {run:String} AND has(annotation_keys, 'qd.cell')`,
      { run: prefix },
    );
    expect(cells!.cells).toBeGreaterThan(1);
  });
});

import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { featureDefaults } from '../contracts/features.ts';
import { parseConfig } from '../pipeline/config.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import type { Decision, Rollout } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, labelSerde, modelUpdateSerde, registryClient, rolloutSerde, type TopicSerde } from '../streams/serde.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';
import { writeScorer } from './helpers/models.ts';

/**
 * The feedback loop on the real services: verified labels meet the scores they judge (label
 * join), the errors reach every worker's error memory and correct later scores; a new model
 * announced on the model-updates topic replaces the scorer live, and the memory retires the
 * errors the old model made.
 */
describe('labels, error memory and a live model swap', () => {
  const prefix = uniquePrefix('feedback');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-feedback-'));
  const kafka = testKafka('feedback');
  const features = { ...featureDefaults, dims: 64, rewardNames: ['correct'] };
  // v1 is biased upwards: even wrong answers score high. v2 is not.
  const v1 = writeScorer(dir, features, 'v1', { 'reward:correct': 4 }, 1);
  const v2 = writeScorer(dir, features, 'v2', { 'reward:correct': 4 }, -2);
  const batches = [0, 1, 2, 3].map((i) => syntheticRollouts({ groups: 60, runId: `${prefix}-b${i}`, seed: 100 + i, duplicateRate: 0, invalidRate: 0, garbage: 0 }).rollouts);
  let pipeline: RunningPipeline;
  let rollouts: TopicSerde<Rollout>;
  let decisions: TopicSerde<Decision>;
  const decided = new Map<string, Decision>();

  const decide = async (batch: Rollout[]) => {
    await produceRollouts(kafka, rollouts, batch);
    const want = new Set(batch.map((r) => r.id));
    const messages = await consumeTopic(kafka, pipeline.catalog.decisions, (m) => m.length >= decided.size + batch.length, { settleMs: 500 });
    for (const d of await Promise.all(messages.map((m) => decisions.deserialize(m.value!)))) decided.set(d.rollout.id, d);
    return batch.map((r) => decided.get(r.id)!).filter((d) => want.has(d.rollout.id));
  };
  const meanError = (ds: Decision[], score: string) => ds.reduce((sum, d) => sum + Math.abs(d.rollout.rewards.correct! - d.scores[score]!), 0) / ds.length;

  beforeAll(async () => {
    const config = parseConfig({
      name: 'feedback',
      run: prefix,
      topics: { prefix, partitions: 3 },
      source: { tickMs: 300 },
      features,
      operators: [{ type: 'validate' }, { type: 'onnx-score', model: { name: 'scorer', path: v1 } }, { type: 'error-compensate', score: 'model', k: 8, minSimilarity: 0.5 }],
      clickhouse: { path: join(dir, 'clickhouse') },
    });
    pipeline = await startPipeline(config, connections);
    const registry = registryClient(connections.schemaRegistryUrl);
    rollouts = await rolloutSerde(registry, pipeline.catalog.rollouts);
    decisions = await decisionSerde(registry, pipeline.catalog.decisions);
  }, 120_000);

  afterAll(async () => {
    await pipeline?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('joins labels with scores and corrects later scores from the errors', async () => {
    const first = await decide(batches[0]!);
    expect(first.every((d) => d.scorer_version === 'v1' && d.scores['model.correction'] === 0)).toBe(true);

    const registry = registryClient(connections.schemaRegistryUrl);
    const labels = await labelSerde(registry, pipeline.catalog.labels);
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic: pipeline.catalog.labels,
      messages: await Promise.all([
        ...first.map(async (d) => ({ key: d.rollout.id, value: await labels.serialize({ rollout_id: d.rollout.id, value: d.rollout.rewards.correct!, verifier: 'exact-match', at: Date.now() }) })),
        { key: 'bad', value: Buffer.from('not a label') },
      ]),
    });
    await producer.disconnect();
    const errors = await consumeTopic(kafka, pipeline.catalog.scorerErrors, (m) => m.length >= first.length, { settleMs: 1000 });
    expect(errors.length).toBe(first.length);
    const error = JSON.parse(errors[0]!.value!.toString());
    const scored = decided.get(error.id)!;
    expect(error.error).toBeCloseTo(scored.rollout.rewards.correct! - scored.scores['model.raw']!, 6);
    const dead = await consumeTopic(kafka, pipeline.catalog.deadLetter, (m) => m.length >= 1, { settleMs: 0 });
    expect(dead[0]!.headers!['flywheel.stage']!.toString()).toBe('label-join');

    // Give every worker's error memory time to read the errors, then score new samples.
    await new Promise((r) => setTimeout(r, 3000));
    const second = await decide(batches[1]!);
    expect(second.some((d) => d.scores['model.correction'] !== 0)).toBe(true);
    expect(meanError(second, 'model')).toBeLessThan(meanError(second, 'model.raw') * 0.6);
  });

  it('swaps in an announced model live: every record scored once, by the version it names, memory retired', async () => {
    const registry = registryClient(connections.schemaRegistryUrl);
    const updates = await modelUpdateSerde(registry, pipeline.catalog.modelUpdates);
    const before = produceRollouts(kafka, rollouts, batches[2]!);
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic: pipeline.catalog.modelUpdates,
      messages: [{ key: 'scorer', value: await updates.serialize({ model: 'scorer', version: 'v2', artifact: v2, checksum: createHash('sha256').update(readFileSync(v2)).digest('hex'), metrics: {}, at: Date.now() }) }],
    });
    await producer.disconnect();
    await before;
    // Probe until a decision names v2: from then on every micro-batch leases the new model.
    let probe = 0;
    const probes: Rollout[] = [];
    await waitUntil(async () => {
      const rollout = syntheticRollouts({ groups: 1, samplesPerGroup: 1, runId: `${prefix}-probe${probe++}`, duplicateRate: 0, invalidRate: 0, garbage: 0 }).rollouts;
      probes.push(...rollout);
      return (await decide(rollout)).some((d) => d.scorer_version === 'v2');
    }, 'the announced model to score', 60_000);
    const all = [...batches[2]!, ...probes, ...batches[3]!];
    const after = await decide(batches[3]!);
    const messages = await consumeTopic(kafka, pipeline.catalog.decisions, (m) => m.length >= decided.size, { settleMs: 1500 });
    const ids = (await Promise.all(messages.map((m) => decisions.deserialize(m.value!)))).map((d) => d.rollout.id);
    expect(ids.length, 'no record scored twice').toBe(new Set(ids).size);
    for (const r of all) expect(decided.has(r.id), `${r.id} decided`).toBe(true);
    // Scores match the version each decision names.
    for (const r of all) {
      const d = decided.get(r.id)!;
      const expected = 1 / (1 + Math.exp(-(4 * r.rewards.correct! + (d.scorer_version === 'v1' ? 1 : -2))));
      expect(d.scores['model.raw']).toBeCloseTo(expected, 5);
    }
    expect(after.every((d) => d.scorer_version === 'v2')).toBe(true);
    // The v1 errors are retired: v2's scores are not corrected by them.
    expect(after.every((d) => d.scores['model.correction'] === 0)).toBe(true);
  });
});

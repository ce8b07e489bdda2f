import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../pipeline/config.ts';
import { partitionOf } from '../pipeline/seed.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import type { Decision } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { rollout } from './helpers/envelopes.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';
import { bundledTextModel } from '../pipeline/text-models.ts';
import { openStore } from '../sinks/clickhouse/store.ts';

describe('dedupe indexes seeded from an existing corpus', () => {
  const prefix = uniquePrefix('seed');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-seed-'));
  const kafka = testKafka('seed');
  let pipeline: RunningPipeline | undefined;

  afterAll(async () => {
    await pipeline?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rejects new rollouts that repeat or nearly repeat what the corpus holds, once per partition', async () => {
    const long = 'First we add the units and carry the one, then we add the tens together with the carried one, which gives the final sum.';
    const corpusFile = join(dir, 'corpus.jsonl');
    writeFileSync(
      corpusFile,
      [
        { id: 'old-1', prompt: 'What is 17 + 25?', response: 'Answer: 42', group_id: 'g1' },
        { id: 'old-2', prompt: 'What is 38 + 47?', response: `${long}\nAnswer: 85`, group_id: 'g2' },
      ]
        .map((x) => JSON.stringify(x))
        .join('\n'),
    );
    const config = parseConfig({
      name: 'seeded',
      run: prefix,
      topics: { prefix, partitions: 3 },
      seed: { jsonl: [corpusFile] },
      operators: [{ type: 'validate' }, { type: 'exact-dedupe' }, { type: 'near-dedupe', scope: 'group', threshold: 0.7 }],
      clickhouse: { path: join(dir, 'clickhouse') },
    });
    const registry = registryClient(connections.schemaRegistryUrl);
    const decisions = await decisionSerde(registry, `${prefix}.decisions`);
    const send = async (rollouts: ReturnType<typeof rollout>[]) => produceRollouts(kafka, await rolloutSerde(registry, `${prefix}.rollouts`), rollouts);
    const decided = async (n: number) =>
      Promise.all((await consumeTopic(kafka, `${prefix}.decisions`, (m) => m.length >= n, { settleMs: 1000 })).map((m) => decisions.deserialize(m.value!)));

    pipeline = await startPipeline(config, connections);
    await send([
      // The same content in another group (another partition, likely): exact-dedupe is global.
      rollout({ created_at: Date.now(), id: 'new-1', group_id: 'g9', prompt_id: 'g9', prompt: 'what is 17 + 25?', response: ' answer:  42' }),
      rollout({ created_at: Date.now(), id: 'new-2', group_id: 'g2', prompt_id: 'g2', prompt: 'What is 38 + 47?', response: `${long.replace('final sum', 'sum')}\nAnswer: 85` }),
      rollout({ created_at: Date.now(), id: 'new-3', group_id: 'g3', prompt_id: 'g3', prompt: 'What is 9 * 9?', response: 'Answer: 81' }),
    ]);
    const first: Decision[] = await decided(3);
    const byId = new Map(first.map((d) => [d.rollout.id, d]));
    expect(byId.get('new-1')).toMatchObject({ reason: 'duplicate', duplicate_of: 'old-1' });
    expect(byId.get('new-2')).toMatchObject({ reason: 'near_duplicate', duplicate_of: 'old-2' });
    expect(byId.get('new-3')!.decision).toBe('accepted');
    expect(partitionOf('g2', 3)).toBe(byId.get('new-2')!.source.partition);

    // A restarted worker restores the seeded state and does not seed again: the corpus
    // copy sent now is still a duplicate of old-1, and new-3's content is remembered.
    await pipeline.stop();
    pipeline = await startPipeline(config, connections);
    await send([
      rollout({ created_at: Date.now(), id: 'new-4', group_id: 'g8', prompt_id: 'g8', prompt: 'What is 17 + 25?', response: 'Answer: 42' }),
      rollout({ created_at: Date.now(), id: 'new-5', group_id: 'g3', prompt_id: 'g3', prompt: 'What is 9 * 9?', response: 'Answer: 81' }),
    ]);
    const all = new Map((await decided(5)).map((d) => [d.rollout.id, d]));
    expect(all.get('new-4')).toMatchObject({ reason: 'duplicate', duplicate_of: 'old-1' });
    expect(all.get('new-5')).toMatchObject({ reason: 'duplicate', duplicate_of: 'new-3' });
  });
});

describe('semantic-dedupe seeded from the accepted samples of an earlier run in ClickHouse', () => {
  const prefix = uniquePrefix('seed-sem');
  const serverUrl = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;
  const database = `seed_semantic_${Date.now()}`;
  const kafka = testKafka('seed-sem');
  const running: RunningPipeline[] = [];

  afterAll(async () => {
    await Promise.all(running.map((p) => p.stop()));
    if (serverUrl) {
      const store = await openStore({ url: serverUrl, database });
      await store.command(`DROP DATABASE IF EXISTS ${database}`);
      await store.close();
    }
  });

  it('a worker with an empty changelog re-embeds the newest maxEntries stored samples and catches a paraphrase of one', async () => {
    if (!serverUrl) throw new Error('FLYWHEEL_TEST_CLICKHOUSE_URL is not set: run the tests with `npm test`, which starts a ClickHouse server');
    const dir = bundledTextModel(); // all-MiniLM-L6-v2 (models/setup.sh)
    const registry = registryClient(connections.schemaRegistryUrl);
    const step = { type: 'semantic-dedupe', scope: 'global', threshold: 0.75, maxEntries: 2, encoder: { kind: 'text', dir } };
    const configOf = (name: string, topics: string, seed?: object) =>
      parseConfig({
        name,
        run: `${prefix}-${name}`,
        topics: { prefix: topics, partitions: 3 },
        ...(seed === undefined ? {} : { seed }),
        operators: [{ type: 'validate' }, { type: 'near-dedupe', scope: 'global', threshold: 0.7 }, step],
        clickhouse: { url: serverUrl, database },
      });
    const send = async (topics: string, rollouts: ReturnType<typeof rollout>[]) => produceRollouts(kafka, await rolloutSerde(registry, `${topics}.rollouts`), rollouts);
    const at = Date.now() - 60_000;
    const say = (id: string, response: string, offset: number) => rollout({ id, group_id: id, prompt_id: id, prompt: 'Tell me something.', response, created_at: at + offset });

    // The earlier run: three samples accepted and stored, the oldest first.
    const first = await startPipeline(configOf('first', `${prefix}-a`), connections);
    running.push(first);
    await send(`${prefix}-a`, [
      say('old-password', 'You can reset your password from the account settings page.', 0),
      say('old-paris', 'The capital of France is Paris, which sits on the river Seine.', 1000),
      say('old-guitar', 'A man is playing a guitar on stage.', 2000),
    ]);
    await waitUntil(() => first.progress.stored.samples >= 3, () => `the first run to store 3 samples (${JSON.stringify(first.progress)})`);
    await first.stop();
    running.pop();

    // Another pipeline (its own topics and changelogs: empty), seeded from the first run.
    const topics = `${prefix}-b`;
    const second = await startPipeline(configOf('second', topics, { clickhouseRuns: [`${prefix}-first`] }), connections);
    running.push(second);
    await send(topics, [
      say('new-paris', 'Paris, located on the Seine, is the French capital.', 3000),
      say('new-guitar', 'Someone performs on stage with a guitar.', 3000),
      // A paraphrase of the oldest stored sample, which maxEntries (2) left out of the seed.
      say('new-password', 'Go to the settings of your account to change a forgotten password.', 3000),
      say('new-whales', 'Whales migrate thousands of kilometres to warmer waters to breed.', 3000),
    ]);
    const decisions = await decisionSerde(registry, `${topics}.decisions`);
    const got = (await consumeTopic(kafka, `${topics}.decisions`, (m) => m.length >= 4, { settleMs: 1000 })).map((m) => decisions.deserialize(m.value!));
    const byId = new Map((await Promise.all(got)).map((d: Decision) => [d.rollout.id, d]));
    expect(byId.get('new-paris')).toMatchObject({ decision: 'rejected', reason: 'near_duplicate:semantic', duplicate_of: 'old-paris' });
    expect(byId.get('new-guitar')).toMatchObject({ decision: 'rejected', reason: 'near_duplicate:semantic', duplicate_of: 'old-guitar' });
    expect(byId.get('new-password')!.decision).toBe('accepted');
    expect(byId.get('new-whales')!.decision).toBe('accepted');
  }, 10 * 60_000);
});

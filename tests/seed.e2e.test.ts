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
import { connections, consumeTopic, testKafka, uniquePrefix } from './helpers/kafka.ts';

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

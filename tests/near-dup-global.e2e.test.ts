import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../pipeline/config.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import type { Decision } from '../contracts/records.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { rollout } from './helpers/envelopes.ts';
import { connections, consumeTopic, testKafka, uniquePrefix } from './helpers/kafka.ts';

describe('near-duplicates across partitions', () => {
  const prefix = uniquePrefix('neardup');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-neardup-'));
  const kafka = testKafka('neardup');
  let pipeline: RunningPipeline;

  afterAll(async () => {
    await pipeline?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('catches a near copy on another partition once the original is committed', async () => {
    const config = parseConfig({
      name: 'neardup',
      run: prefix,
      topics: { prefix, partitions: 3 },
      operators: [{ type: 'validate' }, { type: 'near-dedupe', scope: 'global', threshold: 0.7, text: 'response' }],
      clickhouse: { path: join(dir, 'clickhouse') },
    });
    pipeline = await startPipeline(config, connections);
    const registry = registryClient(connections.schemaRegistryUrl);
    const rollouts = await rolloutSerde(registry, pipeline.catalog.rollouts);
    const decisions = await decisionSerde(registry, pipeline.catalog.decisions);
    const text = 'To add the two numbers we line up the digits, carry the one from the units column, and then write down the tens to get the final answer.\nAnswer: 42';
    const producer = kafka.producer();
    await producer.connect();
    const send = async (id: string, group: string, partition: number, response: string) =>
      producer.send({ topic: pipeline.catalog.rollouts, messages: [{ key: group, partition, value: await rollouts.serialize(rollout({ id, group_id: group, prompt_id: group, response })) }] });

    await send('original', 'g-a', 0, text);
    await consumeTopic(kafka, pipeline.catalog.decisions, (m) => m.length >= 1, { settleMs: 1500 });
    // Same words, lightly edited, in another group on another partition.
    await send('copy', 'g-b', 1, text.replace('final answer', 'answer'));
    await send('unrelated', 'g-c', 2, 'Multiplying by nine is the same as multiplying by ten and subtracting the number once, which is quick to do in your head.\nAnswer: 81');
    await producer.disconnect();

    const messages = await consumeTopic(kafka, pipeline.catalog.decisions, (m) => m.length >= 3);
    const decided: Decision[] = await Promise.all(messages.map((m) => decisions.deserialize(m.value!)));
    const byId = new Map(decided.map((d) => [d.rollout.id, d]));
    expect(byId.get('original')!.decision).toBe('accepted');
    expect(byId.get('copy')!.source.partition).not.toBe(byId.get('original')!.source.partition);
    expect(byId.get('copy')).toMatchObject({ decision: 'rejected', reason: 'near_duplicate', duplicate_of: 'original', dedupe_method: 'minhash' });
    expect(byId.get('copy')!.scores['minhash.similarity']).toBeGreaterThanOrEqual(0.7);
    expect(byId.get('unrelated')!.decision).toBe('accepted');
    // The signature travels on its own topic, not in every decision.
    expect(decided.every((d) => d.annotations['minhash.signature'] === undefined)).toBe(true);
  });
});

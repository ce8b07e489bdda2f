import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFailed } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { EXAMPLE_CONFIG, loadConfig, withOverrides } from '../pipeline/config.ts';
import { openStore } from '../sinks/clickhouse/store.ts';
import type { Decision, Rollout } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { topicCatalog } from '../streams/topics.ts';
import { expectDecidedOnce, expectedOutcome } from './helpers/expected.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil, createCatalogTopics } from './helpers/kafka.ts';
import { exited, groupJoins, startWorker } from './helpers/workers.ts';

const serverUrl = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;

describe('a second worker joining mid-stream (shared ClickHouse server)', () => {
  const prefix = uniquePrefix('rebalance');
  const database = `rebalance_${prefix.replace(/[^a-z0-9]/gi, '_')}`;
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-rebalance-'));
  const configFile = join(dir, 'pipeline.json');
  const catalog = topicCatalog(prefix);
  const kafka = testKafka('rebalance');
  const data = syntheticRollouts({ groups: 400, runId: prefix, garbage: 2 });
  const expected = expectedOutcome(data);
  const logs: string[][] = [[], []];
  const workers: ChildProcess[] = [];

  afterAll(async () => {
    for (const w of workers) w.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    if (serverUrl) {
      const store = await openStore({ url: serverUrl });
      await store.command(`DROP DATABASE IF EXISTS ${database}`);
      await store.close();
    }
  });

  it('hands partitions and their state over: every decision once, late duplicates still caught', async () => {
    if (!serverUrl) throw new Error('FLYWHEEL_TEST_CLICKHOUSE_URL is not set: run the tests with `npm test`, which starts a ClickHouse server');
    onTestFailed(() => logs.forEach((log, i) => console.error(`--- worker ${i} ---\n${log.join('')}`)));
    const config = withOverrides(loadConfig(EXAMPLE_CONFIG), {
      name: 'rebalance',
      run: prefix,
      topics: { prefix, partitions: 3 },
      source: { maxBatchBytes: 8192 },
      clickhouse: { path: join(dir, 'unused'), url: serverUrl, database },
    });
    writeFileSync(configFile, JSON.stringify(config));
    await createCatalogTopics(kafka, catalog);
    const registry = registryClient(connections.schemaRegistryUrl);
    const rollouts = await rolloutSerde(registry, catalog.rollouts);
    const decisions = await decisionSerde(registry, catalog.decisions);
    // The first part before the second worker exists, the rest after it took its partitions.
    const split = Math.floor(data.rollouts.length * 0.6);
    await produceRollouts(kafka, rollouts, data.rollouts.slice(0, split));

    const total = expected.decided;
    workers.push(startWorker(configFile, logs[0]!));
    const before = await consumeTopic(kafka, catalog.decisions, (m) => m.length >= split * 0.9, { settleMs: 0 });
    workers.push(startWorker(configFile, logs[1]!));
    const groupAdmin = kafka.admin();
    await groupAdmin.connect();
    await waitUntil(async () => {
      const { groups } = await groupAdmin.describeGroups([`${prefix}.rebalance`]);
      return groups[0]?.state === 'Stable' && groups[0].members.length === 2;
    }, 'both workers in the group');
    await groupAdmin.disconnect();

    // Late duplicates of samples the first worker accepted, on every partition: whichever worker
    // owns a partition now must have its dedupe state.
    const acceptedBefore = (await Promise.all(before.map((m) => decisions.deserialize(m.value!)))).filter((d) => d.decision === 'accepted');
    const late: Rollout[] = acceptedBefore.slice(0, 60).map((d) => ({ ...d.rollout, id: `${d.rollout.id}-late`, response: `${d.rollout.response!}\n` }));
    await produceRollouts(kafka, rollouts, [...data.rollouts.slice(split), ...late], { raw: data.garbage });

    const all = await consumeTopic(kafka, catalog.decisions, (m) => m.length >= total + late.length, { settleMs: 3000 });
    const decided: Decision[] = await Promise.all(all.map((m) => decisions.deserialize(m.value!)));
    const lateDecisions = expectDecidedOnce(decided, total + late.length, expected.accepted);
    expect(lateDecisions.map((d) => d.reason)).toEqual(late.map(() => 'duplicate'));

    // Both sinks write to the one server: each row once.
    const store = await openStore({ url: serverUrl, database });
    try {
      const count = async () => (await store.query<{ rows: number; ids: number }>(`SELECT count() AS rows, uniqExact(id) AS ids FROM samples`))[0]!;
      await waitUntil(async () => (await count()).rows >= total + late.length, 'the sinks to catch up');
      await new Promise((r) => setTimeout(r, 2000));
      expect(await count()).toEqual({ rows: total + late.length, ids: total + late.length });
    } finally {
      await store.close();
    }
    expect(logs[1]!.join(''), 'the second worker did part of the work').toMatch(/processed [1-9]/);
    // One rebalance for the second worker's arrival, not a loop of crashes and rejoins.
    expect(groupJoins(logs[0]!, 'rebalance'), 'first worker: joined, then rebalanced once or twice').toBeLessThanOrEqual(3);
    expect(groupJoins(logs[1]!, 'rebalance')).toBeLessThanOrEqual(2);
    for (const w of workers) w.kill('SIGTERM');
    expect(await Promise.all(workers.map(exited))).toEqual([0, 0]);
  }, 240_000);
});

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFailed } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { EXAMPLE_CONFIG, loadConfig, withOverrides } from '../pipeline/config.ts';
import { readEndpointFile } from '../sinks/clickhouse/http-endpoint.ts';
import { openStore } from '../sinks/clickhouse/store.ts';
import type { Decision, Rollout } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { topicCatalog } from '../streams/topics.ts';
import { expectDecidedOnce, expectedOutcome } from './helpers/expected.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil, createCatalogTopics } from './helpers/kafka.ts';
import { exited, groupJoins, startWorker } from './helpers/workers.ts';

describe('a worker killed with SIGKILL mid-stream and restarted', () => {
  const prefix = uniquePrefix('crash');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-crash-'));
  const configFile = join(dir, 'pipeline.json');
  const config = withOverrides(loadConfig(EXAMPLE_CONFIG), {
    name: 'crash',
    run: prefix,
    topics: { prefix, partitions: 3 },
    // Small fetches: many transactions, so the kill lands between and inside them.
    source: { maxBatchBytes: 8192 },
    clickhouse: { path: join(dir, 'clickhouse') },
  });
  writeFileSync(configFile, JSON.stringify(config));
  const catalog = topicCatalog(prefix);
  const kafka = testKafka('crash');
  const data = syntheticRollouts({ groups: 400, runId: prefix, garbage: 3 });
  const expected = expectedOutcome(data);
  const log: string[] = [];
  let worker: ChildProcess | undefined;

  afterAll(async () => {
    worker?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('loses nothing, duplicates nothing, and restores its dedupe state', async () => {
    onTestFailed(() => console.error(`--- worker log ---\n${log.join('')}`));
    await createCatalogTopics(kafka, catalog);
    const registry = registryClient(connections.schemaRegistryUrl);
    const rollouts = await rolloutSerde(registry, catalog.rollouts);
    const decisions = await decisionSerde(registry, catalog.decisions);
    await produceRollouts(kafka, rollouts, data.rollouts, { raw: data.garbage });

    worker = startWorker(configFile, log);
    const total = expected.decided;
    // Kill once about a third of the decisions are committed downstream.
    const before = await consumeTopic(kafka, catalog.decisions, (m) => m.length >= total / 3, { settleMs: 0 });
    worker.kill('SIGKILL');
    await exited(worker);
    expect(before.length, 'the kill must land mid-stream').toBeLessThan(total);

    // Late duplicates of samples the killed worker accepted: only restored state can catch them.
    const acceptedBefore = (await Promise.all(before.map((m) => decisions.deserialize(m.value!)))).filter((d) => d.decision === 'accepted');
    expect(acceptedBefore.length).toBeGreaterThan(10);
    const late: Rollout[] = acceptedBefore.slice(0, 40).map((d) => ({ ...d.rollout, id: `${d.rollout.id}-late`, response: ` ${d.rollout.response!.toLowerCase()} ` }));

    worker = startWorker(configFile, log);
    await produceRollouts(kafka, rollouts, late);
    const all = await consumeTopic(kafka, catalog.decisions, (m) => m.length >= total + late.length, { settleMs: 3000 });
    const decided: Decision[] = await Promise.all(all.map((m) => decisions.deserialize(m.value!)));

    const lateDecisions = expectDecidedOnce(decided, total + late.length, expected.accepted);
    expect(lateDecisions.map((d) => [d.reason, d.duplicate_of])).toEqual(late.map((r) => ['duplicate', r.id.replace(/-late$/, '')]));

    const accepted = await consumeTopic(kafka, catalog.accepted, (m) => m.length >= expected.accepted.size);
    expect(accepted.length).toBe(expected.accepted.size);

    // Watch the sink through the endpoint the worker serves (chdb admits one process per
    // directory), then stop the worker cleanly and open its store here.
    const endpoint = readEndpointFile(config.clickhouse.path);
    expect(endpoint, 'the worker serves its embedded store').toBeDefined();
    const served = await openStore({ url: endpoint!.url });
    const countOf = async (table: string) => (await served.query<{ n: number }>(`SELECT count() AS n FROM ${table}`))[0]!.n;
    await waitUntil(async () => (await countOf('samples')) >= total + late.length && (await countOf('dead_letters')) >= expected.dead, 'the sink to catch up');
    await served.close();
    worker.kill('SIGTERM');
    expect(await exited(worker)).toBe(0);
    // Each run joined the group about once: no crash-and-rejoin loop.
    expect(groupJoins(log, 'crash')).toBeLessThanOrEqual(4);
    const store = await openStore({ path: config.clickhouse.path });
    try {
      const [rows] = await store.query<{ rows: number; ids: number }>(`SELECT count() AS rows, uniqExact(id) AS ids FROM samples`);
      expect(rows).toEqual({ rows: total + late.length, ids: total + late.length });
      const [dead] = await store.query<{ rows: number }>(`SELECT count() AS rows FROM dead_letters`);
      expect(dead!.rows).toBe(expected.dead);
    } finally {
      await store.close();
    }
  }, 240_000);
});

import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decisionHash, replay } from '../cli/replay.ts';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { EXAMPLE_CONFIG, loadConfig, withOverrides, type PipelineConfig } from '../pipeline/config.ts';
import { startPipeline } from '../pipeline/run.ts';
import { compareRuns } from '../analytics/compare.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { registryClient, rolloutSerde } from '../streams/serde.ts';
import { connections, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';

const execFileAsync = promisify(execFile);

describe('replaying a topic range as a named run', () => {
  const prefix = uniquePrefix('replay');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-replay-'));
  const kafka = testKafka('replay');
  const data = syntheticRollouts({ groups: 100, runId: prefix, garbage: 2 });
  const total = data.rollouts.length + data.garbage.length;
  let config: PipelineConfig;
  let store: ClickHouseStore;

  beforeAll(async () => {
    config = withOverrides(loadConfig(EXAMPLE_CONFIG), { name: 'live', run: 'live', topics: { prefix, partitions: 3 }, clickhouse: { path: join(dir, 'clickhouse') } });
    store = await openStore({ path: config.clickhouse.path });
    const live = await startPipeline(config, connections, { store });
    await produceRollouts(kafka, await rolloutSerde(registryClient(connections.schemaRegistryUrl), live.catalog.rollouts), data.rollouts, { raw: data.garbage });
    await waitUntil(() => live.progress.stored.samples + live.progress.stored.dead_letters >= total, () => `the live run to store ${total} records (${JSON.stringify(live.progress)})`);
    await live.stop();
  }, 180_000);

  afterAll(async () => {
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reproduces the live run decision for decision: same input and config, same hash', async () => {
    const progress: number[] = [];
    const first = await replay(config, connections, { run: 'again-1', from: 'earliest', to: 'latest', store, onProgress: (done) => progress.push(done) });
    const second = await replay(config, connections, { run: 'again-2', from: 'earliest', to: 'latest', store });
    expect(first.records).toBe(total);
    expect(progress.at(-1)).toBe(total);
    expect(first.decisionHash).toBe(second.decisionHash);
    expect(first.decisionHash).toBe(await decisionHash(store, 'live'));
    // Outputs are kept apart: run-scoped topics, its own rows.
    const [rows] = await store.query<{ n: number }>(`SELECT count() AS n FROM samples WHERE pipeline_run = 'again-1'`);
    expect(rows!.n).toBe(data.rollouts.length - [...data.fates.values()].filter((f) => f === 'invalid').length);
    const topics = await (async () => {
      const admin = kafka.admin();
      await admin.connect();
      const list = await admin.listTopics();
      await admin.disconnect();
      return list;
    })();
    expect(topics).toContain(`${prefix}.replay.again-1.accepted`);
  });

  it('replays an offset range only, and another config as a run to compare with', async () => {
    const partial = await replay(config, connections, { run: 'first-ten', from: '0', to: '10', store });
    expect(partial.records).toBe(30);
    const strict = withOverrides(config, {
      operators: [...config.operators, { type: 'rule-filter', rules: [{ name: 'no_multiplication', when: "tags.skill == 'multiplication'" }] }],
    });
    await replay(strict, connections, { run: 'strict', from: 'earliest', to: 'latest', store });
    const comparison = await compareRuns(store, 'live', 'strict');
    expect(comparison.overlap.only_b).toBe(0);
    expect(comparison.overlap.only_a).toBeGreaterThan(0);
    expect(comparison.reasons.some((r) => r.reason === 'rule:no_multiplication')).toBe(true);
  });

  it('prints the comparison from the command line', async () => {
    await store.close();
    const { stdout } = await execFileAsync(process.execPath, ['bin/flywheel.js', 'compare', 'live', 'strict', '--path', config.clickhouse.path]);
    expect(stdout).toMatch(/only/i);
    expect(stdout).toContain('rule:no_multiplication');
    store = await openStore({ path: config.clickhouse.path });
  });
});

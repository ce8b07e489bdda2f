import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { EXAMPLE_CONFIG, loadConfig, withOverrides } from '../pipeline/config.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import { DLQ_HEADERS } from '../contracts/dead-letter.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { expectedOutcome } from './helpers/expected.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';

const execFileAsync = promisify(execFile);
const serverUrl = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;

/** The same end-to-end run against the embedded engine and against a ClickHouse server. */
const backends: Array<[string, () => Promise<{ store: ClickHouseStore; cleanup: () => Promise<void> }>]> = [
  [
    'embedded',
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'flywheel-e2e-'));
      const store = await openStore({ path: join(dir, 'clickhouse') });
      return { store, cleanup: async () => (await store.close(), rmSync(dir, { recursive: true, force: true })) };
    },
  ],
  [
    'server',
    async () => {
      if (!serverUrl) throw new Error('FLYWHEEL_TEST_CLICKHOUSE_URL is not set: run the tests with `npm test`, which starts a ClickHouse server');
      const database = `e2e_${Date.now()}`;
      const store = await openStore({ url: serverUrl, database });
      return { store, cleanup: async () => (await store.command(`DROP DATABASE IF EXISTS ${database}`), await store.close()) };
    },
  ],
];

describe.each(backends)('pipeline end to end, %s ClickHouse', (backend, open) => {
  const prefix = uniquePrefix(`e2e-${backend}`);
  const data = syntheticRollouts({ groups: 120, runId: prefix, garbage: 4 });
  const expected = expectedOutcome(data);
  const kafka = testKafka(`e2e-${backend}`);
  let pipeline: RunningPipeline;
  let store: ClickHouseStore;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ store, cleanup } = await open());
    const config = withOverrides(loadConfig(EXAMPLE_CONFIG), { name: 'e2e', run: prefix, topics: { prefix, partitions: 3 } });
    pipeline = await startPipeline(config, connections, { store });
    const serde = await rolloutSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.rollouts);
    await produceRollouts(kafka, serde, data.rollouts, { raw: data.garbage });
  });

  afterAll(async () => {
    await pipeline?.stop();
    await cleanup?.();
  });

  it('publishes exactly the expected accepted set, each once, registry-encoded', async () => {
    const serde = await decisionSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.accepted);
    const messages = await consumeTopic(kafka, pipeline.catalog.accepted, (m) => m.length >= expected.accepted.size);
    const decisions = await Promise.all(messages.map((m) => serde.deserialize(m.value!)));
    const ids = decisions.map((d) => d.rollout.id);
    expect(ids.length).toBe(expected.accepted.size);
    expect(new Set(ids)).toEqual(expected.accepted);
    expect(decisions.every((d) => d.decision === 'accepted' && d.scores.rule === 1 && d.pipeline_run === prefix)).toBe(true);
    // Keyed by group and kept on the input's partition.
    for (const [i, m] of messages.entries()) {
      expect(m.key!.toString()).toBe(decisions[i]!.rollout.group_id);
      expect(m.partition).toBe(decisions[i]!.source.partition);
    }
  });

  it('is readable by an external client: kcat, read_committed, wire format intact', async () => {
    const serde = await decisionSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.accepted);
    await consumeTopic(kafka, pipeline.catalog.accepted, (m) => m.length >= expected.accepted.size, { settleMs: 0 });
    const { stdout } = await execFileAsync('kcat', [
      '-C', '-b', connections.kafkaBrokers.join(','), '-t', pipeline.catalog.accepted, '-o', 'beginning', '-e', '-q',
      '-X', 'isolation.level=read_committed', '-s', 'value=>bI', '-f', '%k\t%s\n',
    ]);
    const lines = stdout.trim().split('\n').map((l) => l.split('\t'));
    expect(lines.length).toBe(expected.accepted.size);
    const groups = new Set([...expected.accepted].map((id) => id.replace(/-s\d+$/, '')));
    for (const [key, header] of lines) {
      expect(groups.has(key!)).toBe(true);
      // kcat prints the unpacked magic byte and schema id, back to back: the registry's wire format.
      expect(header).toBe(`0${serde.schemaId}`);
    }
  });

  it('dead-letters bad input with its reason and original bytes', async () => {
    const messages = await consumeTopic(kafka, pipeline.catalog.deadLetter, (m) => m.length >= expected.dead);
    expect(messages.length).toBe(expected.dead);
    const header = (m: (typeof messages)[number], name: string) => m.headers![name]!.toString();
    const decodeFailures = messages.filter((m) => header(m, DLQ_HEADERS.stage) === 'decode');
    expect(decodeFailures.map((m) => m.value!.toString('hex')).sort()).toEqual(data.garbage.map((g) => g.toString('hex')).sort());
    const reasons = decodeFailures.map((m) => header(m, DLQ_HEADERS.reason));
    expect(reasons.filter((r) => /not in the registry's wire format: first byte is 0x7b/.test(r)).length).toBe(data.garbage.length - 1);
    expect(reasons.filter((r) => /^not a rollout: /.test(r)).length).toBe(1);
    const invalid = messages.filter((m) => header(m, DLQ_HEADERS.stage) === 'validate');
    expect(invalid.length).toBe(expected.dead - data.garbage.length);
    for (const m of invalid) expect(header(m, DLQ_HEADERS.reason)).toMatch(/^invalid rollout: (prompt is empty|rewards\.correct is NaN)/);
    expect(messages.every((m) => header(m, DLQ_HEADERS.topic) === pipeline.catalog.rollouts)).toBe(true);
  });

  it('stores every sample and dead letter in ClickHouse exactly once', async () => {
    await waitUntil(
      () => pipeline.progress.stored.samples >= expected.decided && pipeline.progress.stored.dead_letters >= expected.dead,
      () => `the sink to store everything (${JSON.stringify(pipeline.progress)})`,
    );
    const [rows] = await store.query<{ rows: number; inputs: number; ids: number; accepted: number; duplicates: number }>(
      `SELECT count() AS rows, uniqExact(source_partition, source_offset) AS inputs, uniqExact(id) AS ids,
              countIf(decision = 'accepted') AS accepted, countIf(reason = 'duplicate') AS duplicates
       FROM samples WHERE pipeline_run = {run:String}`,
      { run: prefix },
    );
    expect(rows).toEqual({ rows: expected.decided, inputs: expected.decided, ids: expected.decided, accepted: expected.accepted.size, duplicates: expected.duplicates });
    const accepted = await store.query<{ id: string }>(`SELECT id FROM samples WHERE pipeline_run = {run:String} AND decision = 'accepted'`, { run: prefix });
    expect(new Set(accepted.map((r) => r.id))).toEqual(expected.accepted);
    const [dead] = await store.query<{ rows: number }>(`SELECT count() AS rows FROM dead_letters WHERE pipeline_run = {run:String}`, { run: prefix });
    expect(dead!.rows).toBe(expected.dead);
    const [sample] = await store.query<{ reasons: string[]; score_names: string[]; tag_keys: string[] }>(
      `SELECT reasons, score_names, tag_keys FROM samples WHERE pipeline_run = {run:String} AND reason = 'duplicate' LIMIT 1`,
      { run: prefix },
    );
    expect(sample!.reasons[0]).toBe('duplicate');
    expect(sample!.score_names).toEqual(expect.arrayContaining(['rule', 'rule.reward', 'rule.format']));
    expect(sample!.tag_keys).toEqual(expect.arrayContaining(['skill', 'source']));
  });
});

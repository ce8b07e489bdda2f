import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { Instrumentation } from '../contracts/events.ts';
import { featureDefaults } from '../contracts/features.ts';
import { trackReadiness } from '../ops/health.ts';
import { pipelineMetrics } from '../ops/metrics.ts';
import { opsHttpSettings, opsRoutes, serveMetrics, startOpsServer } from '../ops/server.ts';
import { EXAMPLE_CONFIG, loadConfig, parseConfig, withOverrides } from '../pipeline/config.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { modelUpdateSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { topicCatalog } from '../streams/topics.ts';
import { expectedOutcome } from './helpers/expected.ts';
import { connections, createCatalogTopics, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';
import { writeScorer } from './helpers/models.ts';
import { exited, opsUrl, startWorker } from './helpers/workers.ts';

const serverUrl = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition → its samples and the families it declares (`# TYPE`). */
function parseExposition(text: string): { samples: Sample[]; families: Set<string> } {
  const samples: Sample[] = [];
  const families = new Set<string>();
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) families.add(line.split(' ')[2]!);
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { samples, families };
}

const sum = (samples: Sample[], name: string, where: Record<string, string> = {}) =>
  samples.filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);

describe.skipIf(!serverUrl)('a worker serves Prometheus metrics and health probes (flywheel run, ClickHouse server)', () => {
  const prefix = uniquePrefix('metrics');
  const database = `metrics_${prefix.replace(/\W/g, '_')}`;
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-metrics-'));
  const configFile = join(dir, 'pipeline.json');
  const config = withOverrides(loadConfig(EXAMPLE_CONFIG), {
    name: 'metrics',
    run: prefix,
    topics: { prefix, partitions: 3 },
    clickhouse: { path: join(dir, 'clickhouse'), url: serverUrl, database },
    ops: { http: { host: '127.0.0.1', port: 0 } },
  });
  const catalog = topicCatalog(prefix);
  const kafka = testKafka('metrics');
  const data = syntheticRollouts({ groups: 80, runId: prefix, garbage: 3 });
  const expected = expectedOutcome(data);
  const inputs = data.rollouts.length + data.garbage.length;
  const log: string[] = [];
  let worker: ChildProcess | undefined;
  let store: ClickHouseStore;
  let url: string;
  /** /readyz as first answered, before the worker had its partitions. */
  let firstReady: { status: number; body: { ready: boolean; missing: string[] } };

  const get = async (path: string) => {
    const res = await fetch(new URL(path, url));
    return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
  };
  const scrape = async () => parseExposition((await get('metrics')).text);

  beforeAll(async () => {
    writeFileSync(configFile, JSON.stringify(config));
    store = await openStore({ url: serverUrl!, database });
    // The input is there before the worker starts: it restores and processes right after joining.
    await createCatalogTopics(kafka, catalog);
    const serde = await rolloutSerde(registryClient(connections.schemaRegistryUrl), catalog.rollouts);
    await produceRollouts(kafka, serde, data.rollouts, { raw: data.garbage });
    worker = startWorker(configFile, log);
    // The ops server starts before the pipeline (topics, schemas, feeds, group join), so its
    // first /readyz answer comes before any partition is assigned.
    await waitUntil(() => opsUrl(log, config.name) !== undefined || worker!.exitCode !== null, 'the worker to print its ops URL', 60_000);
    url = opsUrl(log, config.name) ?? expect.unreachable(`the worker exited without an ops server:\n${log.join('')}`);
    const first = await get('readyz');
    firstReady = { status: first.status, body: JSON.parse(first.text) };
  });

  afterAll(async () => {
    if (worker !== undefined && worker.exitCode === null) {
      worker.kill('SIGTERM');
      await exited(worker);
    }
    await store?.command(`DROP DATABASE IF EXISTS ${database}`);
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('binds 127.0.0.1 on a port of its own choosing (port 0) and says where', () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(new URL(url).port).not.toBe('9464');
  });

  it('/healthz answers 200 while the worker runs', async () => {
    const res = await get('healthz');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toMatchObject({ status: 'alive' });
  });

  it('/readyz is 503 before the partitions are assigned and restored, 200 after, saying why', async () => {
    onTestFailed(() => console.error(`--- worker log ---\n${log.join('')}`));
    expect(firstReady.status).toBe(503);
    expect(firstReady.body.ready).toBe(false);
    expect(firstReady.body.missing).toContain('no partitions assigned yet');
    let last = '';
    await waitUntil(
      async () => {
        const res = await get('readyz');
        last = res.text;
        return res.status === 200;
      },
      () => `/readyz 200, last answer ${last}`,
    );
    const body = JSON.parse(last);
    expect(body).toMatchObject({ ready: true, missing: [], store: { ok: true }, state: { ok: true, restoring: [] } });
    expect(body.partitions.assigned).toEqual([0, 1, 2].map((p) => `${catalog.rollouts}:${p}`));
  });

  it("counts what ClickHouse stores: records in, decisions by decision and reason, dead letters, the sink's rows", async () => {
    onTestFailed(() => console.error(`--- worker log ---\n${log.join('')}`));
    const count = async (sql: string) => Number((await store.query<{ n: string }>(sql, { run: prefix }))[0]!.n);
    await waitUntil(
      async () =>
        (await count('SELECT count() AS n FROM samples FINAL WHERE pipeline_run = {run:String}')) === expected.decided &&
        (await count('SELECT count() AS n FROM dead_letters FINAL WHERE pipeline_run = {run:String}')) === expected.dead,
      'every decision and dead letter stored',
    );
    // The worker's counters follow its commits; the sink may be a scrape behind the store.
    let samples: Sample[] = [];
    await waitUntil(
      async () => {
        ({ samples } = await scrape());
        return sum(samples, 'flywheel_records_in_total') === inputs && sum(samples, 'flywheel_clickhouse_sink_rows_total', { table: 'samples' }) === expected.decided;
      },
      () => `metrics to reach ${inputs} records in and ${expected.decided} sink rows; last: ${sum(samples, 'flywheel_records_in_total')} in, ${sum(samples, 'flywheel_clickhouse_sink_rows_total', { table: 'samples' })} rows`,
    );
    expect(sum(samples, 'flywheel_records_in_total', { topic: catalog.rollouts })).toBe(inputs);

    const stored = await store.query<{ decision: string; reason: string; n: string }>(
      'SELECT decision, reason, count() AS n FROM samples FINAL WHERE pipeline_run = {run:String} GROUP BY decision, reason ORDER BY decision, reason',
      { run: prefix },
    );
    const counted = samples
      .filter((s) => s.name === 'flywheel_decisions_total' && s.value > 0)
      .map((s) => ({ decision: s.labels.decision!, reason: s.labels.reason!, n: s.value }))
      .sort((a, b) => a.decision.localeCompare(b.decision) || a.reason.localeCompare(b.reason));
    expect(counted).toEqual(stored.map((r) => ({ decision: r.decision, reason: r.reason, n: Number(r.n) })));
    expect(sum(samples, 'flywheel_decisions_total', { decision: 'accepted' })).toBe(expected.accepted.size);

    const deadByStage = await store.query<{ stage: string; n: string }>('SELECT stage, count() AS n FROM dead_letters FINAL WHERE pipeline_run = {run:String} GROUP BY stage', { run: prefix });
    for (const { stage, n } of deadByStage) expect(sum(samples, 'flywheel_dead_letters_total', { stage }), `dead letters of stage ${stage}`).toBe(Number(n));
    expect(sum(samples, 'flywheel_dead_letters_total')).toBe(expected.dead);
    expect(sum(samples, 'flywheel_clickhouse_sink_rows_total', { table: 'dead_letters' })).toBe(expected.dead);
    expect(sum(samples, 'flywheel_clickhouse_sink_inserts_total', { outcome: 'ok' })).toBeGreaterThan(0);
  });

  it('exposes every metric family the issue lists, with series for what this run did', async () => {
    const res = await get('metrics');
    expect(res.status).toBe(200);
    expect(res.type).toContain('text/plain');
    const { samples, families } = parseExposition(res.text);
    const required = [
      'flywheel_records_in_total',
      'flywheel_records_out_total',
      'flywheel_decisions_total',
      'flywheel_operator_duration_seconds',
      'flywheel_transaction_commit_seconds',
      'flywheel_transaction_aborts_total',
      'flywheel_transaction_retries_total',
      'kafka_consumergroup_lag',
      'flywheel_rebalances_total',
      'flywheel_state_store_entries',
      'flywheel_state_store_bytes',
      'flywheel_model_info',
      'flywheel_model_swaps_total',
      'flywheel_dead_letters_total',
      'flywheel_clickhouse_sink_rows_total',
      'flywheel_clickhouse_sink_inserts_total',
      'flywheel_clickhouse_sink_failures_total',
      'nodejs_eventloop_lag_seconds',
    ];
    expect(required.filter((f) => !families.has(f))).toEqual([]);
    // Series this run must have made (the example pipeline dedupes, so it has state).
    const series = (name: string) => samples.filter((s) => s.name === name);
    expect(sum(samples, 'flywheel_records_out_total')).toBeGreaterThanOrEqual(expected.decided);
    expect(sum(samples, 'flywheel_transaction_commit_seconds_count')).toBeGreaterThan(0);
    expect(new Set(series('flywheel_operator_duration_seconds_count').map((s) => s.labels.operator))).toEqual(new Set(config.operators.map((o) => o.type)));
    expect(sum(samples, 'flywheel_rebalances_total', { group: `${prefix}.${config.name}` })).toBeGreaterThanOrEqual(1);
    expect(series('kafka_consumergroup_lag').filter((s) => s.labels.group === `${prefix}.${config.name}`).map((s) => s.labels.partition).sort()).toEqual(['0', '1', '2']);
    // The ClickHouse sink's lag, under its own group, on every decisions partition it stored.
    const sinkLag = series('kafka_consumergroup_lag').filter((s) => s.labels.group === `${prefix}.${config.name}.clickhouse-sink` && s.labels.topic === catalog.decisions);
    expect(sinkLag.map((s) => s.labels.partition).sort()).toEqual(['0', '1', '2']);
    expect(series('flywheel_state_store_entries').filter((s) => s.value > 0).length).toBeGreaterThan(0);
    expect(series('flywheel_state_store_bytes').filter((s) => s.value > 0).length).toBeGreaterThan(0);
    expect(series('nodejs_eventloop_lag_seconds')[0]!.value).toBeGreaterThanOrEqual(0);
    // Every series carries the pipeline's name; no label carries a URL or a credential.
    expect(samples.every((s) => s.labels.pipeline === config.name)).toBe(true);
    expect(samples.filter((s) => Object.values(s.labels).some((v) => /:\/\/|password/i.test(v)))).toEqual([]);
  });
});

describe('the ops server itself', () => {
  it('routes exact paths before the longest prefix, answers 404 naming the routes, 405 to writes, 500 to a failing route', async () => {
    const server = await startOpsServer({
      host: '127.0.0.1',
      port: 0,
      routes: {
        ...opsRoutes({}),
        '/': (_req, res) => void res.end('root'),
        '/api/*': (_req, res, url) => void res.end(`api ${url.pathname}`),
        '/api/deep/*': (_req, res, url) => void res.end(`deep ${url.searchParams.get('q')}`),
        '/fails': () => Promise.reject(new Error('broken route')),
      },
    });
    try {
      const get = async (path: string, init?: RequestInit) => {
        const res = await fetch(new URL(path, server.url), init);
        return [res.status, await res.text()] as const;
      };
      expect(await get('/')).toEqual([200, 'root']);
      expect(await get('/api/x')).toEqual([200, 'api /api/x']);
      expect(await get('/api')).toEqual([200, 'api /api']);
      expect(await get('/api/deep/y?q=1')).toEqual([200, 'deep 1']);
      const [status, body] = await get('/nothing');
      expect(status).toBe(404);
      expect(JSON.parse(body).routes).toContain('/healthz');
      expect((await get('/healthz', { method: 'POST' }))[0]).toBe(405);
      expect(await get('/fails')).toEqual([500, JSON.stringify({ error: 'broken route' })]);
      const off = server.route('/late', (_req, res) => void res.end('late'));
      expect(await get('/late')).toEqual([200, 'late']);
      off();
      expect((await get('/late'))[0]).toBe(404);
    } finally {
      await server.close();
    }
  });

  it('refuses a port in use with an error naming the address and the settings', async () => {
    const first = await startOpsServer({ host: '127.0.0.1', port: 0 });
    try {
      await expect(startOpsServer({ host: '127.0.0.1', port: first.port })).rejects.toThrow(`cannot listen on 127.0.0.1:${first.port} (EADDRINUSE); set ops.http.port or FLYWHEEL_HTTP_PORT`);
    } finally {
      await first.close();
    }
  });

  it('takes FLYWHEEL_HTTP_HOST / FLYWHEEL_HTTP_PORT over the config; "off" or port null runs none', () => {
    const config = { host: '127.0.0.1', port: 9464 };
    expect(opsHttpSettings(config, {})).toEqual(config);
    expect(opsHttpSettings(config, { FLYWHEEL_HTTP_HOST: '0.0.0.0', FLYWHEEL_HTTP_PORT: '0' })).toEqual({ host: '0.0.0.0', port: 0 });
    expect(opsHttpSettings(config, { FLYWHEEL_HTTP_PORT: 'off' })).toBeUndefined();
    expect(opsHttpSettings({ host: '127.0.0.1', port: null }, {})).toBeUndefined();
    expect(() => opsHttpSettings(config, { FLYWHEEL_HTTP_PORT: '70000' })).toThrow('FLYWHEEL_HTTP_PORT=70000 is not a port');
    expect(loadConfig(EXAMPLE_CONFIG).ops.http).toEqual({ host: '127.0.0.1', port: 9464 });
  });
});

// The mapping from events to series, for the events a short run does not make (swaps, lost
// partitions). The run above checks the same families against a real worker's events.
describe('metrics and readiness from instrumentation events', () => {
  it('keeps one model version per operator, counts swaps and refusals, drops the series of partitions lost in a rebalance', async () => {
    const events = new Instrumentation();
    const metrics = pipelineMetrics(events, { defaultMetrics: false });
    const tp = (partition: number) => ({ topic: 'in', partition });
    events.emit('model.loaded', { operator: 'onnx-score', version: 'v1' });
    events.emit('model.swap', { operator: 'onnx-score', from: 'v1', to: 'v2' });
    events.emit('model.swap', { operator: 'onnx-score', from: 'v2', to: 'v3', refused: 'layout differs' });
    events.emit('group.rebalance', { groupId: 'g', memberId: 'm', generationId: 1, partitions: [tp(0), tp(1)] });
    for (const p of [0, 1]) {
      events.emit('consumer.lag', { ...tp(p), groupId: 'g', lag: 5 });
      events.emit('state.size', { ...tp(p), store: 'exact-dedupe', entries: 3, bytes: 300 });
    }
    events.emit('group.rebalance', { groupId: 'g', memberId: 'm', generationId: 2, partitions: [tp(1)] });
    const { samples } = parseExposition(await metrics.scrape());
    const pick = (name: string) => samples.filter((s) => s.name === name).map((s) => ({ ...s.labels, value: s.value }));
    expect(pick('flywheel_model_info')).toEqual([{ operator: 'onnx-score', version: 'v2', value: 1 }]);
    expect(pick('flywheel_model_swaps_total')).toEqual([
      { operator: 'onnx-score', outcome: 'swapped', value: 1 },
      { operator: 'onnx-score', outcome: 'refused', value: 1 },
    ]);
    expect(pick('kafka_consumergroup_lag')).toEqual([{ group: 'g', topic: 'in', partition: '1', value: 5 }]);
    expect(pick('flywheel_state_store_entries')).toEqual([{ store: 'exact-dedupe', topic: 'in', partition: '1', value: 3 }]);
    expect(pick('flywheel_rebalances_total')).toEqual([{ group: 'g', value: 2 }]);
    metrics.detach();
  });

  it('is ready once partitions are assigned, none is restoring and the store answers', async () => {
    const events = new Instrumentation();
    let storeUp = false;
    const readiness = trackReadiness(events, { groupId: 'g', ping: async () => (storeUp ? 1 : Promise.reject(new Error('connect ECONNREFUSED http://user:secret@host'))) });
    expect((await readiness.check()).missing).toEqual(['no partitions assigned yet', 'ClickHouse store unreachable: connect ECONNREFUSED http://***@host']);
    events.emit('group.rebalance', { groupId: 'other', memberId: 'm', generationId: 1, partitions: [{ topic: 'in', partition: 0 }] });
    events.emit('group.rebalance', { groupId: 'g', memberId: 'm', generationId: 1, partitions: [{ topic: 'in', partition: 0 }, { topic: 'in', partition: 1 }] });
    events.emit('state.restoring', { topic: 'in', partition: 1, stores: 1 });
    storeUp = true;
    expect(await readiness.check()).toMatchObject({ ready: false, missing: ['state of in:1 still restoring'], partitions: { ok: true, assigned: ['in:0', 'in:1'] } });
    events.emit('state.restored', { topic: 'in', partition: 1, stores: 1, records: 10, durationMs: 5 });
    expect(await readiness.check()).toMatchObject({ ready: true, missing: [], state: { restored: ['in:1'] } });
    events.emit('group.rebalance', { groupId: 'g', memberId: 'm', generationId: 2, partitions: [] });
    expect((await readiness.check()).missing).toEqual(['the consumer group assigned this worker no partitions']);
    readiness.detach();
  });
});

describe('serveMetrics (a trainer process)', () => {
  it('serves the trainer.progress gauges from its events, and nothing without HTTP settings', async () => {
    const events = new Instrumentation();
    expect(await serveMetrics(events, opsHttpSettings({ host: '127.0.0.1', port: null }, {}), { trainer: 't' })).toBeUndefined();
    const server = (await serveMetrics(events, opsHttpSettings({ host: '127.0.0.1', port: null }, { FLYWHEEL_HTTP_PORT: '0' }), { trainer: 't' }))!;
    try {
      events.emit('trainer.progress', { trainer: 't', modelVersion: 'v3', step: 7, examples: 700, loss: 0.25 });
      const { samples } = parseExposition(await (await fetch(new URL('metrics', server.url))).text());
      expect(samples.filter((s) => s.name.startsWith('flywheel_trainer_')).map((s) => [s.name, s.value])).toEqual([
        ['flywheel_trainer_step', 7],
        ['flywheel_trainer_examples', 700],
        ['flywheel_trainer_loss', 0.25],
      ]);
      expect((await fetch(new URL('readyz', server.url))).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});

describe('model metrics of a worker with an ONNX scorer (in-process, embedded store)', () => {
  const prefix = uniquePrefix('metrics-model');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-metrics-model-'));
  const features = { ...featureDefaults, dims: 64, rewardNames: ['correct'] };
  const v1 = writeScorer(dir, features, 'v1', { 'reward:correct': 4 }, 1);
  const v2 = writeScorer(dir, features, 'v2', { 'reward:correct': 4 }, -2);
  const events = new Instrumentation();
  const metrics = pipelineMetrics(events, { defaultMetrics: false });
  let pipeline: RunningPipeline | undefined;

  afterAll(async () => {
    await pipeline?.stop();
    metrics.detach();
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows the version loaded at start, then the announced one, counting the swap and a refused announcement', async () => {
    const config = parseConfig({
      name: 'metrics-model',
      run: prefix,
      topics: { prefix, partitions: 1 },
      features,
      operators: [{ type: 'validate' }, { type: 'onnx-score', model: { name: 'scorer', path: v1 } }],
      clickhouse: { path: join(dir, 'clickhouse') },
    });
    pipeline = await startPipeline(config, connections, { events });
    const series = async (name: string) => (await metrics.scrape()).split('\n').filter((l) => l.startsWith(`${name}{`));
    expect(await series('flywheel_model_info')).toEqual(['flywheel_model_info{operator="model",version="v1"} 1']);

    const updates = await modelUpdateSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.modelUpdates);
    const announce = async (version: string, artifact: string, checksum: string) => {
      const producer = testKafka('metrics-model').producer();
      await producer.connect();
      await producer.send({ topic: pipeline!.catalog.modelUpdates, messages: [{ key: 'scorer', value: await updates.serialize({ model: 'scorer', version, artifact, checksum, metrics: {}, at: Date.now() }) }] });
      await producer.disconnect();
    };
    await announce('v2', v2, createHash('sha256').update(readFileSync(v2)).digest('hex'));
    await waitUntil(async () => (await series('flywheel_model_info')).join() === 'flywheel_model_info{operator="model",version="v2"} 1', 'model info to show v2');
    await announce('v3', v2, 'not-the-checksum');
    await waitUntil(async () => (await series('flywheel_model_swaps_total')).some((l) => l.includes('outcome="refused"')), 'the refused announcement to count');
    expect((await series('flywheel_model_swaps_total')).sort()).toEqual([
      'flywheel_model_swaps_total{operator="model",outcome="refused"} 1',
      'flywheel_model_swaps_total{operator="model",outcome="swapped"} 1',
    ]);
    expect(await series('flywheel_model_info')).toEqual(['flywheel_model_info{operator="model",version="v2"} 1']);
  });
});

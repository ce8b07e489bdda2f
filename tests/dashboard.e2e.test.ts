// The dashboard in a real browser: Debian's chromium (installed by deploy/debian-packages.sh when
// missing) driven by playwright-core, which never downloads a browser of its own. A real pipeline
// curates a small synthetic input; the page is opened while it runs, and once everything is
// stored the figures it shows must equal what ClickHouse counts.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { VIEWS } from '../analytics/views.ts';
import { Instrumentation } from '../contracts/events.ts';
import { TRAINER_PROGRESS_TABLE } from '../contracts/trainer-progress.ts';
import { pipelineMetrics } from '../ops/metrics.ts';
import { DEAD_LETTERS_TABLE, SAMPLES_TABLE } from '../sinks/clickhouse/schema.ts';
import { mountDashboard } from '../ops/dashboard.ts';
import { startOpsServer, type OpsServer } from '../ops/server.ts';
import { EXAMPLE_CONFIG, loadConfig, withOverrides } from '../pipeline/config.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import { LazyStore, openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { publishProgress } from '../trainers/progress.ts';
import { registryClient, rolloutSerde } from '../streams/serde.ts';
import { expectedOutcome } from './helpers/expected.ts';
import { connections, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';

const execFileAsync = promisify(execFile);
const CHROMIUM = '/usr/bin/chromium';
const OUTPUT = join(process.cwd(), '.flywheel', 'test-output');
const serverUrl = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;

/** deploy/grafana/flywheel.json: its panels' queries, by data source. */
interface GrafanaTarget { datasource: { type: string }; rawSql?: string; expr?: string; refId: string }
interface GrafanaPanel { id: number; type: string; title: string; gridPos: { x: number; y: number; w: number; h: number }; targets?: GrafanaTarget[] }
const grafana = JSON.parse(readFileSync('deploy/grafana/flywheel.json', 'utf8')) as {
  uid: string;
  panels: GrafanaPanel[];
  templating: { list: { name: string; type: string; datasource?: { type: string }; query: unknown }[] };
};
const grafanaTargets = grafana.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, ...t })));
/** The ClickHouse SQL of the dashboard: every panel's, and the `run` variable's. */
const grafanaSql = [
  ...grafanaTargets.filter((t) => t.datasource.type === 'grafana-clickhouse-datasource').map((t) => ({ panel: t.panel, sql: t.rawSql! })),
  ...grafana.templating.list.filter((v) => v.type === 'query' && v.datasource?.type === 'grafana-clickhouse-datasource').map((v) => ({ panel: `$${v.name}`, sql: String(v.query) })),
];
/** The SQL as the ClickHouse data source would send it for `run`, over all time. */
const expandMacros = (sql: string, run: string) =>
  sql.replaceAll('${run}', run).replace(/\$__timeFilter\((\w+)\)/g, '$1 >= toDateTime(0) AND $1 <= toDateTime(4102444800)');

/** The ClickHouse server when the tests have one (its own database), else an embedded store. */
async function openTestStore(): Promise<{ store: ClickHouseStore; cleanup: () => Promise<void> }> {
  if (serverUrl) {
    const database = `dashboard_${Date.now()}`;
    const store = await openStore({ url: serverUrl, database });
    return { store, cleanup: async () => (await store.command(`DROP DATABASE IF EXISTS ${database}`), await store.close()) };
  }
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-dashboard-'));
  const store = await openStore({ path: join(dir, 'clickhouse') });
  return { store, cleanup: async () => (await store.close(), rmSync(dir, { recursive: true, force: true })) };
}

describe('dashboard in headless Chromium', () => {
  const prefix = uniquePrefix('dashboard');
  const data = syntheticRollouts({ groups: 40, runId: prefix, garbage: 3 });
  const expected = expectedOutcome(data);
  const kafka = testKafka('dashboard');
  let store: ClickHouseStore;
  let cleanup: () => Promise<void>;
  let pipeline: RunningPipeline;
  let server: OpsServer;
  let browser: Browser;
  let page: Page;
  const snapshotsSeen = new Set<string>();
  const TRAINER_LOSSES = [0.9, 0.6, 0.45];

  beforeAll(async () => {
    // Cached: a no-op once chromium is installed (~30 s cold on CI, as root).
    if (!existsSync(CHROMIUM)) await execFileAsync('bash', ['deploy/debian-packages.sh', 'chromium']);
    ({ store, cleanup } = await openTestStore());
    const config = withOverrides(loadConfig(EXAMPLE_CONFIG), { name: 'dashboard', run: prefix, topics: { prefix, partitions: 3 } });
    // The worker's bus, as `flywheel run` passes it.
    const events = new Instrumentation();
    pipeline = await startPipeline(config, connections, { store, events });
    // As `flywheel run` does it: the ops server runs first, the dashboard joins once the store is open.
    server = await startOpsServer({ host: '127.0.0.1', port: 0 });
    mountDashboard(server, { store, run: prefix, events, refreshMs: 500, pollMs: 500 });
    // No sandbox: CI runs as root, where chromium refuses to start with one.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('console', (m) => void (m.type() === 'error' && console.error(`page: ${m.text()}`)));
    // Open the page first, then produce: it is live while the run goes on.
    await page.goto(server.url);
    await page.waitForFunction(() => document.body.dataset.updated !== undefined);
    snapshotsSeen.add((await page.getAttribute('body', 'data-updated'))!);
    const serde = await rolloutSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.rollouts);
    await produceRollouts(kafka, serde, data.rollouts, { raw: data.garbage });
    // Progress reports as a trainer publishes them; the pipeline's sink stores them.
    const producer = kafka.producer();
    await producer.connect();
    try {
      for (const [i, loss] of TRAINER_LOSSES.entries()) {
        await publishProgress(producer, pipeline.catalog.trainerProgress, {
          trainer: `${prefix}-trainer`, model_version: 'v2', step: i + 1, examples: 32 * (i + 1), loss,
          metric_names: [], metric_values: [], committed_topic: pipeline.catalog.accepted, committed_partitions: [], committed_offsets: [], at: Date.now() + i * 1000,
        });
      }
    } finally {
      await producer.disconnect();
    }
  }, 600_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await pipeline?.stop();
    await cleanup?.();
  });

  it('shows the counts ClickHouse holds, updating live', async () => {
    const counts = async () => {
      const [samples] = await store.query<{ decided: number; accepted: number; rejected: number }>(
        `SELECT count() AS decided, countIf(decision = 'accepted') AS accepted, countIf(decision = 'rejected') AS rejected FROM samples WHERE pipeline_run = {run:String}`,
        { run: prefix },
      );
      const [dead] = await store.query<{ n: number }>(`SELECT count() AS n FROM dead_letters WHERE pipeline_run = {run:String}`, { run: prefix });
      return { ...samples!, dead: dead!.n };
    };
    let truth = await counts();
    await waitUntil(
      async () => ((truth = await counts()), truth.decided >= expected.decided && truth.dead >= expected.dead),
      () => `ClickHouse to hold every decision and dead letter (${JSON.stringify(truth)})`,
    );
    const reasons = await store.query<{ reason: string; n: number }>(
      `SELECT reason, count() AS n FROM samples WHERE pipeline_run = {run:String} AND decision = 'rejected' GROUP BY reason ORDER BY reason`,
      { run: prefix },
    );
    const stages = await store.query<{ stage: string; n: number }>(
      `SELECT stage, count() AS n FROM dead_letters WHERE pipeline_run = {run:String} GROUP BY stage ORDER BY stage`,
      { run: prefix },
    );
    // The run is the expected one, so the comparison below is not between two empty pages.
    expect(truth).toEqual({ decided: expected.decided, accepted: expected.accepted.size, rejected: expected.decided - expected.accepted.size, dead: expected.dead });

    // The page polls; wait for a snapshot with everything stored.
    await page.waitForFunction(
      ([decided, deadLetters]) =>
        document.getElementById('decided')?.dataset.value === String(decided) && document.getElementById('dead-letters')?.dataset.value === String(deadLetters),
      [truth.decided, truth.dead],
      { timeout: 60_000, polling: 200 },
    );
    snapshotsSeen.add((await page.getAttribute('body', 'data-updated'))!);
    const shown = await page.evaluate(() => {
      const figure = (id: string) => {
        const el = document.getElementById(id)!;
        return { value: el.dataset.value, text: el.textContent };
      };
      const table = (id: string, key: string) =>
        [...document.querySelectorAll<HTMLTableRowElement>(`#${id} tbody tr`)].map((tr) => ({ key: tr.dataset[key], count: Number(tr.dataset.count), text: tr.textContent }));
      return {
        run: document.getElementById('run')!.textContent,
        decided: figure('decided'),
        accepted: figure('accepted'),
        rejected: figure('rejected'),
        deadLetters: figure('dead-letters'),
        acceptRate: figure('accept-rate'),
        reasons: table('rejected-by-reason', 'reason'),
        stages: table('dead-letters-by-stage', 'stage'),
      };
    });
    const asText = (n: number) => n.toLocaleString('en-US');
    expect(shown.run).toBe(prefix);
    expect(shown.decided).toEqual({ value: String(truth.decided), text: asText(truth.decided) });
    expect(shown.accepted).toEqual({ value: String(truth.accepted), text: asText(truth.accepted) });
    expect(shown.rejected).toEqual({ value: String(truth.rejected), text: asText(truth.rejected) });
    expect(shown.deadLetters).toEqual({ value: String(truth.dead), text: asText(truth.dead) });
    expect(Number(shown.acceptRate.value)).toBeCloseTo(truth.accepted / truth.decided, 12);
    expect(shown.reasons.map((r) => ({ reason: r.key, n: r.count })).sort((a, b) => a.reason!.localeCompare(b.reason!))).toEqual(reasons);
    for (const r of shown.reasons) expect(r.text).toBe(`${r.key}${asText(r.count)}`);
    expect(shown.stages.map((s) => ({ stage: s.key, n: s.count })).sort((a, b) => a.stage!.localeCompare(b.stage!))).toEqual(stages);
    // Opened before the input was produced, the page has since shown later snapshots, and its
    // live curve saw records arrive.
    expect(snapshotsSeen.size).toBeGreaterThan(1);
    const throughput = await page.evaluate(() => {
      const canvas = document.getElementById('chart-throughput') as HTMLCanvasElement;
      const chart = (window as unknown as { Chart: { getChart(c: HTMLCanvasElement): { data: { datasets: { label: string; data: (number | null)[] }[] } } | undefined } }).Chart.getChart(canvas);
      return chart!.data.datasets.map((d) => ({ label: d.label, max: Math.max(0, ...d.data.map((v) => v ?? 0)) }));
    });
    expect(throughput.find((d) => d.label === 'stored / s')!.max).toBeGreaterThan(0);
  });

  it('draws its charts with Chart.js and saves a screenshot', async () => {
    await page.waitForFunction(() => document.querySelector('#chart-hourly')?.parentElement?.dataset.empty === 'false');
    const charts = await page.evaluate(() =>
      ['chart-hourly', 'chart-reasons', 'chart-scores', 'chart-models'].map((id) => {
        const canvas = document.getElementById(id) as HTMLCanvasElement;
        const { width, height } = canvas.getBoundingClientRect();
        const pixels = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i]! > 0) painted += 1;
        // Chart.js keeps the instance it drew on the canvas.
        const chart = (window as unknown as { Chart: { getChart(c: HTMLCanvasElement): { data: { datasets: { data: unknown[] }[] } } | undefined } }).Chart.getChart(canvas);
        return { id, width, height, painted, points: chart?.data.datasets.reduce((a, d) => a + d.data.length, 0) ?? -1 };
      }),
    );
    for (const c of charts) {
      expect(c.width, c.id).toBeGreaterThan(100);
      expect(c.height, c.id).toBeGreaterThan(100);
      expect(c.points, c.id).toBeGreaterThan(0);
      expect(c.painted, c.id).toBeGreaterThan(1000);
    }
    mkdirSync(OUTPUT, { recursive: true });
    const file = join(OUTPUT, 'dashboard.png');
    const png = await page.screenshot({ path: file, fullPage: true });
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(existsSync(file)).toBe(true);
  });

  it("shows a trainer's progress as trainer_status holds it", async () => {
    const trainer = `${prefix}-trainer`;
    await waitUntil(
      async () => (await store.query(`SELECT 1 FROM trainer_status WHERE trainer = {t:String} AND last_step = {n:UInt32}`, { t: trainer, n: TRAINER_LOSSES.length })).length === 1,
      'the sink to store every progress report',
    );
    const [status] = await store.query<{ last_step: number; examples_total: number; last_loss: number }>(
      `SELECT last_step, examples_total, last_loss FROM trainer_status WHERE trainer = {t:String}`,
      { t: trainer },
    );
    await page.waitForFunction(
      ([t, step]) => document.querySelector(`#trainers tr[data-trainer="${t}"]`)?.getAttribute('data-step') === String(step),
      [trainer, status!.last_step] as const,
      { timeout: 60_000, polling: 200 },
    );
    const cells = await page.$$eval(`#trainers tr[data-trainer="${trainer}"] td`, (tds) => tds.map((td) => td.textContent));
    expect(cells.slice(0, 5)).toEqual([trainer, 'v2', String(status!.last_step), String(status!.examples_total), String(status!.last_loss)]);
    const curve = await page.evaluate((label) => {
      const canvas = document.getElementById('chart-trainer-loss') as HTMLCanvasElement;
      const chart = (window as unknown as { Chart: { getChart(c: HTMLCanvasElement): { data: { datasets: { label: string; data: (number | null)[] }[] } } | undefined } }).Chart.getChart(canvas);
      return chart!.data.datasets.find((d) => d.label === label)?.data.filter((v) => v !== null);
    }, `${trainer} · v2`);
    expect(curve).toEqual(TRAINER_LOSSES);
  });

  it('says so when ClickHouse cannot answer, instead of showing figures', async () => {
    // A store (opened on first use, as a worker's is) at a port nothing listens on: every query
    // fails as in a real outage.
    const down = new LazyStore({ url: 'http://127.0.0.1:9' });
    const other = await startOpsServer({ host: '127.0.0.1', port: 0 });
    mountDashboard(other, { store: down, run: prefix, pollMs: 500 });
    const tab = await browser.newPage();
    try {
      const res = await fetch(new URL('api/dashboard', other.url));
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: string }).error).toMatch(/127\.0\.0\.1:9|ECONNREFUSED/);
      await tab.goto(other.url);
      await tab.waitForFunction(() => document.body.dataset.state === 'error');
      expect(await tab.textContent('#error')).toMatch(/^cannot read the figures: /);
      expect(await tab.getAttribute('#decided', 'data-value')).toBe('');
    } finally {
      await tab.close();
      await other.close();
      await down.close();
    }
  });

  it("runs every ClickHouse query of the Grafana dashboard against the run's views", async () => {
    for (const { panel, sql } of grafanaSql) {
      const rows = await store.query<Record<string, unknown>>(expandMacros(sql, prefix)).catch((err: Error) => {
        throw new Error(`Grafana panel ${panel}: ${err.message}`);
      });
      expect(Array.isArray(rows), panel).toBe(true);
    }
    const decided = grafanaSql.find((q) => q.panel === 'Decided')!;
    expect(await store.query(expandMacros(decided.sql, prefix))).toEqual([{ decided: expected.decided }]);
    const runs = grafanaSql.find((q) => q.panel === '$run')!;
    expect((await store.query<{ pipeline_run: string }>(runs.sql)).map((r) => r.pipeline_run)).toContain(prefix);
  });
});

describe('Grafana dashboard deploy/grafana/flywheel.json', () => {
  it('is a dashboard of unique panels on the 24-column grid, each with queries', () => {
    expect(grafana.uid).toBe('flywheel');
    expect(new Set(grafana.panels.map((p) => p.id)).size).toBe(grafana.panels.length);
    for (const p of grafana.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type !== 'row') expect(p.targets?.length, p.title).toBeGreaterThan(0);
    }
    for (const t of grafanaTargets) expect(['grafana-clickhouse-datasource', 'prometheus'], t.panel).toContain(t.datasource.type);
  });

  it('reads only the views of analytics/views.ts and the tables they are built on', () => {
    const known = new Set([...VIEWS.map((v) => v.name), SAMPLES_TABLE, DEAD_LETTERS_TABLE, TRAINER_PROGRESS_TABLE]);
    const used = new Set(grafanaSql.flatMap(({ sql }) => [...sql.matchAll(/\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)/gi)].map((m) => m[1]!)));
    expect([...used].filter((name) => !known.has(name))).toEqual([]);
    // The figures the issue asks for, each from its view.
    for (const view of ['acceptance_hourly', 'rejection_reasons', 'score_distribution', 'duplicate_rates_hourly', 'qd_coverage', 'exploration', 'exploitation', 'error_compensation', 'trainer_status']) {
      expect(used, view).toContain(view);
    }
  });

  it('asks Prometheus only for metric families the workers export (ops/metrics.ts)', async () => {
    const metrics = pipelineMetrics(new Instrumentation(), { labels: { pipeline: 'grafana' } });
    try {
      const families = await metrics.registry.getMetricsAsJSON();
      const exported = new Set(families.flatMap((f) => (String(f.type) === 'histogram' ? [`${f.name}_bucket`, `${f.name}_sum`, `${f.name}_count`] : [f.name])));
      const exprs = [
        ...grafanaTargets.filter((t) => t.datasource.type === 'prometheus').map((t) => t.expr!),
        ...grafana.templating.list.filter((v) => v.datasource?.type === 'prometheus').map((v) => JSON.stringify(v.query)),
      ];
      const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\b(?:flywheel|kafka|nodejs|process)_[a-z0-9_]+/g)].map((m) => m[0])));
      expect(used.size).toBeGreaterThan(10);
      expect([...used].filter((name) => !exported.has(name))).toEqual([]);
      for (const e of exprs) if (!e.includes('label_values')) expect(e, 'scoped to the chosen pipelines').toContain('pipeline=~"$pipeline"');
    } finally {
      metrics.detach();
    }
  });
});

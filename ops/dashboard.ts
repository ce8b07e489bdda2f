// The worker's dashboard: a page (ops/dashboard/: HTML, CSS, JS, no build step; charts with
// Chart.js, served from node_modules) and the JSON it polls, `/api/dashboard`. The figures come
// from the ClickHouse views (analytics/views.ts), so they are the stored truth of the run, shared
// by every worker writing it; the live curves (throughput, lag) come from the snapshots this
// process takes and, when the worker's instrumentation events are given, from those events.
//
// One snapshot is computed at most every `refreshMs` however many pages poll (concurrent requests
// share the query in flight), so an open tab never becomes a load on ClickHouse.

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServerResponse } from 'node:http';
import { DEFAULT_VIEW_OPTIONS, type ViewOptions } from '../analytics/views.ts';
import type { Instrumentation } from '../contracts/events.ts';
import { TRAINER_PROGRESS_TABLE } from '../contracts/trainer-progress.ts';
import { DEAD_LETTERS_TABLE } from '../sinks/clickhouse/schema.ts';
import type { ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { readOnly, type OpsServer, type Routes } from './server.ts';

export interface DashboardOptions {
  /** Where the run's samples, dead letters, views and trainer progress are. */
  store: ClickHouseStore;
  /** The pipeline run to show (`pipeline_run`); default: the run that stored the latest sample. */
  run?: string;
  /** The views' verified reward and k (viewOptionsFrom(config.operators)); default the views' defaults. */
  viewOptions?: ViewOptions;
  /** This worker's events: live lag, processed records, sink inserts, model swaps, trainer steps. */
  events?: Instrumentation;
  /** A snapshot is recomputed at most this often (ms); default 2000. */
  refreshMs?: number;
  /** Snapshots kept for the live curves; default 300 (10 minutes at the page's 2 s polls). */
  historySize?: number;
  /** How often the page polls (ms), told to it in the JSON; default 2000. */
  pollMs?: number;
}

export interface Headline {
  /** Decided samples stored (accepted + rejected). */
  decided: number;
  accepted: number;
  rejected: number;
  /** accepted / decided; null before the first sample. */
  acceptRate: number | null;
  deadLetters: number;
  /** Rejected samples by deciding (first) reason, most frequent first. */
  rejectedByReason: { reason: string; count: number }[];
  /** Dead letters by stage (decode, validate, …). */
  deadLettersByStage: { stage: string; count: number }[];
}

/** One point of the live curves (rates over the interval since the previous point; null for the first). */
export interface LivePoint {
  /** Epoch ms. */
  t: number;
  /** Records (decisions and dead letters) stored in ClickHouse per second, by every worker of the run. */
  storedPerSecond: number | null;
  /** Records this worker committed per second (events; null without them). */
  processedPerSecond: number | null;
  /** Consumer lag summed over this worker's partitions (events; null without them). */
  consumerLag: number | null;
  /** Records this worker committed that its ClickHouse sink has not stored yet (events). */
  sinkBacklog: number | null;
}

/** What `/api/dashboard` answers. */
export interface DashboardData {
  run: string | null;
  /** When the snapshot was taken (ISO). */
  at: string;
  pollMs: number;
  passAtK: number;
  headline: Headline;
  live: LivePoint[];
  /** acceptance_hourly summed per hour the decisions were stored. */
  hourly: { hour: string; accepted: number; rejected: number }[];
  /** rejection_reasons: every reason, how often it was among a sample's reasons and the deciding one. */
  reasons: { reason: string; samples: number; deciding: number; share: number }[];
  /** score_distribution. */
  scores: { name: string; samples: number; mean: number | null; min: number; p10: number; p50: number; p90: number; max: number; acceptedMean: number | null }[];
  /** duplicate_rates (methods with duplicates). */
  duplicates: { method: string; duplicates: number; samples: number; rate: number }[];
  /** qd_coverage and qd_cells. */
  qd: { coverage: { cellsSeen: number; cellsFilled: number; samples: number; elites: number; elitesPerCell: number | null } | null; cells: { cell: string; samples: number; elites: number; accepted: number }[] };
  /** exploration and exploitation per model version. */
  exploration: { modelVersion: string; groups: number; labelled: number; meanDistinctCorrect: number | null; passAt1: number | null; passAtK: number | null }[];
  exploitation: { modelVersion: string; score: string; labelled: number; auc: number | null; meanGap: number | null }[];
  /** error_compensation: the error memory's effect per model version and compensated score. */
  errorMemory: { modelVersion: string; score: string; samples: number; corrected: number; maeRaw: number | null; maeCompensated: number | null; maeReduction: number | null }[];
  /** Samples and acceptance per model version (acceptance_hourly), and the swaps this worker saw. */
  models: { modelVersion: string; samples: number; accepted: number }[];
  swaps: { at: string; operator: string; from: string | null; to: string; refused: string | null }[];
  /** trainer_status, and the loss per step from trainer_progress. */
  trainers: { trainer: string; modelVersion: string; lastStep: number; examples: number; lastLoss: number; bestLoss: number; examplesPerSecond: number | null; lastAt: string }[];
  trainerLoss: { trainer: string; modelVersion: string; points: { step: number; loss: number }[] }[];
}

const HERE = dirname(fileURLToPath(import.meta.url));
const ASSETS = join(HERE, 'dashboard');
// chart.js exports no path to its UMD bundle; it sits next to the CommonJS entry in dist/.
const CHART_JS = join(dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.min.js');

const STATIC: Record<string, { file: string; type: string }> = {
  '/': { file: join(ASSETS, 'index.html'), type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { file: join(ASSETS, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/dashboard/app.css': { file: join(ASSETS, 'app.css'), type: 'text/css; charset=utf-8' },
  '/dashboard/chart.umd.min.js': { file: CHART_JS, type: 'text/javascript; charset=utf-8' },
};

/**
 * The dashboard's routes, to mount on the worker's ops server: `/` (the page), its assets under
 * `/dashboard/`, and `/api/dashboard` (a {@link DashboardData} snapshot, 503 with the error when
 * ClickHouse cannot answer). Listeners on `events` stay as long as that bus lives.
 *
 *   startOpsServer({ host: '127.0.0.1', port: 9464, routes: { ...opsRoutes({ metrics, readiness }), ...dashboardRoutes({ store, run: 'live', events }) } })
 */
export function dashboardRoutes(options: DashboardOptions): Routes {
  const snapshots = dashboardSnapshots(options);
  const routes: Routes = {
    '/api/dashboard': readOnly(async (_req, res) => {
      try {
        send(res, 200, 'application/json; charset=utf-8', JSON.stringify(await snapshots.current()));
      } catch (err) {
        send(res, 503, 'application/json; charset=utf-8', JSON.stringify({ error: (err as Error).message }));
      }
    }),
  };
  for (const [path, asset] of Object.entries(STATIC)) {
    routes[path] = readOnly(async (_req, res) => send(res, 200, asset.type, await readFile(asset.file)));
  }
  return routes;
}

/**
 * Adds the dashboard's routes to a running ops server (a worker opens its store after the server
 * started); returns the function that removes them again.
 *
 *   const unmount = mountDashboard(ops, { store: pipeline.store, run: config.run, events, viewOptions: viewOptionsFrom(config.operators) });
 */
export function mountDashboard(server: Pick<OpsServer, 'route'>, options: DashboardOptions): () => void {
  const removers = Object.entries(dashboardRoutes(options)).map(([path, route]) => server.route(path, route));
  return () => removers.forEach((remove) => remove());
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(body);
}

/** Live counters from the worker's events, read at each snapshot. */
class LiveCounters {
  processed = 0;
  stored = 0;
  readonly lag = new Map<string, number>();
  readonly swaps: DashboardData['swaps'] = [];

  constructor(events: Instrumentation) {
    events.on('batch.commit', (e) => void (this.processed += e.payload.records));
    events.on('consumer.lag', (e) => void this.lag.set(`${e.payload.topic}\u0000${e.payload.partition}`, e.payload.lag));
    events.on('sink.insert', (e) => {
      if (e.payload.ok && (e.payload.table === 'samples' || e.payload.table === DEAD_LETTERS_TABLE)) this.stored += e.payload.rows;
    });
    events.on('model.swap', (e) => {
      const { operator, from, to, refused } = e.payload;
      this.swaps.push({ at: new Date(e.timestamp).toISOString(), operator, from, to, refused: refused ?? null });
      if (this.swaps.length > 100) this.swaps.shift();
    });
  }

  lagSum(): number | null {
    return this.lag.size === 0 ? null : [...this.lag.values()].reduce((a, b) => a + b, 0);
  }
}

/** Snapshots of the dashboard's figures, at most one per `refreshMs`, with the live history. */
export function dashboardSnapshots(options: DashboardOptions): { current(): Promise<DashboardData> } {
  const refreshMs = options.refreshMs ?? 2000;
  const historySize = options.historySize ?? 300;
  const live = options.events ? new LiveCounters(options.events) : undefined;
  const history: LivePoint[] = [];
  let previous: { t: number; stored: number; processed: number } | undefined;
  let last: { t: number; data: DashboardData } | undefined;
  let inFlight: Promise<DashboardData> | undefined;

  const take = async (): Promise<DashboardData> => {
    const data = await readFigures(options.store, options.run, options.viewOptions ?? DEFAULT_VIEW_OPTIONS);
    const t = Date.now();
    const stored = data.headline.decided + data.headline.deadLetters;
    const processed = live?.processed ?? 0;
    const seconds = previous ? (t - previous.t) / 1000 : 0;
    history.push({
      t,
      storedPerSecond: previous && seconds > 0 ? Math.max(0, stored - previous.stored) / seconds : null,
      processedPerSecond: live && previous && seconds > 0 ? (processed - previous.processed) / seconds : null,
      consumerLag: live?.lagSum() ?? null,
      sinkBacklog: live ? Math.max(0, live.processed - live.stored) : null,
    });
    if (history.length > historySize) history.shift();
    previous = { t, stored, processed };
    const full: DashboardData = { ...data, at: new Date(t).toISOString(), pollMs: options.pollMs ?? 2000, live: [...history], swaps: [...(live?.swaps ?? [])] };
    last = { t, data: full };
    return full;
  };

  return {
    current() {
      if (last && Date.now() - last.t < refreshMs) return Promise.resolve(last.data);
      inFlight ??= take().finally(() => (inFlight = undefined));
      return inFlight;
    },
  };
}

type Figures = Omit<DashboardData, 'at' | 'pollMs' | 'live' | 'swaps'>;

const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : Number(v ?? 0));
/** A float that may be NULL (or nan, which JSON cannot carry). */
const opt = (v: unknown): number | null => (v === null || v === undefined || !Number.isFinite(Number(v)) ? null : Number(v));

/** One pass over the views for `run` (the latest run when undefined). */
async function readFigures(store: ClickHouseStore, run: string | undefined, viewOptions: ViewOptions): Promise<Figures> {
  const k = viewOptions.passAtK;
  run ??= (await store.query<{ run: string }>(`SELECT argMax(pipeline_run, inserted_at) AS run FROM samples`))[0]?.run || undefined;
  const p = { run: run ?? '' };
  const q = <T>(sql: string) => store.query<T>(sql, p);
  const [totals, byReason, deadByStage, hourly, reasons, scores, duplicates, coverage, cells, exploration, exploitation, errorMemory, models, trainers, loss] =
    await Promise.all([
      q<{ decided: number; accepted: number; rejected: number }>(
        `SELECT sum(samples) AS decided, sum(accepted) AS accepted, sum(rejected) AS rejected FROM acceptance_hourly WHERE pipeline_run = {run:String}`,
      ),
      q<{ reason: string; count: number }>(
        `SELECT rejection_reason AS reason, deciding AS count FROM rejection_reasons WHERE pipeline_run = {run:String} AND deciding > 0 ORDER BY count DESC, reason`,
      ),
      q<{ stage: string; count: number }>(
        `SELECT stage, count() AS count FROM ${DEAD_LETTERS_TABLE} WHERE pipeline_run = {run:String} GROUP BY stage ORDER BY count DESC, stage`,
      ),
      q<{ hour: string; accepted: number; rejected: number }>(
        `SELECT toString(inserted_hour) AS hour, sum(accepted) AS accepted, sum(rejected) AS rejected FROM acceptance_hourly WHERE pipeline_run = {run:String} GROUP BY hour ORDER BY hour`,
      ),
      q<{ reason: string; samples: number; deciding: number; share: number }>(
        `SELECT rejection_reason AS reason, samples, deciding, share FROM rejection_reasons WHERE pipeline_run = {run:String} ORDER BY samples DESC, reason`,
      ),
      q<Record<string, unknown>>(
        `SELECT score_name, samples, mean, min_value, p10, p50, p90, max_value, accepted_mean FROM score_distribution WHERE pipeline_run = {run:String} ORDER BY score_name`,
      ),
      q<{ method: string; duplicates: number; samples: number; rate: number }>(
        `SELECT dedupe_method AS method, duplicates, samples, duplicate_rate AS rate FROM duplicate_rates WHERE pipeline_run = {run:String} AND dedupe_method != '' ORDER BY method`,
      ),
      q<Record<string, unknown>>(`SELECT cells_seen, cells_filled, samples, elites, elites_per_cell FROM qd_coverage WHERE pipeline_run = {run:String}`),
      q<{ cell: string; samples: number; elites: number; accepted: number }>(
        `SELECT cell, samples, elites, accepted FROM qd_cells WHERE pipeline_run = {run:String} ORDER BY samples DESC, cell LIMIT 50`,
      ),
      q<Record<string, unknown>>(
        `SELECT model_version, groups, labelled, mean_distinct_correct, pass_at_1, pass_at_${k} AS pass_at_k FROM exploration WHERE pipeline_run = {run:String} ORDER BY model_version`,
      ),
      q<Record<string, unknown>>(
        `SELECT model_version, score_name, labelled, auc, mean_gap FROM exploitation WHERE pipeline_run = {run:String} ORDER BY model_version, score_name`,
      ),
      q<Record<string, unknown>>(
        `SELECT model_version, score, samples, corrected, mae_raw, mae_compensated, mae_reduction FROM error_compensation WHERE pipeline_run = {run:String} ORDER BY model_version, score`,
      ),
      q<{ modelVersion: string; samples: number; accepted: number }>(
        `SELECT model_version AS modelVersion, sum(samples) AS samples, sum(accepted) AS accepted FROM acceptance_hourly WHERE pipeline_run = {run:String} GROUP BY model_version ORDER BY model_version`,
      ),
      // Trainers are not per run: they read the accepted topic of whichever run feeds them.
      store.query<Record<string, unknown>>(
        `SELECT trainer, model_version, last_step, examples_total, last_loss, best_loss, examples_per_second, toString(last_at) AS last_at FROM trainer_status ORDER BY trainer, model_version`,
      ),
      store.query<{ trainer: string; model_version: string; step: number; loss: number }>(
        `SELECT trainer, model_version, step, argMax(loss, at) AS loss FROM ${TRAINER_PROGRESS_TABLE} GROUP BY trainer, model_version, step ORDER BY trainer, model_version, step LIMIT 2000`,
      ),
    ]);
  const t = totals[0];
  const decided = num(t?.decided);
  const accepted = num(t?.accepted);
  const deadLettersByStage = deadByStage.map((r) => ({ stage: r.stage, count: num(r.count) }));
  const curves = new Map<string, Figures['trainerLoss'][number]>();
  for (const r of loss) {
    const key = `${r.trainer}\u0000${r.model_version}`;
    let curve = curves.get(key);
    if (!curve) curves.set(key, (curve = { trainer: r.trainer, modelVersion: r.model_version, points: [] }));
    curve.points.push({ step: num(r.step), loss: Number(r.loss) });
  }
  const c = coverage[0];
  return {
    run: run ?? null,
    passAtK: k,
    headline: {
      decided,
      accepted,
      rejected: num(t?.rejected),
      acceptRate: decided === 0 ? null : accepted / decided,
      deadLetters: deadLettersByStage.reduce((a, r) => a + r.count, 0),
      rejectedByReason: byReason.map((r) => ({ reason: r.reason, count: num(r.count) })),
      deadLettersByStage,
    },
    hourly: hourly.map((r) => ({ hour: r.hour, accepted: num(r.accepted), rejected: num(r.rejected) })),
    reasons: reasons.map((r) => ({ reason: r.reason, samples: num(r.samples), deciding: num(r.deciding), share: Number(r.share) })),
    scores: scores.map((r) => ({
      name: String(r.score_name),
      samples: num(r.samples),
      mean: opt(r.mean),
      min: Number(r.min_value),
      p10: Number(r.p10),
      p50: Number(r.p50),
      p90: Number(r.p90),
      max: Number(r.max_value),
      acceptedMean: opt(r.accepted_mean),
    })),
    duplicates: duplicates.map((r) => ({ method: r.method, duplicates: num(r.duplicates), samples: num(r.samples), rate: Number(r.rate) })),
    qd: {
      coverage: c
        ? { cellsSeen: num(c.cells_seen), cellsFilled: num(c.cells_filled), samples: num(c.samples), elites: num(c.elites), elitesPerCell: opt(c.elites_per_cell) }
        : null,
      cells: cells.map((r) => ({ cell: r.cell, samples: num(r.samples), elites: num(r.elites), accepted: num(r.accepted) })),
    },
    exploration: exploration.map((r) => ({
      modelVersion: String(r.model_version),
      groups: num(r.groups),
      labelled: num(r.labelled),
      meanDistinctCorrect: opt(r.mean_distinct_correct),
      passAt1: opt(r.pass_at_1),
      passAtK: opt(r.pass_at_k),
    })),
    exploitation: exploitation.map((r) => ({ modelVersion: String(r.model_version), score: String(r.score_name), labelled: num(r.labelled), auc: opt(r.auc), meanGap: opt(r.mean_gap) })),
    errorMemory: errorMemory.map((r) => ({
      modelVersion: String(r.model_version),
      score: String(r.score),
      samples: num(r.samples),
      corrected: num(r.corrected),
      maeRaw: opt(r.mae_raw),
      maeCompensated: opt(r.mae_compensated),
      maeReduction: opt(r.mae_reduction),
    })),
    models: models.map((r) => ({ modelVersion: r.modelVersion, samples: num(r.samples), accepted: num(r.accepted) })),
    trainers: trainers.map((r) => ({
      trainer: String(r.trainer),
      modelVersion: String(r.model_version),
      lastStep: num(r.last_step),
      examples: num(r.examples_total),
      lastLoss: Number(r.last_loss),
      bestLoss: Number(r.best_loss),
      examplesPerSecond: opt(r.examples_per_second),
      lastAt: String(r.last_at),
    })),
    trainerLoss: [...curves.values()],
  };
}

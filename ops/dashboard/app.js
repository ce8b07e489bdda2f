// The dashboard page: polls api/dashboard (ops/dashboard.ts; relative, so a path prefix in front
// of the worker, e.g. an ingress, keeps working) every `pollMs` and redraws. Plain
// browser JavaScript, no build step; charts are Chart.js (served at /dashboard/chart.umd.min.js).
// Every chart is created once and updated in place, so a poll costs a redraw, not a rebuild.
/* global Chart */
'use strict';

const COLORS = {
  accepted: '#3fb97c',
  rejected: '#e8794a',
  dead: '#d9534f',
  accent: '#5aa9e6',
  violet: '#a78bfa',
  yellow: '#e5c07b',
  text: '#d8e0e8',
  muted: '#8595a6',
  grid: '#263241',
};
const SERIES = [COLORS.accent, COLORS.accepted, COLORS.rejected, COLORS.violet, COLORS.yellow, COLORS.dead];

Chart.defaults.color = '#aab6c3';
Chart.defaults.borderColor = COLORS.grid;
Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
Chart.defaults.animation = false;
Chart.defaults.maintainAspectRatio = false;
Chart.defaults.plugins.legend.labels.boxWidth = 12;

const fmt = new Intl.NumberFormat('en-US');
const fmt3 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 3 });
const pct = new Intl.NumberFormat('en-US', { style: 'percent', maximumFractionDigits: 1 });
const $ = (id) => document.getElementById(id);

/** Sets a headline figure: the number as text and, unformatted, in data-value. */
function figure(id, value, format = fmt) {
  const el = $(id);
  el.dataset.value = value === null ? '' : String(value);
  el.textContent = value === null ? '—' : format.format(value);
}

/** Replaces a table's body with one row per item: cells(item) gives the cells, attrs(item) the row's data attributes. */
function rows(id, items, cells, attrs = () => ({})) {
  const body = $(id).querySelector('tbody');
  body.replaceChildren(
    ...items.map((item) => {
      const tr = document.createElement('tr');
      for (const [k, v] of Object.entries(attrs(item))) tr.dataset[k] = String(v);
      for (const cell of cells(item)) {
        const td = document.createElement('td');
        td.textContent = cell;
        tr.append(td);
      }
      return tr;
    }),
  );
}

const charts = new Map();

/** The chart on canvas `id`, created by make() on first use; update(chart) sets its data. */
function chart(id, make, update, empty) {
  let c = charts.get(id);
  if (!c) charts.set(id, (c = new Chart($(id), make())));
  update(c);
  c.update('none');
  c.canvas.parentElement.dataset.empty = String(empty);
}

const bar = (extra = {}) => ({ type: 'bar', data: { labels: [], datasets: [] }, options: { scales: { y: { beginAtZero: true } }, ...extra } });
/** A clock axis: a few unrotated labels, however many points. */
const timeTicks = { ticks: { maxTicksLimit: 10, maxRotation: 0, autoSkip: true } };
const clock = (t) => new Date(t).toLocaleTimeString('en-GB', { hour12: false });
const short = (s, n = 18) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

function render(d) {
  $('run').textContent = d.run ?? 'no samples yet';
  $('updated').textContent = clock(d.at);
  $('updated').dateTime = d.at;
  for (const el of document.querySelectorAll('.k')) el.textContent = String(d.passAtK);

  const h = d.headline;
  figure('decided', h.decided);
  figure('accepted', h.accepted);
  figure('rejected', h.rejected);
  figure('accept-rate', h.acceptRate, pct);
  figure('dead-letters', h.deadLetters);
  rows('rejected-by-reason', h.rejectedByReason, (r) => [r.reason, fmt.format(r.count)], (r) => ({ reason: r.reason, count: r.count }));
  rows('dead-letters-by-stage', h.deadLettersByStage, (r) => [r.stage, fmt.format(r.count)], (r) => ({ stage: r.stage, count: r.count }));

  const labels = d.live.map((p) => clock(p.t));
  chart(
    'chart-throughput',
    () => ({
      type: 'line',
      data: { labels: [], datasets: [
        { label: 'stored / s', borderColor: COLORS.accent, backgroundColor: 'rgba(90,169,230,0.15)', fill: true, pointRadius: 0, tension: 0.25, data: [] },
        { label: 'committed / s', borderColor: COLORS.accepted, pointRadius: 0, tension: 0.25, data: [] },
      ] },
      options: { scales: { x: timeTicks, y: { beginAtZero: true } } },
    }),
    (c) => {
      c.data.labels = labels;
      c.data.datasets[0].data = d.live.map((p) => p.storedPerSecond);
      c.data.datasets[1].data = d.live.map((p) => p.processedPerSecond);
    },
    d.live.length < 2,
  );
  chart(
    'chart-lag',
    () => ({
      type: 'line',
      data: { labels: [], datasets: [
        { label: 'consumer lag', borderColor: COLORS.rejected, pointRadius: 0, tension: 0.25, data: [] },
        { label: 'sink backlog', borderColor: COLORS.violet, pointRadius: 0, tension: 0.25, data: [] },
      ] },
      options: { scales: { x: timeTicks, y: { beginAtZero: true } } },
    }),
    (c) => {
      c.data.labels = labels;
      c.data.datasets[0].data = d.live.map((p) => p.consumerLag);
      c.data.datasets[1].data = d.live.map((p) => p.sinkBacklog);
    },
    d.live.every((p) => p.consumerLag === null && p.sinkBacklog === null),
  );

  chart(
    'chart-reasons',
    () => bar({ indexAxis: 'y', scales: { x: { beginAtZero: true } } }),
    (c) => {
      c.data.labels = d.reasons.map((r) => short(r.reason, 28));
      c.data.datasets = [
        { label: 'among reasons', backgroundColor: 'rgba(232,121,74,0.45)', data: d.reasons.map((r) => r.samples) },
        { label: 'deciding', backgroundColor: COLORS.rejected, data: d.reasons.map((r) => r.deciding) },
      ];
    },
    d.reasons.length === 0,
  );
  chart(
    'chart-hourly',
    () => bar({ scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } }),
    (c) => {
      c.data.labels = d.hourly.map((r) => r.hour.slice(5, 16));
      c.data.datasets = [
        { label: 'accepted', backgroundColor: COLORS.accepted, data: d.hourly.map((r) => r.accepted) },
        { label: 'rejected', backgroundColor: COLORS.rejected, data: d.hourly.map((r) => r.rejected) },
      ];
    },
    d.hourly.length === 0,
  );

  chart(
    'chart-scores',
    () => bar({ scales: { y: {} } }),
    (c) => {
      c.data.labels = d.scores.map((s) => short(s.name));
      c.data.datasets = [
        { type: 'bar', label: 'p10–p90', backgroundColor: 'rgba(90,169,230,0.35)', borderColor: COLORS.accent, borderWidth: 1, data: d.scores.map((s) => [s.p10, s.p90]) },
        { type: 'line', label: 'median', showLine: false, pointStyle: 'line', pointRadius: 12, pointBorderWidth: 3, borderColor: COLORS.text, data: d.scores.map((s) => s.p50) },
        { type: 'line', label: 'mean', showLine: false, pointRadius: 4, backgroundColor: COLORS.yellow, borderColor: COLORS.yellow, data: d.scores.map((s) => s.mean) },
        { type: 'line', label: 'accepted mean', showLine: false, pointRadius: 4, pointStyle: 'triangle', backgroundColor: COLORS.accepted, borderColor: COLORS.accepted, data: d.scores.map((s) => s.acceptedMean) },
      ];
    },
    d.scores.length === 0,
  );
  chart(
    'chart-duplicates',
    () => bar({ scales: { y: { beginAtZero: true, ticks: { callback: (v) => pct.format(v) } } } }),
    (c) => {
      c.data.labels = d.duplicates.map((r) => r.method);
      c.data.datasets = [{ label: 'duplicate rate', backgroundColor: COLORS.violet, data: d.duplicates.map((r) => r.rate) }];
    },
    d.duplicates.length === 0,
  );
  const qd = d.qd.coverage;
  $('qd-coverage').textContent = qd
    ? `${fmt.format(qd.cellsFilled)} of ${fmt.format(qd.cellsSeen)} cells filled · ${fmt.format(qd.elites)} elites · ${qd.elitesPerCell === null ? '—' : fmt3.format(qd.elitesPerCell)} per cell`
    : 'no QD annotations in this run';
  chart(
    'chart-qd',
    () => bar(),
    (c) => {
      c.data.labels = d.qd.cells.map((r) => short(r.cell, 24));
      c.data.datasets = [
        { label: 'samples', backgroundColor: 'rgba(90,169,230,0.5)', data: d.qd.cells.map((r) => r.samples) },
        { label: 'elites', backgroundColor: COLORS.yellow, data: d.qd.cells.map((r) => r.elites) },
        { label: 'accepted', backgroundColor: COLORS.accepted, data: d.qd.cells.map((r) => r.accepted) },
      ];
    },
    d.qd.cells.length === 0,
  );

  chart(
    'chart-exploration',
    () => bar({ scales: { y: { beginAtZero: true, max: 1, title: { display: true, text: 'pass rate' } }, y1: { position: 'right', beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: 'distinct correct' } } } }),
    (c) => {
      c.data.labels = d.exploration.map((r) => r.modelVersion);
      c.data.datasets = [
        { label: 'pass@1', backgroundColor: COLORS.accent, data: d.exploration.map((r) => r.passAt1) },
        { label: `pass@${d.passAtK}`, backgroundColor: COLORS.accepted, data: d.exploration.map((r) => r.passAtK) },
        { type: 'line', label: 'distinct correct / group', yAxisID: 'y1', borderColor: COLORS.yellow, backgroundColor: COLORS.yellow, data: d.exploration.map((r) => r.meanDistinctCorrect) },
      ];
    },
    d.exploration.length === 0,
  );
  const scoreNames = [...new Set(d.exploitation.map((r) => r.score))];
  const versions = [...new Set(d.exploitation.map((r) => r.modelVersion))];
  chart(
    'chart-exploitation',
    () => bar({ scales: { y: { min: 0, max: 1 } } }),
    (c) => {
      c.data.labels = versions;
      c.data.datasets = scoreNames.map((score, i) => ({
        label: short(score),
        backgroundColor: SERIES[i % SERIES.length],
        data: versions.map((v) => d.exploitation.find((r) => r.score === score && r.modelVersion === v)?.auc ?? null),
      }));
    },
    d.exploitation.length === 0,
  );
  chart(
    'chart-error-memory',
    () => bar(),
    (c) => {
      c.data.labels = d.errorMemory.map((r) => `${r.modelVersion} · ${short(r.score, 12)}`);
      c.data.datasets = [
        { label: 'MAE raw', backgroundColor: COLORS.rejected, data: d.errorMemory.map((r) => r.maeRaw) },
        { label: 'MAE compensated', backgroundColor: COLORS.accepted, data: d.errorMemory.map((r) => r.maeCompensated) },
      ];
    },
    d.errorMemory.length === 0,
  );

  chart(
    'chart-models',
    () => bar(),
    (c) => {
      c.data.labels = d.models.map((r) => r.modelVersion || '(none)');
      c.data.datasets = [
        { label: 'samples', backgroundColor: 'rgba(90,169,230,0.5)', data: d.models.map((r) => r.samples) },
        { label: 'accepted', backgroundColor: COLORS.accepted, data: d.models.map((r) => r.accepted) },
      ];
    },
    d.models.length === 0,
  );
  rows('swaps', d.swaps.slice(-10).reverse(), (s) => [clock(s.at), s.operator, `${s.from ?? '—'} → ${s.to}${s.refused ? ` (refused: ${s.refused})` : ''}`]);

  const steps = [...new Set(d.trainerLoss.flatMap((c) => c.points.map((p) => p.step)))].sort((a, b) => a - b);
  chart(
    'chart-trainer-loss',
    () => ({ type: 'line', data: { labels: [], datasets: [] }, options: { scales: { x: { title: { display: true, text: 'step' } } } } }),
    (c) => {
      c.data.labels = steps;
      c.data.datasets = d.trainerLoss.map((curve, i) => {
        const at = new Map(curve.points.map((p) => [p.step, p.loss]));
        return { label: `${curve.trainer} · ${curve.modelVersion}`, borderColor: SERIES[i % SERIES.length], pointRadius: 0, spanGaps: true, data: steps.map((s) => at.get(s) ?? null) };
      });
    },
    d.trainerLoss.length === 0,
  );
  rows('trainers', d.trainers, (t) => [
    t.trainer, t.modelVersion, fmt.format(t.lastStep), fmt.format(t.examples), fmt3.format(t.lastLoss), fmt3.format(t.bestLoss),
    t.examplesPerSecond === null ? '—' : fmt3.format(t.examplesPerSecond), t.lastAt,
  ], (t) => ({ trainer: t.trainer, modelVersion: t.modelVersion, step: t.lastStep }));
}

let pollMs = 2000;

async function poll() {
  try {
    const res = await fetch('api/dashboard', { cache: 'no-store' });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ?? `HTTP ${res.status}`);
    pollMs = body.pollMs ?? pollMs;
    render(body);
    $('error').hidden = true;
    $('status').textContent = 'live';
    document.body.dataset.state = 'live';
    // Last: a reader waiting on data-updated sees every figure of this snapshot in place.
    document.body.dataset.updated = body.at;
  } catch (err) {
    // Keep the last figures on screen; say what failed.
    $('error').hidden = false;
    $('error').textContent = `cannot read the figures: ${err.message}`;
    $('status').textContent = 'error';
    document.body.dataset.state = 'error';
  } finally {
    setTimeout(poll, pollMs);
  }
}

poll();

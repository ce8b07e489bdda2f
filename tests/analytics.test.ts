// Analytics views (analytics/views.ts) and run comparison (analytics/compare.ts)
// against real engines: chdb (embedded, ClickHouse 26.x) and a ClickHouse server
// (FLYWHEEL_TEST_CLICKHOUSE_URL; Debian's 18.16 from deploy/clickhouse-server.sh). Rows are
// built by the sink's own sampleRow() from Decision records, so they are shaped exactly as the
// pipeline stores them. Every expected number below is worked out by hand from the table of
// rollouts (see the comments next to each expectation). No mocks.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareCommand } from '../cli/compare.ts';
import { compareRuns, formatComparison, type RunComparison } from '../analytics/compare.ts';
import { migrate } from '../sinks/clickhouse/schema.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { DEFAULT_VIEW_OPTIONS, migrateViews, viewOptionsFrom, VIEWS } from '../analytics/views.ts';
import { TRAINER_PROGRESS_TABLE } from '../contracts/trainer-progress.ts';
import { sampleRow } from '../sinks/clickhouse-sink.ts';
import type { Decision, Rollout } from '../contracts/records.ts';

const SERVER_URL = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;
const RUN = `${Date.now().toString(36)}_${process.pid}`;
const A = 'run-a';
const B = 'run-b';

// ---------------------------------------------------------------------------------------------
// The data: 14 rollouts (r01 also re-sent once) curated by two runs.
//
// id    group ver source    skill  created  correct  response         rule
// r01   g1    v1  synthetic add    10:05    1        Answer: 4        0.9
// r01'  (r01 re-sent as a second record; only run A saw it)
// r02   g1    v1  synthetic add    10:10    1        answer:  4       0.9   (same answer as r01 once normalised)
// r03   g1    v1  synthetic add    10:20    0        Answer: 5        0.3
// r04   g1    v1  gsm8k     add    10:40    1        Answer: four     0.8
// r05   g2    v1  gsm8k     mul    11:05    0        Answer: 12       0.6
// r06   g2    v1  gsm8k     mul    11:15    -        Answer: 13       0.2   (unlabelled)
// r07   g3    v2  synthetic mul    10:30    1        Answer: 42       0.7
// r08   g3    v2  synthetic mul    10:35    0        Answer: 41       0.4
// r09   g3    v2  synthetic mul    11:00    0        Answer: 40       0.6
// r10   g3    v2  synthetic mul    11:30    0        Answer: 41.      0.1
// r11   g4    v2  gsm8k     add    11:45    1        Answer: 7        0.95
// r12   g4    v2  gsm8k     add    11:50    1        Answer: 7        0.95
// r13   g4    v2  gsm8k     add    11:55    0        Answer: 8        0.2   (only run A saw it)
// r14   g3    v2  synthetic mul    11:40    0        Answer: 39       0.3
//
// Run A: rule >= 0.5, exact dedupe, minhash near-dedupe, QD archive (annotate).
//   accepted r01 r04 r05 r07 r09 r11; r01' r02 r12 `duplicate` (exact); r10 `near_duplicate`
//   (minhash) then `below_min:rule`; r03 r06 r08 r13 r14 `below_min:rule`.
// Run B: error-compensated `model` >= 0.65, semantic dedupe, no exact dedupe.
//   accepted r01 r02 r04 r06 r07 r09 r11; r12 `near_duplicate:semantic`; r03 r05 r08 r10 r14
//   `below_min:model`.

interface RolloutSpec {
  id: string;
  group: string;
  version: string;
  source: string;
  skill: string;
  at: string;
  correct: number | null;
  response: string;
  rule: number;
}

const ROLLOUTS: RolloutSpec[] = [
  { id: 'r01', group: 'g1', version: 'v1', source: 'synthetic', skill: 'addition', at: '10:05', correct: 1, response: 'Answer: 4', rule: 0.9 },
  { id: 'r02', group: 'g1', version: 'v1', source: 'synthetic', skill: 'addition', at: '10:10', correct: 1, response: 'answer:  4', rule: 0.9 },
  { id: 'r03', group: 'g1', version: 'v1', source: 'synthetic', skill: 'addition', at: '10:20', correct: 0, response: 'Answer: 5', rule: 0.3 },
  { id: 'r04', group: 'g1', version: 'v1', source: 'gsm8k', skill: 'addition', at: '10:40', correct: 1, response: 'Answer: four', rule: 0.8 },
  { id: 'r05', group: 'g2', version: 'v1', source: 'gsm8k', skill: 'multiplication', at: '11:05', correct: 0, response: 'Answer: 12', rule: 0.6 },
  { id: 'r06', group: 'g2', version: 'v1', source: 'gsm8k', skill: 'multiplication', at: '11:15', correct: null, response: 'Answer: 13', rule: 0.2 },
  { id: 'r07', group: 'g3', version: 'v2', source: 'synthetic', skill: 'multiplication', at: '10:30', correct: 1, response: 'Answer: 42', rule: 0.7 },
  { id: 'r08', group: 'g3', version: 'v2', source: 'synthetic', skill: 'multiplication', at: '10:35', correct: 0, response: 'Answer: 41', rule: 0.4 },
  { id: 'r09', group: 'g3', version: 'v2', source: 'synthetic', skill: 'multiplication', at: '11:00', correct: 0, response: 'Answer: 40', rule: 0.6 },
  { id: 'r10', group: 'g3', version: 'v2', source: 'synthetic', skill: 'multiplication', at: '11:30', correct: 0, response: 'Answer: 41.', rule: 0.1 },
  { id: 'r11', group: 'g4', version: 'v2', source: 'gsm8k', skill: 'addition', at: '11:45', correct: 1, response: 'Answer: 7', rule: 0.95 },
  { id: 'r12', group: 'g4', version: 'v2', source: 'gsm8k', skill: 'addition', at: '11:50', correct: 1, response: 'Answer: 7', rule: 0.95 },
  { id: 'r13', group: 'g4', version: 'v2', source: 'gsm8k', skill: 'addition', at: '11:55', correct: 0, response: 'Answer: 8', rule: 0.2 },
  { id: 'r14', group: 'g3', version: 'v2', source: 'synthetic', skill: 'multiplication', at: '11:40', correct: 0, response: 'Answer: 39', rule: 0.3 },
];

function rollout(id: string): Rollout {
  const s = ROLLOUTS.find((r) => r.id === id);
  if (s === undefined) throw new Error(`no rollout ${id}`);
  return {
    id: s.id,
    run_id: 'gen-7',
    prompt_id: `p-${s.group}`,
    prompt: `Prompt of ${s.group}`,
    group_id: s.group,
    response: s.response,
    steps: [],
    model_name: 'policy',
    model_version: s.version,
    rewards: s.correct === null ? { format: 1 } : { correct: s.correct, format: 1 },
    logprobs: null,
    token_count: 12,
    created_at: Date.parse(`2026-01-05T${s.at}:00Z`),
    tags: { source: s.source, skill: s.skill },
  };
}

/** Source offsets of the rollouts topic: both runs read the same records. */
const SOURCE_OFFSET: Record<string, number> = {};
['r01', "r01'", 'r02', 'r03', 'r04', 'r05', 'r06', 'r07', 'r08', 'r09', 'r10', 'r11', 'r12', 'r13', 'r14'].forEach((k, i) => (SOURCE_OFFSET[k] = 100 + i));

interface Verdict {
  key: string;
  reasons?: string[];
  scores?: Record<string, number>;
  duplicateOf?: string;
  dedupeMethod?: string;
  annotations?: Record<string, string>;
}

function decision(run: string, v: Verdict): Decision {
  const id = v.key.replace("'", '');
  const r = rollout(id);
  const reasons = v.reasons ?? [];
  return {
    rollout: r,
    scores: v.scores ?? { rule: ROLLOUTS.find((s) => s.id === id)!.rule },
    duplicate_of: v.duplicateOf ?? null,
    dedupe_method: v.dedupeMethod ?? null,
    reasons,
    decision: reasons.length === 0 ? 'accepted' : 'rejected',
    reason: reasons[0] ?? 'accepted',
    config_hash: `hash-${run}`,
    scorer_version: run === A ? 'rule-1' : 'model-3',
    annotations: v.annotations ?? {},
    pipeline_run: run,
    source: { topic: 'flywheel.rollouts', partition: 0, offset: String(SOURCE_OFFSET[v.key]) },
  };
}

const qd = (cell: string, elite: boolean) => ({ 'qd.cell': `len=${cell}`, 'qd.elite': elite ? '1' : '0' });
const ADD0 = '0|skill=addition';
const ADD1 = '1|skill=addition';
const MUL0 = '0|skill=multiplication';
const MUL1 = '1|skill=multiplication';

// Run A in arrival order. QD archive: an accepted sample becomes its cell's elite when the cell is
// empty or it beats the elite's rule score (r01 .9, then r11 .95 in ADD0; r05 .6, then r07 .7 in
// MUL0, r09 .6 does not; r04 alone in ADD1); rejected samples are never elites; r06 has no cell.
const RUN_A: Verdict[] = [
  { key: 'r01', annotations: qd(ADD0, true) },
  { key: "r01'", reasons: ['duplicate'], duplicateOf: 'r01', dedupeMethod: 'exact', annotations: qd(ADD0, false) },
  { key: 'r02', reasons: ['duplicate'], duplicateOf: 'r01', dedupeMethod: 'exact', annotations: qd(ADD0, false) },
  { key: 'r03', reasons: ['below_min:rule'], annotations: qd(ADD0, false) },
  { key: 'r04', annotations: qd(ADD1, true) },
  { key: 'r05', annotations: qd(MUL0, true) },
  { key: 'r06', reasons: ['below_min:rule'] },
  { key: 'r07', annotations: qd(MUL0, true) },
  { key: 'r08', reasons: ['below_min:rule'], annotations: qd(MUL1, false) },
  { key: 'r09', annotations: qd(MUL0, false) },
  { key: 'r10', reasons: ['near_duplicate', 'below_min:rule'], duplicateOf: 'r08', dedupeMethod: 'minhash', annotations: qd(MUL0, false) },
  { key: 'r11', annotations: qd(ADD0, true) },
  { key: 'r12', reasons: ['duplicate'], duplicateOf: 'r11', dedupeMethod: 'exact', annotations: qd(ADD0, false) },
  { key: 'r13', reasons: ['below_min:rule'], annotations: qd(ADD0, false) },
  { key: 'r14', reasons: ['below_min:rule'], annotations: qd(MUL0, false) },
];

// Run B: model.raw, model.correction from the error memory, model = clamp(raw + correction).
// r03 also carries a stray `len.correction` without `len.raw`/`len`: not a compensated score.
const B_SCORES: Record<string, [raw: number, correction: number, model: number]> = {
  r01: [0.8, 0.1, 0.9],
  r02: [0.7, 0, 0.7],
  r03: [0.6, -0.2, 0.4],
  r04: [0.5, 0.25, 0.75],
  r05: [0.7, -0.1, 0.6],
  r06: [0.9, 0, 0.9],
  r07: [0.6, 0.1, 0.7],
  r08: [0.8, -0.4, 0.4],
  r09: [0.7, 0, 0.7],
  r10: [0.2, 0, 0.2],
  r11: [0.9, 0.1, 1],
  r12: [0.9, 0.1, 1],
  r14: [0.3, 0, 0.3],
};
const bScores = (id: string): Record<string, number> => {
  const [raw, correction, model] = B_SCORES[id]!;
  const extra: Record<string, number> = id === 'r03' ? { 'len.correction': 0.5 } : {};
  return { rule: ROLLOUTS.find((s) => s.id === id)!.rule, 'model.raw': raw, 'model.correction': correction, model, ...extra };
};
const RUN_B: Verdict[] = ['r01', 'r02', 'r03', 'r04', 'r05', 'r06', 'r07', 'r08', 'r09', 'r10', 'r11', 'r12', 'r14'].map((id) => {
  const [, , model] = B_SCORES[id]!;
  const reasons = id === 'r12' ? ['near_duplicate:semantic'] : model < 0.65 ? ['below_min:model'] : [];
  return {
    key: id,
    scores: bScores(id),
    reasons,
    ...(id === 'r12' ? { duplicateOf: 'r11', dedupeMethod: 'semantic' } : {}),
  };
});

function rows(): Record<string, unknown>[] {
  const a = RUN_A.map((v, i) => sampleRow(decision(A, v), 'a.decisions', 0, String(i)));
  const b = RUN_B.map((v, i) => sampleRow(decision(B, v), 'b.decisions', i % 3, String(Math.floor(i / 3))));
  return [...a, ...b];
}

const TRAINER_ROWS = [
  { trainer: 'sft', model_version: 'v3', step: 10, examples: 100, loss: 2.0, metric_names: ['lr', 'acc'], metric_values: [1e-4, 0.5],
    committed_topic: 'flywheel.accepted', committed_partitions: [0, 1, 2], committed_offsets: [10, 12, 9], at: new Date('2026-01-05T12:00:00Z') },
  { trainer: 'sft', model_version: 'v3', step: 20, examples: 200, loss: 1.5, metric_names: ['lr', 'acc'], metric_values: [1e-4, 0.6],
    committed_topic: 'flywheel.accepted', committed_partitions: [0, 1, 2], committed_offsets: [20, 25, 19], at: new Date('2026-01-05T12:00:10Z') },
  { trainer: 'sft', model_version: 'v3', step: 30, examples: 400, loss: 1.6, metric_names: ['lr', 'acc'], metric_values: [5e-5, 0.55],
    committed_topic: 'flywheel.accepted', committed_partitions: [0, 1, 2], committed_offsets: [40, 41, 42], at: new Date('2026-01-05T12:00:20Z') },
  { trainer: 'rm', model_version: 'rm-1', step: 5, examples: 64, loss: 0.7, metric_names: ['auc'], metric_values: [0.81],
    committed_topic: 'flywheel.accepted', committed_partitions: [0], committed_offsets: [64], at: new Date('2026-01-05T12:30:00Z') },
];

// ---------------------------------------------------------------------------------------------

/** Float columns compared to 9 decimals (sums like 0.1 + 0.2 are not exact); others exactly. */
function expectRows(actual: Record<string, unknown>[], expected: Record<string, unknown>[]): void {
  expect(actual.length, JSON.stringify(actual)).toBe(expected.length);
  expected.forEach((exp, i) => {
    const act = actual[i]!;
    expect(Object.keys(act).sort(), `row ${i}`).toEqual(expect.arrayContaining(Object.keys(exp).sort()));
    for (const [k, v] of Object.entries(exp)) {
      if (typeof v === 'number' && !Number.isInteger(v)) expect(act[k], `row ${i} ${k}`).toBeCloseTo(v, 9);
      else if (Array.isArray(v) && v.some((x) => typeof x === 'number' && !Number.isInteger(x))) {
        const arr = act[k] as number[];
        expect(arr.length, `row ${i} ${k}`).toBe(v.length);
        v.forEach((x, j) => expect(arr[j], `row ${i} ${k}[${j}]`).toBeCloseTo(x as number, 9));
      } else expect(act[k], `row ${i} ${k}`).toEqual(v);
    }
  });
}

const third = 1 / 3;

/** What each backend returned, compared across backends at the end. */
const results = new Map<string, Record<string, unknown>>();

function analyticsContract(name: 'embedded' | 'server', open: () => Promise<{ store: ClickHouseStore; database?: string; done: () => Promise<void> }>) {
  describe(`analytics on the ${name} backend`, () => {
    let store: ClickHouseStore;
    let done: (() => Promise<void>) | undefined;
    let insertedHours: string[] = [];
    const seen: Record<string, unknown> = {};
    const q = (sql: string, params?: Record<string, string | number>) => store.query(sql, params);

    beforeAll(async () => {
      const opened = await open();
      store = opened.store;
      done = opened.done;
      // Twice each: both are idempotent.
      await migrate(store, opened.database);
      await migrateViews(store, opened.database);
      await migrate(store, opened.database);
      await migrateViews(store, opened.database);
      const hour = (t: number) => `${new Date(Math.floor(t / 3_600_000) * 3_600_000).toISOString().slice(0, 13).replace('T', ' ')}:00:00`;
      const before = Date.now();
      await store.insert('samples', rows());
      const after = Date.now();
      insertedHours = [...new Set([hour(before - 1000), hour(after + 1000)])];
      await store.insert(TRAINER_PROGRESS_TABLE, TRAINER_ROWS);
    });
    afterAll(async () => {
      results.set(name, seen);
      await done?.();
    });

    it('creates every view with the columns its spec lists, and the trainer_progress table', async () => {
      expect(new Set(VIEWS.map((v) => v.name)).size).toBe(VIEWS.length);
      for (const view of VIEWS) {
        const cols = await q('SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}', { t: view.name });
        expect(cols.map((c) => c.name), view.name).toEqual(view.columns.map(([c]) => c));
      }
      const engines = await q("SELECT name, engine FROM system.tables WHERE database = currentDatabase() AND name IN ('trainer_progress', 'acceptance_hourly') ORDER BY name");
      expect(engines).toEqual([
        { name: 'acceptance_hourly', engine: 'View' },
        { name: 'trainer_progress', engine: 'ReplacingMergeTree' },
      ]);
    });

    it('acceptance_hourly: samples, accepted and rejected per hour, model version, source and skill', async () => {
      const rows = await q(`SELECT * FROM acceptance_hourly WHERE pipeline_run = {r:String} ORDER BY created_hour, model_version, source, skill`, { r: A });
      const h10 = '2026-01-05 10:00:00';
      const h11 = '2026-01-05 11:00:00';
      expect(rows.every((r) => insertedHours.includes(String(r.inserted_hour)))).toBe(true);
      expect(new Set(rows.map((r) => r.inserted_hour)).size).toBe(1); // one INSERT, one now()
      expectRows(
        rows.map(({ inserted_hour: _h, ...r }) => r),
        [
          // r04
          { pipeline_run: A, created_hour: h10, model_version: 'v1', source: 'gsm8k', skill: 'addition', samples: 1, accepted: 1, rejected: 0, accept_rate: 1 },
          // r01 r01' r02 r03: only r01 accepted
          { created_hour: h10, model_version: 'v1', source: 'synthetic', skill: 'addition', samples: 4, accepted: 1, rejected: 3, accept_rate: 0.25 },
          // r07 r08
          { created_hour: h10, model_version: 'v2', source: 'synthetic', skill: 'multiplication', samples: 2, accepted: 1, rejected: 1, accept_rate: 0.5 },
          // r05 r06
          { created_hour: h11, model_version: 'v1', source: 'gsm8k', skill: 'multiplication', samples: 2, accepted: 1, rejected: 1, accept_rate: 0.5 },
          // r11 r12 r13
          { created_hour: h11, model_version: 'v2', source: 'gsm8k', skill: 'addition', samples: 3, accepted: 1, rejected: 2, accept_rate: third },
          // r09 r10 r14
          { created_hour: h11, model_version: 'v2', source: 'synthetic', skill: 'multiplication', samples: 3, accepted: 1, rejected: 2, accept_rate: third },
        ],
      );
      seen.acceptance = rows.map(({ inserted_hour: _h, ...r }) => r);
    });

    it('score_distribution: count, mean, quantiles per run and score', async () => {
      const rows = await q(`SELECT * FROM score_distribution ORDER BY pipeline_run, score_name`);
      expectRows(rows, [
        // A rule, sorted: .1 .2 .2 .3 .3 .4 .6 .6 .7 .8 .9 .9 .9 .95 .95 (sum 8.8); quantile q at
        // index q·14, interpolated: p10 = s[1.4] = .2, p50 = s[7] = .6, p90 = s[12.6] = .9 + .6·.05.
        // Accepted r01 r04 r05 r07 r09 r11: (.9 + .8 + .6 + .7 + .6 + .95) / 6.
        { pipeline_run: A, score_name: 'rule', samples: 15, mean: 8.8 / 15, min_value: 0.1, p10: 0.2, p50: 0.6, p90: 0.93, max_value: 0.95, accepted: 6, accepted_mean: 4.55 / 6 },
        { pipeline_run: B, score_name: 'len.correction', samples: 1, mean: 0.5, min_value: 0.5, p10: 0.5, p50: 0.5, p90: 0.5, max_value: 0.5, accepted: 0 },
        // B model, sorted: .2 .3 .4 .4 .6 .7 .7 .7 .75 .9 .9 1 1 (sum 8.55); p10 = s[1.2] = .3 + .2·.1,
        // p50 = s[6] = .7, p90 = s[10.8] = .9 + .8·.1. Accepted r01 r02 r04 r06 r07 r09 r11: 5.65 / 7.
        { pipeline_run: B, score_name: 'model', samples: 13, mean: 8.55 / 13, min_value: 0.2, p10: 0.32, p50: 0.7, p90: 0.98, max_value: 1, accepted: 7, accepted_mean: 5.65 / 7 },
        // corrections sorted: -.4 -.2 -.1 0 0 0 0 0 .1 .1 .1 .1 .25 (sum −.05)
        { pipeline_run: B, score_name: 'model.correction', samples: 13, mean: -0.05 / 13, min_value: -0.4, p10: -0.2 + 0.2 * 0.1, p50: 0, p90: 0.1, max_value: 0.25, accepted: 7 },
        // raw sorted: .2 .3 .5 .6 .6 .7 .7 .7 .8 .8 .9 .9 .9 (sum 8.6)
        { pipeline_run: B, score_name: 'model.raw', samples: 13, mean: 8.6 / 13, min_value: 0.2, p10: 0.3 + 0.2 * 0.2, p50: 0.7, p90: 0.9, max_value: 0.9, accepted: 7 },
        // B rule, sorted: .1 .2 .3 .3 .4 .6 .6 .7 .8 .9 .9 .95 .95 (sum 7.7)
        { pipeline_run: B, score_name: 'rule', samples: 13, mean: 7.7 / 13, min_value: 0.1, p10: 0.2 + 0.2 * 0.1, p50: 0.6, p90: 0.9 + 0.8 * 0.05, max_value: 0.95, accepted: 7 },
      ]);
      // No accepted sample has len.correction: avg over nothing (nan, null in JSON).
      expect(rows[1]!.accepted_mean ?? Number.NaN).toBeNaN();
      seen.scores = rows;
    });

    it('duplicate_rates and duplicate_rates_hourly: per dedupe method, per run and per hour', async () => {
      const perRun = await q(`SELECT * FROM duplicate_rates ORDER BY pipeline_run, dedupe_method`);
      expectRows(perRun, [
        { pipeline_run: A, samples: 15, dedupe_method: 'exact', duplicates: 3, duplicate_rate: 0.2 }, // r01' r02 r12
        { pipeline_run: A, samples: 15, dedupe_method: 'minhash', duplicates: 1, duplicate_rate: 1 / 15 }, // r10
        { pipeline_run: B, samples: 13, dedupe_method: 'semantic', duplicates: 1, duplicate_rate: 1 / 13 }, // r12
      ]);
      const hourly = await q(`SELECT * FROM duplicate_rates_hourly ORDER BY pipeline_run, created_hour, dedupe_method`);
      expectRows(hourly, [
        // A 10h: r01 r01' r02 r03 r04 r07 r08; 11h: r05 r06 r09 r10 r11 r12 r13 r14
        { pipeline_run: A, created_hour: '2026-01-05 10:00:00', samples: 7, dedupe_method: 'exact', duplicates: 2, duplicate_rate: 2 / 7 },
        { pipeline_run: A, created_hour: '2026-01-05 11:00:00', samples: 8, dedupe_method: 'exact', duplicates: 1, duplicate_rate: 0.125 },
        { pipeline_run: A, created_hour: '2026-01-05 11:00:00', samples: 8, dedupe_method: 'minhash', duplicates: 1, duplicate_rate: 0.125 },
        // B 10h has no duplicates: one row with method '' and 0
        { pipeline_run: B, created_hour: '2026-01-05 10:00:00', samples: 6, dedupe_method: '', duplicates: 0, duplicate_rate: 0 },
        { pipeline_run: B, created_hour: '2026-01-05 11:00:00', samples: 7, dedupe_method: 'semantic', duplicates: 1, duplicate_rate: 1 / 7 },
      ]);
      seen.duplicates = [perRun, hourly];
    });

    it('rejection_reasons: every reason per run, and how often it decided', async () => {
      const rows = await q(`SELECT * FROM rejection_reasons ORDER BY pipeline_run, samples DESC, rejection_reason`);
      expectRows(rows, [
        // r03 r06 r08 r10 r13 r14; r10's deciding reason is near_duplicate
        { pipeline_run: A, rejection_reason: 'below_min:rule', samples: 6, deciding: 5, run_samples: 15, share: 0.4 },
        { pipeline_run: A, rejection_reason: 'duplicate', samples: 3, deciding: 3, run_samples: 15, share: 0.2 },
        { pipeline_run: A, rejection_reason: 'near_duplicate', samples: 1, deciding: 1, run_samples: 15, share: 1 / 15 },
        // r03 r05 r08 r10 r14
        { pipeline_run: B, rejection_reason: 'below_min:model', samples: 5, deciding: 5, run_samples: 13, share: 5 / 13 },
        { pipeline_run: B, rejection_reason: 'near_duplicate:semantic', samples: 1, deciding: 1, run_samples: 13, share: 1 / 13 },
      ]);
      seen.reasons = rows;
    });

    it('qd_cells and qd_coverage: cells filled and elites per cell', async () => {
      const cells = await q(`SELECT * FROM qd_cells ORDER BY pipeline_run, cell`);
      expectRows(cells, [
        // r01 r01' r02 r03 r11 r12 r13; elites r01, r11
        { pipeline_run: A, cell: 'len=0|skill=addition', samples: 7, elites: 2, accepted: 2 },
        // r05 r07 r09 r10 r14; elites r05, r07
        { pipeline_run: A, cell: 'len=0|skill=multiplication', samples: 5, elites: 2, accepted: 3 },
        { pipeline_run: A, cell: 'len=1|skill=addition', samples: 1, elites: 1, accepted: 1 },
        { pipeline_run: A, cell: 'len=1|skill=multiplication', samples: 1, elites: 0, accepted: 0 },
      ]);
      const coverage = await q(`SELECT * FROM qd_coverage ORDER BY pipeline_run`);
      // Run B has no QD annotations, so no row.
      expectRows(coverage, [{ pipeline_run: A, cells_seen: 4, cells_filled: 3, samples: 14, elites: 5, elites_per_cell: 5 / 3 }]);
      seen.qd = [cells, coverage];
    });

    it('exploration_groups and exploration: distinct correct responses and pass@k per model version', async () => {
      const groups = await q(`SELECT * FROM exploration_groups WHERE pipeline_run = {r:String} ORDER BY model_version, group_id`, { r: A });
      expectRows(groups, [
        // labelled r01 r01' r02 r03 r04, right r01 r01' r02 r04; answers "answer: 4" (×3) and "answer: four".
        // pass@4 = 1 − C(1,4)/C(5,4) = 1.
        { pipeline_run: A, model_version: 'v1', group_id: 'g1', n: 5, correct: 4, distinct_correct: 2, pass_at_1: 0.8, pass_at_4: 1 },
        // r05 (r06 is unlabelled)
        { model_version: 'v1', group_id: 'g2', n: 1, correct: 0, distinct_correct: 0, pass_at_1: 0, pass_at_4: null },
        // r07 r08 r09 r10 r14, right r07: pass@4 = 1 − C(4,4)/C(5,4) = 1 − 1/5
        { model_version: 'v2', group_id: 'g3', n: 5, correct: 1, distinct_correct: 1, pass_at_1: 0.2, pass_at_4: 0.8 },
        // r11 r12 r13, right r11 r12 with the same answer
        { model_version: 'v2', group_id: 'g4', n: 3, correct: 2, distinct_correct: 1, pass_at_1: 2 / 3, pass_at_4: null },
      ]);
      const versions = await q(`SELECT * FROM exploration ORDER BY pipeline_run, model_version`);
      expectRows(versions, [
        { pipeline_run: A, model_version: 'v1', groups: 2, groups_k: 1, labelled: 6, mean_distinct_correct: 1, pass_at_1: 0.4, pass_at_4: 1 },
        { pipeline_run: A, model_version: 'v2', groups: 2, groups_k: 1, labelled: 8, mean_distinct_correct: 1, pass_at_1: (0.2 + 2 / 3) / 2, pass_at_4: 0.8 },
        // B: r01 r02 r03 r04 | r05 | r07 r08 r09 r10 r14 | r11 r12 (no r01', no r13)
        // g1: n 4, right 3 (answers "answer: 4", "answer: four"): pass@4 = 1 (n − c < 4); g4: n 2, c 2
        { pipeline_run: B, model_version: 'v1', groups: 2, groups_k: 1, labelled: 5, mean_distinct_correct: 1, pass_at_1: (0.75 + 0) / 2, pass_at_4: 1 },
        { pipeline_run: B, model_version: 'v2', groups: 2, groups_k: 1, labelled: 7, mean_distinct_correct: 1, pass_at_1: (0.2 + 1) / 2, pass_at_4: 0.8 },
      ]);
      seen.exploration = [groups, versions];
    });

    it('exploitation: AUC (Mann–Whitney, ties half) and mean gap per model version and score', async () => {
      const rows = await q(`SELECT * FROM exploitation WHERE pipeline_run = {r:String} ORDER BY model_version, score_name`, { r: B });
      expectRows(rows, [
        // v1 labelled: r01 r02 r04 right, r03 r05 wrong. len.correction only on r03 (wrong): no AUC.
        { pipeline_run: B, model_version: 'v1', score_name: 'len.correction', labelled: 1, verified_right: 0, verified_wrong: 1, mean_wrong: 0.5, auc: null },
        // right .9 .7 .75 vs wrong .4 .6: every pair ordered
        { model_version: 'v1', score_name: 'model', labelled: 5, verified_right: 3, verified_wrong: 2, mean_right: 2.35 / 3, mean_wrong: 0.5, mean_gap: 2.35 / 3 - 0.5, auc: 1 },
        // right .1 0 .25 vs wrong -.2 -.1
        { model_version: 'v1', score_name: 'model.correction', labelled: 5, verified_right: 3, verified_wrong: 2, auc: 1 },
        // right .8 .7 .5 vs wrong .6 .7: .8 beats both (2), .7 beats .6 and ties .7 (1.5), .5 none → 3.5 / 6
        { model_version: 'v1', score_name: 'model.raw', labelled: 5, verified_right: 3, verified_wrong: 2, mean_right: 2 / 3, mean_wrong: 0.65, auc: 3.5 / 6 },
        { model_version: 'v1', score_name: 'rule', labelled: 5, verified_right: 3, verified_wrong: 2, mean_right: 2.6 / 3, mean_wrong: 0.45, auc: 1 },
        // right r07 .7, r11 1, r12 1 vs wrong r08 .4, r09 .7, r10 .2, r14 .3: r07 ties r09 → (3.5 + 4 + 4) / 12
        { model_version: 'v2', score_name: 'model', labelled: 7, verified_right: 3, verified_wrong: 4, mean_right: 0.9, mean_wrong: 0.4, mean_gap: 0.5, auc: 11.5 / 12 },
        // right .1 .1 .1 vs wrong -.4 0 0 0
        { model_version: 'v2', score_name: 'model.correction', labelled: 7, verified_right: 3, verified_wrong: 4, auc: 1 },
        // right .6 .9 .9 vs wrong .8 .7 .2 .3: .6 beats .2 .3 (2), .9 beats all (4, 4) → 10 / 12
        { model_version: 'v2', score_name: 'model.raw', labelled: 7, verified_right: 3, verified_wrong: 4, mean_right: 0.8, mean_wrong: 0.5, auc: 10 / 12 },
        { model_version: 'v2', score_name: 'rule', labelled: 7, verified_right: 3, verified_wrong: 4, auc: 1 },
      ]);
      expect(rows[0]!.mean_right ?? Number.NaN).toBeNaN(); // no right sample: 0/0
      seen.exploitation = rows;
    });

    it('error_compensation: mean |correction| and MAE of raw vs compensated per model version', async () => {
      const rows = await q(`SELECT * FROM error_compensation ORDER BY pipeline_run, model_version, score`);
      expectRows(rows, [
        // r01..r06: corrections .1 0 -.2 .25 -.1 0; labelled r01..r05 (labels 1 1 0 1 0)
        // |label − raw| = .2 .3 .6 .5 .7; |label − model| = .1 .3 .4 .25 .6
        { pipeline_run: B, model_version: 'v1', score: 'model', samples: 6, corrected: 4, mean_abs_correction: 0.65 / 6, labelled: 5, mae_raw: 0.46, mae_compensated: 0.33, mae_reduction: 0.13 },
        // r07..r12, r14: corrections .1 -.4 0 0 .1 .1 0; labels 1 0 0 0 1 1 0
        // |label − raw| = .4 .8 .7 .2 .1 .1 .3; |label − model| = .3 .4 .7 .2 0 0 .3
        { pipeline_run: B, model_version: 'v2', score: 'model', samples: 7, corrected: 4, mean_abs_correction: 0.1, labelled: 7, mae_raw: 2.6 / 7, mae_compensated: 1.9 / 7, mae_reduction: 0.1 },
      ]);
      seen.errorCompensation = rows;
    });

    it('trainer_status and trainer_metrics over trainer_progress', async () => {
      const status = await q(`SELECT * FROM trainer_status ORDER BY trainer, model_version`);
      expectRows(status, [
        {
          trainer: 'rm', model_version: 'rm-1', reports: 1, first_step: 5, last_step: 5, examples_total: 64, first_loss: 0.7, last_loss: 0.7,
          best_loss: 0.7, started_at: '2026-01-05 12:30:00', last_at: '2026-01-05 12:30:00', examples_per_second: null,
          topic: 'flywheel.accepted', partitions: [0], offsets: [64],
        },
        {
          // (400 − 100) examples in 20 s
          trainer: 'sft', model_version: 'v3', reports: 3, first_step: 10, last_step: 30, examples_total: 400, first_loss: 2, last_loss: 1.6,
          best_loss: 1.5, started_at: '2026-01-05 12:00:00', last_at: '2026-01-05 12:00:20', examples_per_second: 15,
          topic: 'flywheel.accepted', partitions: [0, 1, 2], offsets: [40, 41, 42],
        },
      ]);
      const metrics = await q(`SELECT * FROM trainer_metrics ORDER BY trainer, model_version, metric`);
      expectRows(metrics, [
        { trainer: 'rm', model_version: 'rm-1', metric: 'auc', reports: 1, last_step: 5, first_value: 0.81, last_value: 0.81, min_value: 0.81, max_value: 0.81 },
        { trainer: 'sft', model_version: 'v3', metric: 'acc', reports: 3, last_step: 30, first_value: 0.5, last_value: 0.55, min_value: 0.5, max_value: 0.6 },
        { trainer: 'sft', model_version: 'v3', metric: 'lr', reports: 3, last_step: 30, first_value: 1e-4, last_value: 5e-5, min_value: 5e-5, max_value: 1e-4 },
      ]);
      seen.trainer = [status, metrics];
    });

    it('runs every documented example query', async () => {
      for (const view of VIEWS) {
        // Examples name the run 'live'; run A has the QD annotations, run B the error memory.
        const a = await q(view.example.replaceAll("'live'", `'${A}'`));
        const b = await q(view.example.replaceAll("'live'", `'${B}'`));
        expect(a.length + b.length, view.name).toBeGreaterThan(0);
      }
      // The acceptance example rolls hours and model versions up.
      expect(await q(VIEWS.find((v) => v.name === 'acceptance_hourly')!.example.replaceAll("'live'", `'${A}'`))).toEqual([
        { created_hour: '2026-01-05 10:00:00', model_version: 'v1', acc: 2, n: 5, rate: 0.4 },
        { created_hour: '2026-01-05 10:00:00', model_version: 'v2', acc: 1, n: 2, rate: 0.5 },
        { created_hour: '2026-01-05 11:00:00', model_version: 'v1', acc: 1, n: 2, rate: 0.5 },
        { created_hour: '2026-01-05 11:00:00', model_version: 'v2', acc: 2, n: 6, rate: 0.333 },
      ]);
    });

    it('compareRuns: overlap by rollout id, decisions, reasons, scores and precision side by side', async () => {
      const c = await compareRuns(store, A, B);
      // A accepted {r01 r04 r05 r07 r09 r11} (r01 counts once although re-sent), B {r01 r02 r04 r06 r07 r09 r11}
      expect(c.overlap).toEqual({ accepted_a: 6, accepted_b: 7, both: 5, only_a: 1, only_b: 2, jaccard: 5 / 8 });
      expect(c.decisions).toEqual([
        { decision_a: 'accepted', decision_b: 'accepted', rollouts: 5 },
        { decision_a: 'accepted', decision_b: 'rejected', rollouts: 1 }, // r05
        { decision_a: 'rejected', decision_b: 'absent', rollouts: 1 }, // r13
        { decision_a: 'rejected', decision_b: 'accepted', rollouts: 2 }, // r02 r06
        { decision_a: 'rejected', decision_b: 'rejected', rollouts: 5 }, // r03 r08 r10 r12 r14
      ]);
      expect(c.reasons).toEqual([
        { reason: 'below_min:rule', a: 6, b: 0 },
        { reason: 'below_min:model', a: 0, b: 5 },
        { reason: 'duplicate', a: 3, b: 0 },
        { reason: 'near_duplicate', a: 1, b: 0 },
        { reason: 'near_duplicate:semantic', a: 0, b: 1 },
      ]);
      expect(c.scores.map((s) => s.score)).toEqual(['len.correction', 'model', 'model.correction', 'model.raw', 'rule']);
      expectRows(c.scores as unknown as Record<string, unknown>[], [
        { score: 'len.correction', a_count: 0, a_avg: null, a_p50: null, a_p90: null, b_count: 1, b_avg: 0.5, b_p50: 0.5, b_p90: 0.5 },
        { score: 'model', a_count: 0, a_avg: null, a_p50: null, a_p90: null, b_count: 13, b_avg: 8.55 / 13, b_p50: 0.7, b_p90: 0.98 },
        { score: 'model.correction', a_count: 0, b_count: 13, b_p50: 0 },
        { score: 'model.raw', a_count: 0, b_count: 13, b_p50: 0.7, b_p90: 0.9 },
        { score: 'rule', a_count: 15, a_avg: 8.8 / 15, a_p50: 0.6, a_p90: 0.93, b_count: 13, b_avg: 7.7 / 13, b_p50: 0.6, b_p90: 0.94 },
      ]);
      // A: labelled all but r06 (14); right r01 r01' r02 r04 r07 r11 r12 (7); accepted 6, all
      // labelled, right r01 r04 r07 r11 → precision 4/6, recall 4/7.
      // B: labelled 12; right r01 r02 r04 r07 r11 r12 (6); accepted 7, r06 unlabelled; right
      // r01 r02 r04 r07 r11 → precision 5/6, recall 5/6.
      expectRows(c.precision as unknown as Record<string, unknown>[], [
        { run: A, samples: 15, accepted: 6, labelled: 14, verified_right: 7, accepted_labelled: 6, accepted_right: 4, precision: 4 / 6, recall: 4 / 7 },
        { run: B, samples: 13, accepted: 7, labelled: 12, verified_right: 6, accepted_labelled: 6, accepted_right: 5, precision: 5 / 6, recall: 5 / 6 },
      ]);
      seen.compare = c;

      // Runs swapped: the same numbers, mirrored.
      const swapped = await compareRuns(store, B, A);
      expect(swapped.overlap).toEqual({ accepted_a: 7, accepted_b: 6, both: 5, only_a: 2, only_b: 1, jaccard: 5 / 8 });
      expect(swapped.precision.map((p) => p.run)).toEqual([B, A]);
      // A stricter notion of "verified right" moves precision: nothing is right at >= 2.
      const strict = await compareRuns(store, A, B, { verifiedMin: 2 });
      expect(strict.precision.map((p) => [p.verified_right, p.precision, p.recall])).toEqual([
        [0, 0, null],
        [0, 0, null],
      ]);
      await expect(compareRuns(store, A, 'no-such-run')).rejects.toThrow(/no samples for run "no-such-run"/);
    });

    it('formatComparison / compareCommand: aligned text tables', async () => {
      const text = await compareCommand(A, B, store);
      expect(text).toBe(formatComparison(seen.compare as RunComparison));
      const lines = text.split('\n');
      expect(lines[0]).toBe(`Runs: A = ${A}, B = ${B}`);
      expect(text).toContain('Accepted rollouts (matched by id)');
      expect(lines).toContain('accepted_a  accepted_b  both  only_a  only_b  jaccard');
      expect(lines).toContain('         6           7     5       1       2    0.625');
      expect(lines).toContain('run-a       15         6        14            0               7                  6               4     0.6667  0.5714');
      expect(lines).toContain('below_min:rule           6  0   -6');
      expect(text).toMatch(/^model\s+0\s+-\s+-\s+-\s+13\s+0\.6577\s+0\.7\s+0\.98$/m);
    });

    it('migrateViews replaces a view whose columns differ from its spec', async () => {
      await store.command('DROP TABLE IF EXISTS qd_coverage');
      await store.command('CREATE VIEW qd_coverage AS SELECT pipeline_run, count() AS n FROM samples GROUP BY pipeline_run');
      await migrateViews(store);
      const cols = await q("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'qd_coverage'");
      expect(cols.map((c) => c.name)).toEqual(VIEWS.find((v) => v.name === 'qd_coverage')!.columns.map(([c]) => c));
    });

    it('migrateViews applies a changed body with unchanged columns, and follows the configured reward and k', async () => {
      const body = async (name: string) =>
        String((await q(`SELECT create_table_query AS sql FROM system.tables WHERE database = currentDatabase() AND name = '${name}'`))[0]!.sql);
      // Another verified reward: same columns, another body.
      await migrateViews(store, undefined, { ...DEFAULT_VIEW_OPTIONS, verifiedReward: 'pass' });
      expect(await body('exploration_groups')).toContain("'pass'");
      expect(await body('exploration_groups')).not.toContain("'correct'");
      // k = 8: the pass@k column follows.
      await migrateViews(store, undefined, { ...DEFAULT_VIEW_OPTIONS, passAtK: 8 });
      const cols = await q("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'exploration_groups'");
      expect(cols.map((c) => c.name)).toContain('pass_at_8');
      // Back to the defaults (the body changes back although the columns of most views did not).
      await migrateViews(store);
      expect(await body('exploration_groups')).toContain("'correct'");
      expect(await body('exploration')).toContain('pass_at_4');
      expect(viewOptionsFrom([{ type: 'explore-exploit', correctReward: 'pass', correctMin: 1, k: 8 }])).toEqual({ verifiedReward: 'pass', verifiedMin: 1, passAtK: 8 });
    });
  });
}

// ---------------------------------------------------------------------------------------------

const embeddedDir = mkdtempSync(join(tmpdir(), 'flywheel-analytics-'));

analyticsContract('embedded', async () => {
  // A database of its own, passed to migrate/migrateViews too: the db-qualified DDL path.
  const database = 'flywheel_analytics';
  const store = await openStore({ path: join(embeddedDir, 'clickhouse'), database });
  return {
    store,
    database,
    async done() {
      await store.close();
      rmSync(embeddedDir, { recursive: true, force: true });
    },
  };
});

analyticsContract('server', async () => {
  if (!SERVER_URL) {
    throw new Error(
      'FLYWHEEL_TEST_CLICKHOUSE_URL is not set: the analytics views are tested against a real ClickHouse server (18.16). ' +
        'Run `bash deploy/clickhouse-server.sh start` and set FLYWHEEL_TEST_CLICKHOUSE_URL=http://127.0.0.1:18123',
    );
  }
  const database = `flywheel_analytics_${RUN}`;
  const store = await openStore({ url: SERVER_URL, database });
  return {
    store,
    async done() {
      await store.command(`DROP DATABASE IF EXISTS ${database}`);
      await store.close();
    },
  };
});

describe('analytics on both backends', () => {
  it('returned the same rows from 18.16 and 26.x', () => {
    const embedded = results.get('embedded');
    const server = results.get('server');
    expect(embedded).toBeDefined();
    expect(server).toBeDefined();
    expect(Object.keys(server!).sort()).toEqual(Object.keys(embedded!).sort());
    for (const key of Object.keys(embedded!)) {
      // Floats may differ in the last bit between engines; compare to 12 significant digits.
      const round = (v: unknown): unknown =>
        typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(12)) : Array.isArray(v) ? v.map(round) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, round(x)])) : v;
      expect(round(server![key]), key).toEqual(round(embedded![key]));
    }
  });
});

describe('docs/analytics.md', () => {
  it('documents every view with its purpose, columns and example query', () => {
    const doc = readFileSync(new URL('../docs/analytics.md', import.meta.url), 'utf8');
    for (const view of VIEWS) {
      expect(doc, view.name).toContain(`### \`${view.name}\``);
      expect(doc, view.name).toContain(view.purpose);
      expect(doc, view.name).toContain(`flywheel sql "${view.example}"`);
      for (const [column] of view.columns) expect(doc, `${view.name}.${column}`).toContain(`\`${column}\``);
    }
  });
});

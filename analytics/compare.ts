// Two curating runs side by side — e.g. two configs over the same rollouts — computed by
// ClickHouse from `samples`, with queries valid on 18.16 and 26.x alike (see schema.ts).
//
// Rollouts are matched by id. Within one run an id may have several rows (a rollout re-sent is a
// second record, normally rejected as a duplicate); it counts as accepted by the run when any of
// its rows was accepted. Reason, score and precision tables count rows (decided samples).
//
// Precision and recall use a rollout's late label when `labels` holds one (its latest row,
// joined by rollout id, as the views do), else the verified reward at decision time;
// `from_labels` says how many labelled rows took theirs from `labels`.

import { formatTable } from '../lib/table.ts';
import type { ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { quoteTable } from '../sinks/clickhouse/sql.ts';
import { VERIFIED_MIN, VERIFIED_REWARD } from './views.ts';

export interface CompareOptions {
  /** The reward holding the verified outcome (default `correct`). */
  verifiedReward?: string;
  /** Verified right when the reward is at least this (default 0.5). */
  verifiedMin?: number;
  /** The samples table, possibly db-qualified (default `samples`). */
  table?: string;
  /** The late-labels table (default: `labels` in the samples table's database). */
  labelsTable?: string;
}

/** Overlap of the two runs' accepted rollout-id sets. */
export interface AcceptanceOverlap {
  /** |A|, |B|: rollouts each run accepted. */
  accepted_a: number;
  accepted_b: number;
  /** |A ∩ B|. */
  both: number;
  only_a: number;
  only_b: number;
  /** |A ∩ B| / |A ∪ B|; null when both sets are empty. */
  jaccard: number | null;
}

/** Rollouts by their decision in each run ('absent' when the run has no row for the id). */
export interface DecisionPair {
  decision_a: string;
  decision_b: string;
  rollouts: number;
}

export interface ReasonCounts {
  reason: string;
  /** Rows with the reason among their reasons. */
  a: number;
  b: number;
}

export interface ScoreSideBySide {
  score: string;
  a_count: number;
  a_avg: number | null;
  a_p50: number | null;
  a_p90: number | null;
  b_count: number;
  b_avg: number | null;
  b_p50: number | null;
  b_p90: number | null;
}

/** Precision and recall of one run's accepted set against the verified labels. */
export interface RunPrecision {
  run: string;
  samples: number;
  accepted: number;
  /** Rows with a label: a stored late label, or the verified reward. */
  labelled: number;
  /** Labelled rows whose label came from the `labels` table (the others: the reward at decision time). */
  from_labels: number;
  /** Labelled rows verified right. */
  verified_right: number;
  accepted_labelled: number;
  accepted_right: number;
  /** accepted_right / accepted_labelled; null without labelled accepted rows. */
  precision: number | null;
  /** accepted_right / verified_right; null without verified-right rows. */
  recall: number | null;
}

export interface RunComparison {
  runA: string;
  runB: string;
  overlap: AcceptanceOverlap;
  decisions: DecisionPair[];
  reasons: ReasonCounts[];
  scores: ScoreSideBySide[];
  /** [run A, run B]. */
  precision: [RunPrecision, RunPrecision];
}

const nan = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/**
 * Compares two runs stored in `samples`. Throws when either run has no samples (a typo in a
 * run name should not read as "nothing in common").
 */
export async function compareRuns(store: ClickHouseStore, runA: string, runB: string, opts: CompareOptions = {}): Promise<RunComparison> {
  const table = opts.table ?? 'samples';
  quoteTable(table);
  const reward = opts.verifiedReward ?? VERIFIED_REWARD;
  const min = opts.verifiedMin ?? VERIFIED_MIN;
  const labelsTable = opts.labelsTable ?? (table.includes('.') ? `${table.slice(0, table.lastIndexOf('.'))}.labels` : 'labels');
  quoteTable(labelsTable);
  const params = { t: table, a: runA, b: runB };
  const inRuns = 'pipeline_run IN ({a:String}, {b:String})';

  const precisionRows = await store.query<Omit<RunPrecision, 'run'> & { pipeline_run: string }>(
    `SELECT pipeline_run,
            count() AS samples,
            countIf(decision = 'accepted') AS accepted,
            countIf(is_labelled) AS labelled,
            countIf(has_stored = 1) AS from_labels,
            countIf(is_labelled AND is_right) AS verified_right,
            countIf(decision = 'accepted' AND is_labelled) AS accepted_labelled,
            countIf(decision = 'accepted' AND is_labelled AND is_right) AS accepted_right,
            if(accepted_labelled = 0, NULL, accepted_right / accepted_labelled) AS precision,
            if(verified_right = 0, NULL, accepted_right / verified_right) AS recall
     FROM (SELECT pipeline_run, decision, has_stored, has_stored = 1 OR has(reward_names, {reward:String}) AS is_labelled,
                  if(has_stored = 1, stored_label, reward_values[indexOf(reward_names, {reward:String})]) >= {min:Float64} AS is_right
           FROM (SELECT id, pipeline_run, decision, reward_names, reward_values FROM {t:Identifier} WHERE ${inRuns}) AS decided
           ALL LEFT JOIN (SELECT rollout_id AS id, argMax(value, sink_offset) AS stored_label, toUInt8(1) AS has_stored
                          FROM {l:Identifier} GROUP BY rollout_id) AS stored
           USING id)
     GROUP BY pipeline_run`,
    { ...params, l: labelsTable, reward, min },
  );
  const precisionOf = (run: string): RunPrecision => {
    const row = precisionRows.find((r) => r.pipeline_run === run);
    if (row === undefined) throw new Error(`compare: no samples for run ${JSON.stringify(run)} in ${table}`);
    const { pipeline_run: _run, ...rest } = row;
    return { run, ...rest };
  };
  const precision: [RunPrecision, RunPrecision] = [precisionOf(runA), precisionOf(runB)];

  const perId = `SELECT id,
            countIf(pipeline_run = {a:String}) AS rows_a,
            countIf(pipeline_run = {b:String}) AS rows_b,
            countIf(pipeline_run = {a:String} AND decision = 'accepted') > 0 AS acc_a,
            countIf(pipeline_run = {b:String} AND decision = 'accepted') > 0 AS acc_b
     FROM {t:Identifier} WHERE ${inRuns} GROUP BY id`;

  const [overlapRow] = await store.query<Omit<AcceptanceOverlap, 'jaccard'> & { jaccard: number | null }>(
    `SELECT countIf(acc_a) AS accepted_a,
            countIf(acc_b) AS accepted_b,
            countIf(acc_a AND acc_b) AS both_ab,
            countIf(acc_a AND NOT acc_b) AS only_a,
            countIf(acc_b AND NOT acc_a) AS only_b,
            if(both_ab + only_a + only_b = 0, NULL, both_ab / (both_ab + only_a + only_b)) AS jaccard
     FROM (${perId})`,
    params,
  );
  const o = overlapRow as unknown as Record<string, number | null>;
  const overlap: AcceptanceOverlap = {
    accepted_a: Number(o.accepted_a),
    accepted_b: Number(o.accepted_b),
    both: Number(o.both_ab),
    only_a: Number(o.only_a),
    only_b: Number(o.only_b),
    jaccard: nan(o.jaccard),
  };

  const decisions = await store.query<DecisionPair>(
    `SELECT decision_a, decision_b, count() AS rollouts
     FROM (SELECT multiIf(rows_a = 0, 'absent', acc_a, 'accepted', 'rejected') AS decision_a,
                  multiIf(rows_b = 0, 'absent', acc_b, 'accepted', 'rejected') AS decision_b
           FROM (${perId}))
     GROUP BY decision_a, decision_b
     ORDER BY decision_a, decision_b`,
    params,
  );

  const reasonRows = await store.query<{ r: string; a: number; b: number }>(
    `SELECT r, countIf(pipeline_run = {a:String}) AS a, countIf(pipeline_run = {b:String}) AS b
     FROM {t:Identifier} ARRAY JOIN reasons AS r
     WHERE ${inRuns}
     GROUP BY r
     ORDER BY a + b DESC, r`,
    params,
  );
  const reasons = reasonRows.map(({ r, a, b }) => ({ reason: r, a, b }));

  const scoreRows = await store.query<Record<string, unknown>>(
    `SELECT s,
            countIf(pipeline_run = {a:String}) AS a_count,
            avgIf(v, pipeline_run = {a:String}) AS a_avg,
            quantilesIf(0.5, 0.9)(v, pipeline_run = {a:String}) AS a_q,
            countIf(pipeline_run = {b:String}) AS b_count,
            avgIf(v, pipeline_run = {b:String}) AS b_avg,
            quantilesIf(0.5, 0.9)(v, pipeline_run = {b:String}) AS b_q
     FROM {t:Identifier} ARRAY JOIN score_names AS s, score_values AS v
     WHERE ${inRuns} AND isFinite(v)
     GROUP BY s
     ORDER BY s`,
    params,
  );
  const scores = scoreRows.map((r): ScoreSideBySide => {
    const aq = r.a_q as number[];
    const bq = r.b_q as number[];
    const aCount = Number(r.a_count);
    const bCount = Number(r.b_count);
    return {
      score: String(r.s),
      a_count: aCount,
      a_avg: aCount === 0 ? null : nan(r.a_avg),
      a_p50: aCount === 0 ? null : nan(aq[0]),
      a_p90: aCount === 0 ? null : nan(aq[1]),
      b_count: bCount,
      b_avg: bCount === 0 ? null : nan(r.b_avg),
      b_p50: bCount === 0 ? null : nan(bq[0]),
      b_p90: bCount === 0 ? null : nan(bq[1]),
    };
  });

  return {
    runA,
    runB,
    overlap,
    decisions,
    reasons,
    scores,
    precision: [
      { ...precision[0], precision: nan(precision[0].precision), recall: nan(precision[0].recall) },
      { ...precision[1], precision: nan(precision[1].precision), recall: nan(precision[1].recall) },
    ],
  };
}

/** A number for a text table: integers as they are, others rounded to 4 decimals, null as '-'. */
function cell(v: number | null): number | string {
  if (v === null) return '-';
  return Number.isInteger(v) ? v : Math.round(v * 10_000) / 10_000;
}

/** The comparison as aligned text tables (lib/table.ts), one section per question. */
export function formatComparison(c: RunComparison): string {
  const [pa, pb] = c.precision;
  const o = c.overlap;
  const sections: [string, Record<string, unknown>[]][] = [
    [
      `Runs: A = ${c.runA}, B = ${c.runB}`,
      [pa, pb].map((p) => ({
        run: p.run,
        samples: p.samples,
        accepted: p.accepted,
        labelled: p.labelled,
        from_labels: p.from_labels,
        verified_right: p.verified_right,
        accepted_labelled: p.accepted_labelled,
        accepted_right: p.accepted_right,
        precision: cell(p.precision),
        recall: cell(p.recall),
      })),
    ],
    [
      'Accepted rollouts (matched by id)',
      [{ accepted_a: o.accepted_a, accepted_b: o.accepted_b, both: o.both, only_a: o.only_a, only_b: o.only_b, jaccard: cell(o.jaccard) }],
    ],
    ['Decisions (rollouts by decision in A and in B)', c.decisions.map((d) => ({ ...d }))],
    ['Reasons (samples with the reason)', c.reasons.map((r) => ({ reason: r.reason, A: r.a, B: r.b, 'B-A': r.b - r.a }))],
    [
      'Scores',
      c.scores.map((s) => ({
        score: s.score,
        'A n': s.a_count,
        'A avg': cell(s.a_avg),
        'A p50': cell(s.a_p50),
        'A p90': cell(s.a_p90),
        'B n': s.b_count,
        'B avg': cell(s.b_avg),
        'B p50': cell(s.b_p50),
        'B p90': cell(s.b_p90),
      })),
    ],
  ];
  return `${sections.map(([title, rows]) => `${title}\n${formatTable(rows)}`).join('\n\n')}\n`;
}

// Analytics over Flywheel's tables: plain views answering what operators of the loop ask daily,
// and the `trainer_progress` table trainers report to. One definition serves both backends, so
// every statement keeps to what ClickHouse 18.16 (Debian's clickhouse-server) and 26.x (chdb)
// both accept (see schema.ts): no Map (parallel arrays, looked up with indexOf — index 0, i.e. a
// missing key, yields the type's default), no WITH-subqueries, no window functions (ranks come
// from arraySort + arrayCumSum), joins spelled `ALL … JOIN … USING`, no parameterised views.
//
// Views, not materialized views: a view reads `samples` at query time, so it is correct for rows
// already stored when it is created, and a changed definition is a DROP + CREATE instead of a
// backfill. A materialized view would keep counting a re-delivered row after ReplacingMergeTree
// collapsed it, and quantiles/ranks would need AggregatingMergeTree state columns per view. The
// daily questions group one table by run and hour; that stays fast at one pipeline's volumes.
//
// Views read `samples` without FINAL: the sink stores each Kafka record once (README,
// "Exactly once into ClickHouse"); the ReplacingMergeTree key is only a backstop.
//
// Verified outcome, wherever a view needs one: the reward `correct` (VERIFIED_REWARD), right when
// >= 0.5 (VERIFIED_MIN). Samples with neither that reward nor a stored label are unlabelled and left
// out of label metrics. `exploitation`, `error_compensation`, `exploration_groups` / `exploration`
// (and compare.ts) prefer a late label: the latest row of
// the `labels` table for the rollout id (what arrived on `<prefix>.labels` after the decision),
// falling back to the reward at decision time; their `from_labels` / `label_source` columns say
// which was used. The join is `ALL LEFT JOIN … USING id` on a GROUP BY of `labels`: an unmatched
// row gets the column defaults (0) on both engines, so a constant `has_stored` = 1 marks a match.

import { createHash } from 'node:crypto';
import type { ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { createTableSql } from '../sinks/clickhouse/schema.ts';
import { ClickHouseStoreError, quoteIdent, quoteString } from '../sinks/clickhouse/sql.ts';
import { TRAINER_PROGRESS_TABLE } from '../contracts/trainer-progress.ts';

export const VERIFIED_REWARD = 'correct';
export const VERIFIED_MIN = 0.5;
/** k of the pass@k column in `exploration` / `exploration_groups` (the explore-exploit operator's default). */
export const PASS_AT_K = 4;

const TRAINER_PROGRESS_COLUMNS: [string, string][] = [
  ['trainer', 'String'],
  ['model_version', 'String'],
  ['step', 'UInt64'],
  ['examples', 'UInt64'],
  ['loss', 'Float64'],
  ['metric_names', 'Array(String)'],
  ['metric_values', 'Array(Float64)'],
  ['committed_topic', 'String'],
  ['committed_partitions', 'Array(UInt32)'],
  ['committed_offsets', 'Array(UInt64)'],
  ['at', 'DateTime'],
  ['inserted_at', 'DateTime'],
];

/** `trainer_progress`: a step reported twice (a trainer restarted from a checkpoint) collapses to the later report. */
export const TRAINER_PROGRESS_SPEC = {
  name: TRAINER_PROGRESS_TABLE,
  columns: TRAINER_PROGRESS_COLUMNS,
  version: 'at',
  orderBy: ['trainer', 'model_version', 'step'],
};

/** Qualifies a table name for a view body (unqualified: the database the view is created in). */
type TableRef = (table: string) => string;

export interface ViewSpec {
  name: string;
  /** One line: the question the view answers. */
  purpose: string;
  /** Output columns in order, with what each holds (checked against the created view). */
  columns: readonly (readonly [name: string, description: string])[];
  /** The view's SELECT; `t` names tables (db-qualified when migrateViews got a database). */
  select: (t: TableRef) => string;
  /** A query over the view, as `flywheel sql` would run it. */
  example: string;
}

// Expressions over a `samples` row.
const tag = (key: string) => `tag_values[indexOf(tag_keys, ${quoteString(key)})]`;
const annotation = (key: string) => `annotation_values[indexOf(annotation_keys, ${quoteString(key)})]`;
/** Response text as exact-dedupe normalises it: lower case, whitespace runs folded, trimmed. */
const normalizedResponse = `replaceRegexpAll(replaceRegexpAll(lowerUTF8(response), '\\\\s+', ' '), '^ | $', '')`;

/** 1 − C(n−c, k)/C(n, k) for k = PASS_AT_K, as a product (C(m, k) is 0 for m < k, so the product is too). */
function passAtKSql(n: string, c: string, k: number): string {
  const wrong = `toFloat64(${n} - ${c})`;
  const all = `toFloat64(${n})`;
  const num = Array.from({ length: k }, (_, i) => (i === 0 ? wrong : `(${wrong} - ${i})`)).join(' * ');
  const den = Array.from({ length: k }, (_, i) => (i === 0 ? all : `(${all} - ${i})`)).join(' * ');
  return `if(${n} >= ${k}, 1 - (${num}) / (${den}), NULL)`;
}

/**
 * What the views count as a verified outcome and which pass@k they report; a pipeline takes them
 * from its explore-exploit operator (viewOptionsFrom), so the views and the operator agree.
 */
export interface ViewOptions {
  /** The reward holding the verified outcome (default `correct`). */
  verifiedReward: string;
  /** Right when the reward is at least this (default 0.5). */
  verifiedMin: number;
  /** k of the pass@k columns (default 4): `pass_at_<k>`. */
  passAtK: number;
}

export const DEFAULT_VIEW_OPTIONS: ViewOptions = { verifiedReward: VERIFIED_REWARD, verifiedMin: VERIFIED_MIN, passAtK: PASS_AT_K };

/**
 * The view options of a pipeline's operators: the first explore-exploit operator's
 * `correctReward`, `correctMin` and `k`, else the defaults.
 *
 *   viewOptionsFrom([{ type: 'explore-exploit', correctReward: 'pass', k: 8 }]) // { verifiedReward: 'pass', verifiedMin: 0.5, passAtK: 8 }
 */
export function viewOptionsFrom(operators: readonly { type: string; correctReward?: string; correctMin?: number; k?: number }[]): ViewOptions {
  const ee = operators.find((o) => o.type === 'explore-exploit');
  return {
    verifiedReward: ee?.correctReward ?? VERIFIED_REWARD,
    verifiedMin: ee?.correctMin ?? VERIFIED_MIN,
    passAtK: ee?.k ?? PASS_AT_K,
  };
}

/**
 * `samples` (the listed columns, `id` among them) with the latest stored label of each rollout:
 * `has_stored` (1 when `labels` has one, else 0) and `stored_label` (its value, else 0).
 */
function samplesWithLabels(t: TableRef, columns: readonly string[]): string {
  return `(SELECT ${columns.join(', ')}, has_stored, stored_label
      FROM ${t('samples')}
      ALL LEFT JOIN (SELECT rollout_id AS id, argMax(value, sink_offset) AS stored_label, toUInt8(1) AS has_stored
                     FROM ${t('labels')} GROUP BY rollout_id) AS stored
      USING id)`;
}

/** 'labels' | 'rewards.<reward>' | 'mixed': where a row's labelled samples (column `labelled`) took their label (`from_labels` of them from `labels`). */
const labelSourceSql = (reward: string, labelled = 'labelled') =>
  `multiIf(${labelled} = 0, '', from_labels = ${labelled}, 'labels', from_labels = 0, ${quoteString(`rewards.${reward}`)}, 'mixed')`;

/** The views for `opts` (column names and bodies follow the verified reward and k). */
export function viewSpecs(opts: ViewOptions = DEFAULT_VIEW_OPTIONS): readonly ViewSpec[] {
  if (!Number.isInteger(opts.passAtK) || opts.passAtK < 1) throw new Error(`views: passAtK must be a positive integer, got ${opts.passAtK}`);
  if (!Number.isFinite(opts.verifiedMin)) throw new Error(`views: verifiedMin must be a finite number, got ${opts.verifiedMin}`);
  // Shadow the defaults: every view below is written in terms of these.
  const VERIFIED_REWARD = opts.verifiedReward;
  const VERIFIED_MIN = opts.verifiedMin;
  const PASS_AT_K = opts.passAtK;
  const labelled = `has(reward_names, ${quoteString(VERIFIED_REWARD)})`;
  const labelValue = `reward_values[indexOf(reward_names, ${quoteString(VERIFIED_REWARD)})]`;
  // A stored late label first, else the reward at decision time (see the file comment).
  const lateLabelled = `(has_stored = 1 OR ${labelled})`;
  const lateLabel = `if(has_stored = 1, stored_label, ${labelValue})`;
  return [
  {
    name: 'acceptance_hourly',
    purpose: 'How many samples were accepted, per run, hour, model version and source/skill tag?',
    columns: [
      ['pipeline_run', 'the curating run'],
      ['created_hour', 'hour the rollout was generated (toStartOfHour(created_at), UTC)'],
      ['inserted_hour', 'hour the decision was stored (toStartOfHour(inserted_at), UTC)'],
      ['model_version', 'the generating model'],
      ['source', "tag `source` ('' when absent)"],
      ['skill', "tag `skill` ('' when absent)"],
      ['samples', 'decided samples'],
      ['accepted', "decision = 'accepted'"],
      ['rejected', "decision = 'rejected'"],
      ['accept_rate', 'accepted / samples in this row (roll up with sum(accepted) / sum(samples))'],
    ],
    select: (t) => `SELECT
    pipeline_run,
    toStartOfHour(created_at) AS created_hour,
    toStartOfHour(inserted_at) AS inserted_hour,
    model_version,
    ${tag('source')} AS source,
    ${tag('skill')} AS skill,
    count() AS samples,
    countIf(decision = 'accepted') AS accepted,
    countIf(decision = 'rejected') AS rejected,
    accepted / samples AS accept_rate
FROM ${t('samples')}
GROUP BY pipeline_run, created_hour, inserted_hour, model_version, source, skill`,
    example: `SELECT created_hour, model_version, sum(accepted) AS acc, sum(samples) AS n, round(acc / n, 3) AS rate FROM acceptance_hourly WHERE pipeline_run = 'live' GROUP BY created_hour, model_version ORDER BY created_hour, model_version`,
  },
  {
    name: 'score_distribution',
    purpose: 'How is each score distributed in a run (all samples, and the accepted ones)?',
    columns: [
      ['pipeline_run', 'the curating run'],
      ['score_name', 'a name in score_names'],
      ['samples', 'samples with a finite value of the score'],
      ['mean', 'average'],
      ['min_value', 'smallest value'],
      ['p10', '0.1 quantile (ClickHouse `quantiles`: interpolated, exact up to 8192 values, a uniform sample of 8192 beyond)'],
      ['p50', 'median (same)'],
      ['p90', '0.9 quantile (same)'],
      ['max_value', 'largest value'],
      ['accepted', 'accepted samples with the score'],
      ['accepted_mean', 'average over the accepted ones (NULL/nan when none)'],
    ],
    select: (t) => `SELECT
    pipeline_run,
    score_name,
    count() AS samples,
    avg(score_value) AS mean,
    min(score_value) AS min_value,
    quantiles(0.1, 0.5, 0.9)(score_value)[1] AS p10,
    quantiles(0.1, 0.5, 0.9)(score_value)[2] AS p50,
    quantiles(0.1, 0.5, 0.9)(score_value)[3] AS p90,
    max(score_value) AS max_value,
    countIf(decision = 'accepted') AS accepted,
    avgIf(score_value, decision = 'accepted') AS accepted_mean
FROM ${t('samples')}
ARRAY JOIN score_names AS score_name, score_values AS score_value
WHERE isFinite(score_value)
GROUP BY pipeline_run, score_name`,
    example: `SELECT score_name, samples, round(mean, 3) AS mean, p10, p50, p90 FROM score_distribution WHERE pipeline_run = 'live' ORDER BY score_name`,
  },
  {
    name: 'duplicate_rates',
    purpose: 'What share of a run did each dedupe method remove?',
    columns: [
      ['pipeline_run', 'the curating run'],
      ['samples', 'decided samples in the run'],
      ['dedupe_method', "exact | minhash | semantic …; '' when the run had no duplicates"],
      ['duplicates', 'samples the method marked as duplicates'],
      ['duplicate_rate', 'duplicates / samples'],
    ],
    select: (t) => `SELECT pipeline_run, samples, dedupe_method, duplicates, duplicates / samples AS duplicate_rate
FROM (SELECT pipeline_run, count() AS samples FROM ${t('samples')} GROUP BY pipeline_run) AS totals
ALL LEFT JOIN
(SELECT pipeline_run, dedupe_method, count() AS duplicates FROM ${t('samples')} WHERE dedupe_method != '' GROUP BY pipeline_run, dedupe_method) AS dups
USING pipeline_run`,
    example: `SELECT pipeline_run, dedupe_method, duplicates, samples, round(duplicate_rate, 4) AS rate FROM duplicate_rates ORDER BY pipeline_run, dedupe_method`,
  },
  {
    name: 'duplicate_rates_hourly',
    purpose: 'How does the duplicate rate of each dedupe method move over time (hour the rollout was generated)?',
    columns: [
      ['pipeline_run', 'the curating run'],
      ['created_hour', 'toStartOfHour(created_at), UTC'],
      ['samples', 'decided samples of the run in that hour'],
      ['dedupe_method', "exact | minhash | semantic …; '' when the hour had no duplicates"],
      ['duplicates', 'samples of the hour the method marked as duplicates'],
      ['duplicate_rate', 'duplicates / samples'],
    ],
    select: (t) => `SELECT pipeline_run, created_hour, samples, dedupe_method, duplicates, duplicates / samples AS duplicate_rate
FROM (SELECT pipeline_run, toStartOfHour(created_at) AS created_hour, count() AS samples FROM ${t('samples')} GROUP BY pipeline_run, created_hour) AS totals
ALL LEFT JOIN
(SELECT pipeline_run, toStartOfHour(created_at) AS created_hour, dedupe_method, count() AS duplicates FROM ${t('samples')}
 WHERE dedupe_method != '' GROUP BY pipeline_run, created_hour, dedupe_method) AS dups
USING pipeline_run, created_hour`,
    example: `SELECT created_hour, dedupe_method, duplicates, samples, round(duplicate_rate, 4) AS rate FROM duplicate_rates_hourly WHERE pipeline_run = 'live' ORDER BY created_hour, dedupe_method`,
  },
  {
    name: 'rejection_reasons',
    purpose: 'Why were samples rejected in a run: every reason (arrayJoin(reasons)), and how often it was the deciding one?',
    columns: [
      ['pipeline_run', 'the curating run'],
      ['rejection_reason', 'one of a sample’s reasons'],
      ['samples', 'samples with this reason among their reasons'],
      ['deciding', 'samples whose first (deciding) reason it was'],
      ['run_samples', 'decided samples in the run'],
      ['share', 'samples / run_samples'],
    ],
    select: (t) => `SELECT pipeline_run, rejection_reason, samples, deciding, run_samples, samples / run_samples AS share
FROM (SELECT pipeline_run, rejection_reason, count() AS samples, countIf(reason = rejection_reason) AS deciding
      FROM ${t('samples')} ARRAY JOIN reasons AS rejection_reason GROUP BY pipeline_run, rejection_reason) AS counted
ALL INNER JOIN
(SELECT pipeline_run, count() AS run_samples FROM ${t('samples')} GROUP BY pipeline_run) AS totals
USING pipeline_run`,
    example: `SELECT rejection_reason, samples, deciding, round(share, 3) AS share FROM rejection_reasons WHERE pipeline_run = 'live' ORDER BY samples DESC, rejection_reason`,
  },
  {
    name: 'qd_cells',
    purpose: "Per quality–diversity cell (annotation 'qd.cell'): how many samples landed there, how often its elite improved, how many were accepted?",
    columns: [
      ['pipeline_run', 'the curating run'],
      ['cell', "annotation 'qd.cell', e.g. length=1|skill=addition"],
      ['samples', 'samples placed in the cell'],
      ['elites', "samples that were (became) the cell's elite on arrival ('qd.elite' = '1'): 1 + improvements"],
      ['accepted', 'accepted samples of the cell'],
    ],
    select: (t) => `SELECT
    pipeline_run,
    ${annotation('qd.cell')} AS cell,
    count() AS samples,
    countIf(${annotation('qd.elite')} = '1') AS elites,
    countIf(decision = 'accepted') AS accepted
FROM ${t('samples')}
WHERE has(annotation_keys, 'qd.cell')
GROUP BY pipeline_run, cell`,
    example: `SELECT cell, samples, elites, accepted FROM qd_cells WHERE pipeline_run = 'live' ORDER BY cell`,
  },
  {
    name: 'qd_coverage',
    purpose: 'How much of the quality–diversity grid does a run fill, and how often do elites turn over?',
    columns: [
      ['pipeline_run', 'the curating run'],
      ['cells_seen', 'distinct cells samples landed in'],
      ['cells_filled', 'distinct cells with an elite'],
      ['samples', "samples with a 'qd.cell' annotation"],
      ['elites', "samples with 'qd.elite' = '1'"],
      ['elites_per_cell', 'elites / cells_filled (1 = every cell kept its first elite)'],
    ],
    select: (t) => `SELECT
    pipeline_run,
    uniqExact(cell) AS cells_seen,
    uniqExactIf(cell, elite) AS cells_filled,
    count() AS samples,
    countIf(elite) AS elites,
    if(cells_filled = 0, NULL, elites / cells_filled) AS elites_per_cell
FROM (SELECT pipeline_run, ${annotation('qd.cell')} AS cell, ${annotation('qd.elite')} = '1' AS elite
      FROM ${t('samples')} WHERE has(annotation_keys, 'qd.cell'))
GROUP BY pipeline_run`,
    example: `SELECT pipeline_run, cells_filled, cells_seen, elites, round(elites_per_cell, 2) AS per_cell FROM qd_coverage ORDER BY pipeline_run`,
  },
  {
    name: 'exploration_groups',
    purpose: `Per prompt group and model version: labelled samples, correct ones, distinct correct responses, pass@1 and pass@${PASS_AT_K}.`,
    columns: [
      ['pipeline_run', 'the curating run'],
      ['model_version', 'the generating model'],
      ['group_id', 'the prompt group'],
      ['n', `labelled samples (a stored label, or the reward '${VERIFIED_REWARD}'), rejected ones included`],
      ['correct', `labelled samples whose label is >= ${VERIFIED_MIN}`],
      ['distinct_correct', 'distinct correct responses (lower-cased, whitespace folded and trimmed)'],
      ['pass_at_1', 'correct / n'],
      [`pass_at_${PASS_AT_K}`, `unbiased pass@${PASS_AT_K} = 1 − C(n−correct, ${PASS_AT_K}) / C(n, ${PASS_AT_K}); NULL when n < ${PASS_AT_K}`],
      ['from_labels', 'labelled samples whose label is the latest row of `labels` for the rollout (the others used the reward at decision time)'],
      ['label_source', `'labels', 'rewards.${VERIFIED_REWARD}' or 'mixed': where the labels came from`],
    ],
    select: (t) => `SELECT
    pipeline_run,
    model_version,
    group_id,
    count() AS n,
    countIf(is_right) AS correct,
    uniqExactIf(answer, is_right) AS distinct_correct,
    correct / n AS pass_at_1,
    ${passAtKSql('n', 'correct', PASS_AT_K)} AS pass_at_${PASS_AT_K},
    countIf(has_stored = 1) AS from_labels,
    ${labelSourceSql(VERIFIED_REWARD, 'n')} AS label_source
FROM (SELECT pipeline_run, model_version, group_id, ${lateLabel} >= ${VERIFIED_MIN} AS is_right, ${normalizedResponse} AS answer, has_stored
      FROM ${samplesWithLabels(t, ['id', 'pipeline_run', 'model_version', 'group_id', 'response', 'reward_names', 'reward_values'])}
      WHERE ${lateLabelled})
GROUP BY pipeline_run, model_version, group_id`,
    example: `SELECT group_id, n, correct, distinct_correct, pass_at_${PASS_AT_K} FROM exploration_groups WHERE pipeline_run = 'live' AND model_version = 'v1' ORDER BY group_id LIMIT 20`,
  },
  {
    name: 'exploration',
    purpose: `Exploration per model version: how many distinct correct responses a prompt group gets, and pass@1 / pass@${PASS_AT_K} over groups.`,
    columns: [
      ['pipeline_run', 'the curating run'],
      ['model_version', 'the generating model'],
      ['groups', 'prompt groups with a labelled sample'],
      [`groups_k`, `groups with at least ${PASS_AT_K} labelled samples (those pass@${PASS_AT_K} covers)`],
      ['labelled', 'labelled samples'],
      ['mean_distinct_correct', 'mean distinct correct responses per group'],
      ['pass_at_1', 'mean pass@1 over groups'],
      [`pass_at_${PASS_AT_K}`, `mean pass@${PASS_AT_K} over groups with n >= ${PASS_AT_K} (NULL/nan when none)`],
      ['from_labels', 'labelled samples whose label came from `labels`'],
      ['label_source', `'labels', 'rewards.${VERIFIED_REWARD}' or 'mixed'`],
    ],
    select: (t) => `SELECT
    pipeline_run,
    model_version,
    count() AS groups,
    countIf(n >= ${PASS_AT_K}) AS groups_k,
    sum(n) AS labelled,
    avg(distinct_correct) AS mean_distinct_correct,
    avg(pass_at_1) AS pass_at_1,
    avgIf(ifNull(pass_at_${PASS_AT_K}, 0), n >= ${PASS_AT_K}) AS pass_at_${PASS_AT_K},
    sum(from_labels) AS from_labels,
    ${labelSourceSql(VERIFIED_REWARD)} AS label_source
FROM ${t('exploration_groups')}
GROUP BY pipeline_run, model_version`,
    example: `SELECT model_version, groups, round(mean_distinct_correct, 2) AS distinct, round(pass_at_1, 3) AS p1, round(pass_at_${PASS_AT_K}, 3) AS p${PASS_AT_K} FROM exploration WHERE pipeline_run = 'live' ORDER BY model_version`,
  },
  {
    name: 'exploitation',
    purpose:
      "Exploitation per model version and score: how well does the score separate verified-right from wrong samples (AUC via the Mann–Whitney rank sum, and the difference of means)?",
    columns: [
      ['pipeline_run', 'the curating run'],
      ['model_version', 'the generating model'],
      ['score_name', 'a name in score_names'],
      ['labelled', `labelled samples (a stored label, or the reward '${VERIFIED_REWARD}') with a finite value of the score`],
      ['from_labels', 'labelled samples whose label is the latest row of `labels` for the rollout (the others used the reward at decision time)'],
      ['label_source', `'labels', 'rewards.${VERIFIED_REWARD}' or 'mixed': where the labels came from`],
      ['verified_right', `label >= ${VERIFIED_MIN}`],
      ['verified_wrong', 'the others'],
      ['mean_right', 'mean score of the right ones'],
      ['mean_wrong', 'mean score of the wrong ones'],
      ['mean_gap', 'mean_right − mean_wrong'],
      ['auc', 'P(score of a right sample > score of a wrong one), ties half; NULL without both kinds'],
      ['accepted_labelled', 'accepted labelled samples'],
      ['precision', 'verified right among accepted_labelled (NULL/nan when none)'],
    ],
    // Mann–Whitney without pairs or window functions: group the labelled samples by distinct score
    // value (n samples, r right), sort the values, and give each value its midrank
    // cum(n) − n + (n + 1)/2. The rank sum of the right ones R = Σ r·midrank, U = R − P(P+1)/2,
    // AUC = U / (P·N). One sort of the distinct values per group, exact with ties.
    select: (t) => `SELECT
    pipeline_run,
    model_version,
    score_name,
    sum(n) AS labelled,
    sum(l) AS from_labels,
    ${labelSourceSql(VERIFIED_REWARD)} AS label_source,
    sum(r) AS verified_right,
    labelled - verified_right AS verified_wrong,
    sum(score_value * r) / verified_right AS mean_right,
    sum(score_value * (n - r)) / verified_wrong AS mean_wrong,
    mean_right - mean_wrong AS mean_gap,
    if(verified_right = 0 OR verified_wrong = 0, NULL,
       (arraySum(arrayMap((rr, nn, cum) -> rr * (cum - nn + (nn + 1) / 2),
                          arraySort((x, v) -> v, groupArray(r), groupArray(score_value)),
                          arraySort((x, v) -> v, groupArray(n), groupArray(score_value)),
                          arrayCumSum(arraySort((x, v) -> v, groupArray(n), groupArray(score_value)))))
        - verified_right * (verified_right + 1) / 2) / (verified_right * verified_wrong)) AS auc,
    sum(a) AS accepted_labelled,
    sum(ar) / accepted_labelled AS precision
FROM (SELECT pipeline_run, model_version, score_name, score_value, count() AS n, countIf(is_right) AS r, countIf(has_stored = 1) AS l,
             countIf(is_accepted) AS a, countIf(is_accepted AND is_right) AS ar
      FROM (SELECT pipeline_run, model_version, score_name, score_value, ${lateLabel} >= ${VERIFIED_MIN} AS is_right, has_stored,
                   decision = 'accepted' AS is_accepted
            FROM ${samplesWithLabels(t, ['id', 'pipeline_run', 'model_version', 'decision', 'score_names', 'score_values', 'reward_names', 'reward_values'])}
            ARRAY JOIN score_names AS score_name, score_values AS score_value
            WHERE ${lateLabelled} AND isFinite(score_value))
      GROUP BY pipeline_run, model_version, score_name, score_value)
GROUP BY pipeline_run, model_version, score_name`,
    example: `SELECT model_version, score_name, labelled, round(auc, 3) AS auc, round(mean_gap, 3) AS gap FROM exploitation WHERE pipeline_run = 'live' ORDER BY model_version, score_name`,
  },
  {
    name: 'error_compensation',
    purpose:
      "Error memory at work: per model version and compensated score x (scores x.raw, x.correction, x), the mean |correction| and, on labelled samples, the mean absolute error of raw vs compensated.",
    columns: [
      ['pipeline_run', 'the curating run'],
      ['model_version', 'the generating model'],
      ['score', 'the compensated score x'],
      ['samples', 'samples carrying x.raw, x.correction and x'],
      ['corrected', 'samples with a non-zero correction'],
      ['mean_abs_correction', 'mean abs(x.correction)'],
      ['labelled', `samples with a label: the latest row of \`labels\` for the rollout, else the reward '${VERIFIED_REWARD}'`],
      ['from_labels', 'labelled samples whose label came from `labels`'],
      ['label_source', `'labels', 'rewards.${VERIFIED_REWARD}' or 'mixed'`],
      ['mae_raw', 'mean abs(label − x.raw) over labelled samples'],
      ['mae_compensated', 'mean abs(label − x) over labelled samples'],
      ['mae_reduction', 'mae_raw − mae_compensated (> 0: the memory helps)'],
    ],
    select: (t) => `SELECT
    pipeline_run,
    model_version,
    score,
    count() AS samples,
    countIf(correction != 0) AS corrected,
    avg(abs(correction)) AS mean_abs_correction,
    countIf(is_labelled) AS labelled,
    countIf(is_labelled AND has_stored = 1) AS from_labels,
    ${labelSourceSql(VERIFIED_REWARD)} AS label_source,
    avgIf(abs(label - raw), is_labelled) AS mae_raw,
    avgIf(abs(label - compensated), is_labelled) AS mae_compensated,
    mae_raw - mae_compensated AS mae_reduction
FROM (SELECT pipeline_run, model_version, score, correction,
             score_values[indexOf(score_names, concat(score, '.raw'))] AS raw,
             score_values[indexOf(score_names, score)] AS compensated,
             ${lateLabelled} AS is_labelled,
             ${lateLabel} AS label,
             has_stored
      FROM (SELECT pipeline_run, model_version, score_names, score_values, reward_names, reward_values, has_stored, stored_label,
                   substring(correction_name, 1, length(correction_name) - 11) AS score, correction_value AS correction
            FROM ${samplesWithLabels(t, ['id', 'pipeline_run', 'model_version', 'score_names', 'score_values', 'reward_names', 'reward_values'])}
            ARRAY JOIN score_names AS correction_name, score_values AS correction_value
            WHERE endsWith(correction_name, '.correction'))
      WHERE has(score_names, concat(score, '.raw')) AND has(score_names, score))
GROUP BY pipeline_run, model_version, score`,
    example: `SELECT model_version, score, samples, round(mean_abs_correction, 4) AS corr, round(mae_raw, 4) AS raw, round(mae_compensated, 4) AS comp FROM error_compensation WHERE pipeline_run = 'live' ORDER BY model_version, score`,
  },
  {
    name: 'trainer_status',
    purpose: 'Where is each trainer: latest step, examples consumed, loss, throughput and committed offsets per model version?',
    columns: [
      ['trainer', 'the trainer'],
      ['model_version', 'the model version it trains'],
      ['reports', 'progress rows'],
      ['first_step', 'lowest reported step'],
      ['last_step', 'highest reported step'],
      ['examples_total', 'examples consumed at the last step'],
      ['first_loss', 'loss at the first step'],
      ['last_loss', 'loss at the last step'],
      ['best_loss', 'lowest loss reported'],
      ['started_at', 'first report'],
      ['last_at', 'latest report'],
      ['examples_per_second', '(examples at last step − at first step) / seconds between first and last report; NULL for one instant'],
      ['topic', 'the accepted topic it reads (committed_topic at the last step)'],
      ['partitions', 'partitions with a committed offset (at the last step)'],
      ['offsets', 'their committed next offsets (at the last step)'],
    ],
    select: (t) => `SELECT
    trainer,
    model_version,
    count() AS reports,
    min(step) AS first_step,
    max(step) AS last_step,
    argMax(examples, step) AS examples_total,
    argMin(loss, step) AS first_loss,
    argMax(loss, step) AS last_loss,
    min(loss) AS best_loss,
    min(at) AS started_at,
    max(at) AS last_at,
    if(max(at) = min(at), NULL,
       (toFloat64(argMax(examples, step)) - toFloat64(argMin(examples, step))) / (toUInt32(max(at)) - toUInt32(min(at)))) AS examples_per_second,
    argMax(committed_topic, step) AS topic,
    argMax(committed_partitions, step) AS partitions,
    argMax(committed_offsets, step) AS offsets
FROM ${t(TRAINER_PROGRESS_TABLE)}
GROUP BY trainer, model_version`,
    example: `SELECT trainer, model_version, last_step, examples_total, round(last_loss, 4) AS loss, round(examples_per_second, 1) AS eps, last_at FROM trainer_status ORDER BY trainer, model_version`,
  },
  {
    name: 'trainer_metrics',
    purpose: 'Each trainer metric per model version: its first, latest and best values.',
    columns: [
      ['trainer', 'the trainer'],
      ['model_version', 'the model version it trains'],
      ['metric', 'a name in metric_names'],
      ['reports', 'reports carrying the metric'],
      ['last_step', 'highest step reporting it'],
      ['first_value', 'value at the lowest step'],
      ['last_value', 'value at the highest step'],
      ['min_value', 'smallest value'],
      ['max_value', 'largest value'],
    ],
    select: (t) => `SELECT
    trainer,
    model_version,
    metric,
    count() AS reports,
    max(step) AS last_step,
    argMin(metric_value, step) AS first_value,
    argMax(metric_value, step) AS last_value,
    min(metric_value) AS min_value,
    max(metric_value) AS max_value
FROM ${t(TRAINER_PROGRESS_TABLE)}
ARRAY JOIN metric_names AS metric, metric_values AS metric_value
GROUP BY trainer, model_version, metric`,
    example: `SELECT trainer, model_version, metric, last_step, last_value, min_value, max_value FROM trainer_metrics ORDER BY trainer, model_version, metric`,
  },
  ];
}

/** The views with the default options (docs, tests). */
export const VIEWS: readonly ViewSpec[] = viewSpecs();

function qualifier(database: string | undefined): TableRef {
  return (table) => (database ? `${quoteIdent(database)}.${quoteIdent(table)}` : quoteIdent(table));
}

/** The CREATE VIEW statement for one view (exported for docs and tests). */
export function createViewSql(view: ViewSpec, database?: string): string {
  const t = qualifier(database);
  return `CREATE VIEW IF NOT EXISTS ${t(view.name)} AS\n${view.select(t)}`;
}

/** The CREATE TABLE statement of `trainer_progress`. */
export function trainerProgressTableSql(database?: string): string {
  return createTableSql(TRAINER_PROGRESS_SPEC, database);
}

async function columnsOf(store: ClickHouseStore, table: string, database?: string): Promise<{ name: string; type: string }[]> {
  return store.query<{ name: string; type: string }>(
    `SELECT name, type FROM system.columns
     WHERE database = ${database ? '{db:String}' : 'currentDatabase()'} AND table = {t:String}`,
    database ? { db: database, t: table } : { t: table },
  );
}

/** Which view definition is in place: the SHA-256 of the CREATE statement Flywheel last ran for each view. */
export const VIEW_HASHES_TABLE = 'flywheel_views';

function viewHash(sql: string): string {
  return createHash('sha256').update(sql).digest('hex');
}

/**
 * Creates `trainer_progress` and the views (in `database` when given; run migrate() first, the
 * views read `samples`), for `opts` (the verified reward and k, see viewOptionsFrom). Idempotent:
 * a view is (re)created when the hash of its CREATE statement differs from the one recorded in
 * `flywheel_views` (a changed body, even with unchanged columns, or other options) or when its
 * columns differ from its spec; a `trainer_progress` with other columns fails loudly, as
 * migrate() does for its tables.
 */
export async function migrateViews(store: ClickHouseStore, database?: string, opts: ViewOptions = DEFAULT_VIEW_OPTIONS): Promise<void> {
  const views = viewSpecs(opts);
  if (database) await store.command(`CREATE DATABASE IF NOT EXISTS ${quoteIdent(database)}`);
  await store.command(trainerProgressTableSql(database));
  const actual = new Map((await columnsOf(store, TRAINER_PROGRESS_TABLE, database)).map((c) => [c.name, c.type]));
  const wrong = TRAINER_PROGRESS_COLUMNS.filter(([name, type]) => actual.get(name) !== type).map(
    ([name, type]) => `${name} ${type} (found ${actual.get(name) ?? 'nothing'})`,
  );
  if (wrong.length > 0) {
    throw new ClickHouseStoreError(
      store.kind,
      `migrateViews ${TRAINER_PROGRESS_TABLE}`,
      `table ${database ? `${database}.` : ''}${TRAINER_PROGRESS_TABLE} exists with a different schema: ${wrong.join('; ')}`,
    );
  }
  const t = qualifier(database);
  await store.command(
    `CREATE TABLE IF NOT EXISTS ${t(VIEW_HASHES_TABLE)} (name String, hash String, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY name`,
  );
  const recorded = new Map(
    (await store.query<{ name: string; hash: string }>(`SELECT name, argMax(hash, version) AS hash FROM ${t(VIEW_HASHES_TABLE)} GROUP BY name`)).map((r) => [r.name, r.hash]),
  );
  // In order: a view may read one defined before it (exploration reads exploration_groups).
  for (const view of views) {
    const sql = createViewSql(view, database);
    const hash = viewHash(sql);
    const expected = view.columns.map(([name]) => name);
    const names = (await columnsOf(store, view.name, database)).map((c) => c.name);
    if (recorded.get(view.name) === hash && names.join(',') === expected.join(',')) continue;
    await store.command(`DROP TABLE IF EXISTS ${t(view.name)}`);
    await store.command(sql);
    const again = (await columnsOf(store, view.name, database)).map((c) => c.name);
    if (again.join(',') !== expected.join(',')) {
      throw new ClickHouseStoreError(
        store.kind,
        `migrateViews ${view.name}`,
        `view ${view.name} has columns ${again.join(', ')}; its spec lists ${expected.join(', ')}`,
      );
    }
    await store.insert(database ? `${database}.${VIEW_HASHES_TABLE}` : VIEW_HASHES_TABLE, [{ name: view.name, hash, version: Date.now() }]);
  }
}

// Flywheel's ClickHouse tables. One DDL for both backends, so it keeps to what ClickHouse 18.16
// (Debian's clickhouse-server) accepts: no DateTime64/Map/Bool/JSON/LowCardinality, no TTL, skip
// indexes or CODECs, one-argument ReplacingMergeTree.
//
// Exactly-once into ClickHouse: each row carries the sink topic/partition/offset it was read at,
// and the sink inserts each offset range as one deterministic block (same rows, same bytes,
// whoever sends it, no per-attempt values such as now()), which the engine deduplicates:
// - embedded (chdb 26.x): ReplacingMergeTree with `non_replicated_deduplication_window`, and the
//   sink names each block with `insert_deduplication_token` = `<topic>:<partition>:<first>-<last>`;
// - server with ZooKeeper (deploy/clickhouse-server.sh configures one): ReplicatedReplacingMergeTree
//   with a single replica, which drops a block whose checksum is among the last
//   `replicated_deduplication_window` blocks (18.16 has no tokens and no non-replicated dedup);
// - server without ZooKeeper: ReplacingMergeTree without deduplication; migrate() says so, and a
//   stalled INSERT that lands after its retry is then stored twice until a merge.
// sinkHighWater() (the offsets stored with the data) lets a sink skip ranges already stored.

import { log } from '../../lib/log.ts';
import type { ClickHouseStore } from './store.ts';
import { ClickHouseStoreError, quoteIdent, quoteString, quoteTable } from './sql.ts';

export const SAMPLES_TABLE = 'samples';
export const DEAD_LETTERS_TABLE = 'dead_letters';
/** Late labels (Avro `Label` from `<prefix>.labels`), one row per label record. */
export const LABELS_TABLE = 'labels';

/** A row of `samples` as query() returns it (and insert() takes it; created_at may be a Date). */
export interface SampleRow {
  pipeline_run: string;
  id: string;
  rollout_run: string;
  prompt_id: string;
  prompt: string;
  group_id: string;
  response: string;
  model_name: string;
  model_version: string;
  reward_names: string[];
  reward_values: number[];
  score_names: string[];
  score_values: number[];
  tag_keys: string[];
  tag_values: string[];
  token_count: number;
  /** 'YYYY-MM-DD hh:mm:ss' (UTC); insert() also takes a Date. */
  created_at: string;
  duplicate_of: string;
  dedupe_method: string;
  reasons: string[];
  decision: string;
  reason: string;
  config_hash: string;
  scorer_version: string;
  annotation_keys: string[];
  annotation_values: string[];
  source_topic: string;
  source_partition: number;
  source_offset: number;
  sink_topic: string;
  sink_partition: number;
  sink_offset: number;
  inserted_at: string;
}

export interface DeadLetterRow {
  pipeline_run: string;
  source_topic: string;
  source_partition: number;
  source_offset: number;
  stage: string;
  reason: string;
  payload_base64: string;
  sink_topic: string;
  sink_partition: number;
  sink_offset: number;
  inserted_at: string;
}

const SAMPLES_COLUMNS: [string, string][] = [
  ['pipeline_run', 'String'],
  ['id', 'String'],
  ['rollout_run', 'String'],
  ['prompt_id', 'String'],
  ['prompt', 'String'],
  ['group_id', 'String'],
  ['response', 'String'],
  ['model_name', 'String'],
  ['model_version', 'String'],
  ['reward_names', 'Array(String)'],
  ['reward_values', 'Array(Float64)'],
  ['score_names', 'Array(String)'],
  ['score_values', 'Array(Float64)'],
  ['tag_keys', 'Array(String)'],
  ['tag_values', 'Array(String)'],
  ['token_count', 'UInt32'],
  ['created_at', 'DateTime'],
  ['duplicate_of', 'String'],
  ['dedupe_method', 'String'],
  ['reasons', 'Array(String)'],
  ['decision', 'String'],
  ['reason', 'String'],
  ['config_hash', 'String'],
  ['scorer_version', 'String'],
  ['annotation_keys', 'Array(String)'],
  ['annotation_values', 'Array(String)'],
  ['source_topic', 'String'],
  ['source_partition', 'UInt32'],
  ['source_offset', 'UInt64'],
  ['sink_topic', 'String'],
  ['sink_partition', 'UInt32'],
  ['sink_offset', 'UInt64'],
  ['inserted_at', 'DateTime'],
];

const DEAD_LETTERS_COLUMNS: [string, string][] = [
  ['pipeline_run', 'String'],
  ['source_topic', 'String'],
  ['source_partition', 'UInt32'],
  ['source_offset', 'UInt64'],
  ['stage', 'String'],
  ['reason', 'String'],
  ['payload_base64', 'String'],
  ['sink_topic', 'String'],
  ['sink_partition', 'UInt32'],
  ['sink_offset', 'UInt64'],
  ['inserted_at', 'DateTime'],
];

/** A row of `labels`: the verified outcome of a rollout, as the labels topic carried it. */
export interface LabelRow {
  rollout_id: string;
  value: number;
  verifier: string;
  /** When the label was made (the Label's `at`, to the second). */
  at: string;
  sink_topic: string;
  sink_partition: number;
  sink_offset: number;
  inserted_at: string;
}

const LABELS_COLUMNS: [string, string][] = [
  ['rollout_id', 'String'],
  ['value', 'Float64'],
  ['verifier', 'String'],
  ['at', 'DateTime'],
  ['sink_topic', 'String'],
  ['sink_partition', 'UInt32'],
  ['sink_offset', 'UInt64'],
  ['inserted_at', 'DateTime'],
];

interface TableSpec {
  name: string;
  columns: [string, string][];
  /** The ReplacingMergeTree version column. */
  version: string;
  orderBy: string[];
}

/** How the engine drops a re-sent block: by token (chdb), by block checksum in ZooKeeper (server), or not at all. */
export type InsertDedup = 'token' | 'replicated' | 'none';

/** Blocks remembered per table for deduplication (both engines; 18.16's default is 100). */
export const DEDUPLICATION_WINDOW = 1000;

export const TABLES: readonly TableSpec[] = [
  {
    name: SAMPLES_TABLE,
    columns: SAMPLES_COLUMNS,
    version: 'sink_offset',
    // One row per input record and run: a rollout re-sent under the same id is a second
    // record (and a duplicate), not a replacement of the first.
    orderBy: ['pipeline_run', 'source_topic', 'source_partition', 'source_offset'],
  },
  {
    name: DEAD_LETTERS_TABLE,
    columns: DEAD_LETTERS_COLUMNS,
    version: 'sink_offset',
    orderBy: ['pipeline_run', 'source_topic', 'source_partition', 'source_offset'],
  },
  {
    name: LABELS_TABLE,
    columns: LABELS_COLUMNS,
    // A rollout labelled again (a re-verification) collapses to the label that arrived last
    // (labels are keyed by rollout id, so one rollout's labels share a partition and offsets
    // order them); readers take argMax(value, sink_offset) and need no FINAL.
    version: 'sink_offset',
    orderBy: ['rollout_id'],
  },
];

function qualified(table: string, database?: string): string {
  return database ? `${quoteIdent(database)}.${quoteIdent(table)}` : quoteIdent(table);
}

/**
 * The ENGINE clause for `dedup` (see the file comment). The ZooKeeper path names the database and
 * table, e.g. `/flywheel/tables/default/samples`, so databases on one server do not collide.
 */
export function engineSql(spec: Pick<TableSpec, 'name' | 'version' | 'orderBy'>, dedup: InsertDedup, database = 'default'): string {
  const order = `ORDER BY (${spec.orderBy.map(quoteIdent).join(', ')})`;
  switch (dedup) {
    case 'token':
      return `ENGINE = ReplacingMergeTree(${quoteIdent(spec.version)})\n${order}\nSETTINGS non_replicated_deduplication_window = ${DEDUPLICATION_WINDOW}`;
    case 'replicated':
      return (
        `ENGINE = ReplicatedReplacingMergeTree(${quoteString(`/flywheel/tables/${database}/${spec.name}`)}, 'r1', ${quoteIdent(spec.version)})\n` +
        `${order}\nSETTINGS replicated_deduplication_window = ${DEDUPLICATION_WINDOW}`
      );
    case 'none':
      return `ENGINE = ReplacingMergeTree(${quoteIdent(spec.version)})\n${order}`;
  }
}

/**
 * What this store can deduplicate with: chdb always takes tokens; a server deduplicates only
 * when it has ZooKeeper (a server without a `<zookeeper>` section fails on system.zookeeper).
 */
export async function storeDedup(store: ClickHouseStore): Promise<InsertDedup> {
  if (store.kind === 'embedded') return 'token';
  try {
    await store.query(`SELECT name FROM system.zookeeper WHERE path = '/' LIMIT 1`);
    return 'replicated';
  } catch {
    return 'none';
  }
}

/** The CREATE TABLE statement for one table (exported for docs and `flywheel sql`). */
export function createTableSql(spec: TableSpec, database?: string, dedup: InsertDedup = 'none'): string {
  const cols = spec.columns.map(([name, type]) =>
    // Filled by ClickHouse when an INSERT omits it (the INSERT must name its columns on 18.16).
    name === 'inserted_at' ? `    ${quoteIdent(name)} ${type} DEFAULT now()` : `    ${quoteIdent(name)} ${type}`,
  );
  return [
    `CREATE TABLE IF NOT EXISTS ${qualified(spec.name, database)}`,
    '(',
    cols.join(',\n'),
    ')',
    engineSql(spec, dedup, database),
  ].join('\n');
}

/**
 * Creates Flywheel's tables if missing (and `database`, when given), then checks that existing
 * tables have every expected column with the expected type, so a table left by an older
 * Flywheel fails loudly here rather than on the first insert. Returns how inserts into them are
 * deduplicated: an existing embedded table gets the deduplication window it lacks; an existing
 * non-replicated server table stays as it is ('none', with a warning on stderr), since turning
 * it into a replicated one means copying its data.
 */
export async function migrate(store: ClickHouseStore, database?: string): Promise<InsertDedup> {
  if (database) await store.command(`CREATE DATABASE IF NOT EXISTS ${quoteIdent(database)}`);
  const db = database ?? (await store.query<{ d: string }>('SELECT currentDatabase() AS d'))[0]!.d;
  const wanted = await storeDedup(store);
  let dedup: InsertDedup = wanted;
  for (const spec of TABLES) {
    await store.command(createTableSql(spec, db, wanted));
    const [engine] = await store.query<{ engine: string }>(
      'SELECT engine FROM system.tables WHERE database = {db:String} AND name = {t:String}',
      { db, t: spec.name },
    );
    if (wanted === 'token') {
      // A table from an older Flywheel: add the window (idempotent; 26.x only).
      await store.command(`ALTER TABLE ${qualified(spec.name, db)} MODIFY SETTING non_replicated_deduplication_window = ${DEDUPLICATION_WINDOW}`);
    } else if (wanted === 'replicated' && engine?.engine !== 'ReplicatedReplacingMergeTree') {
      dedup = 'none';
    }
    const actual = await store.query<{ name: string; type: string }>(
      `SELECT name, type FROM system.columns
       WHERE database = ${database ? '{db:String}' : 'currentDatabase()'} AND table = {t:String}`,
      database ? { db: database, t: spec.name } : { t: spec.name },
    );
    const types = new Map(actual.map((c) => [c.name, c.type]));
    const wrong = spec.columns
      .filter(([name, type]) => types.get(name) !== type)
      .map(([name, type]) => `${name} ${type} (found ${types.get(name) ?? 'nothing'})`);
    if (wrong.length > 0) {
      throw new ClickHouseStoreError(
        store.kind,
        `migrate ${spec.name}`,
        `table ${database ? `${database}.` : ''}${spec.name} exists with a different schema: ${wrong.join('; ')}`,
      );
    }
  }
  if (dedup === 'none' && store.kind === 'server') {
    log.warn(
      `ClickHouse: ${db}.${TABLES.map((t) => t.name).join('/')} deduplicate no re-sent INSERT ` +
        `(${wanted === 'none' ? 'the server has no ZooKeeper' : 'the tables predate ZooKeeper; recreate them to replicate'}): ` +
        'an INSERT stalled past its retry can be stored twice. deploy/clickhouse-server.sh configures ZooKeeper.',
    );
  }
  return dedup;
}

/**
 * Per sink partition, the highest sink offset stored in `table` for `sinkTopic`. The sink resumes
 * after these offsets. `table` may be db-qualified.
 */
export async function sinkHighWater(
  store: ClickHouseStore,
  table: string,
  sinkTopic: string,
): Promise<Map<number, number>> {
  quoteTable(table);
  const rows = await store.query<{ p: number; o: number | bigint }>(
    `SELECT sink_partition AS p, max(sink_offset) AS o FROM {t:Identifier}
     WHERE sink_topic = {topic:String} GROUP BY sink_partition ORDER BY sink_partition`,
    { t: table, topic: sinkTopic },
  );
  const out = new Map<number, number>();
  for (const r of rows) {
    if (typeof r.o === 'bigint') {
      throw new ClickHouseStoreError(store.kind, `sinkHighWater ${table}`, `offset ${r.o} beyond 2^53 in partition ${r.p}`);
    }
    out.set(r.p, r.o);
  }
  return out;
}

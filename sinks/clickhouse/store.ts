// One ClickHouse store for Flywheel, two backends behind it:
//  - embedded (default): chdb, ClickHouse 26.x inside this process, on a persistent data directory.
//    chdb locks that directory to one process; other processes reach it through the owner's
//    HTTP endpoint (http-endpoint.ts), as a `server` store with that endpoint's URL.
//  - server: @clickhouse/client against a ClickHouse server (CLICKHOUSE_URL), as old as Debian's
//    18.16, so every statement Flywheel sends must be valid there too (see schema.ts).
// Both return the same row shapes: integers as numbers (bigint beyond 2^53), DateTime as
// 'YYYY-MM-DD hh:mm:ss' strings in the server's time zone (UTC for the embedded store and for
// deploy/clickhouse-server.sh), arrays as arrays.

import type { ParamValue } from './sql.ts';

export { ClickHouseStoreError, quoteIdent, quoteString, quoteTable, bindParams } from './sql.ts';
export type { ParamValue, StoreKind } from './sql.ts';

export const DEFAULT_EMBEDDED_PATH = '.flywheel/clickhouse';

/** Options for {@link ClickHouseStore.raw}: what ClickHouse's HTTP interface takes beside the SQL. */
export interface RawOptions {
  /** Output format when the SQL has no FORMAT clause (HTTP `default_format`); default TabSeparated. */
  format?: string;
  /** Settings for this statement only. */
  settings?: Record<string, string | number>;
  /** Database for unqualified names, instead of the store's. */
  database?: string;
  /**
   * Server-side `{name:Type}` parameters as ClickHouse's HTTP interface receives them (`param_name`,
   * value in escaped text form). ClickHouse 18.16 does not know them; query()'s params work everywhere.
   */
  params?: Record<string, string>;
  /** Data that follows the statement, e.g. the rows of `INSERT … FORMAT JSONEachRow` (text formats). */
  body?: Buffer | string;
}

export interface RawResult {
  body: Buffer;
  /** The format the body is in, when known (the FORMAT clause wins over {@link RawOptions.format}). */
  format?: string;
  readRows?: number;
  readBytes?: number;
}

export interface ClickHouseStore {
  readonly kind: 'embedded' | 'server';
  /** Runs one statement that returns no rows (DDL, INSERT … SELECT, OPTIMIZE, …). */
  command(sql: string): Promise<void>;
  /**
   * Runs one SELECT-like statement (no FORMAT clause) and returns its rows.
   * `params` fill `{name:Type}` placeholders with quoted literals, e.g.
   * `query('SELECT * FROM samples WHERE id = {id:String} LIMIT {n:UInt32}', { id, n: 10 })`;
   * `{t:Identifier}` takes a (db-qualified) table name.
   */
  query<T = Record<string, unknown>>(sql: string, params?: Record<string, ParamValue>): Promise<T[]>;
  /**
   * Inserts rows with one INSERT … FORMAT JSONEachRow naming the union of the rows' keys.
   * Date values are sent as Unix seconds, bigint as decimal strings; omitted columns get their
   * DEFAULT. An empty array sends nothing.
   */
  insert(table: string, rows: Record<string, unknown>[]): Promise<void>;
  /** Runs SQL as ClickHouse's HTTP interface would and returns the body as ClickHouse formats it. */
  raw(sql: string, opts?: RawOptions): Promise<RawResult>;
  close(): Promise<void>;
}

export interface OpenStoreOptions {
  /** ClickHouse HTTP URL; selects the server backend. */
  url?: string;
  /** Data directory of the embedded backend; default `.flywheel/clickhouse`. */
  path?: string;
  /** Database for unqualified table names; created if missing. Default: `default`. */
  database?: string;
}

/** url → server backend, otherwise the embedded store at `path`. */
export async function openStore(opts: OpenStoreOptions = {}): Promise<ClickHouseStore> {
  if (opts.url) {
    // Loaded on demand so a server-only process never maps chdb's 500 MB engine, and vice versa.
    const { openServerStore } = await import('./server.ts');
    return openServerStore({ url: opts.url, database: opts.database });
  }
  const { openEmbeddedStore } = await import('./embedded.ts');
  return openEmbeddedStore({ path: opts.path ?? DEFAULT_EMBEDDED_PATH, database: opts.database });
}

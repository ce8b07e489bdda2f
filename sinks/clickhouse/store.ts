// One ClickHouse store for Flywheel, two backends behind it:
//  - embedded (default): chdb, ClickHouse 26.x inside this process, on a persistent data directory.
//    chdb locks that directory to one process; other processes reach it through the owner's
//    HTTP endpoint (http-endpoint.ts), as a `server` store with that endpoint's URL.
//  - server: @clickhouse/client against a ClickHouse server (CLICKHOUSE_URL), as old as Debian's
//    18.16, so every statement Flywheel sends must be valid there too (see schema.ts).
// Both return the same row shapes: integers as numbers (bigint beyond 2^53), DateTime as
// 'YYYY-MM-DD hh:mm:ss' strings in the server's time zone (UTC for the embedded store and for
// deploy/clickhouse-server.sh), arrays as arrays.

import type { HttpSecurity } from '../../streams/connections.ts';
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

/**
 * Formats an INSERT body may be in. The text formats are parsed by 18.16 and 26.x alike:
 * TabSeparated is the sink's (half the bytes of JSONEachRow, cheaper to write and to parse);
 * JSONEachRow is insert()'s. Native (ClickHouse's columnar binary blocks) only a ClickHouse
 * server takes: chdb's raw insert parses text formats only, and so does serveStore()'s endpoint
 * in front of it.
 */
export type InsertFormat = 'JSONEachRow' | 'TabSeparated' | 'Native';

const INSERT_FORMATS: readonly InsertFormat[] = ['JSONEachRow', 'TabSeparated', 'Native'];

/** `format`, checked (it goes into the statement): a name the type does not allow is an error. */
export function insertFormat(format: InsertFormat): InsertFormat {
  if (!INSERT_FORMATS.includes(format)) throw new Error(`unsupported INSERT format ${JSON.stringify(format)} (${INSERT_FORMATS.join(', ')})`);
  return format;
}

/** Options of one INSERT. */
export interface InsertOptions {
  /**
   * Names the block for deduplication, e.g. `decisions:0:100-199`: a re-sent block with the same
   * token is dropped where the engine takes tokens (chdb 26.x; tables with a deduplication
   * window). 18.16 has none; there the block's checksum does it (ReplicatedMergeTree).
   */
  dedupToken?: string;
  /** Gives up waiting after this many ms; the statement may still complete on the server. */
  timeoutMs?: number;
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
  insert(table: string, rows: Record<string, unknown>[], opts?: InsertOptions): Promise<void>;
  /**
   * Inserts a body the caller encoded in `format` (one row per line, exactly `columns` in that
   * order) as one INSERT: the sink's path, which builds its deterministic blocks itself.
   *
   *   insertFormatted('samples', SAMPLE_COLUMNS, 'TabSeparated', lines, { dedupToken: 'd:0:0-99' })
   */
  insertFormatted(table: string, columns: readonly string[], format: InsertFormat, body: Buffer | string, opts?: InsertOptions): Promise<void>;
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
  /** User, password and CA for the server backend (Connections.clickhouse); ignored by the embedded one. */
  security?: HttpSecurity;
}

/**
 * A store opened on first use, so a process can start while ClickHouse is down: a statement
 * while it cannot be opened fails with the open error (naming the URL or path), and the next
 * statement tries again. `init` (e.g. migrate) runs once per successful open.
 *
 *   const store = lazyStore({ url }, (s) => migrate(s).then(() => undefined));
 *   await store.query('SELECT 1'); // opens, migrates, queries
 */
export class LazyStore implements ClickHouseStore {
  readonly kind: 'embedded' | 'server';
  #opening: Promise<ClickHouseStore> | undefined;
  #closed = false;

  constructor(
    private readonly opts: OpenStoreOptions,
    private readonly init: (store: ClickHouseStore) => Promise<void> = async () => undefined,
  ) {
    this.kind = opts.url ? 'server' : 'embedded';
  }

  /** Where the store is: the URL (server) or the data directory (embedded). */
  get location(): string {
    return this.opts.url ?? this.opts.path ?? DEFAULT_EMBEDDED_PATH;
  }

  /** The open store, opening (and initialising) it if needed. */
  ready(): Promise<ClickHouseStore> {
    if (this.#closed) return Promise.reject(new Error(`ClickHouse store at ${this.location} is closed`));
    this.#opening ??= (async () => {
      const store = await openStore(this.opts);
      try {
        await this.init(store);
      } catch (err) {
        await store.close().catch(() => undefined);
        throw err;
      }
      return store;
    })().catch((err: unknown) => {
      this.#opening = undefined;
      throw err;
    });
    return this.#opening;
  }

  async command(sql: string): Promise<void> {
    return (await this.ready()).command(sql);
  }
  async query<T = Record<string, unknown>>(sql: string, params?: Record<string, ParamValue>): Promise<T[]> {
    return (await this.ready()).query<T>(sql, params);
  }
  async insert(table: string, rows: Record<string, unknown>[], opts?: InsertOptions): Promise<void> {
    return (await this.ready()).insert(table, rows, opts);
  }
  async insertFormatted(table: string, columns: readonly string[], format: InsertFormat, body: Buffer | string, opts?: InsertOptions): Promise<void> {
    return (await this.ready()).insertFormatted(table, columns, format, body, opts);
  }
  async raw(sql: string, opts?: RawOptions): Promise<RawResult> {
    return (await this.ready()).raw(sql, opts);
  }
  async close(): Promise<void> {
    this.#closed = true;
    const opening = this.#opening;
    this.#opening = undefined;
    const store = await opening?.catch(() => undefined);
    await store?.close();
  }
}

/** See {@link LazyStore}. */
export function lazyStore(opts: OpenStoreOptions, init?: (store: ClickHouseStore) => Promise<void>): LazyStore {
  return new LazyStore(opts, init);
}

/** url → server backend, otherwise the embedded store at `path`. */
export async function openStore(opts: OpenStoreOptions = {}): Promise<ClickHouseStore> {
  if (opts.url) {
    // Loaded on demand so a server-only process never maps chdb's 500 MB engine, and vice versa.
    const { openServerStore } = await import('./server.ts');
    return openServerStore({ url: opts.url, database: opts.database, security: opts.security });
  }
  const { openEmbeddedStore } = await import('./embedded.ts');
  return openEmbeddedStore({ path: opts.path ?? DEFAULT_EMBEDDED_PATH, database: opts.database });
}

// Embedded backend: chdb (ClickHouse 26.x in-process) on a persistent data directory.
// chdb binds one data directory per process and locks it against other processes; a process
// that needs the data while another owns it goes through the owner's serveStore() endpoint.

import { mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Session, drainPending } from 'chdb';
import { insertFormat, type ClickHouseStore, type InsertFormat, type InsertOptions, type RawOptions, type RawResult } from './store.ts';
import { readEndpointFile } from './http-endpoint.ts';
import {
  ClickHouseStoreError,
  assertNoFormat,
  bindParams,
  checkTable,
  decodeJson,
  encodeRows,
  quoteIdent,
  quoteString,
  storeError,
  trimStatement,
  type ParamValue,
} from './sql.ts';

/**
 * Engine options for every connection the store opens. They must be given at connect (chdb's
 * connectionArgs), and each connection keeps its own settings:
 * - quoted 64-bit integers, as a ClickHouse server does by default (clickhouse-local does not),
 *   so decodeJson sees the same JSON from both backends;
 * - UTC, like deploy/clickhouse-server.sh's server, whatever TZ this process runs with: DateTime
 *   values are rendered and parsed in this zone.
 */
const CONNECTION_ARGS = ['--output_format_json_quote_64bit_integers=1', '--session_timezone=UTC'];

// Settings of ClickHouse's HTTP interface that are not query settings (or mean nothing here).
const HTTP_ONLY = new Set([
  'query', 'query_id', 'database', 'default_format', 'user', 'password', 'quota_key', 'compress',
  'decompress', 'buffer_size', 'wait_end_of_query', 'enable_http_compression',
  'http_zlib_compression_level', 'send_progress_in_http_headers', 'http_headers_progress_interval_ms',
  'http_response_buffer_size', 'add_http_cors_header', 'role', 'session_timeout', 'session_check',
]);

type ChdbSession = InstanceType<typeof Session>;

function settingValue(v: string | number): string {
  const s = String(v);
  return /^-?\d+(\.\d+)?$/.test(s) ? s : quoteString(s);
}

// chdb binds `{name:Type}` from JS values and escapes strings itself; HTTP's param_ values arrive
// already escaped. Undo that for scalars so the engine sees the original value once.
function unescapeParam(value: string): string {
  return value.replace(/\\(.)/gs, (_m, c: string) => {
    switch (c) {
      case 'n': return '\n';
      case 't': return '\t';
      case 'r': return '\r';
      case 'b': return '\b';
      case 'f': return '\f';
      case '0': return '\0';
      default: return c;
    }
  });
}

function paramTypes(sql: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const m of sql.matchAll(/\{\s*([A-Za-z_]\w*)\s*:\s*([^{}]+?)\s*\}/g)) types.set(m[1]!, m[2]!);
  return types;
}

function httpParams(sql: string, params: Record<string, string>): Record<string, string> {
  const types = paramTypes(sql);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(params)) {
    const type = (types.get(name) ?? 'String').replace(/^(Nullable|LowCardinality)\((.*)\)$/, '$2');
    if (/^(Array|Tuple|Map)\(/.test(type)) {
      if (value.includes('\\')) {
        throw new Error(`parameter ${name}: composite values with escapes are not supported by the embedded endpoint`);
      }
      out[name] = value;
    } else {
      out[name] = unescapeParam(value);
    }
  }
  return out;
}

export class EmbeddedStore implements ClickHouseStore {
  readonly kind = 'embedded' as const;
  #closed = false;

  constructor(
    private readonly session: ChdbSession,
    /** Absolute data directory. */
    readonly path: string,
    readonly database: string | undefined,
    readonly version: string,
  ) {}

  #check(sql: string): void {
    if (this.#closed) throw new ClickHouseStoreError('embedded', sql.split('\n')[0] ?? '', 'store is closed');
  }

  async command(sql: string): Promise<void> {
    this.#check(sql);
    try {
      await this.session.queryAsync(sql, { format: 'CSV' });
    } catch (err) {
      throw storeError('embedded', sql, err);
    }
  }

  async query<T = Record<string, unknown>>(sql: string, params?: Record<string, ParamValue>): Promise<T[]> {
    this.#check(sql);
    let bound = sql;
    let text: string;
    try {
      bound = trimStatement(bindParams(sql, params));
      assertNoFormat(bound);
      text = (await this.session.queryAsync(bound, { format: 'JSON' })).text();
    } catch (err) {
      throw storeError('embedded', bound, err);
    }
    return decodeJson('embedded', bound, text) as T[];
  }

  async insert(table: string, rows: Record<string, unknown>[], opts: InsertOptions = {}): Promise<void> {
    this.#check(`INSERT INTO ${table}`);
    if (rows.length === 0) return;
    let encoded: { columns: string[]; body: string };
    try {
      encoded = encodeRows(rows);
    } catch (err) {
      throw storeError('embedded', `INSERT INTO ${table}`, err);
    }
    await this.insertFormatted(table, encoded.columns, 'JSONEachRow', encoded.body, opts);
  }

  async insertFormatted(table: string, columns: readonly string[], format: InsertFormat, body: Buffer | string, opts: InsertOptions = {}): Promise<void> {
    let statement = `INSERT INTO ${table}`;
    try {
      this.#check(statement);
      statement = `INSERT INTO ${checkTable(table)} (${columns.join(', ')}) FORMAT ${insertFormat(format)}`;
      if (format === 'Native') throw new Error('chdb takes text formats only (JSONEachRow, TabSeparated); Native needs a ClickHouse server');
      // chdb's raw insert hands the bytes to the engine's parser as one INSERT.
      await this.session.insert({
        table,
        columns,
        values: typeof body === 'string' ? Buffer.from(body) : body,
        format, // checked above
        settings: opts.dedupToken === undefined ? undefined : { insert_deduplication_token: opts.dedupToken },
        timeout: opts.timeoutMs,
      });
    } catch (err) {
      throw storeError('embedded', statement, err);
    }
  }

  async raw(sql: string, opts: RawOptions = {}): Promise<RawResult> {
    this.#check(sql);
    const format = opts.format ?? 'TabSeparated';
    // Data after the statement is parsed inline by the engine, as in `clickhouse-local`.
    const text = opts.body === undefined || opts.body.length === 0 ? sql : `${sql}\n${opts.body.toString()}`;
    const settings = Object.entries(opts.settings ?? {}).filter(([k]) => !HTTP_ONLY.has(k));
    const database = opts.database && opts.database !== this.database ? opts.database : undefined;
    // Per-request settings or database go to a connection of their own (same data directory,
    // separate settings), so they never leak into the store's other statements.
    let session = this.session;
    let own: ChdbSession | undefined;
    try {
      if (settings.length > 0 || database !== undefined) {
        own = new Session(this.path, { connectionArgs: CONNECTION_ARGS });
        session = own;
        const db = database ?? this.database;
        if (db !== undefined) await own.queryAsync(`USE ${quoteIdent(db)}`, { format: 'CSV' });
        for (const [k, v] of settings) {
          quoteIdent(k);
          await own.queryAsync(`SET ${k} = ${settingValue(v)}`, { format: 'CSV' });
        }
      }
      const result =
        opts.params && Object.keys(opts.params).length > 0
          ? await session.queryBindAsync(text, httpParams(text, opts.params), { format })
          : await session.queryAsync(text, { format });
      const m = /\bFORMAT\s+([A-Za-z]\w*)\s*;?\s*$/i.exec(sql);
      return {
        body: Buffer.from(result.bytes()),
        format: m ? m[1] : format,
        readRows: result.rowsRead,
        readBytes: result.bytesRead,
      };
    } catch (err) {
      throw storeError('embedded', sql, err);
    } finally {
      own?.close();
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.session.close();
    // close() defers the native teardown behind running operations; wait for it so the same
    // process can reopen this (or another) directory right away.
    await drainPending();
  }
}

export async function openEmbeddedStore(opts: { path: string; database?: string }): Promise<EmbeddedStore> {
  const path = resolve(opts.path);
  mkdirSync(path, { recursive: true });
  let session: ChdbSession;
  try {
    session = new Session(path, { connectionArgs: CONNECTION_ARGS });
  } catch (err) {
    throw openError(path, err);
  }
  try {
    if (opts.database !== undefined) {
      const db = quoteIdent(opts.database);
      await session.queryAsync(`CREATE DATABASE IF NOT EXISTS ${db}`, { format: 'CSV' });
      await session.queryAsync(`USE ${db}`, { format: 'CSV' });
    }
    const version = ((await session.queryAsync('SELECT version() AS v', { format: 'JSONEachRow' })).json<{ v: string }>()).v;
    return new EmbeddedStore(session, path, opts.database, version);
  } catch (err) {
    session.close();
    await drainPending();
    throw storeError('embedded', `open ${path}`, err);
  }
}

/** The pid in ClickHouse's `<path>/status` file, which exists (locked) while a process has the directory open. */
function statusOwner(path: string): number | undefined {
  try {
    const m = /^PID: (\d+)/m.exec(readFileSync(join(path, 'status'), 'utf8'));
    const pid = m ? Number(m[1]) : undefined;
    if (pid === undefined || pid === process.pid) return undefined;
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pidFromStatus(path) : undefined;
  }
}

function pidFromStatus(path: string): number | undefined {
  try {
    const m = /^PID: (\d+)/m.exec(readFileSync(join(path, 'status'), 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function openError(path: string, err: unknown): ClickHouseStoreError {
  const msg = err instanceof Error ? err.message : String(err);
  let detail = msg;
  // chdb's message says only "Failed to create connection"; the engine's "Cannot lock file" goes
  // to stderr. The status file names the process that holds the lock.
  const holder = statusOwner(path);
  if (holder !== undefined || /Cannot lock file/i.test(msg)) {
    const owner = readEndpointFile(path);
    const pid = owner?.pid ?? holder;
    detail =
      `the data directory is in use by another process${pid !== undefined ? ` (pid ${pid})` : ''}; chdb allows one ` +
      (owner
        ? `process per directory. That process serves it at ${owner.url}: connect there (CLICKHOUSE_URL=${owner.url}).`
        : `process per directory and the owner publishes no endpoint: stop it, or use a ClickHouse server (CLICKHOUSE_URL).`);
  } else if (/only one active data directory per process/i.test(msg)) {
    detail = `${msg}. An embedded store is one directory per process: close the other store first.`;
  }
  return new ClickHouseStoreError('embedded', `open ${path}`, detail, { cause: err });
}

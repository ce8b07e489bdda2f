// Server backend: @clickhouse/client over ClickHouse's HTTP interface. Works against Debian's
// ClickHouse 18.16 as well as current servers, and against serveStore() of an embedded store.

import { Readable } from 'node:stream';
import { ClickHouseLogLevel, createClient, type ClickHouseClient, type ClickHouseSettings } from '@clickhouse/client';
import type { HttpSecurity } from '../../streams/connections.ts';
import { redactText, redactUrl } from '../../streams/secrets.ts';
import { insertFormat, type ClickHouseStore, type InsertFormat, type InsertOptions, type RawOptions, type RawResult } from './store.ts';
import {
  ClickHouseStoreError,
  assertNoFormat,
  bindParams,
  checkTable,
  decodeJson,
  encodeRows,
  quoteIdent,
  quoteTable,
  storeError,
  trimStatement,
  type ParamValue,
} from './sql.ts';

// Quoted 64-bit integers: 18.16's default, set explicitly because 26.x's clickhouse-local and a
// user's server may differ. decodeJson turns safe ones back into numbers (never a rounded one).
const SETTINGS: ClickHouseSettings = { output_format_json_quote_64bit_integers: 1 };

export interface ServerStoreOptions {
  url: string;
  database?: string;
  /** Per-request timeout in ms (default 300 000: DDL and OPTIMIZE … FINAL can take a while). */
  requestTimeoutMs?: number;
  /** User and password (default: `default`, none) and the CA an https:// URL's certificate must chain to. */
  security?: HttpSecurity;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks);
}


export class ServerStore implements ClickHouseStore {
  readonly kind = 'server' as const;
  #closed = false;

  constructor(
    private readonly client: ClickHouseClient,
    readonly url: string,
    readonly database: string | undefined,
    readonly version: string,
  ) {}

  #check(sql: string): void {
    if (this.#closed) throw new ClickHouseStoreError('server', sql.split('\n')[0] ?? '', 'store is closed');
  }

  async command(sql: string): Promise<void> {
    this.#check(sql);
    try {
      // wait_end_of_query: the status code then covers the whole statement, not just its start.
      await this.client.command({ query: sql, clickhouse_settings: { wait_end_of_query: 1 } });
    } catch (err) {
      throw storeError('server', sql, err);
    }
  }

  async query<T = Record<string, unknown>>(sql: string, params?: Record<string, ParamValue>): Promise<T[]> {
    this.#check(sql);
    let text: string;
    let bound = sql;
    try {
      bound = trimStatement(bindParams(sql, params));
      assertNoFormat(bound);
      const rs = await this.client.query({ query: bound, format: 'JSON' });
      text = await rs.text();
    } catch (err) {
      throw storeError('server', bound, err);
    }
    return decodeJson('server', bound, text) as T[];
  }

  async insert(table: string, rows: Record<string, unknown>[], opts: InsertOptions = {}): Promise<void> {
    this.#check(`INSERT INTO ${table}`);
    if (rows.length === 0) return;
    let encoded: { columns: string[]; body: string };
    try {
      encoded = encodeRows(rows);
    } catch (err) {
      throw storeError('server', `INSERT INTO ${table}`, err);
    }
    await this.insertFormatted(table, encoded.columns, 'JSONEachRow', encoded.body, opts);
  }

  async insertFormatted(table: string, columns: readonly string[], format: InsertFormat, body: Buffer | string, opts: InsertOptions = {}): Promise<void> {
    let statement = `INSERT INTO ${table}`;
    try {
      this.#check(statement);
      statement = `INSERT INTO ${quoteTable(checkTable(table))} (${columns.map(quoteIdent).join(', ')}) FORMAT ${insertFormat(format)}`;
      // Tokens exist from 22.2 on; 18.16 rejects the unknown setting (its replicated tables
      // deduplicate by the block's checksum instead).
      const settings: ClickHouseSettings = opts.dedupToken !== undefined && this.#takesTokens() ? { insert_deduplication_token: opts.dedupToken } : {};
      // exec, not client.insert: we send our own encoding (Dates as Unix seconds, bigints as
      // strings; the sink's TabSeparated lines), the same bytes the embedded backend parses.
      const res = await this.client.exec({
        query: statement,
        values: Readable.from([typeof body === 'string' ? Buffer.from(body) : body]),
        clickhouse_settings: settings,
        abort_signal: opts.timeoutMs === undefined ? undefined : AbortSignal.timeout(opts.timeoutMs),
      });
      await readAll(res.stream);
    } catch (err) {
      const timedOut = (err as Error | undefined)?.name === 'TimeoutError' || /aborted/i.test(String((err as Error | undefined)?.message));
      throw timedOut ? storeError('server', statement, new Error(`no answer within ${opts.timeoutMs} ms from ${redactUrl(this.url)}`, { cause: err })) : storeError('server', statement, err);
    }
  }

  #takesTokens(): boolean {
    const major = Number(/^(\d+)\./.exec(this.version)?.[1] ?? 0);
    return major >= 23;
  }

  async raw(sql: string, opts: RawOptions = {}): Promise<RawResult> {
    this.#check(sql);
    const settings: Record<string, string | number> = { ...(opts.settings ?? {}) };
    if (opts.format) settings['default_format'] = opts.format;
    // Already in ClickHouse's escaped form, so they go onto the URL as they are.
    for (const [k, v] of Object.entries(opts.params ?? {})) settings[`param_${k}`] = v;
    try {
      const db = opts.database;
      if (db !== undefined && db !== (this.database ?? 'default')) {
        // The client names its own database on every request; a second one would be ambiguous.
        if (this.database !== undefined) {
          throw new Error(`this store is bound to database ${this.database}; open another store for ${db}`);
        }
        settings['database'] = db;
      }
      const res =
        opts.body !== undefined
          ? await this.client.exec({
              query: sql,
              values: Readable.from([Buffer.from(opts.body)]),
              clickhouse_settings: settings,
            })
          : await this.client.exec({ query: sql, clickhouse_settings: settings });
      const body = await readAll(res.stream);
      const format = res.response_headers['x-clickhouse-format'];
      return {
        body,
        format: typeof format === 'string' ? format : opts.format,
        readRows: Number(res.summary?.read_rows ?? NaN) || undefined,
        readBytes: Number(res.summary?.read_bytes ?? NaN) || undefined,
      };
    } catch (err) {
      throw storeError('server', sql, err);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.client.close();
  }
}

export async function openServerStore(opts: ServerStoreOptions): Promise<ServerStore> {
  const timeout = opts.requestTimeoutMs ?? 300_000;
  const auth = opts.security?.auth;
  const ca = opts.security?.tls?.ca;
  const base = {
    url: opts.url,
    request_timeout: timeout,
    clickhouse_settings: SETTINGS,
    application: 'flywheel',
    // Failures reach the caller as ClickHouseStoreError; the client's own logging would repeat
    // each one on stderr (and warn about the long timeout, which suits a loopback server).
    log: { level: ClickHouseLogLevel.OFF },
    ...(auth && { username: auth.username, password: auth.password.reveal() }),
    ...(ca !== undefined && { tls: { ca_cert: Buffer.from(ca) } }),
  };
  if (opts.database) {
    quoteIdent(opts.database);
    // The database has to exist before a client may name it: every request carries it.
    const bootstrap = createClient(base);
    try {
      await bootstrap.command({ query: `CREATE DATABASE IF NOT EXISTS ${quoteIdent(opts.database)}` });
    } catch (err) {
      throw unreachable(opts.url, err, opts.security);
    } finally {
      await bootstrap.close();
    }
  }
  const client = createClient({ ...base, database: opts.database });
  let version: string;
  try {
    const rs = await client.query({ query: 'SELECT version() AS v', format: 'JSONEachRow' });
    const rows = (await rs.json()) as { v: string }[];
    version = rows[0]?.v ?? 'unknown';
  } catch (err) {
    await client.close();
    throw unreachable(opts.url, err, opts.security);
  }
  return new ServerStore(client, opts.url, opts.database, version);
}

function unreachable(url: string, err: unknown, security: HttpSecurity | undefined): Error {
  const msg = redactText(err instanceof Error ? err.message : String(err), [security?.auth?.password]);
  if (/Authentication failed|Wrong password|password is incorrect|Unknown user|REQUIRED_PASSWORD|\b(516|192|193)\b/i.test(msg)) {
    return new ClickHouseStoreError(
      'server',
      `connect ${redactUrl(url)}`,
      `${msg} (ClickHouse at ${redactUrl(url)} refused user "${security?.auth?.username ?? 'default'}": check CLICKHOUSE_USER and CLICKHOUSE_PASSWORD / CLICKHOUSE_PASSWORD_FILE)`,
      { cause: err },
    );
  }
  if (/certificate|self[- ]signed|UNABLE_TO_VERIFY|ERR_TLS|wrong version number/i.test(msg)) {
    return new ClickHouseStoreError('server', `connect ${redactUrl(url)}`, `${msg} (TLS to ClickHouse at ${redactUrl(url)}: the certificate must chain to CLICKHOUSE_CA_FILE${security?.tls?.caFile ? ` (${security.tls.caFile})` : ''} and name the host)`, { cause: err });
  }
  const refused = /ECONNREFUSED|ECONNRESET|ENOTFOUND|socket hang up/i.test(msg);
  return new ClickHouseStoreError(
    'server',
    `connect ${redactUrl(url)}`,
    refused
      ? `${msg} (is a ClickHouse server running at ${redactUrl(url)}? \`bash deploy/clickhouse-server.sh start\` runs one, on 127.0.0.1:18123 unless CLICKHOUSE_HTTP_PORT says otherwise)`
      : `${msg} (ClickHouse at ${redactUrl(url)})`,
    { cause: err },
  );
}

// ClickHouse's HTTP interface in front of a store, for other processes.
// chdb locks its data directory to one process; the process that owns the embedded store serves
// it on 127.0.0.1 so that `flywheel sql`, dashboards or @clickhouse/client reach the same data
// as they would reach a ClickHouse server. It implements the subset clients use: GET/POST `/`
// with `query` in the URL and/or the body (the body is appended, as ClickHouse does: for an
// INSERT it is the data), `database`, `default_format`, settings and `param_*` in the URL,
// gzip/deflate/br request bodies, `/ping`; errors are non-200 with ClickHouse's message.
// Not implemented: HTTP sessions (session_id), multipart parameters, compressed responses,
// authentication (it listens on loopback only). Text formats only for INSERT bodies.
// Read-only unless served with `allowWrites`: anything but a SELECT-like read is refused with 403
// (see readOnlyRefusal), so whatever else runs on the machine can read the store, not change it.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type { AddressInfo } from 'node:net';
import type { ClickHouseStore } from './store.ts';
import { ClickHouseStoreError, clickHouseCode } from './sql.ts';

export interface StoreEndpoint {
  /** e.g. http://127.0.0.1:41234 — give it to @clickhouse/client or openStore({ url }). */
  url: string;
  /** Stops accepting requests, waits for running ones, removes the endpoint file it wrote. */
  close(): Promise<void>;
}

export interface ServeOptions {
  /** 0 (default) picks a free port. */
  port?: number;
  /** Interface to listen on; default 127.0.0.1 (loopback only: the endpoint has no authentication). */
  host?: string;
  /**
   * Serve writes too (INSERT, CREATE, ALTER, DROP…). Default false: only SELECT, WITH, SHOW,
   * DESCRIBE, EXISTS and EXPLAIN are served, everything else gets 403.
   */
  allowWrites?: boolean;
  /** Write `<dataDir>/endpoint.json` once listening (and remove it on close). */
  dataDir?: string;
}

const RESERVED = new Set([
  'query', 'query_id', 'database', 'default_format', 'user', 'password', 'quota_key',
  'session_id', 'session_timeout', 'session_check',
]);

const gunzip = promisify(zlib.gunzip);
const inflate = promisify(zlib.inflate);
const brotli = promisify(zlib.brotliDecompress);

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks);
  const enc = (req.headers['content-encoding'] ?? '').toLowerCase();
  if (enc === '' || enc === 'identity') return raw;
  if (enc === 'gzip') return gunzip(raw);
  if (enc === 'deflate') return inflate(raw);
  if (enc === 'br') return brotli(raw);
  throw new HttpError(415, `Code: 1. DB::Exception: Content-Encoding ${enc} is not supported by this endpoint. (NOT_IMPLEMENTED)`);
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

// The status codes ClickHouse's HTTP handler uses for the common cases.
function statusFor(code: number | undefined): number {
  switch (code) {
    case 62: // SYNTAX_ERROR
    case 27: // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    case 6: // CANNOT_PARSE_TEXT
    case 26: // CANNOT_PARSE_QUOTED_STRING
    case 456: // UNKNOWN_QUERY_PARAMETER
      return 400;
    case 60: // UNKNOWN_TABLE
    case 81: // UNKNOWN_DATABASE
    case 47: // UNKNOWN_IDENTIFIER
    case 16: // NO_SUCH_COLUMN_IN_TABLE
    case 115: // UNKNOWN_SETTING
    case 46: // UNKNOWN_FUNCTION
      return 404;
    default:
      return 500;
  }
}

function contentType(format: string | undefined): string {
  const f = (format ?? 'TabSeparated').toLowerCase();
  if (f.startsWith('json')) return 'application/json; charset=UTF-8';
  if (f.startsWith('csv')) return 'text/csv; charset=UTF-8; header=absent';
  if (f.startsWith('tabseparated') || f.startsWith('tsv')) return 'text/tab-separated-values; charset=UTF-8';
  return 'text/plain; charset=UTF-8';
}

/** The statements a read-only endpoint serves, by their first keyword. */
export const READ_ONLY_STATEMENTS = ['SELECT', 'WITH', 'SHOW', 'DESCRIBE', 'DESC', 'EXISTS', 'EXPLAIN'] as const;

// Table functions that reach outside the store (files, other servers, programs): a SELECT from
// one reads or sends what the store's owner did not publish.
const OUTSIDE = /^(file|url|s3|s3cluster|gcs|azureblobstorage|hdfs|remote|remotesecure|cluster|clusterallreplicas|mysql|postgresql|mongodb|redis|jdbc|odbc|sqlite|executable|input|deltalake|iceberg|hudi)$/i;

/**
 * Why a statement may not run on a read-only endpoint, or undefined when it may: its first
 * keyword (after comments and opening parentheses) must be a READ_ONLY_STATEMENTS one, and there
 * must be no second statement, no INTO OUTFILE and no table function that reaches outside the
 * store. Quoted text and comments are skipped, so `SELECT 'DROP TABLE x'` is a read.
 *
 *   readOnlyRefusal('SELECT count() FROM samples')   // undefined
 *   readOnlyRefusal('DROP TABLE samples')            // 'DROP is not a read'
 */
export function readOnlyRefusal(sql: string): string | undefined {
  const words: string[] = [];
  let afterEnd = false;
  for (let i = 0; i < sql.length; ) {
    const c = sql[i]!;
    if (c === '-' && sql[i + 1] === '-') {
      i = sql.indexOf('\n', i);
      if (i < 0) break;
    } else if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      i = end < 0 ? sql.length : end + 2;
    } else if (c === "'" || c === '"' || c === '`') {
      if (afterEnd) return 'only one statement per request';
      let j = i + 1;
      while (j < sql.length && sql[j] !== c) j += sql[j] === '\\' ? 2 : 1;
      if (c !== "'") {
        // A quoted identifier can name a function too: "file"('x') is file('x').
        let k = j + 1;
        while (k < sql.length && /\s/.test(sql[k]!)) k++;
        const name = sql.slice(i + 1, j);
        if (sql[k] === '(' && OUTSIDE.test(name)) return `the table function ${name}() reaches outside the store`;
        words.push('');
      }
      i = j + 1;
    } else if (c === ';') {
      afterEnd = true;
      i++;
    } else if (/[A-Za-z_]/.test(c)) {
      if (afterEnd) return 'only one statement per request';
      let j = i + 1;
      while (j < sql.length && /[A-Za-z0-9_]/.test(sql[j]!)) j++;
      const word = sql.slice(i, j);
      let k = j;
      while (k < sql.length && /\s/.test(sql[k]!)) k++;
      if (sql[k] === '(' && OUTSIDE.test(word)) return `the table function ${word}() reaches outside the store`;
      words.push(word.toUpperCase());
      i = j;
    } else {
      if (afterEnd && !/\s/.test(c)) return 'only one statement per request';
      i++;
    }
  }
  const first = words.find((w) => w !== '');
  if (first === undefined) return 'no statement';
  if (!(READ_ONLY_STATEMENTS as readonly string[]).includes(first)) return `${first} is not a read`;
  for (let i = 0; i + 1 < words.length; i++) if (words[i] === 'INTO' && words[i + 1] === 'OUTFILE') return 'INTO OUTFILE writes a file';
  return undefined;
}

async function handle(store: ClickHouseStore, req: IncomingMessage, res: ServerResponse, opts: ServeOptions): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname === '/ping') {
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=UTF-8' }).end('Ok.\n');
    return;
  }
  if (url.pathname !== '/') {
    throw new HttpError(404, `There is no handle ${url.pathname}\n\nUse / or /ping.`);
  }
  if (req.method !== 'GET' && req.method !== 'POST') {
    throw new HttpError(405, `Code: 1. DB::Exception: method ${req.method} is not allowed. (NOT_IMPLEMENTED)`);
  }
  const sp = url.searchParams;
  if (sp.has('session_id')) {
    throw new HttpError(400, 'Code: 1. DB::Exception: HTTP sessions (session_id) are not supported by this endpoint. (NOT_IMPLEMENTED)');
  }
  if ((req.headers['content-type'] ?? '').startsWith('multipart/')) {
    throw new HttpError(400, 'Code: 1. DB::Exception: multipart requests are not supported by this endpoint. (NOT_IMPLEMENTED)');
  }
  const body = await readBody(req);
  const urlQuery = sp.get('query') ?? '';
  let sql: string;
  let data: Buffer | undefined;
  if (urlQuery !== '') {
    sql = urlQuery;
    data = body.length > 0 ? body : undefined;
  } else {
    sql = body.toString('utf8');
  }
  // The body is appended to the statement as text (EmbeddedStore.raw): a binary one would reach
  // the parser mangled, so it is refused with what the endpoint takes instead.
  if (data !== undefined && /\bFORMAT\s+(Native|RowBinary\w*|Parquet|Arrow\w*|ORC|Avro\w*|Protobuf\w*|CapnProto|MsgPack)\s*;?\s*$/i.test(sql)) {
    throw new HttpError(400, 'Code: 73. DB::Exception: this endpoint takes text formats only for INSERT bodies (JSONEachRow, TabSeparated, CSV, …): chdb parses them as text. (UNKNOWN_FORMAT)');
  }
  if (sql.trim() === '') {
    // ClickHouse answers a bare GET / like /ping.
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=UTF-8' }).end('Ok.\n');
    return;
  }
  if (!opts.allowWrites) {
    // The body is appended to a URL query (ClickHouse's rule), so both are checked together.
    const refusal = readOnlyRefusal(data === undefined ? sql : `${sql}\n${data.toString('utf8')}`);
    if (refusal !== undefined) {
      throw new HttpError(
        403,
        `Code: 164. DB::Exception: this endpoint is read-only (${refusal}): it serves ${READ_ONLY_STATEMENTS.join(', ')}; a worker serves writes too with "clickhouse": {"endpoint": {"allowWrites": true}} in its config (serveStore's allowWrites). (READONLY)`,
      );
    }
  }
  const settings: Record<string, string> = {};
  const params: Record<string, string> = {};
  for (const [k, v] of sp) {
    if (k.startsWith('param_')) params[k.slice('param_'.length)] = v;
    else if (!RESERVED.has(k)) settings[k] = v;
  }
  const queryId = sp.get('query_id') ?? crypto.randomUUID();
  const result = await store.raw(sql, {
    body: data,
    format: sp.get('default_format') ?? undefined,
    database: sp.get('database') ?? undefined,
    settings,
    params,
  });
  res.writeHead(200, {
    'Content-Type': contentType(result.format),
    'X-ClickHouse-Query-Id': queryId,
    ...(result.format ? { 'X-ClickHouse-Format': result.format } : {}),
    // Only what is known: chdb reports rows/bytes read, not written.
    'X-ClickHouse-Summary': JSON.stringify({
      read_rows: String(result.readRows ?? 0),
      read_bytes: String(result.readBytes ?? 0),
    }),
  });
  res.end(result.body);
}

function sendError(res: ServerResponse, err: unknown): void {
  let status = 500;
  let message: string;
  if (err instanceof HttpError) {
    status = err.status;
    message = err.message;
  } else if (err instanceof ClickHouseStoreError) {
    message = err.detail;
    status = statusFor(err.code);
  } else {
    message = err instanceof Error ? err.message : String(err);
  }
  const code = clickHouseCode(message);
  if (res.headersSent) {
    res.end(`\n${message}\n`);
    return;
  }
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=UTF-8',
    ...(code !== undefined ? { 'X-ClickHouse-Exception-Code': String(code) } : {}),
  });
  res.end(`${message}\n`);
}

/**
 * Serves `store` over ClickHouse's HTTP interface, on 127.0.0.1 and read-only unless `opts` say
 * otherwise.
 *
 *   const endpoint = await serveStore(store);                        // SELECTs from this machine
 *   const admin = await serveStore(store, { allowWrites: true });    // also INSERT, CREATE, DROP…
 */
export async function serveStore(store: ClickHouseStore, opts: ServeOptions = {}): Promise<StoreEndpoint> {
  const server = createServer((req, res) => {
    handle(store, req, res, opts).catch((err: unknown) => sendError(res, err));
  });
  // Keep-alive as ClickHouse does (3 s), so pooled client sockets are not cut mid-request.
  server.keepAliveTimeout = 3000;
  await new Promise<void>((resolveListen, rejectListen) => {
    server.once('error', rejectListen);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', rejectListen);
      resolveListen();
    });
  });
  const { port, address } = server.address() as AddressInfo;
  // A wildcard address is not one to connect to; loopback reaches it from this machine.
  const host = address === '0.0.0.0' || address === '::' ? '127.0.0.1' : address.includes(':') ? `[${address}]` : address;
  const url = `http://${host}:${port}`;
  if (opts.dataDir) writeEndpointFile(opts.dataDir, url);
  let closed: Promise<void> | undefined;
  return {
    url,
    close() {
      closed ??= (async () => {
        if (opts.dataDir) removeEndpointFile(opts.dataDir);
        await new Promise<void>((resolveClose) => {
          server.close(() => resolveClose());
          server.closeIdleConnections();
        });
      })();
      return closed;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// endpoint.json: how another process finds the owner of an embedded store.

export interface EndpointInfo {
  url: string;
  pid: number;
  startedAt: string;
}

export const ENDPOINT_FILE = 'endpoint.json';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Publishes `url` for this process in `<dataDir>/endpoint.json` (written atomically). */
export function writeEndpointFile(dataDir: string, url: string): string {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, ENDPOINT_FILE);
  const info: EndpointInfo = { url, pid: process.pid, startedAt: new Date().toISOString() };
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(info)}\n`);
  renameSync(tmp, file);
  return file;
}

/** The running owner's endpoint, or undefined when there is none, it is unreadable or its pid is dead. */
export function readEndpointFile(dataDir: string): EndpointInfo | undefined {
  const file = join(dataDir, ENDPOINT_FILE);
  if (!existsSync(file)) return undefined;
  let info: Partial<EndpointInfo>;
  try {
    info = JSON.parse(readFileSync(file, 'utf8')) as Partial<EndpointInfo>;
  } catch {
    return undefined;
  }
  if (typeof info.url !== 'string' || typeof info.pid !== 'number' || !Number.isInteger(info.pid)) return undefined;
  if (!isAlive(info.pid)) return undefined;
  return { url: info.url, pid: info.pid, startedAt: String(info.startedAt ?? '') };
}

/** Removes the endpoint file if this process wrote it. */
export function removeEndpointFile(dataDir: string): void {
  const file = join(dataDir, ENDPOINT_FILE);
  try {
    const info = JSON.parse(readFileSync(file, 'utf8')) as Partial<EndpointInfo>;
    if (info.pid === process.pid) rmSync(file, { force: true });
  } catch {
    // absent or unreadable: nothing of ours to remove
  }
}

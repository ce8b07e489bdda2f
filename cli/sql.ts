import { existsSync } from 'node:fs';
import { readEndpointFile } from '../sinks/clickhouse/http-endpoint.ts';
import { DEFAULT_EMBEDDED_PATH, openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import type { Connections } from '../streams/connections.ts';

/** Output formats `flywheel sql --format` names in its help; any ClickHouse output format name is passed on. */
export const SQL_FORMATS = ['PrettyCompact', 'JSONEachRow', 'CSV', 'CSVWithNames', 'TabSeparated', 'TabSeparatedWithNames', 'JSON'] as const;

/**
 * A ClickHouse output format name, checked for shape (letters and digits) so it cannot alter the
 * query; ClickHouse itself rejects a name it does not know.
 *
 *   sqlFormat(undefined) // 'PrettyCompact';  sqlFormat('JSONEachRow') // 'JSONEachRow'
 */
export function sqlFormat(format: string | undefined): string {
  if (format === undefined || format === '') return 'PrettyCompact';
  if (!/^[A-Za-z][A-Za-z0-9]*$/.test(format)) throw new Error(`--format: ${JSON.stringify(format)} is not a ClickHouse format name (e.g. ${SQL_FORMATS.join(', ')})`);
  return format;
}

/**
 * `flywheel sql`: runs one statement against the pipeline's store and returns its result in
 * `format` (a ClickHouse output format; default PrettyCompact, e.g. JSONEachRow or CSV for scripts). A ClickHouse server is queried directly; an embedded store is opened in
 * this process, unless a running pipeline owns it (chdb allows one process per directory), in
 * which case the query goes through the endpoint that pipeline serves.
 */
export async function sqlCommand(query: string, connections: Connections, path = DEFAULT_EMBEDDED_PATH, format = 'PrettyCompact'): Promise<string> {
  const outputFormat = sqlFormat(format);
  const store = await openQueryStore(connections, path);
  try {
    const result = await store.raw(query, { format: outputFormat });
    return result.body.toString('utf8');
  } finally {
    await store.close();
  }
}

/**
 * The pipeline's store for a command in another process: the server when CLICKHOUSE_URL is
 * set; else the embedded directory, through the endpoint of the worker that owns it if one runs.
 */
export async function openQueryStore(connections: Connections, path = DEFAULT_EMBEDDED_PATH): Promise<ClickHouseStore> {
  if (connections.clickhouseUrl !== undefined) return openStore({ url: connections.clickhouseUrl, security: connections.clickhouse });
  if (!existsSync(path)) throw new Error(`no embedded ClickHouse store at ${path}: pass --path <dir> or --config <file>, or set CLICKHOUSE_URL`);
  return openStore({ url: readEndpointFile(path)?.url, path });
}

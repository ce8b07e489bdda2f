import { existsSync } from 'node:fs';
import { readEndpointFile } from '../sinks/clickhouse/http-endpoint.ts';
import { DEFAULT_EMBEDDED_PATH, openStore } from '../sinks/clickhouse/store.ts';
import type { Connections } from '../streams/connections.ts';

/**
 * `flywheel sql`: runs one statement against the pipeline's store and returns ClickHouse's
 * PrettyCompact text. A ClickHouse server is queried directly; an embedded store is opened in
 * this process, unless a running pipeline owns it (chdb allows one process per directory), in
 * which case the query goes through the endpoint that pipeline serves.
 */
export async function sqlCommand(query: string, connections: Connections, path = DEFAULT_EMBEDDED_PATH): Promise<string> {
  if (connections.clickhouseUrl === undefined && !existsSync(path)) {
    throw new Error(`no embedded ClickHouse store at ${path}: pass --path <dir> or --config <file>, or set CLICKHOUSE_URL`);
  }
  const owner = connections.clickhouseUrl === undefined ? readEndpointFile(path) : undefined;
  const store = await openStore({ url: connections.clickhouseUrl ?? owner?.url, path });
  try {
    const result = await store.raw(query, { format: 'PrettyCompact' });
    return result.body.toString('utf8');
  } finally {
    await store.close();
  }
}

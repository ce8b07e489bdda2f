/*
 * The worker's one ops HTTP server (node:http): /metrics, /healthz, /readyz (opsRoutes) and the
 * routes other parts register (the dashboard's `/` and `/api/*`). Bound to 127.0.0.1 unless
 * configured: the pipeline config's `ops.http` (host, port; port 0 picks a free port, null runs
 * no server), FLYWHEEL_HTTP_HOST / FLYWHEEL_HTTP_PORT in the environment winning.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { Readiness } from './health.ts';
import type { Instrumentation } from '../contracts/events.ts';
import { pipelineMetrics, type PipelineMetrics } from './metrics.ts';

/**
 * One route's handler. It answers `res` itself (status, headers, body); a throw or rejection
 * before it has sent headers becomes a 500. `url` is the parsed request URL (path and query).
 */
export type Route = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void> | void;

/**
 * Routes by path: `'/metrics'` matches that path exactly; a key ending in `/*` (`'/api/*'`)
 * matches every path under it, the longest such prefix winning. Exact matches win over prefixes.
 */
export type Routes = Record<string, Route>;

export interface OpsHttpSettings {
  host: string;
  /** 0: the system picks a free port (read it from `OpsServer.url`). */
  port: number;
}

export interface OpsServer {
  /** Where it listens, e.g. `http://127.0.0.1:9464/`. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Adds (or replaces) a route after start; returns its remover. */
  route(path: string, handler: Route): () => void;
  /** Stops listening and drops open (keep-alive) connections. */
  close(): Promise<void>;
}

const portValue = z.union([z.literal('off'), z.coerce.number().int().min(0).max(65535)]);

/**
 * The HTTP settings in effect: the config's `ops.http`, FLYWHEEL_HTTP_HOST / FLYWHEEL_HTTP_PORT
 * winning (FLYWHEEL_HTTP_PORT=off runs no server); undefined when no server is to run.
 * Throws an error naming the variable when FLYWHEEL_HTTP_PORT is not a port.
 *
 * @example
 * opsHttpSettings({ host: '127.0.0.1', port: 9464 }, { FLYWHEEL_HTTP_PORT: '0' }); // { host: '127.0.0.1', port: 0 }
 */
export function opsHttpSettings(config: { host: string; port: number | null }, env: NodeJS.ProcessEnv = process.env): OpsHttpSettings | undefined {
  const host = env.FLYWHEEL_HTTP_HOST?.trim() || config.host;
  const rawPort = env.FLYWHEEL_HTTP_PORT?.trim();
  let port = config.port;
  if (rawPort !== undefined && rawPort !== '') {
    const parsed = portValue.safeParse(rawPort.toLowerCase());
    if (!parsed.success) throw new Error(`FLYWHEEL_HTTP_PORT=${rawPort} is not a port: use 0-65535 (0 picks a free one) or "off"`);
    port = parsed.data === 'off' ? null : parsed.data;
  }
  return port === null ? undefined : { host, port };
}

/** Starts listening; rejects with a message naming the address when it cannot (e.g. in use). */
export async function startOpsServer(options: OpsHttpSettings & { routes?: Routes }): Promise<OpsServer> {
  const routes = new Map<string, Route>(Object.entries(options.routes ?? {}));
  const find = (path: string): Route | undefined => {
    const exact = routes.get(path);
    if (exact !== undefined) return exact;
    let best: { length: number; route: Route } | undefined;
    for (const [key, route] of routes) {
      if (!key.endsWith('/*')) continue;
      const prefix = key.slice(0, -1); // keeps the slash: '/api/*' matches '/api/…' and '/api'
      if ((path.startsWith(prefix) || path === prefix.slice(0, -1)) && (best === undefined || prefix.length > best.length)) best = { length: prefix.length, route };
    }
    return best?.route;
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://ops.invalid');
    const route = find(url.pathname);
    if (route === undefined) return sendJson(res, 404, { error: `no route ${url.pathname}`, routes: [...routes.keys()].sort() });
    Promise.resolve()
      .then(() => route(req, res, url))
      .catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, { error: (err as Error).message });
        else res.destroy();
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`the ops HTTP server cannot listen on ${options.host}:${options.port} (${err.code ?? err.message}); set ops.http.port or FLYWHEEL_HTTP_PORT (0 picks a free port, "off" runs none)`)),
    );
    server.listen({ host: options.host, port: options.port }, resolve);
  });
  const { port } = server.address() as AddressInfo;
  const shown = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    url: `http://${shown}:${port}/`,
    host: options.host,
    port,
    route(path, handler) {
      routes.set(path, handler);
      return () => void (routes.get(path) === handler && routes.delete(path));
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Answers with a JSON body. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** Wraps a handler so that only GET and HEAD reach it (405 otherwise). */
export function readOnly(route: Route): Route {
  return (req, res, url) => {
    if (req.method === 'GET' || req.method === 'HEAD') return route(req, res, url);
    res.writeHead(405, { allow: 'GET, HEAD' });
    res.end();
  };
}

/**
 * The routes every worker serves:
 * - `/metrics`: Prometheus text exposition of `metrics`;
 * - `/healthz`: 200 while the process answers at all (its event loop is not stuck);
 * - `/readyz`: 200 when `readiness` says ready, else 503; the JSON body says what is missing.
 *
 * @example
 * const server = await startOpsServer({ host: '127.0.0.1', port: 0, routes: opsRoutes({ metrics, readiness }) });
 * await fetch(new URL('readyz', server.url)); // 503 {"ready":false,"missing":["no partitions assigned yet"],…}
 */
export function opsRoutes(parts: { metrics?: PipelineMetrics; readiness?: Readiness }): Routes {
  const started = Date.now();
  const routes: Routes = {
    '/healthz': readOnly((_req, res) => sendJson(res, 200, { status: 'alive', uptimeSeconds: Math.round((Date.now() - started) / 1000) })),
  };
  const { metrics, readiness } = parts;
  if (metrics !== undefined) {
    routes['/metrics'] = readOnly(async (_req, res) => {
      const text = await metrics.scrape();
      res.writeHead(200, { 'content-type': metrics.registry.contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
      res.end(text);
    });
  }
  if (readiness !== undefined) {
    routes['/readyz'] = readOnly(async (_req, res) => {
      const report = await readiness.check();
      sendJson(res, report.ready ? 200 : 503, report);
    });
  }
  return routes;
}

/**
 * An ops server with /metrics (from `events`) and /healthz only, for a process that is not a
 * pipeline worker (the trainer); undefined when `http` is (no server configured). The caller
 * closes it.
 *
 * @example
 * // Only when FLYWHEEL_HTTP_PORT is set: a worker on the same machine holds the default port.
 * const ops = await serveMetrics(events, opsHttpSettings({ host: '127.0.0.1', port: null }), { trainer: 'reference' });
 */
export async function serveMetrics(events: Instrumentation, http: OpsHttpSettings | undefined, labels: Record<string, string>): Promise<OpsServer | undefined> {
  if (http === undefined) return undefined;
  return startOpsServer({ ...http, routes: opsRoutes({ metrics: pipelineMetrics(events, { labels }) }) });
}

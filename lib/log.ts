/*
 * Structured logs: one small logger for every library file, instead of ad-hoc
 * `process.stderr.write` lines. Four levels; JSON lines for machines or a text line for people.
 *
 * The level and format come, in this order, from `configureLogging` (the pipeline config's `log`
 * section, applied by the CLI), from the environment (FLYWHEEL_LOG_LEVEL = debug|info|warn|error,
 * FLYWHEEL_LOG_FORMAT = text|json), else `info` and `text`. Every logger made by `logger()` follows
 * the process-wide setting at the time of each call, so configuring late still applies everywhere.
 */

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** Extra structured fields of one line; `undefined` values are left out. */
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** Whether a line at `level` would be written: guard expensive fields with it. */
  enabled(level: LogLevel): boolean;
  /** A logger that adds `fields` to every line (a component name, a partition). */
  child(fields: LogFields): Logger;
}

export interface LogSettings {
  level: LogLevel;
  format: LogFormat;
  /** Where a finished line goes (default: stderr). Tests and embedders may capture it. */
  write: (line: string) => void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function fromEnv<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
  const raw = process.env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '') return fallback;
  if ((allowed as readonly string[]).includes(raw)) return raw as T;
  // Said once at start-up rather than thrown: a typo in a log setting should not stop a worker.
  process.stderr.write(`[flywheel] ${name}=${raw} is not one of ${allowed.join(', ')}; using ${fallback}\n`);
  return fallback;
}

const settings: LogSettings = {
  level: fromEnv('FLYWHEEL_LOG_LEVEL', LOG_LEVELS, 'info'),
  format: fromEnv('FLYWHEEL_LOG_FORMAT', LOG_FORMATS, 'text'),
  write: (line) => void process.stderr.write(line),
};

/**
 * Sets the process-wide level, format or destination; fields not given keep their value.
 * The environment wins over the config (an operator debugging one worker sets the env var);
 * pass `{ force: true }` to override it anyway.
 *
 * @example
 * configureLogging({ level: config.log.level, format: config.log.format });
 */
export function configureLogging(given: Partial<LogSettings>, opts: { force?: boolean } = {}): void {
  const envLevel = process.env.FLYWHEEL_LOG_LEVEL !== undefined && process.env.FLYWHEEL_LOG_LEVEL !== '';
  const envFormat = process.env.FLYWHEEL_LOG_FORMAT !== undefined && process.env.FLYWHEEL_LOG_FORMAT !== '';
  if (given.level !== undefined && (opts.force || !envLevel)) settings.level = given.level;
  if (given.format !== undefined && (opts.force || !envFormat)) settings.format = given.format;
  if (given.write !== undefined) settings.write = given.write;
}

/** The current process-wide settings (a copy). */
export function logSettings(): LogSettings {
  return { ...settings };
}

function errorFields(value: unknown): unknown {
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message };
    const retriable = (value as { retriable?: unknown }).retriable;
    if (typeof retriable === 'boolean') out.retriable = retriable;
    return out;
  }
  return value;
}

function textValue(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(value.message);
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'bigint') return value.toString();
  return JSON.stringify(value) ?? String(value);
}

function format(level: LogLevel, msg: string, fields: LogFields): string {
  if (settings.format === 'json') {
    const line: Record<string, unknown> = { t: new Date().toISOString(), level, msg };
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) line[k] = errorFields(v);
    return `${JSON.stringify(line, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`;
  }
  // Text keeps the `[component] message` shape people (and older scripts) read; the level shows
  // only when it is not plain info.
  const { component, ...rest } = fields;
  const prefix = `[${typeof component === 'string' ? component : 'flywheel'}]`;
  const tag = level === 'info' ? '' : ` ${level.toUpperCase()}`;
  const extra = Object.entries(rest)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}=${textValue(v)}`)
    .join('');
  return `${prefix}${tag} ${msg}${extra}\n`;
}

/**
 * A logger whose lines carry `fields`. In text format a `component` field becomes the
 * `[component]` prefix (default `[flywheel]`); in JSON it is a field like any other.
 *
 * @example
 * const log = logger({ component: 'flywheel', sink: 'clickhouse' });
 * log.warn('store unavailable, retrying', { attempt: 3, delayMs: 400 });
 * // text: [flywheel] WARN store unavailable, retrying sink=clickhouse attempt=3 delayMs=400
 * // json: {"t":"2026-12-02T02:00:00.000Z","level":"warn","msg":"store unavailable, retrying","component":"flywheel","sink":"clickhouse","attempt":3,"delayMs":400}
 */
export function logger(fields: LogFields = {}): Logger {
  const write = (level: LogLevel, msg: string, more?: LogFields): void => {
    if (RANK[level] < RANK[settings.level]) return;
    settings.write(format(level, msg, more === undefined ? fields : { ...fields, ...more }));
  };
  return {
    debug: (msg, more) => write('debug', msg, more),
    info: (msg, more) => write('info', msg, more),
    warn: (msg, more) => write('warn', msg, more),
    error: (msg, more) => write('error', msg, more),
    enabled: (level) => RANK[level] >= RANK[settings.level],
    child: (more) => logger({ ...fields, ...more }),
  };
}

/** The default logger, `[flywheel]` in text. */
export const log: Logger = logger();

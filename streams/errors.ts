/**
 * Flywheel's errors, typed by what a retry can do about them (KafkaJS's convention: a
 * `retriable` flag on the error, read by kafkajs's own retrier too).
 *
 * - `RecordError`: a record's own content is at fault; retrying cannot cure it, so the record is
 *   dead-lettered with the error's message as the reason.
 * - `UnavailableError`: a service (broker, registry, store) could not serve the call; retried
 *   with backoff, and nothing is dead-lettered.
 *
 *   throw new RecordError('rollout.run_id: expected a string, got undefined', { record: { topic, partition, offset } });
 *   throw new UnavailableError('schema registry', 'http://127.0.0.1:18081', 'connect ECONNREFUSED', { cause: err });
 *   if (retriable(err)) await backoff(); else deadLetter(record, err);
 */
export class FlywheelError extends Error {
  override name = 'FlywheelError';
  readonly retriable: boolean;

  constructor(message: string, options: { retriable: boolean; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retriable = options.retriable;
  }
}

/** Where a record sits: enough to find it again (`kcat -t topic -p partition -o offset -c 1`). */
export interface RecordRef {
  topic: string;
  partition: number;
  offset: string;
}

/** This record cannot be processed, whatever the retries: not retriable. */
export class RecordError extends FlywheelError {
  override name = 'RecordError';
  readonly record: RecordRef | undefined;

  constructor(message: string, options: { record?: RecordRef; cause?: unknown } = {}) {
    super(message, { retriable: false, cause: options.cause });
    this.record = options.record;
  }
}

/** A service could not serve the call (down, overloaded, timed out, a partition without a leader): retriable. */
export class UnavailableError extends FlywheelError {
  override name = 'UnavailableError';

  constructor(
    /** What was called, e.g. `kafka`, `schema registry`, `clickhouse`. */
    readonly service: string,
    /** Its address (URL, broker list) or the resource asked for, e.g. a topic. */
    readonly target: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(`${service} (${target}) unavailable: ${message}`, { retriable: true, cause: options.cause });
  }
}

/** Network-level failures: the other side did not answer, which says nothing about the request. */
const NETWORK_CODES = /^(ECONN|ETIMEDOUT|EPIPE|EAI_AGAIN|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|ENETDOWN|ERR_NETWORK|ERR_SOCKET|UND_ERR)/;

/**
 * Whether retrying the same work later may succeed. kafkajs's errors are (they are about the
 * cluster, never about a record); otherwise an explicit `retriable` flag decides (ours, a
 * serde's); then network error codes and HTTP 5xx / 408 / 429 / 401 / 403 (a service overloaded,
 * or credentials: never the record's fault) are retriable, also when found through `cause`.
 * Anything else — a TypeError, a schema mismatch, an operator's own exception — is taken to be
 * the input's fault: deterministic, so not retriable.
 *
 *   retriable(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })); // true
 *   retriable(new TypeError("Cannot read properties of undefined (reading 'trim')"));       // false
 */
export function retriable(err: unknown): boolean {
  for (let e = err as ErrorLike | undefined, depth = 0; e !== undefined && e !== null && depth < 5; e = e.cause as ErrorLike | undefined, depth++) {
    if (typeof e !== 'object') return false;
    // kafkajs marks errors it will not retry itself (a fenced producer's among them) non-retriable;
    // for a caller that takes the partition again they are still the cluster's, not the record's.
    if (typeof e.name === 'string' && e.name.startsWith('KafkaJS')) return true;
    if (typeof e.retriable === 'boolean') return e.retriable;
    if (typeof e.code === 'string' && NETWORK_CODES.test(e.code)) return true;
    const status = e.status ?? e.statusCode ?? e.response?.status;
    if (typeof status === 'number') return status >= 500 || status === 408 || status === 429 || status === 401 || status === 403;
  }
  return false;
}

/**
 * kafkajs's group answers meaning this member must rejoin: a rebalance, a moved coordinator, a
 * newer generation, an expired session. kafkajs's consumer rejoins at once when one of them
 * reaches it from eachBatch as is; any other error it retries with the old membership.
 */
const REJOIN_ERRORS: ReadonlySet<string> = new Set(['REBALANCE_IN_PROGRESS', 'NOT_COORDINATOR_FOR_GROUP', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID']);

/** The group error (REJOIN_ERRORS) in `err` or its causes — kafkajs wraps what its retries give up on — if any. */
export function rejoinError(err: unknown): Error | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth += 1) {
    const type = (e as ErrorLike).type;
    if (typeof type === 'string' && REJOIN_ERRORS.has(type)) return e;
  }
  return undefined;
}

/** A short name for what went wrong, for log lines: `ECONNREFUSED`, `REBALANCE_IN_PROGRESS`, `TypeError`. */
export function errorKind(err: unknown): string {
  const e = err as ErrorLike | undefined;
  return (typeof e?.code === 'string' && e.code) || (typeof e?.type === 'string' && e.type) || (typeof e?.name === 'string' && e.name) || 'Error';
}

interface ErrorLike {
  retriable?: unknown;
  code?: unknown;
  type?: unknown;
  name?: unknown;
  status?: unknown;
  statusCode?: unknown;
  response?: { status?: unknown };
  cause?: unknown;
}

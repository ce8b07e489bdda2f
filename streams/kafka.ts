// First: kafkajs must load with the linear producer grouping (see the module).
import './kafkajs-producer.ts';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { connect as connectTls, type ConnectionOptions } from 'node:tls';
import { Kafka, logLevel, type Admin, type AdminConfig, type Consumer, type ConsumerConfig, type KafkaConfig, type logCreator, type Producer, type ProducerConfig } from 'kafkajs';
import type { Connections, KafkaSecurity, TlsFiles } from './connections.ts';
import { logger, type LogLevel } from '../lib/log.ts';
import { redactText, type Secret } from './secrets.ts';

/**
 * kafkajs looks a coordinator up (FindCoordinator, a round trip) before every request that goes
 * to one: a transaction asks three times for its transaction coordinator (AddPartitionsToTxn,
 * AddOffsetsToTxn, EndTxn) and once for the group's (TxnOffsetCommit), so four of a
 * transaction's nine sequential round trips only ask where to send the other five. Here each
 * client (kafkajs cluster) keeps the answer per group or transactional id and coordinator type,
 * as Kafka's own clients do, until a request to that broker fails (NOT_COORDINATOR, a
 * coordinator moving or loading, a dropped connection, … — anything but the answers only the
 * right coordinator gives): then every answer naming that broker is forgotten and the next
 * request looks its coordinator up again, as kafkajs would.
 */
function cacheCoordinators(): void {
  const require = createRequire(import.meta.url);
  const Cluster = require('kafkajs/src/cluster/index.js') as { prototype: ClusterLike };
  const Broker = require('kafkajs/src/broker/index.js') as { prototype: Record<string, unknown> };
  if ((Cluster.prototype as { [CACHED]?: true })[CACHED]) return;
  (Cluster.prototype as { [CACHED]?: true })[CACHED] = true;
  /** Per broker node id: bumped by a failed request, which voids every answer naming that node. */
  const epochs = new Map<number, number>();
  const answers = new WeakMap<ClusterLike, Map<string, { nodeId: number; epoch: number }>>();
  const find = Cluster.prototype.findGroupCoordinator;
  Cluster.prototype.findGroupCoordinator = async function (this: ClusterLike, query) {
    let known = answers.get(this);
    if (known === undefined) answers.set(this, (known = new Map()));
    const key = `${query.coordinatorType ?? 0}:${query.groupId}`;
    const answer = known.get(key);
    if (answer !== undefined && answer.epoch === (epochs.get(answer.nodeId) ?? 0)) {
      try {
        return await this.findBroker({ nodeId: answer.nodeId });
      } catch {
        known.delete(key); // gone from the metadata, or unreachable: ask again
      }
    }
    const broker = await find.call(this, query);
    known.set(key, { nodeId: broker.nodeId, epoch: epochs.get(broker.nodeId) ?? 0 });
    return broker;
  };
  // The requests a coordinator answers (transactions and groups).
  for (const name of ['addPartitionsToTxn', 'addOffsetsToTxn', 'txnOffsetCommit', 'endTxn', 'initProducerId', 'joinGroup', 'syncGroup', 'heartbeat', 'leaveGroup', 'offsetCommit', 'offsetFetch', 'describeGroups', 'deleteGroups']) {
    const request = Broker.prototype[name] as ((...args: unknown[]) => Promise<unknown>) | undefined;
    if (typeof request !== 'function') continue;
    Broker.prototype[name] = async function (this: { nodeId: number }, ...args: unknown[]) {
      try {
        return await request.apply(this, args);
      } catch (err) {
        if (!FROM_THE_COORDINATOR.has((err as { type?: string }).type ?? '')) epochs.set(this.nodeId, (epochs.get(this.nodeId) ?? 0) + 1);
        throw err;
      }
    };
  }
}
const CACHED = Symbol.for('flywheel.kafkajs.coordinatorCache');
/** Answers only the right coordinator gives (a transaction still completing, a group rebalancing): no reason to look it up again. */
const FROM_THE_COORDINATOR = new Set(['CONCURRENT_TRANSACTIONS', 'REBALANCE_IN_PROGRESS', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID', 'MEMBER_ID_REQUIRED']);
interface ClusterLike {
  findGroupCoordinator(query: { groupId: string; coordinatorType?: number }): Promise<{ nodeId: number }>;
  findBroker(query: { nodeId: number }): Promise<{ nodeId: number }>;
}
cacheCoordinators();

/**
 * kafkajs logs at ERROR the broker answers it then retries by itself (a coordinator still
 * loading, a transaction still completing); those are noise, not failures. What it gives up on
 * reaches the caller as an exception anyway.
 */
const RETRIED = /concurrent operation on the same transaction|coordinator is (loading|not available)|not the correct coordinator|leadership election|There is no leader/i;

const LEVEL_NAMES: Record<number, LogLevel> = { [logLevel.ERROR]: 'error', [logLevel.WARN]: 'warn', [logLevel.INFO]: 'info', [logLevel.DEBUG]: 'debug' };
const kafkajsLog = logger({ component: 'kafkajs' });

const quietLog =
  (secrets: readonly (Secret | undefined)[]): logCreator =>
  () =>
  ({ level, log }) => {
    if (level > logLevel.WARN && process.env.KAFKAJS_LOG === undefined) return;
    const error = typeof log.error === 'string' ? log.error : '';
    if (level === logLevel.ERROR && (RETRIED.test(log.message) || RETRIED.test(error))) return;
    // Said of every idempotent producer once retries are bounded (below). Flywheel's transactional
    // producers abort on a send that runs out of retries, and the processor retries the batch.
    if (level === logLevel.WARN && log.message.startsWith('Limiting retries for the idempotent producer')) return;
    // kafkajs does not log credentials; the redaction is for a debug log quoting a request.
    kafkajsLog[LEVEL_NAMES[level] ?? 'error'](redactText(`${log.message}${error ? `: ${error}` : ''}`, secrets));
  };

/**
 * The one place a kafkajs client is made: every worker, trainer, CLI command and admin call gets
 * the TLS and SASL settings of `connections.kafka` from here. KAFKAJS_LOG=debug|info shows
 * kafkajs's own logs.
 *
 * Connecting fails fast and says why when the cause is configuration, not an outage:
 * - a SASL failure (wrong password, unknown user, a mechanism the broker does not offer) is
 *   non-retriable in kafkajs already; it is rethrown as a {@link KafkaSecurityError} naming the
 *   brokers, the mechanism, the user and the variables to check;
 * - a TLS certificate that does not verify is, to kafkajs, a retriable connection error (it would
 *   retry for minutes, see `retry` below), so a TLS client checks the handshake once itself first.
 *
 *   const kafka = createKafka(connectionsFromEnv(), 'flywheel-produce');
 *   await kafka.producer().connect();   // KafkaSecurityError: … rejected SCRAM-SHA-512 … as "flywheel" …
 */
export function createKafka(connections: Connections, clientId: string): Kafka {
  // Flywheel always sets partitions or keys explicitly; kafkajs's v2 partitioner notice is moot.
  process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';
  const level = process.env.KAFKAJS_LOG === 'debug' ? logLevel.DEBUG : process.env.KAFKAJS_LOG === 'info' ? logLevel.INFO : logLevel.WARN;
  const security = connections.kafka;
  const tls = security?.ssl === undefined ? undefined : tlsOptions(security.ssl);
  const sasl = security?.sasl;
  const config: KafkaConfig = {
    clientId,
    brokers: connections.kafkaBrokers,
    logLevel: level,
    logCreator: quietLog([sasl?.password, security?.ssl?.keyPassword]),
    // kafkajs's default (5 retries, ≈ 20 s in all) turns a broker restart that takes longer into a
    // worker that exits; an always-on worker waits out a few minutes of broker outage instead.
    retry: { initialRetryTime: 300, maxRetryTime: 10_000, retries: 30 },
    ...(tls && { ssl: tls }),
    // A literal per mechanism: kafkajs's SASLOptions is a union keyed by it.
    ...(sasl?.mechanism === 'plain' && { sasl: { mechanism: 'plain', username: sasl.username, password: sasl.password.reveal() } }),
    ...(sasl?.mechanism === 'scram-sha-256' && { sasl: { mechanism: 'scram-sha-256', username: sasl.username, password: sasl.password.reveal() } }),
    ...(sasl?.mechanism === 'scram-sha-512' && { sasl: { mechanism: 'scram-sha-512', username: sasl.username, password: sasl.password.reveal() } }),
  };
  return security === undefined ? new Kafka(config) : new SecuredKafka(config, connections.kafkaBrokers, security, tls);
}

/** Node's TLS options for a TlsFiles (the files were read at the edge, connectionsFromEnv). */
export function tlsOptions(t: TlsFiles): ConnectionOptions {
  return {
    ...(t.ca !== undefined && { ca: t.ca }),
    ...(t.cert !== undefined && { cert: t.cert }),
    ...(t.key !== undefined && { key: t.key.reveal() }),
    ...(t.keyPassword !== undefined && { passphrase: t.keyPassword.reveal() }),
    rejectUnauthorized: t.rejectUnauthorized,
  };
}

/** Kafka refused this client for its configuration (credentials, mechanism, certificates); retrying cannot help. */
export class KafkaSecurityError extends Error {
  override name = 'KafkaSecurityError';
  readonly retriable = false;
}

type Connectable = { connect(): Promise<void> };

class SecuredKafka extends Kafka {
  #checked: Promise<void> | undefined;

  constructor(
    config: KafkaConfig,
    private readonly brokers: string[],
    private readonly security: KafkaSecurity,
    private readonly tls: ConnectionOptions | undefined,
  ) {
    super(config);
  }

  override producer(config?: ProducerConfig): Producer {
    return this.#guard(super.producer(config));
  }
  override consumer(config: ConsumerConfig): Consumer {
    return this.#guard(super.consumer(config));
  }
  override admin(config?: AdminConfig): Admin {
    return this.#guard(super.admin(config));
  }

  #guard<T extends Connectable>(client: T): T {
    const connect = client.connect.bind(client);
    client.connect = async () => {
      // Once per client object that passed; a failed check is retried by the next connect.
      if (this.tls !== undefined) {
        this.#checked ??= checkTls(this.brokers, this.tls, this.security).catch((err: unknown) => {
          this.#checked = undefined;
          throw err;
        });
        await this.#checked;
      }
      try {
        await connect();
      } catch (err) {
        throw securityError(err, this.brokers, this.security) ?? err;
      }
    };
    return client;
  }
}


/** The clear form of a kafkajs connect error that configuration caused, or undefined for an outage. */
function securityError(err: unknown, brokers: string[], s: KafkaSecurity): KafkaSecurityError | undefined {
  const e = err as { name?: string; type?: string; message?: string };
  const secrets = [s.sasl?.password, s.ssl?.keyPassword];
  const message = redactText(e.message ?? String(err), secrets);
  if (e.name === 'KafkaJSSASLAuthenticationError' || e.type === 'SASL_AUTHENTICATION_FAILED') {
    return new KafkaSecurityError(
      `Kafka at ${brokers.join(',')} (${s.protocol}) rejected user "${s.sasl?.username ?? '?'}" with ${s.sasl?.mechanism.toUpperCase() ?? 'SASL'}: ${message}. ` +
        'Check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD / KAFKA_SASL_PASSWORD_FILE (and that the user has SCRAM credentials for this mechanism: kafka-configs --alter --add-config).',
      { cause: err },
    );
  }
  if (e.type === 'UNSUPPORTED_SASL_MECHANISM' || e.type === 'ILLEGAL_SASL_STATE') {
    return new KafkaSecurityError(`Kafka at ${brokers.join(',')} (${s.protocol}) does not accept ${s.sasl?.mechanism.toUpperCase() ?? 'this SASL mechanism'} on this listener: ${message}. Check KAFKA_SASL_MECHANISM and the broker's sasl.enabled.mechanisms.`, { cause: err });
  }
  return undefined;
}

const CERT_ERROR = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ALTNAME|HOSTNAME_MISMATCH|ERR_SSL|EPROTO|ERR_TLS/;
// What Node says when the peer closes a connection in the middle of the TLS handshake: a
// listener that does not speak TLS (a PLAINTEXT Kafka port reads the ClientHello as a request).
const NOT_TLS = /disconnected before secure TLS connection was established|wrong version number/i;
const HANDSHAKE_TRIES = 3;

/**
 * One TLS handshake with the first broker that answers, with the client's own options: a
 * certificate failure, or a listener that keeps cutting the handshake (not TLS), becomes a
 * KafkaSecurityError at once. Unreachable or slow brokers are left to kafkajs, which waits them out.
 */
async function checkTls(brokers: string[], options: ConnectionOptions, s: KafkaSecurity): Promise<void> {
  for (const broker of brokers) {
    const i = broker.lastIndexOf(':');
    const host = broker.slice(0, i).replace(/^\[|\]$/g, '');
    const port = Number(broker.slice(i + 1));
    for (let attempt = 1; ; attempt++) {
      const failure = await handshake(host, port, options);
      if (failure === undefined) return;
      const code = (failure as NodeJS.ErrnoException).code ?? '';
      const text = `${code} ${failure.message}`;
      if (NOT_TLS.test(text)) {
        // A restarting broker behind a proxy can cut a handshake once; a plaintext port does so every time.
        if (attempt < HANDSHAKE_TRIES) continue;
        throw new KafkaSecurityError(
          `TLS handshake with Kafka broker ${broker} failed ${HANDSHAKE_TRIES} times: ${failure.message}; is it a TLS listener? KAFKA_SECURITY_PROTOCOL=${s.protocol} must match the listener's protocol`,
          { cause: failure },
        );
      }
      if (CERT_ERROR.test(code) || /certificate/i.test(failure.message)) {
        throw new KafkaSecurityError(
          `TLS handshake with Kafka broker ${broker} failed: ${failure.message} (${code || 'no code'}); the broker's certificate must chain to KAFKA_SSL_CA_FILE (${s.ssl?.caFile ?? "unset: Node's default CAs"}) and name ${host}`,
          { cause: failure },
        );
      }
      break; // refused, unreachable…: an outage, the next broker or kafkajs's retries
    }
  }
}

/** undefined: the handshake completed (or timed out: slow is not wrong); otherwise its error. */
function handshake(host: string, port: number, options: ConnectionOptions): Promise<Error | undefined> {
  return new Promise((resolve) => {
    const socket = connectTls({ host, port, ...(isIP(host) ? {} : { servername: host }), ...options }, () => {
      socket.end();
      resolve(undefined);
    });
    socket.setTimeout(10_000, () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once('error', (err) => resolve(err));
  });
}

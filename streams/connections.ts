import { ConnectionConfigError, Secret, readEnvFile, redactUrl, secretFromEnv } from './secrets.ts';

/**
 * Where the real services are and how to authenticate to them. Read from the environment once
 * (connectionsFromEnv), validated there with errors naming the variable, with the local defaults
 * that `deploy/services.sh up` starts. Files (CA certificates, keys, `*_FILE` secrets) are read
 * here too, so a bad path fails at start-up, not at the first reconnect.
 *
 *   KAFKA_SECURITY_PROTOCOL=SASL_SSL KAFKA_SASL_USERNAME=flywheel \
 *   KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka KAFKA_SSL_CA_FILE=/etc/flywheel/ca.pem flywheel run …
 */
export interface Connections {
  kafkaBrokers: string[];
  schemaRegistryUrl: string;
  /** Unset: the embedded ClickHouse (chdb). Set: a ClickHouse server's HTTP URL. */
  clickhouseUrl: string | undefined;
  /** TLS and SASL for every Kafka client (streams/kafka.ts); absent: PLAINTEXT. */
  kafka?: KafkaSecurity;
  /** Basic auth and a CA for the schema registry; absent: none. */
  schemaRegistry?: HttpSecurity;
  /** User, password and a CA for the ClickHouse server; absent: user `default`, no password. */
  clickhouse?: HttpSecurity;
}

export type KafkaSecurityProtocol = 'PLAINTEXT' | 'SSL' | 'SASL_PLAINTEXT' | 'SASL_SSL';
export type SaslMechanism = 'scram-sha-512' | 'scram-sha-256' | 'plain';

export interface TlsFiles {
  /** PEM CA bundle the server's certificate must chain to (absent: Node's default CAs). */
  ca?: string;
  caFile?: string;
  /** Client certificate and key (PEM), for brokers that require mutual TLS. */
  cert?: string;
  certFile?: string;
  key?: Secret;
  keyFile?: string;
  keyPassword?: Secret;
  /** false only for a test broker with a certificate nothing signs; default true. */
  rejectUnauthorized: boolean;
}

export interface KafkaSecurity {
  protocol: KafkaSecurityProtocol;
  ssl?: TlsFiles;
  sasl?: { mechanism: SaslMechanism; username: string; password: Secret };
}

export interface HttpSecurity {
  auth?: { username: string; password: Secret };
  tls?: TlsFiles;
}

export const LOCAL_KAFKA = '127.0.0.1:19092';
export const LOCAL_REGISTRY = 'http://127.0.0.1:18081/apis/ccompat/v7';

const PROTOCOLS: readonly KafkaSecurityProtocol[] = ['PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL'];
const MECHANISMS: Record<string, SaslMechanism> = { 'SCRAM-SHA-512': 'scram-sha-512', 'SCRAM-SHA-256': 'scram-sha-256', PLAIN: 'plain' };

/** Every variable connectionsFromEnv reads (the README's Security section lists them too). */
export const CONNECTION_ENV = [
  'KAFKA_BROKERS', 'KAFKA_SECURITY_PROTOCOL', 'KAFKA_SASL_MECHANISM', 'KAFKA_SASL_USERNAME', 'KAFKA_SASL_PASSWORD', 'KAFKA_SASL_PASSWORD_FILE',
  'KAFKA_SSL_CA_FILE', 'KAFKA_SSL_CERT_FILE', 'KAFKA_SSL_KEY_FILE', 'KAFKA_SSL_KEY_PASSWORD', 'KAFKA_SSL_KEY_PASSWORD_FILE', 'KAFKA_SSL_REJECT_UNAUTHORIZED',
  'SCHEMA_REGISTRY_URL', 'SCHEMA_REGISTRY_USERNAME', 'SCHEMA_REGISTRY_PASSWORD', 'SCHEMA_REGISTRY_PASSWORD_FILE', 'SCHEMA_REGISTRY_CA_FILE',
  'CLICKHOUSE_URL', 'CLICKHOUSE_USER', 'CLICKHOUSE_PASSWORD', 'CLICKHOUSE_PASSWORD_FILE', 'CLICKHOUSE_CA_FILE',
] as const;

const set = (env: NodeJS.ProcessEnv, name: string): string | undefined => {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
};

function tlsFromEnv(env: NodeJS.ProcessEnv, prefix: string, opts: { clientCert: boolean }): TlsFiles | undefined {
  const caFile = set(env, `${prefix}_CA_FILE`);
  const certFile = opts.clientCert ? set(env, `${prefix}_CERT_FILE`) : undefined;
  const keyFile = opts.clientCert ? set(env, `${prefix}_KEY_FILE`) : undefined;
  const reject = set(env, `${prefix}_REJECT_UNAUTHORIZED`);
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new ConnectionConfigError(`${prefix}_CERT_FILE and ${prefix}_KEY_FILE go together (a client certificate needs its key); only ${certFile ? `${prefix}_CERT_FILE` : `${prefix}_KEY_FILE`} is set`);
  }
  if (reject !== undefined && reject !== 'true' && reject !== 'false') {
    throw new ConnectionConfigError(`${prefix}_REJECT_UNAUTHORIZED=${reject}: expected true or false`);
  }
  const keyPassword = opts.clientCert ? secretFromEnv(env, `${prefix}_KEY_PASSWORD`) : undefined;
  if (caFile === undefined && certFile === undefined && reject === undefined && keyPassword === undefined) return undefined;
  return {
    ...(caFile && { caFile, ca: pem(`${prefix}_CA_FILE`, caFile, 'CERTIFICATE') }),
    ...(certFile && { certFile, cert: pem(`${prefix}_CERT_FILE`, certFile, 'CERTIFICATE') }),
    ...(keyFile && { keyFile, key: new Secret(pem(`${prefix}_KEY_FILE`, keyFile, 'PRIVATE KEY')) }),
    ...(keyPassword && { keyPassword }),
    rejectUnauthorized: reject !== 'false',
  };
}

/** Reads a PEM file; a DER or empty file fails here, naming the variable, not inside a handshake. */
function pem(variable: string, path: string, kind: 'CERTIFICATE' | 'PRIVATE KEY'): string {
  const text = readEnvFile(variable, path);
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(text)) {
    throw new ConnectionConfigError(`${variable}=${path}: no PEM ${kind.toLowerCase()} in it (expected a "-----BEGIN …${kind}-----" block)`);
  }
  return text;
}

function kafkaFromEnv(env: NodeJS.ProcessEnv): KafkaSecurity | undefined {
  const username = set(env, 'KAFKA_SASL_USERNAME');
  const password = secretFromEnv(env, 'KAFKA_SASL_PASSWORD');
  const mechanismName = set(env, 'KAFKA_SASL_MECHANISM');
  const ssl = tlsFromEnv(env, 'KAFKA_SSL', { clientCert: true });
  const saslAsked = username !== undefined || password !== undefined || mechanismName !== undefined;
  const protocolName = set(env, 'KAFKA_SECURITY_PROTOCOL')?.toUpperCase();
  // Unset: inferred from what else is set, TLS whenever credentials are (SASL over plaintext
  // must be asked for by name: PLAIN would send the password in the clear).
  const protocol = (protocolName ?? (saslAsked ? 'SASL_SSL' : ssl ? 'SSL' : 'PLAINTEXT')) as KafkaSecurityProtocol;
  if (!PROTOCOLS.includes(protocol)) {
    throw new ConnectionConfigError(`KAFKA_SECURITY_PROTOCOL=${protocolName}: expected one of ${PROTOCOLS.join(', ')}`);
  }
  const usesSasl = protocol.startsWith('SASL_');
  const usesTls = protocol.endsWith('SSL');
  if (!usesSasl && saslAsked) {
    throw new ConnectionConfigError(`KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL=${protocol} does not authenticate with SASL; use SASL_SSL (or SASL_PLAINTEXT)`);
  }
  if (!usesTls && ssl) {
    throw new ConnectionConfigError(`KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL=${protocol} does not use TLS; use SSL or SASL_SSL`);
  }
  if (protocol === 'PLAINTEXT') return undefined;
  let sasl: KafkaSecurity['sasl'];
  if (usesSasl) {
    const mechanism = MECHANISMS[(mechanismName ?? 'SCRAM-SHA-512').toUpperCase()];
    if (mechanism === undefined) {
      throw new ConnectionConfigError(`KAFKA_SASL_MECHANISM=${mechanismName}: expected one of ${Object.keys(MECHANISMS).join(', ')}`);
    }
    if (username === undefined) throw new ConnectionConfigError(`KAFKA_SECURITY_PROTOCOL=${protocol} needs KAFKA_SASL_USERNAME`);
    if (password === undefined) throw new ConnectionConfigError(`KAFKA_SECURITY_PROTOCOL=${protocol} needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE`);
    sasl = { mechanism, username, password };
  }
  return { protocol, ...(usesTls && { ssl: ssl ?? { rejectUnauthorized: true } }), ...(sasl && { sasl }) };
}

/**
 * A service URL and its credentials: from `<PREFIX>_USER(NAME)` and `<PREFIX>_PASSWORD(_FILE)`,
 * or from the URL's own userinfo (taken out of the URL, so no log or error can quote it) —
 * one or the other.
 */
function httpFromEnv(env: NodeJS.ProcessEnv, urlVar: string, url: string | undefined, userVar: string, passwordVar: string, defaultUser?: string): { url: string | undefined; security?: HttpSecurity } {
  let username = set(env, userVar);
  let password = secretFromEnv(env, passwordVar);
  let parsed: URL | undefined;
  if (url !== undefined) {
    try {
      parsed = new URL(url);
    } catch {
      throw new ConnectionConfigError(`${urlVar}=${redactUrl(url)}: not a URL (expected http(s)://host:port/…)`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new ConnectionConfigError(`${urlVar}=${redactUrl(url)}: expected an http:// or https:// URL`);
    }
    if (parsed.username !== '' || parsed.password !== '') {
      if (username !== undefined || password !== undefined) {
        throw new ConnectionConfigError(`${urlVar} carries a user and ${userVar}/${passwordVar} are set too; give the credentials one way`);
      }
      username = decodeURIComponent(parsed.username);
      password = parsed.password === '' ? undefined : new Secret(decodeURIComponent(parsed.password));
      const trailing = url.endsWith('/');
      parsed.username = '';
      parsed.password = '';
      url = parsed.toString();
      if (!trailing) url = url.replace(/\/$/, '');
    }
  }
  if (password !== undefined && username === undefined) {
    if (defaultUser === undefined) throw new ConnectionConfigError(`${passwordVar} is set but ${userVar} is not`);
    username = defaultUser;
  }
  const tlsPrefix = urlVar.replace(/_URL$/, '');
  const tls = tlsFromEnv(env, tlsPrefix, { clientCert: false });
  if (tls && parsed !== undefined && parsed.protocol !== 'https:') {
    throw new ConnectionConfigError(`${tlsPrefix}_CA_FILE is set but ${urlVar} is not an https:// URL`);
  }
  const auth = username === undefined ? undefined : { username, password: password ?? new Secret('') };
  return auth === undefined && tls === undefined ? { url } : { url, security: { ...(auth && { auth }), ...(tls && { tls }) } };
}

export function connectionsFromEnv(env: NodeJS.ProcessEnv = process.env): Connections {
  const brokers = (env.KAFKA_BROKERS ?? LOCAL_KAFKA)
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b.length > 0);
  if (brokers.length === 0) throw new ConnectionConfigError('KAFKA_BROKERS is set but names no broker (expected host:port[,host:port])');
  const registry = httpFromEnv(env, 'SCHEMA_REGISTRY_URL', set(env, 'SCHEMA_REGISTRY_URL') ?? LOCAL_REGISTRY, 'SCHEMA_REGISTRY_USERNAME', 'SCHEMA_REGISTRY_PASSWORD');
  // Credentials without CLICKHOUSE_URL are kept: the pipeline config may name the server
  // (clickhouse.url); the embedded store ignores them.
  const clickhouse = httpFromEnv(env, 'CLICKHOUSE_URL', set(env, 'CLICKHOUSE_URL'), 'CLICKHOUSE_USER', 'CLICKHOUSE_PASSWORD', 'default');
  const kafka = kafkaFromEnv(env);
  return {
    kafkaBrokers: brokers,
    schemaRegistryUrl: registry.url!,
    clickhouseUrl: clickhouse.url,
    ...(kafka && { kafka }),
    ...(registry.security && { schemaRegistry: registry.security }),
    ...(clickhouse.security && { clickhouse: clickhouse.security }),
  };
}

/**
 * What the connections are, for `flywheel describe` and start-up lines: addresses, protocols,
 * users and file paths — never a password or a key.
 *
 *   kafka     127.0.0.1:29193 (SASL_SSL, SCRAM-SHA-512 as flywheel, CA /etc/flywheel/ca.pem)
 */
export function describeConnections(c: Connections): string {
  const tls = (t: TlsFiles | undefined) =>
    t === undefined
      ? []
      : [t.caFile ? `CA ${t.caFile}` : 'system CAs', ...(t.certFile ? [`client certificate ${t.certFile}`] : []), ...(t.rejectUnauthorized ? [] : ['server certificate NOT verified'])];
  const http = (url: string, s: HttpSecurity | undefined) => {
    const parts = [...(s?.auth ? [`as ${s.auth.username}${s.auth.password.reveal() === '' ? ', no password' : ''}`] : []), ...tls(s?.tls)];
    return `${redactUrl(url)}${parts.length > 0 ? ` (${parts.join(', ')})` : ''}`;
  };
  const k = c.kafka;
  const kafkaParts = [k?.protocol ?? 'PLAINTEXT', ...(k?.sasl ? [`${k.sasl.mechanism.toUpperCase()} as ${k.sasl.username}`] : []), ...tls(k?.ssl)];
  return [
    `connections`,
    `  kafka       ${c.kafkaBrokers.join(',')} (${kafkaParts.join(', ')})`,
    `  registry    ${http(c.schemaRegistryUrl, c.schemaRegistry)}`,
    `  clickhouse  ${c.clickhouseUrl === undefined ? 'embedded (chdb)' : http(c.clickhouseUrl, c.clickhouse)}`,
  ].join('\n');
}

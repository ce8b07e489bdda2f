import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect, promisify } from 'node:util';
import type { TopicMessages } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectionsFromEnv, describeConnections, type Connections } from '../streams/connections.ts';
import { ExactlyOnceProcessor } from '../streams/exactly-once.ts';
import { KafkaSecurityError, createKafka } from '../streams/kafka.ts';
import { registryClient, rolloutSerde } from '../streams/serde.ts';
import { changelogTopicConfig, ensureTopics } from '../streams/topics.ts';
import { openStore } from '../sinks/clickhouse/store.ts';
import { serveStore } from '../sinks/clickhouse/http-endpoint.ts';
import { consumeTopic, connections as shared, uniquePrefix, waitUntil } from './helpers/kafka.ts';

/**
 * Secured connections against real services of this test's own: a Kafka broker with a SASL_SSL
 * listener (deploy/secure-kafka.sh: openssl CA and certificate, SCRAM users made at format time),
 * a ClickHouse 18.16 server with a password user and an HTTPS port, and a TLS + basic-auth proxy
 * in front of the shared schema registry (Apicurio's own authentication needs an OIDC server;
 * the proxy checks what the client sends: the credentials and the CA). Ports 29190–29195; the
 * shared broker and ClickHouse are not touched.
 */
const run = promisify(execFile);
const REPO = new URL('..', import.meta.url).pathname;
const PORTS = { kafka: 29190, controller: 29191, saslSsl: 29192, chHttp: 29193, chHttps: 29194, chTcp: 29195 };
const dir = mkdtempSync(join(tmpdir(), 'flywheel-security-'));
const kafkaData = join(dir, 'kafka-home');
const tlsDir = join(kafkaData, 'tls');
const CH_USER = 'flywheel_secure';
const CH_PASSWORD = `ch-${Math.random().toString(36).slice(2)}-pw`;
const REGISTRY_USER = 'registry-user';
const REGISTRY_PASSWORD = `reg-${Math.random().toString(36).slice(2)}-pw`;
const WRONG = 'not-the-password-9d1f';

let clientEnv: Record<string, string> = {};
let kafkaPassword = '';
let clickhouse: ChildProcess | undefined;
let proxy: Server | undefined;
let proxyUrl = '';
let authorized = 0;

/** A child's environment: undefined drops a variable (spawn would pass the string "undefined"). */
const childEnv = (vars: Record<string, string | undefined>) => Object.fromEntries(Object.entries(vars).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv;

const secureKafka = (action: string) =>
  run('bash', [join(REPO, 'deploy/secure-kafka.sh'), action], {
    env: { ...process.env, SECURE_KAFKA_DATA: kafkaData, SECURE_KAFKA_PORT: String(PORTS.kafka), SECURE_KAFKA_CONTROLLER_PORT: String(PORTS.controller), SECURE_KAFKA_SASL_SSL_PORT: String(PORTS.saslSsl) },
  });

function writeFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

/** A CA nobody signed the servers' certificates with. */
async function otherCa(): Promise<string> {
  const key = join(dir, 'other-ca.key');
  const pem = join(dir, 'other-ca.pem');
  await run('openssl', ['req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-keyout', key, '-out', pem, '-subj', '/CN=Not the Flywheel CA']);
  return pem;
}

/** ClickHouse 18.16 with only a password user, on HTTP and HTTPS (the broker's certificate). */
async function startClickHouse(): Promise<void> {
  const home = join(dir, 'clickhouse');
  for (const sub of ['data', 'tmp', 'log']) mkdirSync(join(home, sub), { recursive: true });
  writeFileSync(
    join(home, 'config.xml'),
    `<?xml version="1.0"?><yandex>
  <logger><level>warning</level><log>${home}/log/server.log</log><errorlog>${home}/log/err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>${PORTS.chHttp}</http_port><https_port>${PORTS.chHttps}</https_port><tcp_port>${PORTS.chTcp}</tcp_port>
  <openSSL><server>
    <certificateFile>${tlsDir}/broker.pem</certificateFile><privateKeyFile>${tlsDir}/broker.key</privateKeyFile>
    <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>
    <disableProtocols>sslv2,sslv3</disableProtocols>
  </server></openSSL>
  <mark_cache_size>67108864</mark_cache_size>
  <path>${home}/data/</path><tmp_path>${home}/tmp/</tmp_path>
  <users_config>${home}/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <timezone>UTC</timezone><mlock_executable>false</mlock_executable>
</yandex>`,
  );
  const hash = createHash('sha256').update(CH_PASSWORD).digest('hex');
  writeFileSync(
    join(home, 'users.xml'),
    `<?xml version="1.0"?><yandex><profiles><default></default></profiles>
  <users><${CH_USER}><password_sha256_hex>${hash}</password_sha256_hex><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></${CH_USER}></users>
  <quotas><default></default></quotas></yandex>`,
  );
  clickhouse = spawn('/usr/sbin/clickhouse-server', [`--config-file=${join(home, 'config.xml')}`], { cwd: home, stdio: 'ignore' });
  const ping = () =>
    new Promise<boolean>((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port: PORTS.chHttp, path: '/ping', timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
      req.end();
    });
  await waitUntil(ping, 'the private ClickHouse server to answer /ping', 30_000);
}

/** HTTPS + basic auth in front of the shared registry: 401 unless the client sends REGISTRY_USER's credentials. */
async function startRegistryProxy(): Promise<void> {
  const upstream = new URL(shared.schemaRegistryUrl);
  const expected = `Basic ${Buffer.from(`${REGISTRY_USER}:${REGISTRY_PASSWORD}`).toString('base64')}`;
  proxy = createHttpsServer({ key: readFileSync(join(tlsDir, 'broker.key')), cert: readFileSync(join(tlsDir, 'broker.pem')) }, (req, res) => {
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'Content-Type': 'application/json', 'WWW-Authenticate': 'Basic realm="registry"' }).end('{"error_code":401,"message":"Unauthorized"}');
      return;
    }
    authorized++;
    const { authorization: _, host: __, ...headers } = req.headers;
    const forward = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    forward.on('error', (err) => res.writeHead(502).end(err.message));
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => proxy!.listen(0, '127.0.0.1', resolve));
  proxyUrl = `https://127.0.0.1:${(proxy.address() as AddressInfo).port}${upstream.pathname}`;
}

beforeAll(async () => {
  const { stdout } = await secureKafka('start');
  clientEnv = Object.fromEntries(
    stdout
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  kafkaPassword = readFileSync(clientEnv.KAFKA_SASL_PASSWORD_FILE!, 'utf8');
  await Promise.all([startClickHouse(), startRegistryProxy()]);
}, 120_000);

afterAll(async () => {
  await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
  if (clickhouse?.exitCode === null) {
    const exit = new Promise((resolve) => clickhouse!.once('exit', resolve));
    clickhouse.kill('SIGTERM');
    await exit;
  }
  await secureKafka('stop').catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

const secured = (overrides: Record<string, string | undefined> = {}): Connections =>
  connectionsFromEnv(childEnv({ ...clientEnv, SCHEMA_REGISTRY_URL: shared.schemaRegistryUrl, ...overrides }));

describe('Kafka over SASL_SSL (SCRAM, TLS with the test CA)', () => {
  it('round-trips records through a producer and a read_committed consumer; SCRAM-SHA-256 works too', async () => {
    const connections = secured();
    expect(connections.kafka).toMatchObject({ protocol: 'SASL_SSL', sasl: { mechanism: 'scram-sha-512', username: 'flywheel' } });
    const kafka = createKafka(connections, 'security-roundtrip');
    const topic = `${uniquePrefix('sec')}.roundtrip`;
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [{ topic, numPartitions: 1, replicationFactor: -1 }]);
    await admin.disconnect();
    const producer = kafka.producer();
    await producer.connect();
    const values = Array.from({ length: 25 }, (_, i) => `v${i}`);
    await producer.send({ topic, messages: values.map((value, i) => ({ key: `k${i}`, value })) });
    await producer.disconnect();
    const read = await consumeTopic(kafka, topic, (m) => m.length >= values.length, { settleMs: 500, timeoutMs: 30_000 });
    expect(read.map((m) => m.value?.toString())).toEqual(values);

    const sha256 = createKafka(secured({ KAFKA_SASL_MECHANISM: 'SCRAM-SHA-256' }), 'security-sha256').admin();
    await sha256.connect();
    expect(await sha256.listTopics()).toContain(topic);
    await sha256.disconnect();
  });

  it('runs the exactly-once processor: every record out once, state and offsets committed in transactions', async () => {
    const kafka = createKafka(secured(), 'security-eos');
    const prefix = uniquePrefix('sec-eos');
    const [input, output, changelog] = [`${prefix}.in`, `${prefix}.out`, `${prefix}.seen-changelog`];
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [
      { topic: input, numPartitions: 2, replicationFactor: -1 },
      { topic: output, numPartitions: 2, replicationFactor: -1 },
      changelogTopicConfig(changelog, 2),
    ]);
    await admin.disconnect();
    const ids = Array.from({ length: 40 }, (_, i) => `r${i}`);
    // Idempotent: a send retried after a lost answer must not put a record in twice.
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    await producer.send({ topic: input, messages: ids.map((id, i) => ({ key: id, value: id, partition: i % 2 })) });
    await producer.disconnect();
    const commits: number[] = [];
    const log: string[] = [];
    onTestFailed(() => console.error(`--- processor log ---\n${log.join('\n')}`));
    const processor = new ExactlyOnceProcessor<null>({
      kafka,
      groupId: `${prefix}.eos`,
      inputTopics: [input],
      stores: ['seen'],
      changelogTopic: () => changelog,
      fromBeginning: true,
      partitionsConsumedConcurrently: 2,
      maxBatchBytes: 1_048_576,
      assign: () => null,
      log: (line) => void log.push(line),
      onAssigned: (partitions) => void log.push(`assigned ${partitions.join(',')}`),
      onCommit: ({ partition, records, nextOffset }) => {
        commits.push(records);
        log.push(`committed partition ${partition}: ${records} records, next offset ${nextOffset}`);
      },
      process: async (batch, { state, partition }) => {
        if (batch.kind === 'tick') return [];
        const seen = state.store('seen');
        const out: TopicMessages = { topic: output, messages: [] };
        for (const m of batch.messages) {
          const id = m.value!.toString();
          const count = Number(seen.get(id) ?? '0') + 1;
          seen.put(id, String(count));
          out.messages.push({ key: id, value: `${id}:${count}`, partition });
        }
        return [out];
      },
    });
    const { stopped } = await processor.start();
    // `stopped` settles only when the processor fails for good; stop() leaves it pending.
    let failure: unknown;
    stopped.catch((err: unknown) => (failure = err));
    try {
      const decided = await consumeTopic(kafka, output, (m) => m.length >= ids.length, { settleMs: 1000, timeoutMs: 45_000 });
      expect(decided.map((m) => m.value!.toString()).sort()).toEqual(ids.map((id) => `${id}:1`).sort());
      expect(commits.reduce((a, b) => a + b, 0)).toBe(ids.length);
      expect(failure).toBeUndefined();
    } finally {
      await processor.stop();
    }
  });

  it('fails a wrong password at once, naming the broker, the mechanism and the variables — not a retry loop', async () => {
    const kafka = createKafka(secured({ KAFKA_SASL_PASSWORD_FILE: undefined, KAFKA_SASL_PASSWORD: WRONG }), 'security-wrong');
    const error = await kafka
      .producer()
      .connect()
      .then(() => undefined, (err: unknown) => err as Error);
    expect(error).toBeInstanceOf(KafkaSecurityError);
    expect(error).toMatchObject({ retriable: false });
    expect(error!.message).toContain(`127.0.0.1:${PORTS.saslSsl}`);
    expect(error!.message).toContain('SCRAM-SHA-512');
    expect(error!.message).toContain('KAFKA_SASL_PASSWORD');
    expect(error!.message).not.toContain(WRONG);
    expect(error!.message).not.toContain(kafkaPassword);
  }, 20_000); // the bound is the point: kafkajs's retries (30, up to 10 s apart) would take minutes

  it('fails a broker certificate from another CA at once, naming the broker and KAFKA_SSL_CA_FILE', async () => {
    const kafka = createKafka(secured({ KAFKA_SSL_CA_FILE: await otherCa() }), 'security-ca');
    const error = await kafka
      .admin()
      .connect()
      .then(() => undefined, (err: unknown) => err as Error);
    expect(error).toBeInstanceOf(KafkaSecurityError);
    expect(error!.message).toMatch(/certificate/);
    expect(error!.message).toContain(`127.0.0.1:${PORTS.saslSsl}`);
    expect(error!.message).toContain('KAFKA_SSL_CA_FILE');
  }, 20_000);

  it('the CLI: a wrong password exits 1 with the clear error and without the password', async () => {
    const file = writeFile('rollouts.jsonl', '');
    const child = await run(process.execPath, ['bin/flywheel.js', 'produce', '--topic', `${uniquePrefix('sec')}.cli`, '--file', file], {
      cwd: REPO,
      env: childEnv({ ...process.env, ...clientEnv, SCHEMA_REGISTRY_URL: shared.schemaRegistryUrl, KAFKA_SASL_PASSWORD_FILE: writeFile('wrong.password', WRONG) }),
    }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    expect(child.code).toBe(1);
    expect(child.stderr).toContain(`Kafka at 127.0.0.1:${PORTS.saslSsl} (SASL_SSL) rejected user "flywheel" with SCRAM-SHA-512`);
    expect(child.stderr).not.toContain(WRONG);
  }, 120_000); // a CLI process: tsx compiles the sources on a cold start
});

describe('ClickHouse with a password user, over HTTPS with the test CA', () => {
  const env = (overrides: Record<string, string | undefined> = {}) =>
    secured({ CLICKHOUSE_URL: `https://127.0.0.1:${PORTS.chHttps}`, CLICKHOUSE_USER: CH_USER, CLICKHOUSE_PASSWORD_FILE: writeFile('ch.password', `${CH_PASSWORD}\n`), CLICKHOUSE_CA_FILE: join(tlsDir, 'ca.pem'), ...overrides });

  it('opens the store with the password from a file and writes and reads a table', async () => {
    const c = env();
    const store = await openStore({ url: c.clickhouseUrl, database: 'secured', security: c.clickhouse });
    try {
      await store.command('CREATE TABLE IF NOT EXISTS t (id UInt64) ENGINE = MergeTree ORDER BY id');
      await store.insert('t', [{ id: 1 }, { id: 2 }]);
      expect(await store.query('SELECT count() AS n FROM t')).toEqual([{ n: 2 }]);
    } finally {
      await store.close();
    }
  });

  it('a wrong password: a clear error naming the server, the user and the variables, without the password', async () => {
    const c = env({ CLICKHOUSE_PASSWORD_FILE: undefined, CLICKHOUSE_PASSWORD: WRONG });
    const error = await openStore({ url: c.clickhouseUrl, security: c.clickhouse }).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(error?.message).toContain(`ClickHouse at https://127.0.0.1:${PORTS.chHttps}`);
    expect(error?.message).toContain(`refused user "${CH_USER}"`);
    expect(error?.message).toContain('CLICKHOUSE_PASSWORD');
    expect(error?.message).not.toContain(WRONG);
  });

  it('a server certificate from another CA: a TLS error naming CLICKHOUSE_CA_FILE', async () => {
    const c = env({ CLICKHOUSE_CA_FILE: await otherCa() });
    const error = await openStore({ url: c.clickhouseUrl, security: c.clickhouse }).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(error?.message).toMatch(/certificate/);
    expect(error?.message).toContain('CLICKHOUSE_CA_FILE');
  });

  it('credentials in CLICKHOUSE_URL are taken out of the URL, and errors show it redacted', async () => {
    const c = connectionsFromEnv({ CLICKHOUSE_URL: `http://${CH_USER}:${WRONG}@127.0.0.1:${PORTS.chHttp}` });
    expect(c.clickhouseUrl).toBe(`http://127.0.0.1:${PORTS.chHttp}`);
    expect(c.clickhouse?.auth?.username).toBe(CH_USER);
    const error = await openStore({ url: c.clickhouseUrl, security: c.clickhouse }).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(error?.message).toContain('refused user');
    expect(error?.message).not.toContain(WRONG);
  });
});

describe('schema registry with basic auth over HTTPS (a checking proxy in front of the shared registry)', () => {
  const env = (overrides: Record<string, string | undefined> = {}) =>
    secured({ SCHEMA_REGISTRY_URL: proxyUrl, SCHEMA_REGISTRY_USERNAME: REGISTRY_USER, SCHEMA_REGISTRY_PASSWORD_FILE: writeFile('registry.password', REGISTRY_PASSWORD), SCHEMA_REGISTRY_CA_FILE: join(tlsDir, 'ca.pem'), ...overrides });

  it('registers and reads a schema with the credentials and the CA', async () => {
    const topic = `${uniquePrefix('sec')}.rollouts`;
    const before = authorized;
    const serde = await rolloutSerde(registryClient(env()), topic);
    expect(authorized).toBeGreaterThan(before);
    // It reached the real registry: the subject is there, under the id the serde writes.
    const direct = await registryClient(shared.schemaRegistryUrl).getLatestSchemaMetadata(`${topic}-value`);
    expect(direct.id).toBe(serde.schemaId);
  });

  it('a wrong password is refused with 401, and the error does not carry the password', async () => {
    const error = await rolloutSerde(registryClient(env({ SCHEMA_REGISTRY_PASSWORD_FILE: undefined, SCHEMA_REGISTRY_PASSWORD: WRONG })), `${uniquePrefix('sec')}.x`).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(error?.message).toMatch(/registering .* failed: Unauthorized/);
    expect(`${error?.message} ${error?.stack}`).not.toContain(WRONG);
  });

  it('an untrusted registry certificate fails the call', async () => {
    const error = await rolloutSerde(registryClient(env({ SCHEMA_REGISTRY_CA_FILE: await otherCa() })), `${uniquePrefix('sec')}.y`).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(error?.message).toMatch(/certificate/);
  });
});

describe('secrets are never echoed', () => {
  it('flywheel describe shows users, protocols and files, never a password', async () => {
    const { stdout } = await run(process.execPath, ['bin/flywheel.js', 'describe', '--config', 'deploy/pipeline.json'], {
      cwd: REPO,
      env: childEnv({
        ...process.env,
        ...clientEnv,
        KAFKA_SASL_PASSWORD_FILE: undefined,
        KAFKA_SASL_PASSWORD: kafkaPassword,
        SCHEMA_REGISTRY_URL: `https://${REGISTRY_USER}:${REGISTRY_PASSWORD}@127.0.0.1:1/apis/ccompat/v7`,
        CLICKHOUSE_URL: `http://127.0.0.1:${PORTS.chHttp}`,
        CLICKHOUSE_USER: CH_USER,
        CLICKHOUSE_PASSWORD: CH_PASSWORD,
      }),
    });
    expect(stdout).toContain(`kafka       127.0.0.1:${PORTS.saslSsl} (SASL_SSL, SCRAM-SHA-512 as flywheel, CA ${clientEnv.KAFKA_SSL_CA_FILE})`);
    expect(stdout).toContain(`registry    https://127.0.0.1:1/apis/ccompat/v7 (as ${REGISTRY_USER})`);
    expect(stdout).toContain(`clickhouse  http://127.0.0.1:${PORTS.chHttp} (as ${CH_USER})`);
    for (const secret of [kafkaPassword, REGISTRY_PASSWORD, CH_PASSWORD]) expect(stdout).not.toContain(secret);
  }, 120_000);

  it('a Connections object printed or serialised shows *** for every secret', () => {
    const c = secured({ CLICKHOUSE_URL: `http://127.0.0.1:${PORTS.chHttp}`, CLICKHOUSE_PASSWORD: CH_PASSWORD, CLICKHOUSE_USER: CH_USER });
    const printed = [JSON.stringify(c), String(c.kafka?.sasl?.password), describeConnections(c), inspect(c, { depth: 9 })].join('\n');
    expect(printed).not.toContain(kafkaPassword);
    expect(printed).not.toContain(CH_PASSWORD);
    expect(printed).toContain('***');
  });
});

describe('connection settings are checked once, at the edge, naming the variable', () => {
  const fails = (env: Record<string, string>) => {
    try {
      connectionsFromEnv(env);
    } catch (err) {
      return (err as Error).message;
    }
    return 'no error';
  };

  it('rejects a secret given twice, a missing password, an unknown protocol or mechanism, a CA file that is no PEM, credentials given two ways', () => {
    const pw = writeFile('pw', 'x');
    expect(fails({ KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: 'x', KAFKA_SASL_PASSWORD_FILE: pw })).toMatch(/^KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set/);
    expect(fails({ KAFKA_SECURITY_PROTOCOL: 'SASL_SSL', KAFKA_SASL_USERNAME: 'u' })).toMatch(/needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE/);
    expect(fails({ KAFKA_SECURITY_PROTOCOL: 'TLS' })).toMatch(/^KAFKA_SECURITY_PROTOCOL=TLS: expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL/);
    expect(fails({ KAFKA_SASL_MECHANISM: 'GSSAPI', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: 'x' })).toMatch(/^KAFKA_SASL_MECHANISM=GSSAPI/);
    expect(fails({ KAFKA_SSL_CA_FILE: pw })).toBe(`KAFKA_SSL_CA_FILE=${pw}: no PEM certificate in it (expected a "-----BEGIN …CERTIFICATE-----" block)`);
    expect(fails({ KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD_FILE: join(dir, 'absent') })).toMatch(/^KAFKA_SASL_PASSWORD_FILE=.*absent: cannot read it \(ENOENT\)/);
    expect(fails({ SCHEMA_REGISTRY_URL: 'https://a:b@r:1/x', SCHEMA_REGISTRY_USERNAME: 'a' })).toMatch(/^SCHEMA_REGISTRY_URL carries a user and SCHEMA_REGISTRY_USERNAME/);
    expect(fails({ CLICKHOUSE_URL: 'http://c:1', CLICKHOUSE_CA_FILE: join(tlsDir, 'ca.pem') })).toMatch(/^CLICKHOUSE_CA_FILE is set but CLICKHOUSE_URL is not an https:\/\/ URL/);
    // Unset protocol with credentials: TLS, never SASL in the clear by default.
    expect(connectionsFromEnv({ KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD_FILE: pw }).kafka?.protocol).toBe('SASL_SSL');
  });
});

describe("the embedded store's HTTP endpoint", () => {
  it('serves SELECT-like reads and refuses writes with 403, unless allowWrites', async () => {
    // The endpoint in front of the private server's store: the same code serves the embedded one.
    const c = connectionsFromEnv({ CLICKHOUSE_URL: `http://127.0.0.1:${PORTS.chHttp}`, CLICKHOUSE_USER: CH_USER, CLICKHOUSE_PASSWORD: CH_PASSWORD });
    const store = await openStore({ url: c.clickhouseUrl, database: 'endpoint', security: c.clickhouse });
    await store.command('CREATE TABLE IF NOT EXISTS t (id UInt64) ENGINE = MergeTree ORDER BY id');
    await store.insert('t', [{ id: 7 }]);
    const readOnly = await serveStore(store);
    const writable = await serveStore(store, { allowWrites: true });
    const ask = (url: string, sql: string) => fetch(`${url}/?database=endpoint`, { method: 'POST', body: sql }).then(async (r) => ({ status: r.status, text: await r.text() }));
    try {
      expect(readOnly.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(await ask(readOnly.url, 'SELECT count() FROM t')).toEqual({ status: 200, text: '1\n' });
      expect((await ask(readOnly.url, 'SHOW TABLES')).text).toContain('t');
      for (const sql of ['INSERT INTO t VALUES (8)', 'DROP TABLE t', 'SELECT 1; DROP TABLE t', "SELECT * FROM file('/etc/passwd', 'LineAsString', 'l String')"]) {
        const refused = await ask(readOnly.url, sql);
        expect(refused.status, sql).toBe(403);
        expect(refused.text, sql).toMatch(/read-only .*SELECT, WITH, SHOW, DESCRIBE/);
      }
      expect(await ask(readOnly.url, 'SELECT count() FROM t')).toEqual({ status: 200, text: '1\n' });
      expect((await ask(writable.url, 'INSERT INTO t VALUES (8)')).status).toBe(200);
      expect(await ask(readOnly.url, 'SELECT count() FROM t')).toEqual({ status: 200, text: '2\n' });
    } finally {
      await readOnly.close();
      await writable.close();
      await store.close();
    }
  });
});

// The ClickHouse sink under server faults, against real engines: a private ClickHouse 18.16 server
// with its own ZooKeeper (deploy/clickhouse-server.sh on other ports and data, so it can be frozen
// and killed without disturbing the shared one), and chdb. Every applied INSERT block is audited
// by a materialized view (a block the engine drops as a duplicate does not reach it), and the rows
// are read without FINAL.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { EXAMPLE_CONFIG, loadConfig, withOverrides } from '../pipeline/config.ts';
import { ClickHouseSink, SAMPLE_COLUMNS, sampleLine } from '../sinks/clickhouse-sink.ts';
import { migrate } from '../sinks/clickhouse/schema.ts';
import { lazyStore, openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import type { Decision } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, registryClient, rolloutSerde, type TopicSerde } from '../streams/serde.ts';
import { topicCatalog } from '../streams/topics.ts';
import { rollout } from './helpers/envelopes.ts';
import { expectedOutcome } from './helpers/expected.ts';
import { connections, consumeTopic, createCatalogTopics, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';
import { exited, startWorker } from './helpers/workers.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '..');
const HAS_SERVER = existsSync('/usr/sbin/clickhouse-server');
// Ports of our own instance: away from the shared 18123/19000/12181, distinct per test process.
const BASE = 20000 + (process.pid % 4000) * 3;
const PORTS = { CLICKHOUSE_HTTP_PORT: String(BASE), CLICKHOUSE_TCP_PORT: String(BASE + 1), ZOOKEEPER_PORT: String(BASE + 2) };
const URL_ = `http://127.0.0.1:${BASE}`;

/** Our own ClickHouse server (and ZooKeeper), driven through deploy/clickhouse-server.sh. */
class OwnServer {
  readonly data = mkdtempSync(join(tmpdir(), 'flywheel-ch-faults-'));
  private readonly env = { ...process.env, ...PORTS, FLYWHEEL_DATA: this.data };
  async start(): Promise<void> {
    await run('bash', [join(REPO, 'deploy/clickhouse-server.sh'), 'start'], { env: this.env, timeout: 180_000 });
  }
  async stop(): Promise<void> {
    this.signal('SIGCONT');
    await run('bash', [join(REPO, 'deploy/clickhouse-server.sh'), 'stop'], { env: this.env, timeout: 120_000 });
  }
  pid(): number {
    return Number(readFileSync(join(this.data, 'clickhouse-server', 'clickhouse-server.pid'), 'utf8').trim());
  }
  signal(sig: NodeJS.Signals): void {
    try {
      process.kill(this.pid(), sig);
    } catch {
      // not running
    }
  }
  async killed(): Promise<void> {
    const pid = this.pid();
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => !existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] === 'Z', `clickhouse-server ${pid} to die`);
  }
}

/** A sink in its own process, so that it can be frozen with its INSERT in flight. */
function startChildSink(env: Record<string, string>, log: string[]): ChildProcess {
  const mod = (p: string) => JSON.stringify(`file://${join(REPO, p)}`);
  const code = `
    import { ClickHouseSink } from ${mod('sinks/clickhouse-sink.ts')};
    import { openStore } from ${mod('sinks/clickhouse/store.ts')};
    import { createKafka } from ${mod('streams/kafka.ts')};
    import { connectionsFromEnv } from ${mod('streams/connections.ts')};
    import { decisionSerde, registryClient } from ${mod('streams/serde.ts')};
    import { Instrumentation } from ${mod('contracts/events.ts')};
    const e = process.env;
    const events = new Instrumentation();
    events.on('sink.insert', ({ payload: { table, rows, ok } }) => ok && console.log(JSON.stringify({ inserted: rows, table })));
    const connections = connectionsFromEnv();
    const store = await openStore({ url: e.SINK_URL, database: e.SINK_DB });
    const insert = store.insertFormatted.bind(store);
    store.insertFormatted = (table, columns, format, body, opts) => {
      console.log(JSON.stringify({ sending: opts?.dedupToken }));
      return insert(table, columns, format, body, opts).then(
        (r) => (console.log(JSON.stringify({ sent: opts?.dedupToken, ok: true })), r),
        (err) => (console.log(JSON.stringify({ sent: opts?.dedupToken, ok: false })), Promise.reject(err)),
      );
    };
    const sink = new ClickHouseSink({
      kafka: createKafka(connections, 'sink-child'), store, groupId: e.SINK_GROUP,
      decisions: await decisionSerde(registryClient(connections.schemaRegistryUrl), e.SINK_DECISIONS),
      deadLetterTopic: e.SINK_DEAD, trainerProgressTopic: e.SINK_PROGRESS,
      sessionTimeoutMs: 8000, heartbeatIntervalMs: 1000, insertTimeoutMs: 3000, retry: { initialMs: 200, maxMs: 1000 },
      events,
    });
    await sink.start();
    console.log(JSON.stringify({ started: true }));
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => log.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => log.push(d.toString()));
  return child;
}

let n = 0;
function decisionOf(prefix: string): Decision {
  n += 1;
  return {
    rollout: rollout({ id: `${prefix}-${n}`, response: `answer ${n}`, rewards: { correct: n % 2 } }),
    scores: { rule: (n % 7) / 7 },
    duplicate_of: null,
    dedupe_method: null,
    reasons: [],
    decision: 'accepted',
    reason: 'accepted',
    config_hash: 'h',
    scorer_version: null,
    annotations: {},
    pipeline_run: prefix,
    source: { topic: `${prefix}.rollouts`, partition: n % 3, offset: String(n) },
  };
}

/** Produces decision records in small steps until stopped: records keep flowing during the faults. */
function flow(producer: Producer, serde: TopicSerde<Decision>, prefix: string) {
  let sent = 0;
  let on = true;
  const done = (async () => {
    while (on) {
      const messages = Array.from({ length: 30 }, () => ({ value: serde.encode(decisionOf(prefix)), partition: sent++ % 3 }));
      await producer.send({ topic: serde.topic, messages });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    sent: () => sent,
    stop: async () => {
      on = false;
      await done;
      return sent;
    },
  };
}

const AUDIT = (db: string) => [
  `CREATE TABLE ${db}.sink_audit (part UInt32, first UInt64, last UInt64, rows UInt64) ENGINE = MergeTree ORDER BY (part, first)`,
  `CREATE MATERIALIZED VIEW ${db}.sink_audit_mv TO ${db}.sink_audit AS
   SELECT sink_partition AS part, min(sink_offset) AS first, max(sink_offset) AS last, count() AS rows FROM ${db}.samples GROUP BY sink_partition`,
];

/** Every offset 0..count-1 of each partition in exactly one applied block, and each row once. */
async function audit(store: ClickHouseStore, db: string, sent: number): Promise<{ blocks: number }> {
  const blocks = await store.query<{ part: number; first: number; last: number; rows: number }>(`SELECT part, first, last, rows FROM ${db}.sink_audit ORDER BY part, first`);
  const perPartition = new Map<number, number>();
  for (let i = 0; i < sent; i++) perPartition.set(i % 3, (perPartition.get(i % 3) ?? 0) + 1);
  for (const [p, count] of perPartition) {
    const mine = blocks.filter((b) => b.part === p);
    let next = 0;
    for (const b of mine) {
      expect(b.first, `partition ${p}: block [${b.first}, ${b.last}] overlaps or leaves a gap before it`).toBe(next);
      expect(b.rows, `partition ${p}: block [${b.first}, ${b.last}] holds every offset once`).toBe(b.last - b.first + 1);
      next = b.last + 1;
    }
    expect(next, `partition ${p}: every offset stored`).toBe(count);
  }
  const [rows] = await store.query<{ n: number; distinct: number }>(`SELECT count() AS n, uniqExact(sink_partition, sink_offset) AS distinct FROM ${db}.samples`);
  expect(rows).toEqual({ n: sent, distinct: sent });
  return { blocks: blocks.length };
}

describe.skipIf(!HAS_SERVER)('ClickHouse sink against its own 18.16 server, frozen and killed mid-INSERT', () => {
  const server = new OwnServer();
  const prefix = uniquePrefix('chfaults');
  const db = `flywheel_faults_${prefix.replace(/\W/g, '_')}`;
  const catalog = topicCatalog(prefix);
  const kafka = testKafka('chfaults');
  const log: string[] = [];
  let child: ChildProcess | undefined;
  let store: ClickHouseStore | undefined;

  beforeAll(async () => {
    await server.start();
  }, 240_000);
  afterAll(async () => {
    child?.kill('SIGCONT');
    child?.kill('SIGKILL');
    await store?.close();
    await server.stop();
    rmSync(server.data, { recursive: true, force: true });
  }, 180_000);

  it('18.16 with ZooKeeper drops a re-sent identical block', async () => {
    const s = await openStore({ url: URL_, database: `${db}_probe` });
    try {
      expect(await migrate(s)).toBe('replicated');
      const d = decisionOf(prefix);
      const body = sampleLine(d, 'probe', 0, '7', '1700000000000');
      await s.insertFormatted('samples', SAMPLE_COLUMNS, 'TabSeparated', body);
      await s.insertFormatted('samples', SAMPLE_COLUMNS, 'TabSeparated', body);
      expect(await s.query('SELECT count() AS n FROM samples')).toEqual([{ n: 1 }]);
    } finally {
      await s.command(`DROP DATABASE IF EXISTS ${db}_probe`);
      await s.close();
    }
  });

  it('stores every record once through a freeze that hands the partitions over and a kill', async () => {
    onTestFailed(() => console.error(`--- child sink log ---\n${log.join('')}`));
    await createCatalogTopics(kafka, catalog);
    store = await openStore({ url: URL_, database: db });
    expect(await migrate(store)).toBe('replicated');
    for (const sql of AUDIT(db)) await store.command(sql);
    const decisions = await decisionSerde(registryClient(connections.schemaRegistryUrl), catalog.decisions);
    const producer = kafka.producer();
    await producer.connect();
    const records = flow(producer, decisions, prefix);
    const rows = async () => (await store!.query<{ n: number }>(`SELECT sum(rows) AS n FROM ${db}.sink_audit`))[0]!.n;
    const sinkEnv = {
      SINK_URL: URL_, SINK_DB: db, SINK_GROUP: `${prefix}.sink`, SINK_DECISIONS: catalog.decisions,
      SINK_DEAD: catalog.deadLetter, SINK_PROGRESS: catalog.trainerProgress,
    };
    const childLines = () => log.join('').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    child = startChildSink(sinkEnv, log);
    await waitUntil(async () => (await rows()) >= 200, 'the first sink to store 200 rows', 180_000);

    // Freeze the server with the first sink's INSERT in flight, then the sink itself: its
    // session expires and a second sink takes every partition over, re-sending the announced
    // ranges into the frozen server.
    const duplicates = async () => (await store!.query<{ n: number }>(`SELECT value AS n FROM system.events WHERE event = 'DuplicatedInsertedBlocks'`))[0]?.n ?? 0;
    const dupBefore = await duplicates();
    const sendsBefore = childLines().filter((l) => l.sending !== undefined).length;
    server.signal('SIGSTOP');
    await waitUntil(() => childLines().filter((l) => l.sending !== undefined).length > sendsBefore, 'the first sink to send an INSERT to the frozen server');
    child.kill('SIGSTOP');
    // Counts the second sink's reads, to resume the server once one (its high-water) is queued.
    const secondStore = lazyStore({ url: URL_, database: db });
    let reads = 0;
    const query = secondStore.query.bind(secondStore);
    secondStore.query = ((sql: string, params?: Record<string, string | number>) => {
      reads += 1;
      return query(sql, params);
    }) as typeof secondStore.query;
    const second = new ClickHouseSink({
      kafka: testKafka('chfaults-second'),
      store: secondStore,
      groupId: `${prefix}.sink`,
      decisions,
      deadLetterTopic: catalog.deadLetter,
      trainerProgressTopic: catalog.trainerProgress,
      sessionTimeoutMs: 8000,
      heartbeatIntervalMs: 1000,
      insertTimeoutMs: 3000,
      retry: { initialMs: 200, maxMs: 1000 },
    });
    await second.start();
    await waitUntil(() => second.ownedPartitions === 7, 'the second sink to take every partition over (the first one\'s session expired)', 120_000);
    await waitUntil(() => reads >= 1, 'the second sink to ask the frozen server for its high-water');
    server.signal('SIGCONT');
    // The first sink's stalled INSERT lands now. Whichever copy of the announced range comes
    // second — the stale one or the new owner's — is dropped; or the new owner sees it stored.
    await waitUntil(async () => second.announcedStored + second.resent >= 1, 'the second sink to complete the announced range');
    const dropped = (await duplicates()) - dupBefore;
    console.log(`freeze: ${second.resent} announced range(s) re-sent, ${second.announcedStored} found stored, ${dropped} duplicate block(s) dropped by the server, ${second.retries} retries`);
    // The stale sink's INSERT may still be half-sent (it was frozen too): resumed, it either lands
    // — and the server drops it as a copy of the re-sent range — or fails by its timeout.
    const frozen = childLines().filter((l) => l.sending !== undefined)[sendsBefore]!.sending;
    child.kill('SIGCONT');
    if (second.resent > 0) {
      await waitUntil(
        async () => (await duplicates()) > dupBefore || childLines().some((l) => l.sent === frozen && l.ok === false),
        'the server to drop one copy of the re-sent range, or the stale INSERT to fail',
        120_000,
      );
    }
    const afterFreeze = await rows();
    await waitUntil(async () => (await rows()) > afterFreeze + 200, 'rows after the freeze', 180_000);

    // Kill the server with INSERTs in flight, restart it.
    await server.killed();
    const retries = second.retries;
    await waitUntil(() => second.retries > retries, 'the sink to retry against the dead server');
    await server.start();
    const afterKill = await rows();
    await waitUntil(async () => (await rows()) > afterKill + 200, 'rows after the restart', 180_000);

    const sent = await records.stop();
    await producer.disconnect();
    await waitUntil(async () => (await rows()) >= sent, `all ${sent} rows`, 180_000);
    await second.stop();
    child.kill('SIGTERM');
    await exited(child);
    const { blocks } = await audit(store, db, sent);
    expect(blocks).toBeGreaterThan(3);
  }, 900_000);
});

describe('ClickHouse sink blocks on chdb (embedded)', () => {
  it('drops a re-insert of the same range by its token', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flywheel-chdb-dedup-'));
    const s = await openStore({ path: dir });
    try {
      expect(await migrate(s)).toBe('token');
      const prefix = uniquePrefix('chdbdedup');
      const body = [0, 1, 2].map((o) => sampleLine(decisionOf(prefix), 'd', 0, String(o), '1700000000000')).join('');
      await s.insertFormatted('samples', SAMPLE_COLUMNS, 'TabSeparated', body, { dedupToken: 'd:0:0-2' });
      await s.insertFormatted('samples', SAMPLE_COLUMNS, 'TabSeparated', body, { dedupToken: 'd:0:0-2' });
      expect(await s.query('SELECT count() AS n FROM samples')).toEqual([{ n: 3 }]);
      // The next range lands.
      await s.insertFormatted('samples', SAMPLE_COLUMNS, 'TabSeparated', sampleLine(decisionOf(prefix), 'd', 0, '3', '1700000000000'), { dedupToken: 'd:0:3-3' });
      expect(await s.query('SELECT count() AS n, uniqExact(sink_offset) AS o FROM samples')).toEqual([{ n: 4, o: 4 }]);
    } finally {
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!HAS_SERVER)('a worker started while its ClickHouse server is down', () => {
  const server = new OwnServer();
  const prefix = uniquePrefix('chdown');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-chdown-'));
  const configFile = join(dir, 'pipeline.json');
  const log: string[] = [];
  let worker: ChildProcess | undefined;

  afterAll(async () => {
    worker?.kill('SIGKILL');
    await server.stop();
    rmSync(server.data, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }, 180_000);

  it('decides records on Kafka meanwhile, and stores them once the server is up', async () => {
    onTestFailed(() => console.error(`--- worker log ---\n${log.join('')}`));
    const config = withOverrides(loadConfig(EXAMPLE_CONFIG), { name: 'chdown', run: prefix, topics: { prefix, partitions: 3 } });
    writeFileSync(configFile, JSON.stringify(config));
    const catalog = topicCatalog(prefix);
    const kafka = testKafka('chdown');
    await createCatalogTopics(kafka, catalog);
    const data = syntheticRollouts({ groups: 20, runId: prefix, garbage: 0 });
    const rollouts = await rolloutSerde(registryClient(connections.schemaRegistryUrl), catalog.rollouts);
    await produceRollouts(kafka, rollouts, data.rollouts);

    worker = startWorker(configFile, log, { ...process.env, CLICKHOUSE_URL: URL_ });
    const { decided: expectedDecided } = expectedOutcome(data);
    const decided = await consumeTopic(kafka, catalog.decisions, (m) => m.length >= expectedDecided, { settleMs: 0, timeoutMs: 240_000 });
    expect(decided.length).toBe(expectedDecided);
    await waitUntil(() => log.join('').includes(`ClickHouse at ${URL_}`), 'the worker to say which ClickHouse it waits for');

    await server.start();
    const s = await openStore({ url: URL_ });
    try {
      const total = decided.length;
      await waitUntil(async () => ((await s.query<{ n: number }>('SELECT count() AS n FROM samples').catch(() => [{ n: 0 }]))[0]!.n) >= total, 'the samples to arrive', 240_000);
      worker.kill('SIGTERM');
      await exited(worker);
      const [r] = await s.query<{ n: number; d: number }>('SELECT count() AS n, uniqExact(sink_partition, sink_offset) AS d FROM samples WHERE pipeline_run = {run:String}', { run: prefix });
      expect(r!.n).toBe(r!.d);
      expect(r!.n).toBeGreaterThanOrEqual(total);
    } finally {
      await s.close();
    }
  }, 600_000);
});

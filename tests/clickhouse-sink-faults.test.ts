// The ClickHouse sink under server faults, against real engines: a private ClickHouse 18.16 server
// with its own ZooKeeper (deploy/clickhouse-server.sh on other ports and data, so it can be frozen
// and killed without disturbing the shared one), and chdb. Every applied INSERT block is audited
// by a materialized view (a block the engine drops as a duplicate does not reach it), and the rows
// are read without FINAL on a server that does not merge, so a block applied twice stays visible.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
import { topicCatalog, topicOffsets } from '../streams/topics.ts';
import { decision } from './helpers/envelopes.ts';
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
// A server of its own that merges no parts (config.d, read at start): a block applied twice then
// stays two copies in `samples`, which a count without FINAL shows — ReplacingMergeTree would
// fold them into one at its next merge, and the audit below can miss a block (see audit()).
const NO_MERGES = `<?xml version="1.0"?>
<yandex><merge_tree>
  <max_bytes_to_merge_at_max_space_in_pool>1</max_bytes_to_merge_at_max_space_in_pool>
  <max_bytes_to_merge_at_min_space_in_pool>1</max_bytes_to_merge_at_min_space_in_pool>
</merge_tree></yandex>
`;

/** `p`, or a failure that says what hung once `ms` have passed: no step may hang CI. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Our own ClickHouse server (and ZooKeeper), driven through deploy/clickhouse-server.sh. */
class OwnServer {
  readonly data = mkdtempSync(join(tmpdir(), 'flywheel-ch-faults-'));
  private readonly env = { ...process.env, ...PORTS, FLYWHEEL_DATA: this.data };
  async start(): Promise<void> {
    const confD = join(this.data, 'clickhouse-server', 'config.d');
    mkdirSync(confD, { recursive: true });
    writeFileSync(join(confD, 'no-merges.xml'), NO_MERGES);
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
  return decision(
    { id: `${prefix}-${n}`, response: `answer ${n}`, rewards: { correct: n % 2 } },
    { scores: { rule: (n % 7) / 7 }, pipeline_run: prefix, source: { topic: `${prefix}.rollouts`, partition: n % 3, offset: String(n) } },
  );
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

/** Records in `samples` (distinct partition and offset): what is stored, whatever the audit saw. */
async function storedRecords(store: ClickHouseStore, db: string): Promise<number> {
  const query = store.query<{ n: number }>(`SELECT uniqExact(sink_partition, sink_offset) AS n FROM ${db}.samples`);
  return (await within(query, 60_000, 'a count of the stored records'))[0]!.n;
}

/**
 * Records per partition of `topic`, from its end offsets (no transactions: one record per
 * offset). Kafka's count, not the producer's: a produce retried after a lost answer writes twice.
 */
async function written(topic: string): Promise<Map<number, number>> {
  const admin = testKafka('chfaults-offsets').admin();
  await admin.connect();
  try {
    return new Map((await topicOffsets(admin, topic)).map((o) => [o.partition, Number(o.high)]));
  } finally {
    await admin.disconnect();
  }
}

/**
 * Every record stored once and no INSERT applied twice: `samples` (not merged, so a block applied
 * twice stays two copies) holds each offset 0..count-1 of each partition exactly once, and the
 * audited blocks hold every offset once and never overlap. A block may be missing from the audit
 * where an INSERT was cut off (`lostAudits` per partition: a killed server, or a frozen one whose
 * client gave up): the view's block is written after the table's part, so the rows stay and
 * their audit row is lost, and the re-sent copy is dropped as a duplicate before the view.
 */
async function audit(store: ClickHouseStore, db: string, perPartition: Map<number, number>, lostAudits: number): Promise<{ blocks: number; lost: number }> {
  const blocks = await store.query<{ part: number; first: number; last: number; rows: number }>(`SELECT part, first, last, rows FROM ${db}.sink_audit ORDER BY part, first`);
  let lost = 0;
  for (const [p, count] of perPartition) {
    let next = 0;
    let gaps = 0;
    for (const b of blocks.filter((x) => x.part === p)) {
      expect(b.first, `partition ${p}: block [${b.first}, ${b.last}] overlaps the block before it (applied twice)`).toBeGreaterThanOrEqual(next);
      expect(b.rows, `partition ${p}: block [${b.first}, ${b.last}] holds every offset once`).toBe(b.last - b.first + 1);
      if (b.first > next) gaps += 1;
      next = b.last + 1;
    }
    if (next < count) gaps += 1;
    expect(gaps, `partition ${p}: blocks missing from the audit (at most ${lostAudits}: INSERTs cut off by a fault)`).toBeLessThanOrEqual(lostAudits);
    lost += gaps;
  }
  const rows = await store.query<{ p: number; n: number; distinct: number; last: number }>(
    `SELECT sink_partition AS p, count() AS n, uniqExact(sink_offset) AS distinct, max(sink_offset) AS last FROM ${db}.samples GROUP BY p ORDER BY p`,
  );
  const expected = [...perPartition].sort(([a], [b]) => a - b).map(([p, count]) => ({ p, n: count, distinct: count, last: count - 1 }));
  expect(rows, 'each offset of each partition stored exactly once').toEqual(expected);
  return { blocks: blocks.length, lost };
}

/** Records the range (dedup token `<topic>:<partition>:<a>-<b>`) of every INSERT `store` is sent. */
function recordRanges(store: ClickHouseStore, ranges: string[]): ClickHouseStore {
  const insert = store.insertFormatted.bind(store);
  store.insertFormatted = ((table, columns, format, body, opts) => {
    if (opts?.dedupToken !== undefined) ranges.push(opts.dedupToken);
    return insert(table, columns, format, body, opts);
  }) as typeof store.insertFormatted;
  return store;
}

/**
 * No two different ranges sent for one partition overlap: a sink re-sends an announced range
 * exactly (a copy, which the engine drops) or sends the next one, never a longer range over
 * offsets a copy of which may have landed — the engine would store those rows twice.
 */
function expectDisjointRanges(ranges: readonly string[]): void {
  const parsed = [...new Set(ranges)].flatMap((t) => {
    const m = /^(.*):(\d+)-(\d+)$/.exec(t);
    return m === null ? [] : [{ partition: m[1]!, from: Number(m[2]), to: Number(m[3]), token: t }];
  });
  for (const a of parsed) {
    for (const b of parsed) {
      if (a.token < b.token && a.partition === b.partition) {
        expect(a.to < b.from || b.to < a.from, `ranges ${a.token} and ${b.token} overlap`).toBe(true);
      }
    }
  }
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
  // What a failed test leaves running, stopped here: nothing may go on into the next tests.
  const running: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    await server.start();
  }, 240_000);
  afterAll(async () => {
    server.signal('SIGCONT');
    child?.kill('SIGCONT');
    child?.kill('SIGKILL');
    await Promise.allSettled(running.map((stop) => within(stop(), 60_000, 'a sink or producer to stop')));
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

  it('re-sends exactly the announced range when the group rebalances during an INSERT into a frozen server', async () => {
    // A sink whose INSERT hangs loses its partitions to a sink that joins meanwhile. It must stop
    // and rejoin: the hung block may still land, so whoever goes on with the partition first
    // re-sends exactly that range. A sink that went on in its old generation would send a longer
    // range over the same offsets, which the engine takes for a new block: those rows twice.
    const p = uniquePrefix('chrebal');
    const cat = topicCatalog(p);
    const db2 = `flywheel_faults_${p.replace(/\W/g, '_')}`;
    await createCatalogTopics(kafka, cat);
    const s = await openStore({ url: URL_, database: db2 });
    running.push(() => s.close());
    expect(await migrate(s)).toBe('replicated');
    for (const sql of AUDIT(db2)) await s.command(sql);
    const decisions = await decisionSerde(registryClient(connections.schemaRegistryUrl), cat.decisions);
    const producer = kafka.producer();
    await producer.connect();
    running.push(() => producer.disconnect());
    const produce = (count: number) => producer.send({ topic: cat.decisions, messages: Array.from({ length: count }, (_, i) => ({ value: decisions.encode(decisionOf(p)), partition: i % 3 })) });
    const ranges: string[] = [];
    const sink = (name: string) => {
      const sk = new ClickHouseSink({
        kafka: testKafka(name), store: recordRanges(lazyStore({ url: URL_, database: db2 }), ranges), groupId: `${p}.sink`, decisions,
        deadLetterTopic: cat.deadLetter, trainerProgressTopic: cat.trainerProgress,
        sessionTimeoutMs: 8000, heartbeatIntervalMs: 1000, insertTimeoutMs: 3000, retry: { initialMs: 200, maxMs: 1000 },
      });
      running.push(() => sk.stop());
      return sk;
    };
    await produce(300);
    const first = sink('chrebal-first');
    await first.start();
    await waitUntil(async () => (await storedRecords(s, db2)) >= 300, 'the first sink to store the first 300 records');

    server.signal('SIGSTOP');
    const before = ranges.length;
    await produce(300);
    await waitUntil(() => ranges.length > before, 'the first sink to send an INSERT to the frozen server');
    // More records: a batch handed out again now holds a longer range than the one in flight.
    await produce(300);
    const second = sink('chrebal-second');
    await second.start();
    await waitUntil(() => second.ownedPartitions > 0 && first.ownedPartitions + second.ownedPartitions === 7, 'the group to hand the second sink partitions (the first one rejoined)');
    server.signal('SIGCONT');
    const perPartition = await written(cat.decisions);
    const total = [...perPartition.values()].reduce((a, b) => a + b, 0);
    await waitUntil(async () => (await storedRecords(s, db2)) >= total, `all ${total} records stored`, 120_000);
    await within(Promise.all([first.stop(), second.stop()]), 60_000, 'both sinks to stop');
    expectDisjointRanges(ranges);
    await audit(s, db2, perPartition, 1);
  }, 300_000);

  it('stores every record once through a freeze that hands the partitions over and a kill', async () => {
    onTestFailed(() => console.error(`--- child sink log ---\n${log.join('')}`));
    await createCatalogTopics(kafka, catalog);
    store = await openStore({ url: URL_, database: db });
    expect(await migrate(store)).toBe('replicated');
    for (const sql of AUDIT(db)) await store.command(sql);
    const decisions = await decisionSerde(registryClient(connections.schemaRegistryUrl), catalog.decisions);
    const producer = kafka.producer();
    await producer.connect();
    running.push(() => producer.disconnect());
    const records = flow(producer, decisions, prefix);
    running.push(() => records.stop());
    const rows = () => storedRecords(store!, db);
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
    const duplicates = async () => (await within(store!.query<{ n: number }>(`SELECT value AS n FROM system.events WHERE event = 'DuplicatedInsertedBlocks'`), 60_000, 'the count of duplicate blocks'))[0]?.n ?? 0;
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
    const secondRanges: string[] = [];
    const second = new ClickHouseSink({
      kafka: testKafka('chfaults-second'),
      store: recordRanges(secondStore, secondRanges),
      groupId: `${prefix}.sink`,
      decisions,
      deadLetterTopic: catalog.deadLetter,
      trainerProgressTopic: catalog.trainerProgress,
      sessionTimeoutMs: 8000,
      heartbeatIntervalMs: 1000,
      insertTimeoutMs: 3000,
      retry: { initialMs: 200, maxMs: 1000 },
    });
    running.push(() => second.stop());
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

    const sent = await within(records.stop(), 60_000, 'the producer to stop');
    await producer.disconnect();
    const perPartition = await written(catalog.decisions);
    const total = [...perPartition.values()].reduce((a, b) => a + b, 0);
    if (total !== sent) console.log(`Kafka holds ${total} records of the ${sent} sent (a produce retried after a lost answer)`);
    await waitUntil(async () => (await rows()) >= total, `all ${total} records stored`, 180_000);
    await within(second.stop(), 60_000, 'the second sink to stop');
    child.kill('SIGTERM');
    await within(exited(child), 60_000, 'the first sink to exit on SIGTERM');
    expectDisjointRanges([...childLines().flatMap((l) => (typeof l.sending === 'string' ? [l.sending] : [])), ...secondRanges]);
    // One INSERT per partition may be cut off by the freeze (the stale sink's client gives up) and one by the kill.
    const { blocks, lost } = await audit(store, db, perPartition, 2);
    console.log(`audit: ${blocks} applied blocks, ${lost} cut off mid-INSERT (rows stored, audit row lost)`);
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
      await within(exited(worker), 60_000, 'the worker to exit on SIGTERM');
      const [r] = await s.query<{ n: number; d: number }>('SELECT count() AS n, uniqExact(sink_partition, sink_offset) AS d FROM samples WHERE pipeline_run = {run:String}', { run: prefix });
      expect(r!.n).toBe(r!.d);
      expect(r!.n).toBeGreaterThanOrEqual(total);
    } finally {
      await s.close();
    }
  }, 600_000);
});

// The ClickHouse store against real engines: chdb (embedded, ClickHouse 26.x) and a ClickHouse
// server (FLYWHEEL_TEST_CLICKHOUSE_URL; Debian's 18.16 from deploy/clickhouse-server.sh). The
// same contract runs against both, with the same expected rows, so both backends provably hand
// callers identical shapes. No mocks.

import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, ClickHouseStoreError, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { createTableSql, migrate, SAMPLES_TABLE, sinkHighWater, TABLES, type SampleRow } from '../sinks/clickhouse/schema.ts';
import { SAMPLE_COLUMNS, sampleLine, sampleRow as sinkSampleRow } from '../sinks/clickhouse-sink.ts';
import type { Decision } from '../contracts/records.ts';
import {
  readEndpointFile,
  serveStore,
  writeEndpointFile,
  ENDPOINT_FILE,
} from '../sinks/clickhouse/http-endpoint.ts';

const SERVER_URL = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;
const RUN = `${Date.now().toString(36)}_${process.pid}`;

/** What each backend returned for the shape query, compared across backends at the end. */
const shapes = new Map<string, unknown>();

/** Rows are keyed by their source record: each id gets its own source offset, stable per run. */
const sourceOffsets = new Map<unknown, number>([['s1', 2 ** 40]]);
const sourceOffsetOf = (id: unknown) => {
  if (!sourceOffsets.has(id)) sourceOffsets.set(id, 2 ** 40 + sourceOffsets.size);
  return sourceOffsets.get(id)!;
};

function sampleRow(overrides: Partial<Record<keyof SampleRow, unknown>> = {}): Record<string, unknown> {
  return {
    pipeline_run: 'run-1',
    id: 's1',
    rollout_run: 'rollout-run',
    prompt_id: 'p1',
    prompt: 'What is 2 + 2?',
    group_id: 'g1',
    response: 'It\'s "4"\n\tbecause \\ reasons — ünïcødé ✓',
    model_name: 'policy',
    model_version: 'v1',
    reward_names: ['correct', 'format'],
    reward_values: [1, 0.1],
    score_names: ['len'],
    score_values: [-1.5e-7],
    tag_keys: ['k'],
    tag_values: ["it's"],
    token_count: 5,
    created_at: new Date('2024-05-06T07:08:09.999Z'),
    duplicate_of: '',
    dedupe_method: '',
    reasons: [],
    decision: 'accept',
    reason: '',
    config_hash: 'abc',
    scorer_version: '1',
    annotation_keys: ['qd_cell'],
    annotation_values: ['0|1|math'],
    source_topic: 'rollouts',
    source_partition: 0,
    source_offset: sourceOffsetOf(overrides.id ?? 's1'),
    sink_topic: 'curated',
    sink_partition: 0,
    sink_offset: 10,
    ...overrides,
  };
}

/** The rows above as both backends must return them (inserted_at checked separately). */
function expectedRow(overrides: Partial<Record<keyof SampleRow, unknown>> = {}): Record<string, unknown> {
  return { ...sampleRow(overrides), created_at: '2024-05-06 07:08:09', ...overrides };
}

function withoutInsertedAt(rows: Record<string, unknown>[]): Record<string, unknown>[] {
  return rows.map(({ inserted_at: _drop, ...rest }) => rest);
}

interface Backend {
  store: ClickHouseStore;
  done(): Promise<void>;
}

function storeContract(name: string, open: () => Promise<Backend>): void {
  describe(`ClickHouse store contract: ${name}`, () => {
    let backend: Backend | undefined;
    let openError: unknown;
    // Every test fails with the reason the store did not open (e.g. no server URL): a failed
    // beforeAll would only mark them skipped.
    const store = (): ClickHouseStore => {
      if (!backend) throw openError ?? new Error(`${name} store did not open`);
      return backend.store;
    };

    beforeAll(async () => {
      try {
        backend = await open();
      } catch (err) {
        openError = err;
      }
    });
    afterAll(async () => {
      await backend?.done();
    });

    it('migrates twice without complaint and creates both tables', async () => {
      await migrate(store());
      const dedup = await migrate(store());
      const tables = await store().query<{ name: string; engine: string }>(
        `SELECT name, engine FROM system.tables WHERE database = currentDatabase() AND name IN ('samples', 'dead_letters') ORDER BY name`,
      );
      // A server with ZooKeeper (as deploy/clickhouse-server.sh runs it) gets replicated tables:
      // 18.16 deduplicates a re-sent block only there.
      const engine = dedup === 'replicated' ? 'ReplicatedReplacingMergeTree' : 'ReplacingMergeTree';
      expect(tables).toEqual([
        { name: 'dead_letters', engine },
        { name: 'samples', engine },
      ]);
    });

    it('migrates into an explicit database and reads it with qualified names', async () => {
      const other = `flywheel_other_${RUN}`;
      try {
        await migrate(store(), other);
        await migrate(store(), other);
        await store().insert(`${other}.samples`, [sampleRow({ id: 'q1', sink_topic: 'q', sink_offset: 4 })]);
        expect(await sinkHighWater(store(), `${other}.samples`, 'q')).toEqual(new Map([[0, 4]]));
        expect(await store().query(`SELECT count() AS n FROM samples WHERE id = 'q1'`)).toEqual([{ n: 0 }]);
      } finally {
        await store().command(`DROP DATABASE IF EXISTS ${other}`);
      }
    });

    it('inserts rows with arrays and DateTime and reads them back with the same JS types', async () => {
      const before = Math.floor(Date.now() / 1000) - 1;
      await store().insert('samples', [
        sampleRow(),
        sampleRow({
          id: 's2',
          created_at: '2024-01-02 03:04:05',
          reasons: ['too_short', 'dup'],
          decision: 'reject',
          token_count: 4_000_000_000,
          source_offset: 0,
          sink_partition: 1,
          sink_offset: 11,
        }),
      ]);
      const rows = await store().query('SELECT * FROM samples FINAL WHERE pipeline_run = {run:String} ORDER BY id', {
        run: 'run-1',
      });
      expect(withoutInsertedAt(rows)).toEqual([
        expectedRow(),
        expectedRow({
          id: 's2',
          created_at: '2024-01-02 03:04:05',
          reasons: ['too_short', 'dup'],
          decision: 'reject',
          token_count: 4_000_000_000,
          source_offset: 0,
          sink_partition: 1,
          sink_offset: 11,
        }),
      ]);
      // Omitted column → its DEFAULT now(), not the zero DateTime (18.16 needs the column list).
      for (const row of rows) {
        expect(row.inserted_at).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
        const t = Date.parse(`${String(row.inserted_at).replace(' ', 'T')}Z`) / 1000;
        expect(t).toBeGreaterThanOrEqual(before);
        expect(t).toBeLessThan(before + 600);
      }
      for (const key of ['token_count', 'source_partition', 'source_offset', 'sink_partition', 'sink_offset']) {
        expect(typeof rows[0]![key], key).toBe('number');
      }
      const agg = await store().query(
        `SELECT count() AS n, sum(token_count) AS tokens, max(source_offset) AS max_offset, groupArray(id) AS ids,
                toDateTime(0) AS epoch, toUInt64('18446744073709551615') AS big, avg(token_count) AS mean
         FROM (SELECT * FROM samples FINAL WHERE pipeline_run = 'run-1' ORDER BY id)`,
      );
      expect(agg).toEqual([
        {
          n: 2,
          tokens: 4_000_000_005,
          max_offset: 2 ** 40,
          ids: ['s1', 's2'],
          epoch: '1970-01-01 00:00:00',
          big: 18446744073709551615n,
          mean: 2_000_000_002.5,
        },
      ]);
      shapes.set(name, { rows: withoutInsertedAt(rows), agg });
    });

    it('binds {name:Type} parameters as literals, quotes included', async () => {
      const tricky = "o'k\\ {x:String} -- not a comment";
      const rows = await store().query(
        `SELECT {s:String} AS s, {n:UInt32} AS n, {f:Float64} AS f, {d:DateTime} AS d, '{lit:String}' AS lit
         FROM {t:Identifier} WHERE id = {id:String} LIMIT {limit:UInt8}`,
        { s: tricky, n: 7, f: '2.5', d: '2024-01-02 03:04:05', t: 'samples', id: 's1', limit: 1 },
      );
      expect(rows).toEqual([{ s: tricky, n: 7, f: 2.5, d: '2024-01-02 03:04:05', lit: '{lit:String}' }]);
      await expect(store().query('SELECT {n:UInt32} AS n', { n: '1; DROP TABLE samples' })).rejects.toThrow(/not a UInt32/);
      await expect(store().query('SELECT {missing:String} AS x', { other: 'x' })).rejects.toThrow(/no value for query parameter/);
    });

    it('collapses a re-delivered row with ReplacingMergeTree + FINAL, keeping the highest sink_offset', async () => {
      await store().insert('samples', [sampleRow({ id: 's3', decision: 'accept', sink_offset: 20 })]);
      await store().insert('samples', [sampleRow({ id: 's3', decision: 'reject', sink_offset: 21 })]);
      const final = await store().query<{ decision: string; sink_offset: number }>(
        "SELECT decision, sink_offset FROM samples FINAL WHERE pipeline_run = 'run-1' AND id = 's3'",
      );
      expect(final).toEqual([{ decision: 'reject', sink_offset: 21 }]);
      const latest = await store().query(
        "SELECT id, argMax(decision, sink_offset) AS decision FROM samples WHERE id = 's3' GROUP BY id",
      );
      expect(latest).toEqual([{ id: 's3', decision: 'reject' }]);
      await store().command('OPTIMIZE TABLE samples FINAL');
      const merged = await store().query("SELECT count() AS n FROM samples WHERE id = 's3'");
      expect(merged).toEqual([{ n: 1 }]);
    });

    it('stores dead letters and reads them back', async () => {
      const row = {
        pipeline_run: 'run-1',
        source_topic: 'rollouts',
        source_partition: 2,
        source_offset: 99,
        stage: 'validate',
        reason: 'bad json',
        payload_base64: Buffer.from('{not json').toString('base64'),
        sink_topic: 'dead',
        sink_partition: 0,
        sink_offset: 5,
      };
      await store().insert('dead_letters', [row, row]);
      const rows = await store().query('SELECT * FROM dead_letters FINAL');
      expect(withoutInsertedAt(rows)).toEqual([row]);
    });

    it('computes the sink high-water mark per partition from the stored offsets', async () => {
      await store().insert('samples', [
        sampleRow({ id: 'h1', sink_topic: 'hw', sink_partition: 0, sink_offset: 3 }),
        sampleRow({ id: 'h2', sink_topic: 'hw', sink_partition: 0, sink_offset: 7 }),
        sampleRow({ id: 'h3', sink_topic: 'hw', sink_partition: 2, sink_offset: 2 ** 33 }),
        sampleRow({ id: 'h4', sink_topic: 'other', sink_partition: 0, sink_offset: 1000 }),
      ]);
      expect(await sinkHighWater(store(), 'samples', 'hw')).toEqual(
        new Map([
          [0, 7],
          [2, 2 ** 33],
        ]),
      );
      expect(await sinkHighWater(store(), 'samples', 'nothing-yet')).toEqual(new Map());
      expect(await sinkHighWater(store(), 'dead_letters', 'dead')).toEqual(new Map([[0, 5]]));
    });

    it("stores the sink's TabSeparated lines exactly as the same rows inserted as JSON", async () => {
      // Texts that need every escape TabSeparated has, in plain and in array (quoted) fields.
      const hostile = ["tab\there", 'new\nline\r\n', 'back\\slash \\t not a tab', "it's \"quoted\"", 'nul\0byte', 'émoji 🎉 中文', '', "\\'"];
      const decision = (i: number, run: string): Decision => ({
        rollout: {
          id: `tsv-${i}`, run_id: hostile[i % hostile.length]!, prompt_id: 'p', prompt: hostile.join('\t'), group_id: 'g',
          response: hostile[(i + 3) % hostile.length]!, steps: [], model_name: 'm', model_version: 'v', logprobs: null,
          rewards: Object.fromEntries(hostile.map((h, j) => [h, j === 0 ? 1e-7 : j === 1 ? 1.5e300 : -0.1 - j])),
          token_count: 4_000_000_000, created_at: 1_700_000_000_123 + i, tags: i === 0 ? {} : { [hostile[i % hostile.length]!]: hostile[(i + 1) % hostile.length]! },
        },
        scores: { s: 0.1 + 0.2 },
        duplicate_of: i === 1 ? hostile[0]! : null, dedupe_method: null, reasons: i === 2 ? [] : hostile, decision: 'accepted', reason: 'accepted',
        config_hash: 'h', scorer_version: null, annotations: { "qd'cell": hostile[i % hostile.length]! }, pipeline_run: run,
        source: { topic: 't', partition: i, offset: String(2 ** 40 + i) },
      });
      const tsvRun = `tsv-${RUN}`;
      const jsonRun = `json-${RUN}`;
      const n = hostile.length;
      const lines = Array.from({ length: n }, (_, i) => sampleLine(decision(i, tsvRun), 'tsv.d', 0, String(i), '1700000001999')).join('');
      await store().insertFormatted('samples', SAMPLE_COLUMNS, 'TabSeparated', lines, { dedupToken: `tsv.d:0:0-${n - 1}` });
      await store().insert('samples', Array.from({ length: n }, (_, i) => sinkSampleRow(decision(i, jsonRun), 'tsv.d', 0, String(i), '1700000001999')));
      const read = async (run: string) =>
        (await store().query('SELECT * FROM samples FINAL WHERE pipeline_run = {run:String} ORDER BY id', { run })).map((r) => ({ ...r, pipeline_run: '' }));
      const fromTsv = await read(tsvRun);
      expect(fromTsv).toHaveLength(n);
      expect(fromTsv).toEqual(await read(jsonRun));
      expect(fromTsv[3]).toMatchObject({ rollout_run: hostile[3], response: hostile[6], prompt: hostile.join('\t'), reward_names: hostile, reasons: hostile, tag_keys: [hostile[3]], inserted_at: '2023-11-14 22:13:21' });
    });

    it('takes a Native body on a server and refuses it on chdb, naming the formats it takes', async () => {
      const run = `native-${RUN}`;
      const columns = SAMPLE_COLUMNS.join(', ');
      const d: Decision = {
        rollout: {
          id: 'n-1', run_id: 'r', prompt_id: 'p', prompt: "tab\there, it's", group_id: 'g', response: 'émoji 🎉', steps: [], model_name: 'm', model_version: 'v',
          logprobs: null, rewards: { a: 0.5, b: 2 }, token_count: 7, created_at: 1_700_000_000_123, tags: { k: 'v' },
        },
        scores: { s: 0.1 + 0.2 }, duplicate_of: null, dedupe_method: null, reasons: ['x', ''], decision: 'accepted', reason: 'accepted',
        config_hash: 'h', scorer_version: null, annotations: {}, pipeline_run: run, source: { topic: 't', partition: 1, offset: String(2 ** 40) },
      };
      const lines = [0, 1].map((o) => sampleLine({ ...d, rollout: { ...d.rollout, id: `n-${o}` } }, 'native.d', 0, String(o), '1700000001999')).join('');
      if (name === 'embedded') {
        await expect(store().insertFormatted('samples', SAMPLE_COLUMNS, 'Native', Buffer.from(lines))).rejects.toThrow(/text formats only .*Native needs a ClickHouse server/);
        return;
      }
      // The server's own Native bytes for rows the TabSeparated lines stored, into a table of the
      // same schema: the same rows come back.
      await store().insertFormatted('samples', SAMPLE_COLUMNS, 'TabSeparated', lines);
      const table = `samples_native_${RUN}`;
      const samples = TABLES.find((t) => t.name === SAMPLES_TABLE)!;
      await store().command(createTableSql({ ...samples, name: table }));
      try {
        const read = async (t: string) => store().query(`SELECT ${columns} FROM ${t} WHERE pipeline_run = {run:String} ORDER BY id`, { run });
        const { body } = await store().raw(`SELECT ${columns} FROM samples WHERE pipeline_run = '${run}' ORDER BY id FORMAT Native`);
        await store().insertFormatted(table, SAMPLE_COLUMNS, 'Native', body);
        const stored = await read('samples');
        expect(stored).toHaveLength(2);
        expect(await read(table)).toEqual(stored);
      } finally {
        await store().command(`DROP TABLE IF EXISTS ${table}`);
      }
    });

    it('reports a bad statement with its first line and ClickHouse code', async () => {
      const bad = store().query('SELECT no_such_column\nFROM samples');
      await expect(bad).rejects.toBeInstanceOf(ClickHouseStoreError);
      await expect(bad).rejects.toThrow(/failed on `SELECT no_such_column`: .*no_such_column/s);
      const err = (await bad.catch((e: unknown) => e)) as ClickHouseStoreError;
      expect(err.kind).toBe(name);
      expect(err.code).toBe(47);
      await expect(store().command('SELEC 1')).rejects.toMatchObject({ code: 62, statement: 'SELEC 1' });
      await expect(store().query('SELECT * FROM no_such_table')).rejects.toMatchObject({ code: 60 });
      await expect(store().insert('samples', [{ id: 'x', no_such: 1 }])).rejects.toThrow(
        /INSERT INTO .*samples.*no_such/s,
      );
      await expect(store().query('SELECT 1 FORMAT CSV')).rejects.toThrow(/drop the FORMAT clause/);
      await store().insert('samples', []); // nothing to send is not an error
    });
  });
}

// ---------------------------------------------------------------------------------------------

const embeddedDir = mkdtempSync(join(tmpdir(), 'flywheel-ch-'));
const embeddedPath = join(embeddedDir, 'clickhouse');

storeContract('embedded', async () => {
  const store = await openStore({ path: embeddedPath });
  expect(store.kind).toBe('embedded');
  return { store, done: () => store.close() };
});

storeContract('server', async () => {
  if (!SERVER_URL) {
    throw new Error(
      'FLYWHEEL_TEST_CLICKHOUSE_URL is not set: the server backend is tested against a real ClickHouse. ' +
        'Run `bash deploy/clickhouse-server.sh start` and set FLYWHEEL_TEST_CLICKHOUSE_URL=http://127.0.0.1:18123',
    );
  }
  const database = `flywheel_test_${RUN}`;
  const store = await openStore({ url: SERVER_URL, database });
  expect(store.kind).toBe('server');
  return {
    store,
    async done() {
      await store.command(`DROP DATABASE IF EXISTS ${database}`);
      await store.close();
    },
  };
});

describe('both backends', () => {
  it('returned identical rows for the same inserts', () => {
    expect(shapes.get('embedded')).toBeDefined();
    expect(shapes.get('server')).toBeDefined();
    expect(shapes.get('server')).toEqual(shapes.get('embedded'));
  });
});

// ---------------------------------------------------------------------------------------------

describe('embedded store: persistence and the HTTP endpoint', () => {
  let store: ClickHouseStore;

  beforeAll(async () => {
    // Reopens the directory the contract wrote (and closed): the data must still be there.
    store = await openStore({ path: embeddedPath });
  });
  afterAll(async () => {
    await store?.close();
    rmSync(embeddedDir, { recursive: true, force: true });
  });

  it('keeps its data across close and reopen', async () => {
    const rows = await store.query<{ id: string }>("SELECT id FROM samples FINAL WHERE pipeline_run = 'run-1' ORDER BY id");
    expect(rows.map((r) => r.id)).toEqual(['h1', 'h2', 'h3', 'h4', 's1', 's2', 's3']);
    await store.close();
    store = await openStore({ path: embeddedPath });
    expect(await store.query("SELECT count() AS n FROM samples WHERE id = 's1'")).toEqual([{ n: 1 }]);
  });

  it('serves @clickhouse/client: ping, command, insert, query, errors', async () => {
    const endpoint = await serveStore(store, { dataDir: embeddedPath, allowWrites: true });
    const client = createClient({ url: endpoint.url, log: { level: ClickHouseLogLevel.OFF } });
    try {
      expect(endpoint.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(readEndpointFile(embeddedPath)).toMatchObject({ url: endpoint.url, pid: process.pid });

      expect(await client.ping()).toEqual({ success: true });
      await client.command({
        query: 'CREATE TABLE IF NOT EXISTS http_t (id UInt64, name String, tags Array(String)) ENGINE = MergeTree ORDER BY id',
      });
      await client.insert({
        table: 'http_t',
        values: [
          { id: 1, name: "o'k", tags: ['a'] },
          { id: 2, name: 'two\nlines', tags: [] },
        ],
        format: 'JSONEachRow',
      });
      const each = await client.query({ query: 'SELECT * FROM http_t ORDER BY id', format: 'JSONEachRow' });
      // A ClickHouse server's default: 64-bit integers quoted in JSON.
      expect(await each.json()).toEqual([
        { id: '1', name: "o'k", tags: ['a'] },
        { id: '2', name: 'two\nlines', tags: [] },
      ]);
      const json = await client.query({
        query: 'SELECT count() AS n FROM http_t WHERE name = {name:String}',
        format: 'JSON',
        query_params: { name: "o'k" },
        clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
      });
      const body = (await json.json()) as { meta: unknown; data: unknown };
      expect(body.data).toEqual([{ n: 1 }]);
      expect(body.meta).toEqual([{ name: 'n', type: 'UInt64' }]);
      // The contract's rows, read by another client through the endpoint.
      const samples = await client.query({ query: "SELECT count() AS n FROM samples WHERE sink_topic = 'hw'", format: 'JSONEachRow' });
      expect(await samples.json()).toEqual([{ n: '3' }]);

      await expect(client.query({ query: 'SELECT nope FROM http_t', format: 'JSONEachRow' })).rejects.toThrow(/nope/);
      const res = await fetch(`${endpoint.url}/?query=${encodeURIComponent('SELEC 1')}`);
      expect(res.status).toBe(400);
      expect(res.headers.get('x-clickhouse-exception-code')).toBe('62');
      expect(await res.text()).toMatch(/Syntax error/);
      const plain = await fetch(`${endpoint.url}/?query=${encodeURIComponent('SELECT 1, 2')}`);
      expect(await plain.text()).toBe('1\t2\n'); // TabSeparated, as ClickHouse's default
    } finally {
      await client.close();
      await endpoint.close();
    }
    expect(readEndpointFile(embeddedPath)).toBeUndefined();
  });

  it('lets a server-backend store work through the endpoint', async () => {
    const endpoint = await serveStore(store, { allowWrites: true });
    const remote = await openStore({ url: endpoint.url });
    try {
      await migrate(remote); // idempotent against the tables the contract created
      expect(await sinkHighWater(remote, 'samples', 'hw')).toEqual(new Map([[0, 7], [2, 2 ** 33]]));
      await remote.insert('http_t', [{ id: 3, name: 'via store', tags: ['x', 'y'] }]);
      expect(await remote.query('SELECT * FROM http_t WHERE id = {id:UInt64}', { id: 3 })).toEqual([
        { id: 3, name: 'via store', tags: ['x', 'y'] },
      ]);
      await expect(remote.query('SELECT nope')).rejects.toMatchObject({ kind: 'server', code: 47 });
      // A binary body would reach chdb as mangled text: refused, naming what the endpoint takes.
      await expect(remote.insertFormatted('http_t', ['id'], 'Native', Buffer.from([1, 1, 2, 105, 100, 6, 85, 73, 110, 116, 54, 52]))).rejects.toThrow(/text formats only/);
    } finally {
      await remote.close();
      await endpoint.close();
    }
  });

  it('points a second process at the endpoint when the directory is locked', async () => {
    const endpoint = await serveStore(store, { dataDir: embeddedPath });
    const script = join(embeddedDir, 'second.mts'); // .mts: ESM outside the repo's package.json
    writeFileSync(
      script,
      `import { openStore } from ${JSON.stringify(join(process.cwd(), 'sinks/clickhouse/store.ts'))};
       try { await openStore({ path: ${JSON.stringify(embeddedPath)} }); console.log('OPENED'); }
       catch (e) { console.log(String(e.message)); }`,
    );
    try {
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], {
        cwd: process.cwd(),
        timeout: 60_000,
      });
      expect(stdout).toContain('in use by another process');
      expect(stdout).toContain(endpoint.url);
    } finally {
      await endpoint.close();
    }
  });

  it('ignores an endpoint file whose pid is dead', async () => {
    const child = spawn(process.execPath, ['-e', '']);
    const pid = child.pid!;
    await new Promise((r) => child.once('exit', r));
    const dir = join(embeddedDir, 'stale');
    writeEndpointFile(dir, 'http://127.0.0.1:1');
    writeFileSync(join(dir, ENDPOINT_FILE), JSON.stringify({ url: 'http://127.0.0.1:1', pid, startedAt: '' }));
    expect(readEndpointFile(dir)).toBeUndefined();
    writeEndpointFile(dir, 'http://127.0.0.1:2');
    expect(readEndpointFile(dir)).toMatchObject({ url: 'http://127.0.0.1:2', pid: process.pid });
    expect(readEndpointFile(join(embeddedDir, 'no-such-dir'))).toBeUndefined();
  });
});

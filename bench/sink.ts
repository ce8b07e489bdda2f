/**
 * The ClickHouse sink's insert path against its anchor, on the same rows and the same engine
 * (issue #8, item 7: sink ≥ 0.7 × a bulk INSERT):
 *
 * - flywheel: what the sink does per partition batch, SINK_CONCURRENCY partitions at once: a `samples` line per decoded decision
 *   written into the range's SampleBlock (deterministic TabSeparated bytes, sized from the
 *   records as the sink's encode() sizes it) and one INSERT per offset range with its
 *   deduplication token, as many ranges as kafkajs batches would bring (RANGE rows each);
 * - anchor: the same rows, encoded beforehand, in one bulk INSERT, in the fastest format the
 *   engine takes for them: on the server the faster of TabSeparated (the cheapest text format
 *   18.16 parses: about 1.4× faster than JSONEachRow there) and Native (columnar binary, the
 *   bytes the server itself writes for these rows), measured in the same run; on chdb
 *   TabSeparated (its raw insert parses text formats only).
 *
 * Every pass into a fresh table of its own, created as migrate() creates `samples` (the engine
 * the sink writes to), on chdb, and on the server when FLYWHEEL_TEST_CLICKHOUSE_URL /
 * CLICKHOUSE_URL is set. Not TRUNCATE between passes: on 18.16 a TRUNCATE of a replicated table
 * can hang on its own DROP_RANGE (seen on this machine: one still waiting after 16 minutes).
 *
 *   node --import tsx bench/sink.ts            prints the rows
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SAMPLE_COLUMNS, SINK_CONCURRENCY, SINK_FETCH_BYTES, SampleBlock, sampleLine } from '../sinks/clickhouse-sink.ts';
import { createTableSql, SAMPLES_TABLE, storeDedup, TABLES } from '../sinks/clickhouse/schema.ts';
import { openStore, type ClickHouseStore, type InsertFormat } from '../sinks/clickhouse/store.ts';
import type { Decision } from '../contracts/records.ts';
import type { BenchRow } from './row.ts';

const ROWS = Number(process.env.FLYWHEEL_BENCH_SINK_ROWS ?? 60_000);
/** Rows per sink INSERT: about what one SINK_FETCH_BYTES (8 MB) partition fetch of ~500-byte decision records holds. */
const RANGE = Math.floor(SINK_FETCH_BYTES / 800);
/** An Avro-encoded decision of `decisions()` is about this many bytes: the sink sizes a block from its records. */
const RECORD_BYTES = 400;

function decisions(n: number): Decision[] {
  return Array.from({ length: n }, (_, i) => ({
    rollout: {
      id: `r-${i}`,
      run_id: 'bench',
      prompt_id: `p-${i % 500}`,
      prompt: `What is ${i % 97} + ${i % 89}? Show your work.`,
      group_id: `g-${i % 500}`,
      response: `Adding ${i % 97} and ${i % 89} step by step, carrying where needed, gives ${(i % 97) + (i % 89)}. Answer: ${(i % 97) + (i % 89)}`,
      steps: [],
      model_name: 'policy',
      model_version: `v${i % 3}`,
      rewards: { correct: i % 2, format: 0.5 },
      logprobs: null,
      token_count: 40 + (i % 60),
      created_at: 1_700_000_000_000 + i * 1000,
      tags: { skill: 'addition', split: i % 10 === 0 ? 'eval' : 'train' },
    },
    scores: { rule: (i % 13) / 13, len: (i % 7) / 7 },
    duplicate_of: i % 20 === 0 ? `r-${i - 1}` : null,
    dedupe_method: i % 20 === 0 ? 'exact' : null,
    reasons: i % 20 === 0 ? ['duplicate'] : [],
    decision: i % 20 === 0 ? 'rejected' : 'accepted',
    reason: i % 20 === 0 ? 'duplicate' : 'accepted',
    config_hash: 'bench',
    scorer_version: '1',
    annotations: { 'qd.cell': `len=${i % 4}|skill=addition`, 'qd.elite': i % 5 === 0 ? '1' : '0' },
    pipeline_run: 'bench',
    source: { topic: 'bench.rollouts', partition: i % 3, offset: String(Math.floor(i / 3)) },
  }));
}

/** A store on database `db` (created), and a maker of fresh `samples`-like tables in it (the engine migrate() would create). */
async function storeWithTables(open: (db: string) => Promise<ClickHouseStore>, db: string): Promise<{ store: ClickHouseStore; table: (name: string) => Promise<string> }> {
  const store = await open(db);
  const dedup = await storeDedup(store);
  const samples = TABLES.find((t) => t.name === SAMPLES_TABLE)!;
  return {
    store,
    table: async (name) => {
      await store.command(createTableSql({ ...samples, name }, db, dedup));
      return name;
    },
  };
}

async function measure(backend: 'chdb' | 'server', open: (db: string) => Promise<ClickHouseStore>, ds: Decision[], timestamp: string): Promise<BenchRow> {
  const tag = Date.now().toString(36);
  // Anchor: prebuilt bytes, one INSERT.
  const tsv = Buffer.from(ds.map((d, i) => sampleLine(d, 'bench.decisions', 0, String(i), timestamp)).join(''));
  const anchor = await storeWithTables(open, `bench_sink_anchor_${tag}`);
  const sink = await storeWithTables(open, `bench_sink_${tag}`);
  const anchors: { format: InsertFormat; body: Buffer; ms: number }[] = [{ format: 'TabSeparated', body: tsv, ms: Infinity }];
  let sinkMs = Infinity;
  try {
    if (backend === 'server') {
      // The same rows in Native, as the server itself writes them (stored from the TSV, read back in the sink's column and row order).
      const scratch = await anchor.table('samples_native');
      await anchor.store.insertFormatted(scratch, SAMPLE_COLUMNS, 'TabSeparated', tsv);
      const { body } = await anchor.store.raw(`SELECT ${SAMPLE_COLUMNS.join(', ')} FROM ${scratch} ORDER BY sink_offset FORMAT Native`);
      anchors.push({ format: 'Native', body, ms: Infinity });
    }
    // Alternate, best of 3 each: the machine is shared, the minimum is the least disturbed run.
    for (let round = 0; round < 3; round++) {
      for (const a of anchors) {
        const table = await anchor.table(`samples_${a.format.toLowerCase()}_${round}`);
        const t = performance.now();
        await anchor.store.insertFormatted(table, SAMPLE_COLUMNS, a.format, a.body);
        a.ms = Math.min(a.ms, performance.now() - t);
      }

      const table = await sink.table(`samples_${round}`);
      const t = performance.now();
      // SINK_CONCURRENCY partitions at once, as the sink's consumer hands them over; each builds
      // and inserts its ranges in order.
      const share = Math.ceil(ds.length / SINK_CONCURRENCY);
      await Promise.all(
        Array.from({ length: SINK_CONCURRENCY }, async (_, p) => {
          const end = Math.min((p + 1) * share, ds.length);
          for (let from = p * share; from < end; from += RANGE) {
            const to = Math.min(from + RANGE, end) - 1;
            // As the sink's encode(): the range's lines into one block, sized from the records'
            // bytes (here the decisions' encoded size, about what the Avro records hold).
            const block = new SampleBlock((to - from + 1) * RECORD_BYTES);
            for (let i = from; i <= to; i++) block.add(ds[i]!, 'bench.decisions', 0, String(i), timestamp);
            await sink.store.insertFormatted(table, SAMPLE_COLUMNS, 'TabSeparated', block.bytes(), { dedupToken: `bench.decisions:${p}:${from}-${to}`, timeoutMs: 60_000 });
          }
        }),
      );
      sinkMs = Math.min(sinkMs, performance.now() - t);
      const [stored] = await sink.store.query<{ n: number }>(`SELECT count() AS n FROM ${table}`);
      if (stored?.n !== ds.length) throw new Error(`bench sink (${backend}): stored ${stored?.n} rows, expected ${ds.length}`);
    }
  } finally {
    for (const s of [anchor.store, sink.store]) {
      if (s.kind === 'server') await s.command(`DROP DATABASE IF EXISTS ${(await s.query<{ d: string }>('SELECT currentDatabase() AS d'))[0]!.d}`).catch(() => undefined);
      await s.close();
    }
  }
  const fastest = anchors.reduce((a, b) => (b.ms < a.ms ? b : a));
  const rate = (ms: number) => Math.round(ds.length / (ms / 1000));
  return {
    figure: `ClickHouse sink (${backend}): decoded decisions → rows → INSERT per ${RANGE}-row range with dedup token, ${SINK_CONCURRENCY} partitions`,
    unit: 'rows/s',
    flywheel: rate(sinkMs),
    anchor: `one bulk INSERT of the same rows (${backend}, ${anchors.length > 1 ? `${fastest.format}: the fastest of ${anchors.map((a) => a.format).join(', ')}` : `${fastest.format}: chdb takes text formats only`})`,
    anchorValue: rate(fastest.ms),
    target: '≥ 0.7',
    note: `${ds.length} rows, best of 3; the sink writes TabSeparated; bulk ${anchors.map((a) => `${a.format} ${rate(a.ms)} rows/s (sink ÷ it ${(a.ms > 0 ? a.ms / sinkMs : 0).toFixed(2)})`).join(', ')}`,
  };
}

export async function benchSink(): Promise<BenchRow[]> {
  const ds = decisions(ROWS);
  const timestamp = String(Date.now());
  const rows: BenchRow[] = [];
  // chdb binds one data directory per process: one store at a time, databases inside it.
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-bench-sink-'));
  try {
    rows.push(await measure('chdb', (db) => openStore({ path: dir, database: db }), ds, timestamp));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const url = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL || process.env.CLICKHOUSE_URL;
  if (url) rows.push(await measure('server', (db) => openStore({ url, database: db }), ds, timestamp));
  return rows;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  for (const row of await benchSink()) {
    console.log(`${row.figure}: ${row.flywheel} ${row.unit} vs ${row.anchor}: ${row.anchorValue} → ${(row.flywheel / row.anchorValue!).toFixed(2)} (target ${row.target}; ${row.note})`);
  }
}

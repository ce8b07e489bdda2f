import { createHash } from 'node:crypto';
import { Partitioners } from 'kafkajs';
import { clickhouseItems, jsonlItems, seedExactDedupe, seedNearDedupe, seedSemanticDedupe, type CorpusItem } from './corpus-seed.ts';
import { exactDedupeStore } from '../operators/dedupe/exact-dedupe.ts';
import { nearDedupeStore } from '../operators/dedupe/near-dedupe.ts';
import { semanticDedupeStore, type Encoder, type SemanticDedupeConfig } from '../operators/dedupe/semantic-dedupe.ts';
import { quoteString } from '../sinks/clickhouse/sql.ts';
import type { ClickHouseStore } from '../sinks/clickhouse/store.ts';
import type { PartitionState } from '../streams/state-store.ts';
import type { PipelineConfig } from './config.ts';

/**
 * Seeds the dedupe indexes from data already stored, so new rollouts are deduplicated against
 * what was accepted before: JSON-lines files and/or the accepted samples of earlier runs in
 * ClickHouse (config `seed`). It runs when a worker takes a partition, after the partition's
 * state is restored; the seeded entries are staged like any state write and reach the changelog
 * with the partition's next transaction, together with a marker, so a restart or another worker
 * does not seed again. Group-scoped indexes get the items of the groups that land on the
 * partition (the default partitioner, as producers key by group id); global ones get every item,
 * since a copy may arrive in any group. The operators' bounds and TTL apply to seeded entries.
 * semantic-dedupe (given its loaded `encoders`, by operator position) re-embeds what it is
 * offered, so it is offered only what its bounds would keep: the newest maxEntries items (per
 * partition) of the corpus, those within ttlMs of the newest — from ClickHouse the newest rows
 * only, by a LIMIT.
 */
export async function seedPartition(
  config: PipelineConfig,
  partition: number,
  state: PartitionState,
  store: ClickHouseStore,
  encoders: ReadonlyMap<number, Encoder> = new Map(),
): Promise<void> {
  const seed = config.seed;
  if (seed === undefined) return;
  const marker = `#seeded:${createHash('sha256').update(JSON.stringify(seed)).digest('hex').slice(0, 16)}`;
  const mine = (item: CorpusItem, scope: 'global' | 'group') => scope === 'global' || partitionOf(item.groupId ?? '', config.topics.partitions) === partition;
  for (const [i, op] of config.operators.entries()) {
    if (op.type === 'semantic-dedupe') {
      const kv = state.store(semanticDedupeStore.name);
      const encoder = encoders.get(i);
      if (kv.get(marker) !== undefined || encoder === undefined) continue;
      const items = newest(filtered(semanticCorpus(seed, store, op, config.topics.partitions), (item) => mine(item, op.scope)), op.maxEntries, op.ttlMs);
      await seedSemanticDedupe(kv, op, encoder, dated(toAsync(await items), Date.now()));
      kv.put(marker, new Date().toISOString());
      continue;
    }
    if (op.type !== 'exact-dedupe' && op.type !== 'near-dedupe') continue;
    const kv = state.store(op.type === 'exact-dedupe' ? exactDedupeStore.name : nearDedupeStore.name);
    if (kv.get(marker) !== undefined) continue;
    // Undated items count as seen now: the indexes' TTL runs on event time, which is about now.
    const now = Date.now();
    const items = dated(filtered(corpus(seed, store), (item) => mine(item, op.scope)), now);
    if (op.type === 'exact-dedupe') await seedExactDedupe(kv, op, items);
    else await seedNearDedupe(kv, op, items);
    kv.put(marker, new Date().toISOString());
  }
}

async function* corpus(seed: NonNullable<PipelineConfig['seed']>, store: ClickHouseStore): AsyncGenerator<CorpusItem> {
  for (const path of seed.jsonl) yield* jsonlItems(path);
  for (const run of seed.clickhouseRuns) {
    yield* clickhouseItems(
      store,
      `SELECT id, prompt, response, group_id, toUInt32(created_at) AS created_s FROM samples
       WHERE decision = 'accepted' AND pipeline_run = ${quoteString(run)} ORDER BY created_at, id`,
    );
  }
}

/** semantic-dedupe's corpus: the JSON-lines files, and the newest accepted samples of each run with their tags. */
async function* semanticCorpus(seed: NonNullable<PipelineConfig['seed']>, store: ClickHouseStore, op: SemanticDedupeConfig, partitions: number): AsyncGenerator<CorpusItem> {
  for (const path of seed.jsonl) yield* jsonlItems(path);
  // Group scope keeps maxEntries per partition, and this partition's share is found after the query.
  const limit = op.maxEntries * (op.scope === 'group' ? partitions : 1);
  for (const run of seed.clickhouseRuns) {
    const rows = clickhouseItems(
      store,
      `SELECT id, prompt, response, group_id, toUInt32(created_at) AS created_s, tag_keys, tag_values FROM samples
       WHERE decision = 'accepted' AND pipeline_run = ${quoteString(run)} ORDER BY created_at DESC, id DESC LIMIT ${limit}`,
    );
    const newestFirst: CorpusItem[] = [];
    for await (const item of rows) newestFirst.push(item);
    yield* newestFirst.reverse();
  }
}

/**
 * The last `maxEntries` of `items` (read in full, holding at most twice that), oldest first,
 * without those older than `ttlMs` before the newest dated one: what the index would keep.
 */
async function newest(items: AsyncIterable<CorpusItem>, maxEntries: number, ttlMs: number | null): Promise<CorpusItem[]> {
  let kept: CorpusItem[] = [];
  let latest = -Infinity;
  for await (const item of items) {
    kept.push(item);
    // Trimmed in bulk (a shift per item is O(n) each): at most 2 × maxEntries are held.
    if (kept.length >= 2 * maxEntries) kept = kept.slice(-maxEntries);
    if (item.at !== undefined && item.at > latest) latest = item.at;
  }
  kept = kept.slice(-maxEntries);
  return ttlMs === null ? kept : kept.filter((item) => item.at === undefined || item.at >= latest - ttlMs);
}

async function* toAsync<T>(items: Iterable<T>): AsyncGenerator<T> {
  yield* items;
}

async function* dated(items: AsyncIterable<CorpusItem>, now: number): AsyncGenerator<CorpusItem> {
  for await (const item of items) yield item.at === undefined ? { ...item, at: now } : item;
}

async function* filtered<T>(items: AsyncIterable<T>, keep: (item: T) => boolean): AsyncGenerator<T> {
  for await (const item of items) if (keep(item)) yield item;
}

const partitioner = Partitioners.DefaultPartitioner();

/** The partition kafkajs's default partitioner (murmur2, as Java's) gives a key. */
export function partitionOf(key: string, partitions: number): number {
  const partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({ partitionId, leader: 0, replicas: [0], isr: [0], partitionErrorCode: 0 }));
  return partitioner({ topic: '', partitionMetadata, message: { key, value: null } });
}

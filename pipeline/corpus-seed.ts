import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Rollout, TrajectoryStep } from '../contracts/records.ts';
import type { KeyValueStore } from '../streams/state-store.ts';
import { openIndex } from '../lib/dedupe-index.ts';
import { contentKey, rememberExact, type ExactDedupeConfig } from '../operators/dedupe/exact-dedupe.ts';
import { checkNearDedupeConfig, comparedText, layoutOf, nearDedupeStep, responseText, type NearDedupeConfig } from '../operators/dedupe/near-dedupe.ts';
import { semanticDedupeBatches, type Encoder, type SemanticDedupeConfig } from '../operators/dedupe/semantic-dedupe.ts';
import { isRejected, newSample, type Sample } from '../lib/envelope.ts';
import { compileExpression, sampleVocabulary } from '../lib/expression.ts';

/**
 * Seeding the dedupe stores from data that exists already (a training corpus, earlier accepted
 * samples), so the stream rejects copies of it from the first record on. Run it against a
 * partition's store before the pipeline starts (or into a fresh store whose entries are then
 * written to the changelog); the seeded index is exactly what streaming the items through the
 * operator would have built, bounds and TTL included, so only the newest maxEntries survive.
 */

/** A corpus record: what exact-dedupe hashes and what near-dedupe compares are derived from it. */
export interface CorpusItem {
  id: string;
  prompt: string;
  response: string;
  /** Needed in group scope. */
  groupId?: string;
  /** Event time, epoch ms; without it the item takes the index clock. */
  at?: number;
  /** The rollout's tags, for an operator's `when` (semantic-dedupe). */
  tags?: Record<string, string>;
}

/** An item whose compared text is given directly (config.text is then not applied). */
export interface TextItem {
  id: string;
  text: string;
  groupId?: string;
  at?: number;
}

export interface SeedResult {
  inserted: number;
  /** Items that were near copies of earlier items (or already indexed): not inserted. */
  duplicates: number;
  /** Items too short to index (fewer than minShingles shingles). */
  skipped: number;
}

/** Offers every item to near-dedupe's index in `store`, in order, as the operator would. */
export async function seedNearDedupe(store: KeyValueStore, config: NearDedupeConfig, items: AsyncIterable<CorpusItem | TextItem>): Promise<SeedResult> {
  checkNearDedupeConfig(config);
  const result: SeedResult = { inserted: 0, duplicates: 0, skipped: 0 };
  const layout = layoutOf(config);
  for await (const item of items) {
    const groupId = groupOf(item, config.scope);
    const text = 'text' in item ? item.text : comparedText(item.prompt, item.response, config.text);
    const index = openIndex(store, layout, config);
    const outcome = nearDedupeStep(index, config, { id: item.id, groupId, text, at: item.at ?? Number.NaN });
    if (outcome.kind === 'inserted') result.inserted++;
    else if (outcome.kind === 'too_short') result.skipped++;
    else result.duplicates++;
  }
  return result;
}

/**
 * Offers every item to semantic-dedupe's store, in order and in batches of the operator's
 * maxBatch, through the operator's own batch step (semanticDedupeBatches): each item is embedded
 * by `encoder` — the texts are re-embedded, since stored samples keep no embeddings — and
 * remembered unless it is a near duplicate of one remembered before it, under the operator's
 * `when`, maxEntries and ttlMs. Items `when` leaves out count as skipped. The caller bounds what
 * it offers (pipeline/seed.ts reads only the newest maxEntries within ttlMs): the encoder is the
 * cost, about a millisecond or more per text on a CPU core.
 */
export async function seedSemanticDedupe(
  store: KeyValueStore,
  config: SemanticDedupeConfig,
  encoder: Encoder,
  items: AsyncIterable<CorpusItem>,
): Promise<SeedResult> {
  const step = semanticDedupeBatches(config, encoder, store);
  const when = config.when === null ? null : compileExpression(config.when, { field: 'when', vocabulary: sampleVocabulary(), result: 'boolean' });
  const result: SeedResult = { inserted: 0, duplicates: 0, skipped: 0 };
  let batch: Sample[] = [];
  const flush = async () => {
    for (const out of await step(batch)) if (out.kind === 'sample') result[isRejected(out) ? 'duplicates' : 'inserted']++;
    batch = [];
  };
  const source = { topic: 'seed', partition: 0, offset: '0' };
  for await (const item of items) {
    const sample = newSample(corpusRollout(item, groupOf(item, config.scope)), source, Buffer.alloc(0), null);
    if (when !== null && when.evaluate(sample) !== true) {
      result.skipped++;
      continue;
    }
    batch.push(sample);
    if (batch.length >= config.maxBatch) await flush();
  }
  if (batch.length > 0) await flush();
  return result;
}

/**
 * Records every item's content in exact-dedupe's store (its `contentKey` → first id, the first
 * occurrence kept); returns how many keys were added. exact-dedupe's store has no bound, so
 * neither has this.
 */
export async function seedExactDedupe(store: KeyValueStore, config: ExactDedupeConfig, items: AsyncIterable<CorpusItem>): Promise<number> {
  let added = 0;
  for await (const item of items) {
    const rollout = corpusRollout(item, groupOf(item, config.scope));
    if (rememberExact(store, config, contentKey(rollout, config.scope), item.id, rollout.created_at) === undefined) added++;
  }
  return added;
}

/**
 * Reads JSON lines `{"id", "prompt", "response", "group_id"?, "created_at"?}` (created_at as epoch
 * ms or an ISO date; a trajectory's `steps` stand in for a missing response, as in the pipeline).
 * Blank lines are skipped; a malformed line throws, naming its number.
 */
export async function* jsonlItems(path: string): AsyncGenerator<CorpusItem> {
  const lines = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  let number = 0;
  for await (const line of lines) {
    number++;
    if (line.trim() === '') continue;
    try {
      yield corpusItem(JSON.parse(line) as Record<string, unknown>);
    } catch (err) {
      throw new Error(`${path}:${number}: ${(err as Error).message}`);
    }
  }
}

/** What clickhouseItems needs of a ClickHouse store (sinks/clickhouse/store.ts's ClickHouseStore fits). */
export interface QueryStore {
  query<T>(sql: string, params?: Record<string, string | number>): Promise<T[]>;
}

/** The columns clickhouseItems reads; `created_s` is Unix seconds. */
export interface CorpusRow {
  id: string;
  prompt: string;
  response: string;
  group_id?: string;
  created_s?: number | string;
  /** The rollout's tags, when the query selects them. */
  tag_keys?: string[];
  tag_values?: string[];
}

/** Accepted samples of every run, oldest first (clickhouseItems appends the page's LIMIT). */
export const ACCEPTED_SAMPLES_SQL =
  "SELECT id, prompt, response, group_id, toUInt32(created_at) AS created_s FROM samples WHERE decision = 'accepted' ORDER BY created_at, id";

/**
 * Rows of the `samples` table as corpus items. Without `sql`: the accepted samples of every run,
 * oldest first, fetched in pages (`LIMIT offset, n`, which ClickHouse 18.16 reads too). With
 * `sql`: that one query, whose rows must have CorpusRow's columns.
 */
export async function* clickhouseItems(store: QueryStore, sql?: string, pageSize = 10_000): AsyncGenerator<CorpusItem> {
  if (sql !== undefined) {
    for (const row of await store.query<CorpusRow>(sql)) yield rowItem(row);
    return;
  }
  for (let offset = 0; ; offset += pageSize) {
    const rows = await store.query<CorpusRow>(`${ACCEPTED_SAMPLES_SQL} LIMIT {offset:UInt64}, {n:UInt32}`, { offset, n: pageSize });
    for (const row of rows) yield rowItem(row);
    if (rows.length < pageSize) return;
  }
}

function rowItem(row: CorpusRow): CorpusItem {
  const seconds = row.created_s === undefined ? Number.NaN : Number(row.created_s);
  return {
    id: row.id,
    prompt: row.prompt,
    response: row.response,
    ...(row.group_id !== undefined ? { groupId: row.group_id } : {}),
    ...(Number.isFinite(seconds) ? { at: seconds * 1000 } : {}),
    ...(row.tag_keys !== undefined ? { tags: Object.fromEntries(row.tag_keys.map((k, i) => [k, row.tag_values?.[i] ?? ''])) } : {}),
  };
}

function corpusItem(raw: Record<string, unknown>): CorpusItem {
  const text = (field: string): string => {
    const value = raw[field];
    if (typeof value !== 'string') throw new Error(`"${field}" must be a string`);
    return value;
  };
  if (typeof raw.response !== 'string' && !Array.isArray(raw.steps)) throw new Error('"response" must be a string (or "steps" a trajectory)');
  const response = responseText({ response: typeof raw.response === 'string' ? raw.response : null, steps: (raw.steps ?? []) as TrajectoryStep[] });
  const item: CorpusItem = { id: text('id'), prompt: text('prompt'), response };
  if (raw.group_id !== undefined) item.groupId = text('group_id');
  if (raw.created_at !== undefined) {
    const at = typeof raw.created_at === 'number' ? raw.created_at : Date.parse(String(raw.created_at));
    if (!Number.isFinite(at)) throw new Error('"created_at" must be epoch ms or an ISO date');
    item.at = at;
  }
  return item;
}

function groupOf(item: { id: string; groupId?: string }, scope: 'global' | 'group'): string {
  if (item.groupId === undefined && scope === 'group') throw new Error(`item ${item.id} has no group id, which group scope needs`);
  return item.groupId ?? '';
}

/** The rollout fields contentKey reads; the rest is filler that does not enter the key. */
function corpusRollout(item: CorpusItem, groupId: string): Rollout {
  return {
    id: item.id,
    run_id: '',
    prompt_id: '',
    prompt: item.prompt,
    group_id: groupId,
    response: item.response,
    steps: [],
    model_name: '',
    model_version: '',
    rewards: {},
    logprobs: null,
    token_count: 0,
    created_at: item.at ?? 0,
    tags: item.tags ?? {},
  };
}

import type { Rollout } from '../../contracts/records.ts';
import { mapSamples, type Curator } from '../../lib/envelope.ts';

export interface EvalIndexOptions {
  /** Words per n-gram: 13, as in the GPT-3 and later decontamination reports. */
  n: number;
  /** An item shorter than n words is indexed as one n-gram of its own length; shorter than minN, not at all. */
  minN: number;
  /** N-grams found in more items than this are boilerplate ("which of the following") and dropped. */
  maxItemsPerNgram: number;
  /** Bound on distinct n-grams indexed; loading fails beyond it (V8 Maps stop at 2^24 entries). */
  maxNgrams: number;
  /** JSONL: the field holding the item id (the line number when absent). */
  idField: string;
  /** JSONL: the fields whose text is indexed, joined. */
  textFields: string[];
}

export interface ContaminationFilterConfig extends EvalIndexOptions {
  /** Evaluation set files: `.jsonl` (one JSON object per line) or plain text (one item per line). */
  evalSets: string[];
  /** Fewest distinct n-grams a text must share with one eval item to be contaminated by it. */
  minOverlap: number;
  /** …and the smallest share of that item's n-grams they must make up (0: any). */
  minFraction: number;
  /** What of a sample is checked; the response is the trajectory's text when there is none. */
  fields: Array<'prompt' | 'response'>;
}

export const contaminationFilterDefaults: ContaminationFilterConfig = {
  evalSets: [],
  n: 13,
  minN: 8,
  maxItemsPerNgram: 10,
  maxNgrams: 10_000_000,
  idField: 'id',
  textFields: ['text'],
  minOverlap: 1,
  minFraction: 0,
  fields: ['prompt', 'response'],
};

export interface EvalItem {
  set: string;
  id: string;
  /** Distinct n-grams of the item: the denominator of minFraction. */
  ngrams: number;
}

export interface EvalSet {
  name: string;
  items: Array<{ id: string; text: string }>;
}

/**
 * Word n-grams of evaluation items, for exact-overlap lookup. Memory: one Map entry per
 * distinct n-gram, a 53-bit hash key and an item number — about 80 bytes in V8 — plus a small
 * array for n-grams several items share; `maxNgrams` bounds the entries (10M ≈ 800 MB).
 * Hash collisions (2^-53 per pair) are negligible.
 */
export interface EvalIndex {
  n: number;
  /** The n-gram lengths present (n, and the lengths of short items). */
  lengths: number[];
  items: EvalItem[];
  /** N-gram hash → item number(s); -1 marks an n-gram dropped as boilerplate. */
  postings: Map<number, number | number[]>;
  /** Items shorter than minN words, not indexed. */
  skipped: number;
}

export function buildEvalIndex(sets: readonly EvalSet[], options: Partial<EvalIndexOptions> = {}): EvalIndex {
  const o = { ...contaminationFilterDefaults, ...options };
  const index: EvalIndex = { n: o.n, lengths: [], items: [], postings: new Map(), skipped: 0 };
  const lengths = new Set<number>();
  for (const set of sets) {
    for (const item of set.items) {
      const words = wordsOf(item.text);
      if (words.length < o.minN) {
        index.skipped += 1;
        continue;
      }
      const length = Math.min(o.n, words.length);
      lengths.add(length);
      const hashes = new Set(ngramHashes(words, length));
      const itemNo = index.items.push({ set: set.name, id: item.id, ngrams: hashes.size }) - 1;
      for (const h of hashes) addPosting(index.postings, h, itemNo, o);
    }
  }
  index.lengths = [...lengths].sort((a, b) => b - a);
  return index;
}

function addPosting(postings: EvalIndex['postings'], hash: number, itemNo: number, o: EvalIndexOptions): void {
  const current = postings.get(hash);
  if (current === undefined) {
    if (postings.size >= o.maxNgrams) throw new Error(`eval sets hold more than ${o.maxNgrams} distinct ${o.n}-grams: raise maxNgrams or index fewer sets`);
    postings.set(hash, itemNo);
  } else if (current === -1) {
    return;
  } else {
    const list = typeof current === 'number' ? [current, itemNo] : [...current, itemNo];
    postings.set(hash, list.length > o.maxItemsPerNgram ? -1 : list);
  }
}

/**
 * Rejects a sample whose prompt or response shares at least `minOverlap` distinct word n-grams,
 * making up at least `minFraction` of the item's n-grams, with one evaluation item. The reason
 * `contamination:<eval-set>:<item-id>` names the item with the most shared n-grams (the first
 * indexed on a tie; prompt checked before response); `contamination.ngrams` and
 * `contamination.field` annotate the match. Text is compared as lower-cased letter/digit
 * words, so punctuation and spacing do not hide a copy. Pure over the index built at startup;
 * cost per sample is O(words × index.lengths.length).
 *
 * @example
 *   const index = buildEvalIndex([{ name: 'gsm8k', items: [{ id: '17', text: question }] }]);   // question: 21 words
 *   contaminationFilter(contaminationFilterDefaults, index)
 *   // a prompt quoting that question whole, in other spacing and case (its 9 word 13-grams)
 *   //   → reasons ['contamination:gsm8k:17'], annotations { 'contamination.ngrams': '9', 'contamination.field': 'prompt' }
 *   // a prompt sharing no 13-word run with any item → passes
 */
export function contaminationFilter(config: Pick<ContaminationFilterConfig, 'minOverlap' | 'minFraction' | 'fields'>, index: EvalIndex): Curator {
  return mapSamples('contamination-filter', (sample) => {
    for (const field of config.fields) {
      const match = bestMatch(wordsOf(textOf(sample.rollout, field)), index, config);
      if (match === undefined) continue;
      const item = index.items[match.itemNo]!;
      return {
        ...sample,
        reasons: [...sample.reasons, `contamination:${item.set}:${item.id}`],
        annotations: { ...sample.annotations, 'contamination.ngrams': String(match.shared), 'contamination.field': field },
      };
    }
    return sample;
  });
}

function bestMatch(words: string[], index: EvalIndex, config: Pick<ContaminationFilterConfig, 'minOverlap' | 'minFraction'>) {
  const shared = new Map<number, Set<number>>();
  for (const length of index.lengths) {
    for (const h of ngramHashes(words, length)) {
      const posting = index.postings.get(h);
      if (posting === undefined || posting === -1) continue;
      for (const itemNo of typeof posting === 'number' ? [posting] : posting) {
        let hashes = shared.get(itemNo);
        if (hashes === undefined) shared.set(itemNo, (hashes = new Set()));
        hashes.add(h);
      }
    }
  }
  let best: { itemNo: number; shared: number } | undefined;
  for (const [itemNo, hashes] of shared) {
    const qualifies = hashes.size >= config.minOverlap && hashes.size / index.items[itemNo]!.ngrams >= config.minFraction;
    if (qualifies && (best === undefined || hashes.size > best.shared || (hashes.size === best.shared && itemNo < best.itemNo))) best = { itemNo, shared: hashes.size };
  }
  return best;
}

function textOf(r: Rollout, field: 'prompt' | 'response'): string {
  if (field === 'prompt') return r.prompt;
  return r.response ?? r.steps.map((s) => s.content).join('\n');
}

export function wordsOf(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

function* ngramHashes(words: readonly string[], length: number): Generator<number> {
  for (let i = 0; i + length <= words.length; i++) yield cyrb53(words.slice(i, i + length).join(' '));
}

/** cyrb53 (public domain): a fast 53-bit string hash, exact in a JS number. */
function cyrb53(text: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

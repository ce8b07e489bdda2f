import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { normalizeText } from '../lib/normalize-text.ts';
import { shingles, type MinHashConfig } from '../lib/minhash.ts';
import { prng } from '../cli/synthetic.ts';

/**
 * A prose corpus for near-duplicate benchmarks and tests, built from text files on this machine
 * (nothing committed): license texts, Debian copyright files, Python's standard-library
 * docstrings and the READMEs of installed npm packages, split into paragraphs of 25–300 words,
 * exact repeats dropped. A share of the paragraphs get near copies made by seeded random word
 * edits (deletions, substitutions from the corpus vocabulary, insertions, swaps of neighbours)
 * at per-word rates spread over 0–20 %, so similarities cover the whole range around the
 * usual 0.8 threshold. Ground truth is not taken from the edits but computed exactly
 * (`exactDuplicates`), so natural near-duplicates among the files (license variants) count too.
 *
 * The same seed on the same machine gives the same documents, in the same order.
 */
export interface ProseDoc {
  id: string;
  /** The paragraph or its edited copy. */
  text: string;
}

export interface ProseCorpusOptions {
  /** Distinct paragraphs taken (fewer if the machine has fewer). */
  paragraphs: number;
  /** Share of the paragraphs that get near copies (1 or 2 each). */
  copyShare: number;
  seed: number;
}

export function proseCorpus(options: ProseCorpusOptions): ProseDoc[] {
  const random = prng(options.seed);
  const all = paragraphs();
  shuffle(all, random);
  const bases = all.slice(0, options.paragraphs);
  const vocabulary = [...new Set(bases.flatMap((p) => p.split(/\s+/)))].sort();
  const texts: string[] = [...bases];
  for (const base of bases) {
    if (random() >= options.copyShare) continue;
    for (let c = random() < 0.3 ? 2 : 1; c > 0; c--) texts.push(edit(base, random() * 0.2, random, vocabulary));
  }
  shuffle(texts, random);
  // 36-character ids, as rollout ids are UUIDs: the index's bytes per entry depend on them.
  return texts.map((text, i) => ({ id: `doc-${String(i).padStart(8, '0')}-${hex(random)}${hex(random)}${hex(random)}`.slice(0, 36), text }));
}

/**
 * What a sequential exact-Jaccard near-dedupe decides: document i is a duplicate when some earlier
 * document that was itself kept has Jaccard ≥ threshold with it (over the shingles of `config`).
 * Exact, found with prefix filtering (tokens ordered rarest first, so a pair at ≥ t must share
 * one of the first |x| − ⌈t·|x|⌉ + 1 tokens of each) and verified by a merge of sorted sets.
 */
export function exactDuplicates(texts: readonly string[], threshold: number, config: Pick<MinHashConfig, 'shingle' | 'shingleSize'>): boolean[] {
  const ranked = rankedSets(texts, config);
  const prefix = (n: number) => n - Math.ceil(threshold * n - 1e-9) + 1;
  const postings = new Map<number, number[]>();
  const seen = new Int32Array(texts.length).fill(-1);
  const out: boolean[] = [];
  for (let q = 0; q < ranked.length; q++) {
    const x = ranked[q]!;
    let duplicate = false;
    for (let i = 0; i < Math.min(prefix(x.length), x.length) && !duplicate; i++) {
      for (const c of postings.get(x[i]!) ?? []) {
        if (seen[c] === q) continue;
        seen[c] = q;
        const y = ranked[c]!;
        if (y.length < threshold * x.length - 1e-9 || x.length < threshold * y.length - 1e-9) continue;
        if (jaccard(x, y) >= threshold) {
          duplicate = true;
          break;
        }
      }
    }
    out.push(duplicate);
    if (!duplicate && x.length > 0) {
      for (let i = 0; i < Math.min(prefix(x.length), x.length); i++) {
        let list = postings.get(x[i]!);
        if (list === undefined) postings.set(x[i]!, (list = []));
        list.push(q);
      }
    }
  }
  return out;
}

/**
 * Every pair of documents (i < j) whose exact Jaccard similarity is in [lo, hi), with it: the
 * pairs near a threshold, where an estimator's bias and spread decide precision and recall.
 * Prefix filtering at lo, as exactDuplicates.
 */
export function pairsInRange(texts: readonly string[], lo: number, hi: number, config: Pick<MinHashConfig, 'shingle' | 'shingleSize'>): Array<[number, number, number]> {
  const ranked = rankedSets(texts, config);
  const prefix = (n: number) => n - Math.ceil(lo * n - 1e-9) + 1;
  const postings = new Map<number, number[]>();
  const seen = new Int32Array(texts.length).fill(-1);
  const out: Array<[number, number, number]> = [];
  for (let q = 0; q < ranked.length; q++) {
    const x = ranked[q]!;
    const p = Math.min(prefix(x.length), x.length);
    for (let i = 0; i < p; i++) {
      for (const c of postings.get(x[i]!) ?? []) {
        if (seen[c] === q) continue;
        seen[c] = q;
        const j = jaccard(x, ranked[c]!);
        if (j >= lo && j < hi) out.push([c, q, j]);
      }
    }
    for (let i = 0; i < p; i++) {
      let list = postings.get(x[i]!);
      if (list === undefined) postings.set(x[i]!, (list = []));
      list.push(q);
    }
  }
  return out;
}

/** Each text's shingle set as sorted ranks, rarest shingle first (the order prefix filtering needs). */
function rankedSets(texts: readonly string[], config: Pick<MinHashConfig, 'shingle' | 'shingleSize'>): Int32Array[] {
  const ids = new Map<string, number>();
  const sets = texts.map((t) => {
    const out: number[] = [];
    for (const s of shingles(t, config)) {
      let id = ids.get(s);
      if (id === undefined) ids.set(s, (id = ids.size));
      out.push(id);
    }
    return out;
  });
  const freq = new Int32Array(ids.size);
  for (const set of sets) for (const id of set) freq[id]!++;
  // Rank: rarest first, ties by id.
  const order = Array.from({ length: ids.size }, (_, i) => i).sort((a, b) => freq[a]! - freq[b]! || a - b);
  const rank = new Int32Array(ids.size);
  order.forEach((id, r) => (rank[id] = r));
  return sets.map((set) => Int32Array.from(set.map((id) => rank[id]!)).sort());
}

/** Precision and recall of predicted duplicate flags against the exact ones. */
export function precisionRecall(predicted: readonly boolean[], truth: readonly boolean[]): { precision: number; recall: number; duplicates: number } {
  let tp = 0;
  let fp = 0;
  let fn = 0;
  for (let i = 0; i < truth.length; i++) {
    if (predicted[i] && truth[i]) tp++;
    else if (predicted[i]) fp++;
    else if (truth[i]) fn++;
  }
  return { precision: tp + fp === 0 ? 1 : tp / (tp + fp), recall: tp + fn === 0 ? 1 : tp / (tp + fn), duplicates: tp + fn };
}

function jaccard(x: Int32Array, y: Int32Array): number {
  let i = 0;
  let j = 0;
  let inter = 0;
  while (i < x.length && j < y.length) {
    if (x[i]! === y[j]!) {
      inter++;
      i++;
      j++;
    } else if (x[i]! < y[j]!) i++;
    else j++;
  }
  return inter / (x.length + y.length - inter);
}

function edit(text: string, rate: number, random: () => number, vocabulary: readonly string[]): string {
  const words = text.split(/\s+/);
  const out: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const r = random();
    const w = words[i]!;
    if (r < rate * 0.3) continue;
    else if (r < rate * 0.6) out.push(vocabulary[Math.floor(random() * vocabulary.length)]!);
    else if (r < rate * 0.85) out.push(w, vocabulary[Math.floor(random() * vocabulary.length)]!);
    else if (r < rate && i + 1 < words.length) {
      out.push(words[i + 1]!, w);
      i++;
    } else out.push(w);
  }
  return out.join(' ');
}

/** Paragraphs of the machine's prose files, in a fixed order, exact repeats (normalised) dropped. */
function paragraphs(): string[] {
  const files: string[] = [];
  const list = (dir: string, keep: (name: string) => boolean) => (existsSync(dir) ? readdirSync(dir).filter(keep).sort().map((n) => join(dir, n)) : []);
  files.push(...list('/usr/share/common-licenses', () => true));
  for (const d of list('/usr/share/doc', () => true)) if (existsSync(join(d, 'copyright'))) files.push(join(d, 'copyright'));
  const py = pythonLib();
  if (py !== undefined) files.push(...list(py, (n) => n.endsWith('.py')));
  const modules = join(import.meta.dirname, '..', 'node_modules');
  for (const d of list(modules, (n) => !n.startsWith('.'))) {
    for (const pkg of d.includes('/@') ? list(d, () => true) : [d]) if (existsSync(join(pkg, 'README.md'))) files.push(join(pkg, 'README.md'));
  }
  const seen = new Set<string>();
  const out: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      if (!statSync(file).isFile()) continue;
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    const chunks = file.endsWith('.py') ? [...text.matchAll(/"""([\s\S]*?)"""/g)].map((m) => m[1]!) : [text];
    for (const chunk of chunks) {
      for (const raw of chunk.split(/\n\s*\n/)) {
        const p = raw.replace(/\s+/g, ' ').trim();
        const words = p.split(' ').length;
        if (words < 25 || words > 300 || !prose(p)) continue;
        const key = normalizeText(p);
        if (seen.has(key)) continue;
        seen.add(key);
        out.push(p);
      }
    }
  }
  return out;
}

/** Mostly letters and spaces: skips code blocks, tables and file lists. */
function prose(p: string): boolean {
  let letters = 0;
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i) | 32;
    if ((c >= 97 && c <= 122) || c === 32) letters++;
  }
  return letters / p.length >= 0.85;
}

/** The first Python 3 standard library found (system, then pyenv), or none. */
function pythonLib(): string | undefined {
  const pyenv = process.env.HOME === undefined ? undefined : join(process.env.HOME, '.pyenv/versions');
  const roots = ['/usr/lib', '/usr/local/lib', ...(pyenv !== undefined && existsSync(pyenv) ? readdirSync(pyenv).sort().map((v) => join(pyenv, v, 'lib')) : [])];
  for (const root of roots) {
    if (!existsSync(root)) continue;
    for (const name of readdirSync(root).sort()) {
      if (/^python3\.\d+$/.test(name) && existsSync(join(root, name, 'textwrap.py'))) return join(root, name);
    }
  }
  return undefined;
}

function shuffle<T>(items: T[], random: () => number): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
}

function hex(random: () => number): string {
  return Math.floor(random() * 2 ** 32).toString(16).padStart(8, '0');
}


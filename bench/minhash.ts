/**
 * Near-duplicate MinHash-LSH: Flywheel's near-dedupe operator against Python's rensa and
 * datasketch, on the same prose documents with the same parameters (128 permutations, 16 bands
 * of 8 rows, threshold 0.8, word 3-shingles), in one run:
 *
 *   node --import tsx bench/minhash.ts          (standalone; or benchMinHash() from bench/main.ts)
 *
 * Documents: bench/prose-corpus.ts (this machine's license, copyright, docstring and README
 * paragraphs plus seeded near copies), written normalised to a temporary JSON-lines file for
 * Python. Each side runs in its own process pinned to core 1 (`taskset -c 1`, when present) and
 * times the whole per-document work of a streaming near-dedupe, in order: shingle, sketch, query
 * the LSH index, estimate against the candidates, insert when no candidate is at ≥ 0.8. Flywheel
 * runs the real operator (rxjs curator over sample envelopes, its index in a PartitionState
 * store, committed every 500 samples like a batch), from a fresh store every pass: nothing is
 * cached between passes but compiled code. Median of the passes after a warm-up one. Time is
 * CPU time of the measuring process (process.cpuUsage, Python's time.process_time), not wall
 * time: on a shared, loaded machine the wall clock measures the neighbours; GC threads' CPU
 * time counts against Flywheel.
 * Precision and recall of each side's duplicate flags are taken against the exact-Jaccard
 * decisions (exactDuplicates). Each timed pass seeds the hash functions anew (SEEDS, the same
 * seeds on both sides; datasketch, slow, runs the first only): one seed's precision and recall
 * differ from another's by about ±0.01 (rensa 0.5 on this corpus: 0.931–0.956 precision over 8
 * seeds), as much as the ±0.01 compared, so the rows give the mean over the passes and its range.
 * Where an estimator puts its errors decides the balance of the two: the bias and spread rows
 * give each side's estimate − exact Jaccard over the document pairs at 0.75 ≤ J < 0.85 (all of
 * them, found exactly; every seed), outside the timed work. Index bytes per entry and changelog records per indexed sample
 * come from the Flywheel run's state store.
 *
 * Python: a venv at .cache/bench-venv with bench/python/requirements.txt, made on first use and
 * reused after. Without python3 the anchor rows say so and carry no ratio.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { from, lastValueFrom, toArray } from 'rxjs';
import { newSample, type Envelope, type Sample } from '../lib/envelope.ts';
import { normalizeText } from '../lib/normalize-text.ts';
import { nearDedupe, nearDedupeDefaults, nearDedupeStore, type NearDedupeConfig } from '../operators/dedupe/near-dedupe.ts';
import { PartitionState } from '../streams/state-store.ts';
import { estimateSimilarity, signatureOf } from '../lib/minhash.ts';
import { exactDuplicates, pairsInRange, precisionRecall, proseCorpus, type ProseDoc } from './prose-corpus.ts';
import { median, type BenchRow } from './row.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const VENV = join(ROOT, '.cache', 'bench-venv');
/** One per timed pass, on both sides (the warm-up pass uses the first). */
const SEEDS = [1, 2, 3, 4, 5];
const PASSES = SEEDS.length;
/** The band of exact similarities around the 0.8 threshold whose pairs the bias rows measure. */
const NEAR = [0.75, 0.85] as const;
const BATCH = 500;

/**
 * The operator config the bench runs: the defaults, global scope (as rensa's index), unbounded
 * over the corpus. FLYWHEEL_BENCH_MINHASH_BITS measures another b-bit width (e.g. 8) instead of
 * the default's.
 */
export const benchConfig: NearDedupeConfig = {
  ...nearDedupeDefaults,
  scope: 'global',
  threshold: 0.8,
  minShingles: 1,
  maxEntries: 1_000_000,
  ttlMs: null,
  minhash: { ...nearDedupeDefaults.minhash, bits: Number(process.env.FLYWHEEL_BENCH_MINHASH_BITS || nearDedupeDefaults.minhash.bits) },
};

interface SideResult {
  docsPerSecond: number;
  /** The duplicate flags of each timed pass (one seed each). */
  duplicates: boolean[][];
  /** Per seed, the estimated similarity of each of the near-threshold pairs (not timed). */
  pairEstimates?: number[][];
  version?: string;
  bytesPerEntry?: number;
  recordsPerEntry?: number;
  heapPerDoc?: number;
}

export async function benchMinHash(): Promise<BenchRow[]> {
  const docs = proseCorpus({ paragraphs: 1_000_000, copyShare: 0.5, seed: 11 });
  const truth = exactDuplicates(
    docs.map((d) => d.text),
    benchConfig.threshold,
    benchConfig.minhash,
  );
  const pairs = pairsInRange(
    docs.map((d) => d.text),
    NEAR[0],
    NEAR[1],
    benchConfig.minhash,
  );
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-minhash-'));
  try {
    const docsFile = join(dir, 'docs.json');
    const jsonl = join(dir, 'docs.jsonl');
    writeFileSync(docsFile, JSON.stringify(docs));
    writeFileSync(jsonl, docs.map((d) => JSON.stringify({ text: normalizeText(d.text) })).join('\n'));
    const pairsFile = join(dir, 'pairs.json');
    writeFileSync(pairsFile, JSON.stringify(pairs.map(([i, j]) => [i, j])));
    const python = pythonEnv();
    // Interleaved: Flywheel, rensa, datasketch (slow: fewer passes), Flywheel again; best median per side.
    const fly1 = runFlywheel(docsFile);
    const rensa = python.ok ? runPython(python.bin, jsonl, 'rensa', PASSES, pairsFile) : undefined;
    const datasketch = python.ok ? runPython(python.bin, jsonl, 'datasketch', 1) : undefined;
    const fly2 = runFlywheel(docsFile);
    const fly = fly2.docsPerSecond > fly1.docsPerSecond ? fly2 : fly1;
    fly.pairEstimates = SEEDS.map((seed) => {
      const c = { ...benchConfig.minhash, seed };
      const sigs = new Map<number, Uint32Array>();
      const sig = (i: number) => sigs.get(i) ?? sigs.set(i, signatureOf(docs[i]!.text, c)).get(i)!;
      return pairs.map(([i, j]) => estimateSimilarity(sig(i), sig(j), c));
    });
    const errors = (r: SideResult | undefined) => (r?.pairEstimates === undefined || r.pairEstimates.length === 0 ? undefined : estimateErrors(r.pairEstimates, pairs));
    const flyErrors = errors(fly)!;
    const rensaErrors = errors(rensa);
    const quality = (r: SideResult | undefined) => (r === undefined ? undefined : meanQuality(r.duplicates, truth));
    const ours = quality(fly)!;
    const pr = (q: Quality | undefined) => (q === undefined ? 'n/a' : `P ${q.precision.toFixed(3)} (${q.precisionRange}) R ${q.recall.toFixed(3)} (${q.recallRange}) over ${q.seeds} seed${q.seeds > 1 ? 's' : ''}`);
    const setting = `${docs.length} prose docs, ${ours.duplicates} exact duplicates at J ≥ 0.8; 128 perms (${benchConfig.minhash.bits}-bit rows), 16 bands, word 3-shingles; one core each`;
    const anchorRow = (name: string, r: SideResult | undefined): BenchRow => ({
      figure: `near-dedupe (sketch + LSH query + insert) vs ${name}`,
      unit: 'docs/s',
      flywheel: Math.round(fly.docsPerSecond),
      anchor: r === undefined ? `${name} (not run: ${python.ok ? "" : python.why})` : `${name} ${r.version ?? ''}`.trim(),
      anchorValue: r === undefined ? null : Math.round(r.docsPerSecond),
      target: '≥ 1',
      note: `${setting}; flywheel ${pr(ours)}, ${name} ${pr(quality(r))} (vs exact Jaccard; mean and range over seeds)`,
    });
    return [
      anchorRow('rensa', rensa),
      anchorRow('datasketch', datasketch),
      {
        figure: `near-dedupe precision vs rensa (exact-Jaccard truth, mean of ${SEEDS.length} seeds)`,
        unit: 'precision',
        flywheel: round3(ours.precision),
        anchor: 'rensa',
        anchorValue: rensa === undefined ? null : round3(quality(rensa)!.precision),
        target: '±0.01',
      },
      {
        figure: `near-dedupe recall vs rensa (exact-Jaccard truth, mean of ${SEEDS.length} seeds)`,
        unit: 'recall',
        flywheel: round3(ours.recall),
        anchor: 'rensa',
        anchorValue: rensa === undefined ? null : round3(quality(rensa)!.recall),
        target: '±0.01',
      },
      {
        figure: `near-dedupe estimate bias at ${NEAR[0]} ≤ J < ${NEAR[1]} (mean estimate − exact J)`,
        unit: 'J',
        flywheel: round4(flyErrors.bias),
        // A ratio of two biases means nothing: rensa's goes in the note.
        anchor: '',
        anchorValue: null,
        note: `rensa ${rensaErrors === undefined ? 'n/a' : round4(rensaErrors.bias)}; ${pairs.length} pairs × ${SEEDS.length} seeds; below 0 trades recall for precision at the threshold, above 0 the reverse`,
      },
      {
        figure: `near-dedupe estimate standard deviation at ${NEAR[0]} ≤ J < ${NEAR[1]}`,
        unit: 'J',
        flywheel: round4(flyErrors.sd),
        anchor: 'rensa',
        anchorValue: rensaErrors === undefined ? null : round4(rensaErrors.sd),
        note: `128 independent permutations would give ≈ ${Math.sqrt((0.8 * 0.2) / 128).toFixed(4)} at J = 0.8; flywheel from ${benchConfig.minhash.bits}-bit rows, rensa from 32-bit values`,
      },
      { figure: 'near-dedupe index: key + value bytes per entry', unit: 'bytes', flywheel: Math.round(fly.bytesPerEntry!), anchor: '', anchorValue: null, target: '≤ 200', note: '36-character ids and group ids; the in-memory buckets are not stored' },
      { figure: 'near-dedupe changelog records per indexed sample', unit: 'records', flywheel: round3(fly.recordsPerEntry!), anchor: '', anchorValue: null, target: '≤ 2', note: `batches of ${BATCH}: entry writes + one meta per batch` },
      { figure: 'near-dedupe heap growth per document (index included)', unit: 'bytes', flywheel: Math.round(fly.heapPerDoc!), anchor: '', anchorValue: null, note: 'heap after one pass minus before, ÷ docs; GC not forced at the end (indicative)' },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Quality {
  precision: number;
  recall: number;
  duplicates: number;
  seeds: number;
  precisionRange: string;
  recallRange: string;
}

/** Mean precision and recall of several passes' flags (one seed each), with their ranges. */
function meanQuality(passes: readonly boolean[][], truth: readonly boolean[]): Quality {
  const qs = passes.map((flags) => precisionRecall(flags, truth));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const range = (xs: number[]) => `${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)}`;
  const p = qs.map((q) => q.precision);
  const r = qs.map((q) => q.recall);
  return { precision: mean(p), recall: mean(r), duplicates: qs[0]!.duplicates, seeds: qs.length, precisionRange: range(p), recallRange: range(r) };
}

/** Mean and standard deviation of estimate − exact J over pairs and seeds. */
function estimateErrors(estimates: readonly number[][], pairs: ReadonlyArray<readonly [number, number, number]>): { bias: number; sd: number } {
  let n = 0;
  let sum = 0;
  let squares = 0;
  for (const perSeed of estimates) {
    perSeed.forEach((e, k) => {
      const d = e - pairs[k]![2];
      n++;
      sum += d;
      squares += d * d;
    });
  }
  const bias = sum / n;
  return { bias, sd: Math.sqrt(squares / n - bias * bias) };
}

function round4(x: number): number {
  return Math.round(x * 10000) / 10000;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function pinned(cmd: string, args: string[]): [string, string[]] {
  return hasTaskset() ? ['taskset', ['-c', '1', cmd, ...args]] : [cmd, args];
}

let taskset: boolean | undefined;
function hasTaskset(): boolean {
  taskset ??= spawnSync('taskset', ['-c', '1', 'true']).status === 0;
  return taskset;
}

function runFlywheel(docsFile: string): SideResult {
  const [cmd, args] = pinned(process.execPath, ['--import', 'tsx', '--expose-gc', fileURLToPath(import.meta.url), '--flywheel', docsFile]);
  const out = execFileSync(cmd, args, { cwd: ROOT, maxBuffer: 1 << 28, encoding: 'utf8' });
  return JSON.parse(out) as SideResult;
}

function runPython(python: string, jsonl: string, impl: 'rensa' | 'datasketch', passes: number, pairsFile?: string): SideResult {
  const script = join(ROOT, 'bench', 'python', 'near_dup_anchor.py');
  const flags = ['--impl', impl, '--passes', String(passes), '--seeds', SEEDS.join(','), '--threshold', '0.8', '--perm', '128', '--bands', '16', '--k', '3'];
  const [cmd, args] = pinned(python, [script, jsonl, ...flags, ...(pairsFile === undefined ? [] : ['--pairs', pairsFile])]);
  const out = JSON.parse(execFileSync(cmd, args, { cwd: ROOT, maxBuffer: 1 << 28, encoding: 'utf8' })) as { docs: number; seconds: number[]; duplicates: number[][]; pair_estimates: number[][]; version: string };
  // The first pass warms nothing in CPython's interpreter loop that later ones would not pay.
  const seconds = median(out.seconds);
  return { docsPerSecond: out.docs / seconds, duplicates: out.duplicates.map((f) => f.map(Boolean)), pairEstimates: out.pair_estimates, version: out.version };
}

/** The venv with the anchors, made once (pip from the package index), or why it cannot be. */
function pythonEnv(): { ok: true; bin: string } | { ok: false; why: string } {
  const bin = join(VENV, 'bin', 'python');
  const importable = () => existsSync(bin) && spawnSync(bin, ['-c', 'import rensa, datasketch']).status === 0;
  if (importable()) return { ok: true, bin };
  if (spawnSync('python3', ['--version']).status !== 0) return { ok: false, why: 'no python3' };
  const venv = spawnSync('python3', ['-m', 'venv', VENV], { stdio: 'inherit' });
  if (venv.status !== 0) return { ok: false, why: 'python3 -m venv failed' };
  const pip = spawnSync(join(VENV, 'bin', 'pip'), ['install', '-q', '-r', join(ROOT, 'bench', 'python', 'requirements.txt')], { stdio: 'inherit' });
  if (pip.status !== 0 || !importable()) return { ok: false, why: 'pip install of bench/python/requirements.txt failed' };
  return { ok: true, bin };
}


/** The Flywheel side, in its own (pinned) process: prints a SideResult as JSON. */
async function flywheelSide(docsFile: string): Promise<SideResult> {
  const docs = JSON.parse(readFileSync(docsFile, 'utf8')) as ProseDoc[];
  const T0 = 1_767_225_600_000;
  const group = 'g0000000-0000-4000-8000-000000000000';
  const envelopes = (): Envelope[] =>
    docs.map((d, i) =>
      newSample(
        { id: d.id, run_id: 'bench', prompt_id: 'p', prompt: '', group_id: group, response: d.text, steps: [], model_name: 'm', model_version: 'v1', rewards: {}, logprobs: null, token_count: 0, created_at: T0 + i, tags: {} },
        { topic: 'bench', partition: 0, offset: String(i) },
        Buffer.alloc(0),
        null,
      ),
    );
  const speeds: number[] = [];
  const duplicates: boolean[][] = [];
  let bytes = 0;
  let entries = 0;
  let records = 0;
  let heapPerDoc = 0;
  for (let pass = 0; pass <= PASSES; pass++) {
    // Fresh envelopes, store and operator every pass: no state or cache carries over.
    const input = envelopes();
    const state = new PartitionState(0, [nearDedupeStore.name]);
    const store = state.store(nearDedupeStore.name);
    const config = { ...benchConfig, minhash: { ...benchConfig.minhash, seed: SEEDS[Math.max(0, pass - 1)]! } };
    const op = nearDedupe(config, store);
    const out: Envelope[] = [];
    let passRecords = 0;
    (globalThis as { gc?: () => void }).gc?.();
    const heapBefore = process.memoryUsage().heapUsed;
    const start = process.cpuUsage();
    for (let i = 0; i < input.length; i += BATCH) {
      out.push(...(await lastValueFrom(from(input.slice(i, i + BATCH)).pipe(op, toArray()))));
      passRecords += state.pendingChanges().length;
      state.commit();
    }
    const used = process.cpuUsage(start);
    const seconds = (used.user + used.system) / 1e6;
    if (pass === 0) {
      heapPerDoc = (process.memoryUsage().heapUsed - heapBefore) / input.length;
      continue; // warm-up
    }
    speeds.push(input.length / seconds);
    duplicates.push(out.map((e) => (e as Sample).reasons.includes('near_duplicate')));
    entries = out.filter((e) => (e as Sample).reasons.length === 0).length;
    records = passRecords;
    bytes = 0;
    for (let slot = 0; ; slot++) {
      const v = store.get(`e/${slot}`);
      if (v === undefined) break;
      bytes += Buffer.byteLength(`e/${slot}`) + Buffer.byteLength(v);
    }
  }
  return { docsPerSecond: median(speeds), duplicates, bytesPerEntry: bytes / entries, recordsPerEntry: records / entries, heapPerDoc };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--flywheel');
  if (i >= 0) {
    process.stdout.write(JSON.stringify(await flywheelSide(process.argv[i + 1]!)));
  } else {
    const rows = await benchMinHash();
    const { ratio } = await import('./row.ts');
    for (const row of rows) {
      const r = ratio(row);
      console.log(`${row.figure}: ${row.flywheel} ${row.unit}${row.anchorValue === null ? '' : ` vs ${row.anchor} ${row.anchorValue} → ${r === null ? '' : r.toFixed(2)}`}${row.target ? ` (target ${row.target})` : ''}${row.note ? `\n    ${row.note}` : ''}`);
    }
  }
}

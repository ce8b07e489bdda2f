/**
 * Semantic dedupe at scale: the semantic-dedupe operator on its HNSW index (lib/vector-index.ts,
 * usearch) with 100,000 indexed 384-dimensional embeddings, against brute force (the exact scan,
 * exactVectorIndex) over the same embeddings, in one run:
 *
 *   node --import tsx bench/semantic-index.ts     (standalone; or benchSemanticIndex() from bench/main.ts)
 *
 * Embeddings: seeded synthetic unit vectors shaped like a sentence encoder's (all-MiniLM-L6-v2
 * has 384 dimensions): 2,000 topics, documents of one topic at cosine ≈ 0.5, a quarter of the
 * measured documents near copies of indexed ones (cosine ≈ 0.95; threshold 0.9). The encoder is
 * a lookup, so the figure is the operator's own work per document — nearest-neighbour query,
 * insert into the index, the store write (base64 vector in the changelog) — not the model's.
 *
 * Timed: CPU time (process.cpuUsage) of a process pinned to core 1 (taskset, when present), per
 * document, over documents offered after 100,000 were indexed. Flywheel: the real operator (rxjs
 * curator, PartitionState store committed every 512 samples), 2,000 documents. Anchor: the same
 * decisions made by an exact scan over the same 100,000 embeddings (search + add), 200 documents,
 * whose decisions are also the truth for the operator's recall. Memory per indexed document:
 * growth of the process's resident set over the 100,000 inserts (index, mirror and store),
 * and the store's key + value characters per entry (the changelog payload). Then the same in a
 * second process with `index: "clusters"` (SemDeDup-style, lib/vector-index.ts), its time per
 * document beside HNSW's and its recall against the same exact scan.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { from, lastValueFrom, toArray } from 'rxjs';
import { prng } from '../cli/synthetic.ts';
import { newSample, type Envelope, type Sample } from '../lib/envelope.ts';
import { clusterDefaults, exactVectorIndex } from '../lib/vector-index.ts';
import { semanticDedupe, semanticDedupeDefaults, semanticDedupeStore, type Encoder, type SemanticDedupeConfig } from '../operators/dedupe/semantic-dedupe.ts';
import { PartitionState } from '../streams/state-store.ts';
import type { Rollout } from '../contracts/records.ts';
import type { BenchRow } from './row.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DIMS = 384;
const INDEXED = 100_000;
const MEASURED = 2_000;
const ANCHORED = 200;
const BATCH = 512;
const config: SemanticDedupeConfig = { ...semanticDedupeDefaults, threshold: 0.9, maxEntries: 1_000_000, ttlMs: null, index: 'hnsw', maxBatch: 64, latencyMs: 600_000 };

interface SideResult {
  fillMsPerDoc: number;
  msPerDoc: number;
  anchorMsPerDoc: number;
  recall: number;
  anchorDuplicates: number;
  falseDuplicates: number;
  rssPerDoc: number;
  storeCharsPerEntry: number;
}

type Index = 'hnsw' | 'clusters';

export async function benchSemanticIndex(): Promise<BenchRow[]> {
  const hasTaskset = spawnSync('taskset', ['-c', '1', 'true']).status === 0;
  const measure = (index: Index) => {
    const args = ['--import', 'tsx', fileURLToPath(import.meta.url), '--side', index];
    const [cmd, argv] = hasTaskset ? ['taskset', ['-c', '1', process.execPath, ...args]] : [process.execPath, args];
    return JSON.parse(execFileSync(cmd, argv, { cwd: ROOT, maxBuffer: 1 << 26, encoding: 'utf8' })) as SideResult;
  };
  const r = measure('hnsw');
  const c = measure('clusters');
  const setting = `${INDEXED} indexed ${DIMS}-dim embeddings, threshold ${config.threshold}; one core${hasTaskset ? ' (taskset -c 1)' : ''}; CPU time`;
  return [
    {
      figure: 'semantic-dedupe query+insert per document at 100k (HNSW) vs brute force',
      unit: 'docs/ms',
      flywheel: 1 / r.msPerDoc,
      anchor: 'exact scan',
      anchorValue: 1 / r.anchorMsPerDoc,
      target: '≥ 1; ≤ 2 ms per document',
      note: `${setting}; HNSW ${r.msPerDoc.toFixed(3)} ms/doc (mean over the whole fill ${r.fillMsPerDoc.toFixed(3)}), exact ${r.anchorMsPerDoc.toFixed(2)} ms/doc`,
    },
    { figure: 'semantic-dedupe ms per document at 100k (HNSW)', unit: 'ms', flywheel: r.msPerDoc, anchor: '', anchorValue: null, target: '≤ 2' },
    {
      figure: 'semantic-dedupe recall vs brute force',
      unit: 'recall',
      flywheel: r.recall,
      anchor: '',
      anchorValue: null,
      target: '≥ 0.95',
      note: `over ${ANCHORED} documents: ${r.anchorDuplicates} duplicates by the exact scan, ${r.falseDuplicates} flagged by HNSW that the scan did not`,
    },
    { figure: 'semantic-dedupe memory per indexed document (RSS growth)', unit: 'bytes', flywheel: Math.round(r.rssPerDoc), anchor: '', anchorValue: null, note: 'HNSW graph (int8) + float32 mirror + the store\'s strings' },
    { figure: 'semantic-dedupe store key + value per entry', unit: 'chars', flywheel: Math.round(r.storeCharsPerEntry), anchor: '', anchorValue: null, note: 'base64 float32 vector + ids + time: the changelog payload' },
    {
      figure: 'semantic-dedupe query+insert per document at 100k (index "clusters", SemDeDup-style) vs HNSW',
      unit: 'docs/ms',
      flywheel: 1 / c.msPerDoc,
      anchor: 'HNSW, same run',
      anchorValue: 1 / r.msPerDoc,
      note: `${clusterDefaults.clusters} clusters, ${clusterDefaults.probes} probed: ${c.msPerDoc.toFixed(3)} ms/doc (mean over the whole fill ${c.fillMsPerDoc.toFixed(3)}); ${Math.round(c.rssPerDoc)} bytes RSS per document`,
    },
    {
      figure: 'semantic-dedupe recall vs brute force (index "clusters")',
      unit: 'recall',
      flywheel: c.recall,
      anchor: '',
      anchorValue: null,
      target: '≥ 0.95',
      note: `over ${ANCHORED} documents: ${c.anchorDuplicates} duplicates by the exact scan, ${c.falseDuplicates} flagged that the scan did not`,
    },
  ];
}

/** Seeded embeddings: INDEXED + MEASURED unit vectors (see the file comment). */
function embeddings(): { vectors: Float32Array[]; copyOf: number[] } {
  const next = prng(23);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  const unit = (v: Float32Array) => {
    let n = 0;
    for (const x of v) n += x * x;
    const s = 1 / Math.sqrt(n);
    return v.map((x) => x * s);
  };
  const noisy = (base: Float32Array, norm: number) => unit(base.map((x) => x + (norm / Math.sqrt(DIMS)) * gauss()));
  const topics = Array.from({ length: 2000 }, () => unit(Float32Array.from({ length: DIMS }, gauss)));
  const vectors: Float32Array[] = [];
  const copyOf: number[] = [];
  for (let i = 0; i < INDEXED + MEASURED; i++) {
    const copy = i >= INDEXED && next() < 0.25;
    const source = Math.floor(next() * INDEXED);
    vectors.push(copy ? noisy(vectors[source]!, 0.3) : noisy(topics[Math.floor(next() * topics.length)]!, 1));
    copyOf.push(copy ? source : -1);
  }
  return { vectors, copyOf };
}

/** Document i: its response is its embedding's index (the lookup encoder reads it back). */
const doc = (i: number): Rollout => ({
  id: `doc-${i}`, run_id: 'bench', prompt_id: `p${i % 1000}`, prompt: '', group_id: `g${i % 1000}`, response: String(i), steps: [],
  model_name: 'policy', model_version: 'v1', rewards: {}, logprobs: null, token_count: 1, created_at: 1_700_000_000_000 + i, tags: {},
});

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function side(index: Index): Promise<SideResult> {
  const { vectors } = embeddings();
  // The encoder is a lookup: the text is "\n<index>" (global scope embeds prompt + "\n" + response).
  const encoder: Encoder = { version: 'bench', embed: async (texts) => texts.map((t) => vectors[Number(t.slice(t.lastIndexOf('\n') + 1))]!) };
  const samples = vectors.map((_, i) => newSample(doc(i), { topic: 't', partition: 0, offset: String(i) }, Buffer.alloc(0), null));
  const state = new PartitionState(0, [semanticDedupeStore.name]);
  const store = state.store(semanticDedupeStore.name);
  const dedupe = semanticDedupe({ ...config, index }, encoder, store);
  const run = async (from_: number, to: number): Promise<Sample[]> => {
    const out: Sample[] = [];
    for (let at = from_; at < to; at += BATCH) {
      const batch = await lastValueFrom(from(samples.slice(at, Math.min(to, at + BATCH)) as Envelope[]).pipe(dedupe, toArray()));
      state.commit();
      for (const e of batch) if (e.kind === 'sample') out.push(e);
    }
    return out;
  };

  const rss0 = process.memoryUsage().rss;
  let t = cpuMs();
  await run(0, INDEXED);
  const fillMsPerDoc = (cpuMs() - t) / INDEXED;
  const rssPerDoc = (process.memoryUsage().rss - rss0) / INDEXED;
  let chars = 0;
  for (let seq = 0; seq < INDEXED; seq++) {
    const v = store.get(`e:${seq}`);
    if (v !== undefined) chars += `e:${seq}`.length + v.length;
  }
  const entries = store.size - 1;

  t = cpuMs();
  const measured = await run(INDEXED, INDEXED + MEASURED);
  const msPerDoc = (cpuMs() - t) / MEASURED;

  // Anchor: brute force over the same embeddings the operator indexed, deciding the same way.
  const exact = exactVectorIndex(DIMS);
  for (let i = 0; i < INDEXED; i++) exact.add(i, vectors[i]!);
  t = cpuMs();
  const truth: boolean[] = [];
  for (let i = INDEXED; i < INDEXED + ANCHORED; i++) {
    const [best] = exact.search(vectors[i]!, 1);
    const duplicate = best !== undefined && best.similarity >= config.threshold;
    if (!duplicate) exact.add(i, vectors[i]!);
    truth.push(duplicate);
  }
  const anchorMsPerDoc = (cpuMs() - t) / ANCHORED;
  const found = measured.slice(0, ANCHORED).map((s) => s.reasons.includes('near_duplicate:semantic'));
  const anchorDuplicates = truth.filter(Boolean).length;
  return {
    fillMsPerDoc,
    msPerDoc,
    anchorMsPerDoc,
    recall: anchorDuplicates === 0 ? 1 : truth.filter((d, i) => d && found[i]).length / anchorDuplicates,
    anchorDuplicates,
    falseDuplicates: found.filter((f, i) => f && !truth[i]).length,
    rssPerDoc,
    storeCharsPerEntry: chars / entries,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf('--side');
  if (at >= 0) process.stdout.write(JSON.stringify(await side(process.argv[at + 1] === 'clusters' ? 'clusters' : 'hnsw')));
  else {
    const { ratio } = await import('./row.ts');
    for (const row of await benchSemanticIndex()) {
      const r = ratio(row);
      console.log(`${row.figure}: ${Number(row.flywheel.toPrecision(4))} ${row.unit}${row.anchorValue === null ? '' : ` vs ${row.anchor} ${Number(row.anchorValue.toPrecision(4))} → ${r === null ? '' : r.toFixed(1)}`}${row.target ? ` (target ${row.target})` : ''}${row.note ? `\n    ${row.note}` : ''}`);
    }
  }
}

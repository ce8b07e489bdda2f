import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lastValueFrom, Subject, tap, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prng } from '../cli/synthetic.ts';
import { proseCorpus } from '../bench/prose-corpus.ts';
import { parseConfig } from '../pipeline/config.ts';
import { startPipeline } from '../pipeline/run.ts';
import { openStore } from '../sinks/clickhouse/store.ts';
import type { Decision, Rollout } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { clusteredVectorIndex, exactVectorIndex, hnswVectorIndex } from '../lib/vector-index.ts';
import { connections, consumeTopic, testKafka, uniquePrefix } from './helpers/kafka.ts';
import type { Envelope, Sample } from '../lib/envelope.ts';
import { featureDefaults, type FeatureConfig } from '../contracts/features.ts';
import { OnnxEncoder } from '../pipeline/onnx-models.ts';
import { seedSemanticDedupe } from '../pipeline/corpus-seed.ts';
import { semanticDedupe, semanticDedupeDefaults, semanticDedupeStore, type Encoder, type SemanticDedupeConfig } from '../operators/dedupe/semantic-dedupe.ts';
import { PartitionState } from '../streams/state-store.ts';
import { projectionEncoderOnnx } from '../contracts/onnx-codec.ts';
import { rollout, sample, samplesOf, through } from './helpers/envelopes.ts';

const features: FeatureConfig = { ...featureDefaults, dims: 1024 };

/** A random Gaussian projection 1024 → 256: it keeps cosine similarities close (Johnson–Lindenstrauss). */
function randomProjection(seed: number, version: string): Uint8Array {
  const [inputDim, outputDim] = [features.dims, 256];
  const next = prng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  return projectionEncoderOnnx({ matrix: Float32Array.from({ length: inputDim * outputDim }, gauss), inputDim, outputDim, version });
}

/** The ONNX encoder, counting its calls (it wraps the real encoder, it does not replace it). */
function counting(encoder: Encoder): Encoder & { calls: number[] } {
  const calls: number[] = [];
  return { version: encoder.version, calls, embed: (texts) => (calls.push(texts.length), encoder.embed(texts)) };
}

const originals = [
  'To solve 3x + 5 = 20, subtract 5 from both sides to get 3x = 15, then divide by 3. Answer: 5',
  'The capital of France is Paris, which lies on the river Seine. Answer: Paris',
  'Photosynthesis converts light energy, water and carbon dioxide into glucose and oxygen.',
  'A prime number has exactly two divisors: one and itself. The first primes are 2, 3, 5, 7 and 11.',
];
/** Light edits of each original: case, punctuation, one word changed or moved. */
const nearCopies = [
  'to solve 3x + 5 = 20, subtract 5 from both sides to get 3x = 15 and then divide by 3. Answer: 5',
  'The capital of France is Paris, which lies on the Seine river.  Answer: Paris',
  'Photosynthesis turns light energy, water and carbon dioxide into glucose and oxygen!',
  'A prime number has exactly two divisors, 1 and itself; the first primes are 2, 3, 5, 7, 11.',
];
/** Same template, different content: must not count as duplicates. */
const unrelated = [
  'To solve 2x - 4 = 10, add 4 to both sides to get 2x = 14, then divide by 2. Answer: 7',
  'The capital of Italy is Rome, on the river Tiber. Answer: Rome',
];

const text = (id: string, response: string, group = 'g'): Sample => sample({ id, prompt: '', response, group_id: group });

let bytes: Uint8Array;
let encoder: OnnxEncoder;
beforeAll(async () => {
  bytes = randomProjection(42, 'rp-1');
  encoder = await OnnxEncoder.load(bytes, { features });
});

const config = (overrides: Partial<SemanticDedupeConfig> = {}): SemanticDedupeConfig => ({ ...semanticDedupeDefaults, threshold: 0.8, ...overrides });
const newStore = () => new PartitionState(0, [semanticDedupeStore.name]);

describe('semanticDedupe', () => {
  it('catches near copies and lets unrelated texts through, naming the most similar sample', async () => {
    const state = newStore();
    const input = [...originals.map((t, i) => text(`o${i}`, t)), ...unrelated.map((t, i) => text(`u${i}`, t)), ...nearCopies.map((t, i) => text(`n${i}`, t))];
    const out = samplesOf(await through(semanticDedupe(config(), encoder, state.store(semanticDedupeStore.name)), input));
    expect(out.map((s) => s.reasons)).toEqual([...originals.map(() => []), ...unrelated.map(() => []), ...nearCopies.map(() => ['near_duplicate:semantic'])]);
    expect(out.slice(6).map((s) => s.duplicateOf)).toEqual(['o0', 'o1', 'o2', 'o3']);
    for (const s of out.slice(6)) {
      expect(s.dedupeMethod).toBe('semantic');
      expect(s.scores['semantic.similarity']).toBeGreaterThanOrEqual(0.8);
    }
    for (const s of out.slice(1, 6)) expect(s.scores['semantic.similarity']).toBeLessThan(0.8);
    expect(out[0]!.scores).toEqual({}); // nothing to compare with yet
  });

  it('embeds each batch in one call, compares within the batch, and keeps ticks and dead letters in order', async () => {
    const counted = counting(encoder);
    const dead: Envelope = { kind: 'dead', source: { topic: 't', partition: 0, offset: 'x' }, payload: null, key: null, stage: 'decode', reason: 'bad' };
    const input: Envelope[] = [text('a', originals[0]!), dead, text('b', nearCopies[0]!), { kind: 'tick', now: 1 }, text('c', originals[1]!)];
    const out = await through(semanticDedupe(config({ maxBatch: 10, latencyMs: 600_000 }), counted, newStore().store(semanticDedupeStore.name)), input);
    expect(out.map((e) => (e.kind === 'sample' ? `${e.rollout.id}:${e.reasons.join()}` : e.kind))).toEqual(['a:', 'dead', 'b:near_duplicate:semantic', 'tick', 'c:']);
    expect(counted.calls).toEqual([2, 1]); // [a dead b tick] ends at the tick, [c] at completion
  });

  it('neither checks nor remembers samples already rejected', async () => {
    const out = samplesOf(
      await through(semanticDedupe(config(), encoder, newStore().store(semanticDedupeStore.name)), [
        text('a', originals[0]!),
        sample({ id: 'r', prompt: '', response: originals[1]!, group_id: 'g' }, { reasons: ['below_min:rule'] }),
        text('b', nearCopies[1]!),
      ]),
    );
    expect(out.map((s) => s.reasons)).toEqual([[], ['below_min:rule'], []]);
    expect(out[1]!.scores).toEqual({});
  });

  it('embeds, compares and remembers only the samples `when` selects; the others pass untouched', async () => {
    const counted = counting(encoder);
    const tagged = (id: string, response: string, source: string) => sample({ id, prompt: '', response, group_id: 'g', tags: { source } });
    const out = samplesOf(
      await through(semanticDedupe(config({ when: "tags.source == 'forum'" }), counted, newStore().store(semanticDedupeStore.name)), [
        tagged('a', originals[0]!, 'forum'),
        tagged('b', nearCopies[0]!, 'template'), // a copy, but not selected: neither checked nor remembered
        tagged('c', originals[1]!, 'template'),
        tagged('d', nearCopies[1]!, 'forum'), // c was not remembered
        tagged('e', nearCopies[0]!, 'forum'),
      ]),
    );
    expect(out.map((s) => s.duplicateOf)).toEqual([null, null, null, null, 'a']);
    expect(out[1]!.scores).toEqual({});
    expect(counted.calls.reduce((a, b) => a + b, 0)).toBe(3);
  });

  it('refuses a `when` that does not parse, at the config edge, naming the field', () => {
    expect(() => parseConfig({ name: 'x', operators: [{ type: 'semantic-dedupe', when: "tags.source = 'x'", encoder: { path: 'e.onnx' } }] })).toThrow(/operators\[0\]\.when/);
  });

  it('seeds a store as streaming the same items would: bounded by maxEntries and TTL, `when` applied', async () => {
    const t0 = 1_700_000_000_000;
    const items = [
      ...originals.map((t, i) => ({ id: `o${i}`, prompt: '', response: t, groupId: 'g', at: t0 + i * 1000, tags: { source: 'forum' } })),
      { id: 'x', prompt: '', response: unrelated[0]!, groupId: 'g', at: t0 + 9000, tags: { source: 'template' } },
      { id: 'n3', prompt: '', response: nearCopies[3]!, groupId: 'g', at: t0 + 9000, tags: { source: 'forum' } },
    ];
    async function* from<T>(xs: T[]) {
      yield* xs;
    }
    const c = config({ maxEntries: 3, when: "tags.source == 'forum'", maxBatch: 2 });
    const seeded = newStore();
    expect(await seedSemanticDedupe(seeded.store(semanticDedupeStore.name), c, encoder, from(items))).toEqual({ inserted: 4, duplicates: 1, skipped: 1 });
    const streamed = newStore();
    await through(semanticDedupe(c, encoder, streamed.store(semanticDedupeStore.name)), items.map((i) => sample({ id: i.id, prompt: '', response: i.response, group_id: 'g', created_at: i.at, tags: i.tags })));
    expect(seeded.pendingChanges()).toEqual(streamed.pendingChanges());
    seeded.commit();
    expect(seeded.store(semanticDedupeStore.name).size).toBe(4); // meta + maxEntries
  });

  it('compares only within a prompt group in group scope', async () => {
    const out = samplesOf(
      await through(semanticDedupe(config({ scope: 'group' }), encoder, newStore().store(semanticDedupeStore.name)), [
        text('a', originals[0]!, 'g1'),
        text('b', nearCopies[0]!, 'g2'),
        text('c', nearCopies[0]!, 'g1'),
      ]),
    );
    expect(out.map((s) => s.duplicateOf)).toEqual([null, null, 'a']);
  });

  it('forgets the oldest embedding beyond maxEntries, keeping the store bounded', async () => {
    const state = newStore();
    const store = state.store(semanticDedupeStore.name);
    const dedupe = semanticDedupe(config({ maxEntries: 2 }), encoder, store);
    await through(dedupe, originals.slice(0, 3).map((t, i) => text(`o${i}`, t)));
    state.commit();
    expect(store.size).toBe(3); // meta + 2 entries
    const out = samplesOf(await through(dedupe, [text('n0', nearCopies[0]!), text('n2', nearCopies[2]!)]));
    // o0 was evicted; n0 was then remembered in its place, evicting o1.
    expect(out.map((s) => s.duplicateOf)).toEqual([null, 'o2']);
  });

  it('continues in a new instance on the same store, and on a store restored from its changelog', async () => {
    const state = newStore();
    await through(semanticDedupe(config(), encoder, state.store(semanticDedupeStore.name)), originals.map((t, i) => text(`o${i}`, t)));
    const changelog = state.pendingChanges().filter((c) => c.value !== null);
    state.commit();
    const again = samplesOf(await through(semanticDedupe(config(), encoder, state.store(semanticDedupeStore.name)), [text('n3', nearCopies[3]!)]));
    expect(again[0]!.duplicateOf).toBe('o3');

    const restarted = newStore();
    restarted.restore(semanticDedupeStore.name, new Map(changelog.map((c) => [c.key, c.value!])));
    const freshEncoder = await OnnxEncoder.load(bytes, { features });
    const out = samplesOf(await through(semanticDedupe(config(), freshEncoder, restarted.store(semanticDedupeStore.name)), nearCopies.map((t, i) => text(`n${i}`, t))));
    expect(out.map((s) => s.duplicateOf)).toEqual(['o0', 'o1', 'o2', 'o3']);
    await freshEncoder.dispose();
  });

  it('forgets what an aborted batch remembered, though the operator instance lives on', async () => {
    const state = newStore();
    const dedupe = semanticDedupe(config(), encoder, state.store(semanticDedupeStore.name));
    await through(dedupe, [text('o0', originals[0]!)]);
    state.commit();
    await through(dedupe, [text('o1', originals[1]!)]);
    state.abort();
    const out = samplesOf(await through(dedupe, [text('n1', nearCopies[1]!), text('n0', nearCopies[0]!)]));
    expect(out.map((s) => s.duplicateOf)).toEqual([null, 'o0']);
  });

  it('does not compare embeddings of another encoder version', async () => {
    const store = newStore().store(semanticDedupeStore.name);
    await through(semanticDedupe(config(), encoder, store), [text('o0', originals[0]!)]);
    const other = await OnnxEncoder.load(randomProjection(7, 'rp-2'), { features });
    const out = samplesOf(await through(semanticDedupe(config(), other, store), [text('n0', nearCopies[0]!)]));
    expect(out[0]!.reasons).toEqual([]);
    await other.dispose();
  });

  it('passes empty and ticks-only input without calling the encoder', async () => {
    const counted = counting(encoder);
    const dedupe = semanticDedupe(config(), counted, newStore().store(semanticDedupeStore.name));
    const ticks: Envelope[] = [{ kind: 'tick', now: 1 }, { kind: 'tick', now: 2 }];
    expect(await through(dedupe, [])).toEqual([]);
    expect(await through(dedupe, ticks)).toEqual(ticks);
    expect(counted.calls).toEqual([]);
  });

  it('errors the stream when the encoder fails, and flushes on latency without completion', async () => {
    const failing: Encoder = { version: 'x', embed: () => Promise.reject(new Error('encoder down')) };
    await expect(through(semanticDedupe(config(), failing, newStore().store(semanticDedupeStore.name)), [text('a', 'x')])).rejects.toThrow('encoder down');

    const input = new Subject<Envelope>();
    const received: Sample[] = [];
    const done = lastValueFrom(input.pipe(semanticDedupe(config({ latencyMs: 5 }), encoder, newStore().store(semanticDedupeStore.name)), tap((e) => e.kind === 'sample' && received.push(e)), toArray()));
    input.next(text('a', originals[0]!));
    await expect.poll(() => received.length, { timeout: 2000 }).toBe(1);
    input.next(text('b', nearCopies[0]!));
    input.complete();
    await done;
    expect(received.map((s) => s.duplicateOf)).toEqual([null, 'a']);
  });
});

describe('semanticDedupe on its HNSW index', () => {
  /** Paragraphs of real prose (files on this machine) and their edited near copies, shuffled by the corpus seed. */
  const docs = proseCorpus({ paragraphs: 1500, copyShare: 0.3, seed: 11 });
  const prose = docs.map((d, i) => sample({ id: `d${i}`, prompt: '', response: d.text, group_id: `g${i}` }));

  it.each(['hnsw', 'clusters'] as const)('%s: finds the duplicates the exact scan finds (recall >= 0.95 at the threshold), deciding the rest alike', async (index) => {
    const run = async (index: SemanticDedupeConfig['index']) =>
      samplesOf(await through(semanticDedupe(config({ index, maxEntries: 100_000, clusters: 32 }), encoder, newStore().store(semanticDedupeStore.name)), prose));
    const [exact, hnsw] = [await run('exact'), await run(index)];
    const dupes = (out: Sample[]) => out.map((s) => s.reasons.includes('near_duplicate:semantic'));
    const [truth, found] = [dupes(exact), dupes(hnsw)];
    const relevant = truth.filter(Boolean).length;
    expect(relevant).toBeGreaterThan(100); // the corpus has near copies at this threshold
    const recalled = truth.filter((t, i) => t && found[i]).length;
    expect(recalled / relevant).toBeGreaterThanOrEqual(0.95);
    // Its similarities are exact (re-ranked), so it never calls a duplicate what the scan would not.
    expect(found.filter((f, i) => f && !truth[i])).toEqual([]);
  });

  it('forgets embeddings older than ttlMs in event time, and keeps those within it', async () => {
    const at = (id: string, response: string, created_at: number) => sample({ id, prompt: '', response, group_id: 'g', created_at });
    const t0 = 1_700_000_000_000;
    const dedupe = semanticDedupe(config({ ttlMs: 60_000 }), encoder, newStore().store(semanticDedupeStore.name));
    const out = samplesOf(
      await through(dedupe, [
        at('o0', originals[0]!, t0),
        at('o1', originals[1]!, t0 + 30_000),
        // 90 s after o0 (expired), 60 s after o1 (not expired: strictly older than the TTL expires).
        at('n0', nearCopies[0]!, t0 + 90_000),
        at('n1', nearCopies[1]!, t0 + 90_000),
        // An old event time does not move the clock back.
        at('m0', nearCopies[0]!, t0),
      ]),
    );
    expect(out.map((s) => s.duplicateOf)).toEqual([null, null, null, 'o1', 'n0']);
  });

  it('after a restore from its changelog, rebuilds the index and evicts by count as before', async () => {
    const state = newStore();
    const bounded = config({ maxEntries: 3 });
    await through(semanticDedupe(bounded, encoder, state.store(semanticDedupeStore.name)), originals.map((t, i) => text(`o${i}`, t)));
    const changelog = new Map<string, string>();
    for (const c of state.pendingChanges()) c.value === null ? changelog.delete(c.key) : changelog.set(c.key, c.value);
    expect([...changelog.keys()].filter((k) => k.startsWith('e:'))).toEqual(['e:1', 'e:2', 'e:3']); // o0 evicted (count)
    const restored = newStore();
    restored.restore(semanticDedupeStore.name, changelog);
    const copies = [3, 2, 0, 1].map((i) => text(`n${i}`, nearCopies[i]!));
    const out = samplesOf(await through(semanticDedupe(bounded, encoder, restored.store(semanticDedupeStore.name)), copies));
    // n0 finds nothing (o0 was evicted) and is remembered, evicting o1: so n1 finds nothing either.
    expect(out.map((s) => s.duplicateOf)).toEqual(['o3', 'o2', null, null]);
  });
});

describe('VectorIndex', () => {
  const unitRandom = (next: () => number, d: number) => {
    const v = Float32Array.from({ length: d }, () => next() - 0.5);
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  };

  it('HNSW returns the exact index\'s nearest neighbour for nearly every query, with exact similarities, and forgets removed keys', () => {
    const next = prng(5);
    const [hnsw, exact] = [hnswVectorIndex(64), exactVectorIndex(64)];
    const vectors = Array.from({ length: 3000 }, () => unitRandom(next, 64));
    vectors.forEach((v, key) => (hnsw.add(key, v), exact.add(key, v)));
    for (let key = 0; key < 3000; key += 3) (hnsw.remove(key), exact.remove(key));
    expect([hnsw.count, exact.count]).toEqual([2000, 2000]);
    let same = 0;
    for (let q = 0; q < 200; q++) {
      const query = unitRandom(next, 64);
      const [a] = hnsw.search(query, 1);
      const [b] = exact.search(query, 1);
      expect(a!.key % 3).not.toBe(0);
      if (a!.key === b!.key) (same++, expect(a!.similarity).toBeCloseTo(b!.similarity, 6));
    }
    expect(same / 200).toBeGreaterThanOrEqual(0.95);
    expect(hnsw.search(vectors[1]!, 2, (key) => key !== 1).map((h) => h.key)).not.toContain(1);
    expect(() => hnsw.add(1, new Float32Array(3))).toThrow('a vector of 3 dimensions given to an index of 64');
  });

  it('clusters (SemDeDup-style) finds the original of nearly every near copy, with exact similarities, and forgets removed keys', () => {
    const next = prng(7);
    const [clustered, exact] = [clusteredVectorIndex(64, { clusters: 40, probes: 3 }), exactVectorIndex(64)];
    // Embeddings come in topics: 100 topic directions, each vector one of them plus its own noise.
    const topics = Array.from({ length: 100 }, () => unitRandom(next, 64));
    const around = (v: Float32Array, spread: number) => {
      const noise = unitRandom(next, 64);
      const w = v.map((x, d) => x + noise[d]! * spread);
      const norm = Math.hypot(...w);
      return w.map((x) => x / norm);
    };
    const vectors = Array.from({ length: 4000 }, (_, i) => around(topics[i % 100]!, 1));
    vectors.forEach((v, key) => (clustered.add(key, v), exact.add(key, v)));
    for (let key = 0; key < 4000; key += 4) (clustered.remove(key), exact.remove(key));
    expect([clustered.count, exact.count]).toEqual([3000, 3000]);
    let [same, asked] = [0, 0];
    for (let q = 0; q < 4000; q += 10) {
      const query = around(vectors[q]!, 0.4); // a near copy: cosine ≈ 0.93 with its original
      const [a] = clustered.search(query, 1);
      if (q % 4 === 0) {
        expect(a?.key).not.toBe(q);
        continue;
      }
      const [b] = exact.search(query, 1);
      asked++;
      if (a !== undefined && a.key === b!.key) (same++, expect(a.similarity).toBeCloseTo(b!.similarity, 6));
    }
    expect(same / asked).toBeGreaterThanOrEqual(0.95);
    expect(() => clusteredVectorIndex(64, { clusters: 0, probes: 1 })).toThrow('clusters must be an integer >= 1');
  });

  it('HNSW stays bounded and accurate under a sliding window of adds and removes (as count eviction does)', () => {
    const next = prng(6);
    const [hnsw, exact] = [hnswVectorIndex(64), exactVectorIndex(64)];
    const vectors: Float32Array[] = [];
    for (let key = 0; key < 8000; key++) {
      vectors.push(unitRandom(next, 64));
      hnsw.add(key, vectors[key]!);
      exact.add(key, vectors[key]!);
      if (key >= 1000) (hnsw.remove(key - 1000), exact.remove(key - 1000));
    }
    expect([hnsw.count, exact.count]).toEqual([1000, 1000]);
    let same = 0;
    for (let q = 0; q < 200; q++) {
      const query = unitRandom(next, 64);
      if (hnsw.search(query, 1)[0]!.key === exact.search(query, 1)[0]!.key) same++;
    }
    expect(same / 200).toBeGreaterThanOrEqual(0.95);
  });
});

describe('semantic-dedupe in a pipeline restarted from its changelog', () => {
  const prefix = uniquePrefix('semantic-restart');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-semantic-restart-'));
  const kafka = testKafka('semantic-restart');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('catches a near copy of a document accepted before the restart', async () => {
    const path = join(dir, 'encoder.onnx');
    writeFileSync(path, bytes);
    const config = parseConfig({
      name: 'semantic-restart',
      run: prefix,
      // One partition: each partition dedupes against its own store, and originals and copies are keyed by different groups.
      topics: { prefix, partitions: 1 },
      features,
      operators: [{ type: 'semantic-dedupe', encoder: { path }, threshold: 0.8, latencyMs: 5 }],
      clickhouse: { path: join(dir, 'clickhouse') },
    });
    const registry = registryClient(connections.schemaRegistryUrl);
    const decided: Decision[] = [];
    const decide = async (pipeline: { catalog: { rollouts: string; decisions: string } }, batch: Rollout[]) => {
      await produceRollouts(kafka, await rolloutSerde(registry, pipeline.catalog.rollouts), batch);
      const serde = await decisionSerde(registry, pipeline.catalog.decisions);
      const messages = await consumeTopic(kafka, pipeline.catalog.decisions, (m) => m.length >= decided.length + batch.length, { settleMs: 500 });
      decided.splice(0, decided.length, ...(await Promise.all(messages.map((m) => serde.deserialize(m.value!)))));
      return batch.map((r) => decided.find((d) => d.rollout.id === r.id)!);
    };
    const doc = (id: string, response: string) => rollout({ id, run_id: prefix, prompt: '', response, group_id: id, created_at: Date.now() });

    const store = await openStore({ path: config.clickhouse.path });
    const first = await startPipeline(config, connections, { store });
    try {
      const before = await decide(first, originals.map((t, i) => doc(`o${i}`, t)));
      expect(before.map((d) => d.decision)).toEqual(originals.map(() => 'accepted'));
    } finally {
      await first.stop();
    }
    // A new pipeline (new consumer, new operator instances): only the changelog holds the originals.
    const second = await startPipeline(config, connections, { store });
    try {
      const after = await decide(second, [doc('n2', nearCopies[2]!), doc('u0', unrelated[0]!)]);
      expect(after.map((d) => [d.reasons, d.duplicate_of])).toEqual([
        [['near_duplicate:semantic'], 'o2'],
        [[], null],
      ]);
    } finally {
      await second.stop();
      await store.close();
    }
  }, 180_000);
});

describe('OnnxEncoder', () => {
  it('refuses a model whose input width differs from features.dims', async () => {
    await expect(OnnxEncoder.load(bytes, { features: { ...features, dims: 512 } })).rejects.toThrow('takes 1024 features but features.dims is 512');
  });

  it('takes its version from metadata, else from a hash of the bytes', async () => {
    expect(encoder.version).toBe('rp-1');
    const unnamed = await OnnxEncoder.load(projectionEncoderOnnx({ matrix: new Float32Array(features.dims * 2), inputDim: features.dims, outputDim: 2 }), { features });
    expect(unnamed.version).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(await unnamed.embed([])).toEqual([]);
    await unnamed.dispose();
  });
});

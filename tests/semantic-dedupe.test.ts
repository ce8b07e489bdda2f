import { lastValueFrom, Subject, tap, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { prng } from '../cli/synthetic.ts';
import type { Envelope, Sample } from '../lib/envelope.ts';
import { featureDefaults, type FeatureConfig } from '../contracts/features.ts';
import { OnnxEncoder } from '../pipeline/onnx-models.ts';
import { semanticDedupe, semanticDedupeDefaults, semanticDedupeStore, type Encoder, type SemanticDedupeConfig } from '../operators/dedupe/semantic-dedupe.ts';
import { PartitionState } from '../streams/state-store.ts';
import { projectionEncoderOnnx } from '../contracts/onnx-codec.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';

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

import type { Message } from 'kafkajs';
import type { Envelope } from '../lib/envelope.ts';
import { decodeSignature, type Signature } from '../lib/minhash.ts';
import { bandKeysOf, SIGNATURE_ANNOTATION, type NearDedupeConfig, type RemoteIndex } from '../operators/dedupe/near-dedupe.ts';

/**
 * Cross-partition near-duplicates. Each partition's near-dedupe index is exact within the
 * partition (transactional state). Every sample it indexes leaves with its packed b-bit MinHash
 * signature (88 base64 characters with the defaults; band keys are recomputed from it, not
 * sent), published in the same transaction on an internal topic; every worker reads that topic into
 * this bounded cache, which near-dedupe consults when its own index has no match. So a near
 * copy of a sample indexed on another partition is caught once that partition's batch has
 * committed and the cache has read it; two near copies arriving on different partitions
 * within that interval can both pass. The cache forgets the oldest entries beyond its bound.
 */
export interface PublishedSignature {
  id: string;
  group_id: string;
  /** encodeSignature of the packed signature. */
  signature: string;
}

/** The signatures a processed batch indexed, as messages; the annotation is taken off the samples. */
export function takeSignatures(envelopes: Envelope[]): { envelopes: Envelope[]; messages: Message[] } {
  const messages: Message[] = [];
  const out = envelopes.map((e) => {
    if (e.kind !== 'sample' || e.annotations[SIGNATURE_ANNOTATION] === undefined) return e;
    const { [SIGNATURE_ANNOTATION]: signature, ...annotations } = e.annotations;
    const published: PublishedSignature = { id: e.rollout.id, group_id: e.rollout.group_id, signature: signature! };
    messages.push({ key: e.rollout.id, value: JSON.stringify(published) });
    return { ...e, annotations };
  });
  return { envelopes: out, messages };
}

export class SignatureCache implements RemoteIndex {
  private readonly entries = new Map<string, { signature: Signature; keys: Int32Array }>();
  private readonly buckets = new Map<number, Set<string>>();

  constructor(
    private readonly config: Pick<NearDedupeConfig, 'scope' | 'minhash'>,
    private readonly maxEntries: number,
  ) {}

  add(published: PublishedSignature): void {
    if (this.entries.has(published.id)) return;
    let signature: Signature;
    try {
      signature = decodeSignature(published.signature, this.config.minhash);
    } catch {
      // Published under another minhash layout (e.g. by a worker not yet upgraded): not comparable.
      return;
    }
    const keys = bandKeysOf(signature, published.group_id, this.config);
    this.entries.set(published.id, { signature, keys });
    for (const key of keys) {
      let bucket = this.buckets.get(key);
      if (bucket === undefined) this.buckets.set(key, (bucket = new Set()));
      bucket.add(published.id);
    }
    // Maps iterate in insertion order: the first entry is the oldest.
    while (this.entries.size > this.maxEntries) this.evict(this.entries.keys().next().value!);
  }

  candidates(bandKeys: Int32Array): Array<{ id: string; signature: Signature }> {
    const ids = new Set<string>();
    for (const key of bandKeys) for (const id of this.buckets.get(key) ?? []) ids.add(id);
    return [...ids].map((id) => ({ id, signature: this.entries.get(id)!.signature }));
  }

  get size(): number {
    return this.entries.size;
  }

  private evict(id: string): void {
    const entry = this.entries.get(id)!;
    this.entries.delete(id);
    for (const key of entry.keys) {
      const bucket = this.buckets.get(key)!;
      bucket.delete(id);
      if (bucket.size === 0) this.buckets.delete(key);
    }
  }
}

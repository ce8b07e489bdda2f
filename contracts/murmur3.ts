/**
 * MurmurHash3_x86_32's two primitives, in int32 arithmetic (`Math.imul`, no float `%`): the
 * body step that mixes one 32-bit block into the state, and the finaliser. Feature hashing
 * (features.ts) and MinHash (minhash.ts) build their hashes from these; the Python SDK ports the
 * same steps (mmh3-compatible).
 *
 *   fmix32(mixBlock(seed, block) ^ 4) >>> 0   // MurmurHash3_x86_32 of one 4-byte block
 */

/** One body step: block `k` into state `h` (int32 in, int32 out). */
export function mixBlock(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** The finaliser (applied after the length was xor-ed in); int32 result, sign = top bit. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

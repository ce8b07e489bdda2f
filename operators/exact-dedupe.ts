import { createHash } from 'node:crypto';
import type { Rollout } from '../streams/records.ts';
import type { KeyValueStore } from '../streams/state-store.ts';
import { isRejected, mapSamples, type Curator } from './envelope.ts';

export interface ExactDedupeConfig {
  /** "global": the same content anywhere in the partition; "group": only within a prompt group. */
  scope: 'global' | 'group';
}

/** The state store this operator keeps its content hashes in (changelog-backed). */
export const exactDedupeStore = { name: 'exact-dedupe' } as const;

/**
 * Rejects a sample whose normalised prompt + response was seen before (reason `duplicate`,
 * `duplicateOf` = the first sample's id). The first occurrence is remembered in the
 * partition's store; samples already rejected by an earlier operator are neither checked nor
 * remembered. Since topics are keyed by group id, a group's samples share a partition, so
 * "global" means global within the partition the content lands on.
 */
export function exactDedupe(config: ExactDedupeConfig, store: KeyValueStore): Curator {
  return mapSamples('exact-dedupe', (sample) => {
    if (isRejected(sample)) return sample;
    const key = contentKey(sample.rollout, config.scope);
    const first = store.get(key);
    if (first === undefined) {
      store.put(key, sample.rollout.id);
      return sample;
    }
    return { ...sample, duplicateOf: first, dedupeMethod: 'exact', reasons: [...sample.reasons, 'duplicate'] };
  });
}

/** Case, surrounding and repeated whitespace do not make two texts different. */
export function normalizeText(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim();
}

export function contentKey(r: Rollout, scope: ExactDedupeConfig['scope']): string {
  const response = r.response ?? r.steps.map((s) => `${s.role}: ${s.content}`).join('\n');
  const hash = createHash('sha256').update(normalizeText(r.prompt)).update('\u0000').update(normalizeText(response)).digest('hex').slice(0, 32);
  return scope === 'group' ? `${r.group_id}/${hash}` : hash;
}

import { map, type OperatorFunction } from 'rxjs';
import type { Rollout, SourceRef } from '../streams/records.ts';

/** A decoded rollout on its way through the operators. */
export interface Sample {
  kind: 'sample';
  rollout: Rollout;
  source: SourceRef;
  /** The bytes as they arrived, so any later stage can dead-letter the record unchanged. */
  payload: Buffer;
  key: Buffer | null;
  scores: Record<string, number>;
  duplicateOf: string | null;
  dedupeMethod: string | null;
  /** Why the sample is rejected; empty while it is still a candidate for acceptance. */
  reasons: string[];
}

/** Input that cannot be processed; it leaves for the dead-letter topic with its reason. */
export interface DeadLetter {
  kind: 'dead';
  source: SourceRef;
  payload: Buffer | null;
  key: Buffer | null;
  /** Where it failed: "decode", or the operator's name. */
  stage: string;
  reason: string;
}

export type Envelope = Sample | DeadLetter;

/** What every curating operator is: envelopes in, envelopes out, order kept. */
export type Curator = OperatorFunction<Envelope, Envelope>;

/**
 * Applies `fn` to samples and passes dead letters through. An exception thrown for one
 * sample dead-letters that sample (stage = `stage`) instead of failing the stream: bad input
 * must never stop the pipeline.
 */
export function mapSamples(stage: string, fn: (sample: Sample) => Envelope): Curator {
  return map((envelope) => {
    if (envelope.kind !== 'sample') return envelope;
    try {
      return fn(envelope);
    } catch (err) {
      return deadLetter(envelope, stage, (err as Error).message);
    }
  });
}

export function deadLetter(sample: Sample, stage: string, reason: string): DeadLetter {
  return { kind: 'dead', source: sample.source, payload: sample.payload, key: sample.key, stage, reason };
}

export function isRejected(sample: Sample): boolean {
  return sample.reasons.length > 0;
}

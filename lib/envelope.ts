import { map, type OperatorFunction } from 'rxjs';
import type { Rollout, SourceRef } from '../contracts/records.ts';

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
  /** Labels operators attach for analytics (QD cell, quota bucket, cluster…); stored with the decision. */
  annotations: Record<string, string>;
  /** The model version that produced the model score, when a model scored the sample. */
  scorerVersion: string | null;
  /**
   * The broker's record timestamp (epoch ms; CreateTime or LogAppendTime, as the topic says).
   * Operators that keep an event-time clock bound `rollout.created_at` by it, so a producer's
   * wrong clock cannot move state by days. Undefined when not known (tests, replays): then
   * `created_at` is used alone.
   */
  brokerTimestamp?: number;
  /**
   * The rollout exactly as decoded from `payload`, set when the payload was written with the
   * reader's own schema: while `rollout` is still this very object, `payload`'s Avro body is its
   * encoding and the decision can embed those bytes instead of encoding the rollout again.
   * Operators never mutate a rollout: one that changes it makes a new object (as validate's
   * clamp does), which ends the reuse.
   */
  wireRollout?: Rollout;
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

/**
 * Processing-time punctuation: the processor sends one through every owned partition's chain
 * at a fixed interval, so operators that hold samples (windows, groups) can release them with
 * bounded delay even when no new input arrives. Operators pass ticks on.
 */
export interface Tick {
  kind: 'tick';
  /** Epoch milliseconds. */
  now: number;
}

/** Where a side output goes: a topic of the catalog, written in the same transaction. */
export type SideOutput = 'control' | 'weaknesses' | 'preferencePairs';

/** A record an operator publishes besides decisions (a control message, a preference pair…). */
export interface Emit {
  kind: 'emit';
  output: SideOutput;
  key: string;
  value: Record<string, unknown>;
}

export type Envelope = Sample | DeadLetter | Tick | Emit;

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

/**
 * A freshly decoded rollout: nothing scored, nothing decided yet. `brokerTimestamp` is the
 * Kafka record's timestamp, e.g. `Number(message.timestamp)`; a value that is not a finite
 * number (absent, NaN) is left out.
 */
export function newSample(rollout: Rollout, source: SourceRef, payload: Buffer, key: Buffer | null, brokerTimestamp?: number): Sample {
  const sample: Sample = { kind: 'sample', rollout, source, payload, key, scores: {}, duplicateOf: null, dedupeMethod: null, reasons: [], annotations: {}, scorerVersion: null };
  if (brokerTimestamp !== undefined && Number.isFinite(brokerTimestamp)) sample.brokerTimestamp = brokerTimestamp;
  return sample;
}

/**
 * How far ahead of the broker's record timestamp an operator's event-time clock follows
 * `created_at` by default: not at all. A rollout is generated before it is sent, and the broker
 * timestamp is stamped at send (CreateTime) or append (LogAppendTime), so a sane `created_at`
 * is behind it anyway; a created_at ahead of it is a producer's clock, and a clock that ran
 * ahead even by a minute would time out every group a group-filter holds for a minute.
 */
export const defaultMaxSkewMs = 0;

/**
 * The event time an operator's clock may follow: `created_at`, but never more than
 * `maxSkewMs` beyond the broker's record timestamp, so one sample with a wrong clock cannot
 * move a watermark (and the evictions and releases it drives) by days. Without a broker
 * timestamp, `created_at` as it is.
 *
 * Example: created_at 8.64e15, broker 1.7e12, maxSkewMs 60_000 → 1.7e12 + 60_000; created_at
 * 1.6e12, same broker time → 1.6e12.
 */
export function eventTimeOf(sample: Sample, maxSkewMs = defaultMaxSkewMs): number {
  const at = sample.rollout.created_at;
  return sample.brokerTimestamp === undefined ? at : Math.min(at, sample.brokerTimestamp + maxSkewMs);
}

export function deadLetter(sample: Sample, stage: string, reason: string): DeadLetter {
  return { kind: 'dead', source: sample.source, payload: sample.payload, key: sample.key, stage, reason };
}

export function isRejected(sample: Sample): boolean {
  return sample.reasons.length > 0;
}

/** A sample as JSON, for operators that hold samples in a state store across batches. */
export function serializeSample(sample: Sample): string {
  // wireRollout is an identity, not data: a sample read back is a new object anyway.
  const { wireRollout: _wire, ...rest } = sample;
  return JSON.stringify({ ...rest, payload: sample.payload.toString('base64'), key: sample.key?.toString('base64') ?? null });
}

export function deserializeSample(text: string): Sample {
  const raw = JSON.parse(text) as Omit<Sample, 'payload' | 'key'> & { payload: string; key: string | null };
  return { ...raw, payload: Buffer.from(raw.payload, 'base64'), key: raw.key === null ? null : Buffer.from(raw.key, 'base64') };
}

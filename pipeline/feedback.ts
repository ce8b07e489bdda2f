import type { Kafka, Message, TopicMessages } from 'kafkajs';
import { from, lastValueFrom, toArray } from 'rxjs';
import type { Envelope } from '../lib/envelope.ts';
import { decodeVector, encodeVector, type ErrorMemory } from '../lib/error-memory.ts';
import { featurize, type FeatureConfig } from '../contracts/features.ts';
import { labelJoin, labelJoinStores, type JoinInput, type ScoredSample, type ScorerError } from '../operators/signals/label-join.ts';
import { BroadcastReader } from '../streams/broadcast.ts';
import { ExactlyOnceProcessor } from '../streams/exactly-once.ts';
import type { Label } from '../contracts/records.ts';
import type { TopicSerde } from '../streams/serde.ts';
import { log } from '../lib/log.ts';
import type { OperatorConfig } from './config.ts';
import { deadLetterMessage } from '../sinks/kafka-outputs.ts';

/**
 * The feedback path of error memory (after ReLoop2): the curating pipeline records every
 * model-scored sample by rollout id; a second exactly-once task joins those with the verified
 * labels that arrive later (both keyed by rollout id, so co-partitioned) and publishes each
 * scorer error; every worker reads all errors into its error memory, which the
 * `error-compensate` operator consults.
 */

/** The scored-by-id records for a processed batch: model-scored samples, keyed by rollout id. */
export function scoredMessages(envelopes: readonly Envelope[], score: string, features: FeatureConfig, now = Date.now()): Message[] {
  const out: Message[] = [];
  for (const e of envelopes) {
    if (e.kind !== 'sample') continue;
    const raw = e.scores[`${score}.raw`] ?? e.scores[score];
    if (raw === undefined) continue;
    const scored: ScoredSample = {
      id: e.rollout.id,
      raw,
      model_version: e.scorerVersion ?? '',
      vector: encodeVector(featurize(e.rollout, features)),
      // Decision time, not generation time: the join's TTL runs on the clock labels arrive by.
      at: now,
    };
    // No partition: the default (murmur2) partitioner puts it where the label with this key goes.
    out.push({ key: e.rollout.id, value: JSON.stringify(scored) });
  }
  return out;
}

export interface LabelJoinOptions {
  kafka: Kafka;
  groupId: string;
  labels: TopicSerde<Label>;
  scoredTopic: string;
  errorsTopic: string;
  deadLetterTopic: string;
  changelogTopic: (store: string) => string;
  ttlMs: number;
  tickMs: number;
  pipelineRun: string;
}

export function labelJoinProcessor(o: LabelJoinOptions): ExactlyOnceProcessor<ReturnType<typeof labelJoin>> {
  return new ExactlyOnceProcessor({
    kafka: o.kafka,
    groupId: o.groupId,
    inputTopics: [o.labels.topic, o.scoredTopic],
    stores: [labelJoinStores.scored.name, labelJoinStores.labels.name],
    changelogTopic: o.changelogTopic,
    fromBeginning: true,
    partitionsConsumedConcurrently: 2,
    maxBatchBytes: 1_048_576,
    tickMs: o.tickMs,
    // A record whose batch fails by itself (not a service's fault) is dead-lettered, not retried.
    deadLetter: (m, topic, partition, error) => ({
      topic: o.deadLetterTopic,
      messages: [deadLetterMessage({ kind: 'dead', source: { topic, partition, offset: m.offset }, payload: m.value, key: m.key, stage: 'label-join', reason: error.message }, o.pipelineRun, partition)],
    }),
    assign: (_p, state) => labelJoin({ ttlMs: o.ttlMs }, { scored: state.store(labelJoinStores.scored.name), labels: state.store(labelJoinStores.labels.name) }),
    process: async (input, task) => {
      const inputs: JoinInput[] = [];
      const dead: Message[] = [];
      if (input.kind === 'tick') inputs.push({ kind: 'tick', now: input.now });
      else {
        // Writer schemas fetched once per batch, outside the per-record try: a registry that
        // cannot be reached fails the batch (retried), it does not dead-letter the labels.
        if (input.topic !== o.scoredTopic) await o.labels.prepare(input.messages.map((m) => m.value));
        for (const m of input.messages) {
          try {
            if (input.topic === o.scoredTopic) inputs.push({ kind: 'scored', scored: JSON.parse(m.value!.toString()) as ScoredSample });
            else {
              const label = o.labels.decode(m.value!);
              if (!Number.isFinite(label.value) || label.rollout_id === '') throw new Error(`label for "${label.rollout_id}" has value ${label.value}`);
              inputs.push({ kind: 'label', id: label.rollout_id, value: label.value, at: label.at });
            }
          } catch (err) {
            // A bad label is dead-lettered like any bad input; the join goes on.
            const source = { topic: input.topic, partition: task.partition, offset: m.offset };
            dead.push(deadLetterMessage({ kind: 'dead', source, payload: m.value, key: m.key, stage: 'label-join', reason: `not a label: ${(err as Error).message}` }, o.pipelineRun, task.partition));
          }
        }
      }
      const errors = await lastValueFrom(from(inputs).pipe(task.local, toArray()));
      const out: TopicMessages[] = [];
      if (errors.length > 0) out.push({ topic: o.errorsTopic, messages: errors.map((e) => ({ key: e.id, value: JSON.stringify(e) })) });
      if (dead.length > 0) out.push({ topic: o.deadLetterTopic, messages: dead });
      return out;
    },
  });
}

/**
 * Every worker's error memory reads all scorer errors. A model swap re-scores them
 * (`ErrorMemory.reassess`, from `hotSwap`): the ones the new model still makes stay.
 */
export function errorFeed(kafka: Kafka, topic: string, memory: ErrorMemory): BroadcastReader {
  return new BroadcastReader(kafka, topic, (m) => {
    const e = JSON.parse(m.value!.toString()) as ScorerError;
    // The label travels along, so a retrained model can be asked whether it still makes the error.
    memory.add({ key: decodeVector(e.vector), error: e.error, label: e.label, modelVersion: e.model_version, at: e.at });
  });
}

/**
 * What a model swap does to the error memory: when an `error-compensate` operator corrects the
 * score of one of the swapped-in models, the errors of older versions are re-scored by that
 * model and kept where it still misses the label by `minResidual`, retired to error 0 where it
 * does not (`ErrorMemory.reassess`); otherwise (no such operator or model) they all go
 * (`retire`). A re-scoring that fails is
 * logged and retires them all, so the swap itself stands.
 *
 *   await retireErrors(memory, config.operators, 'v3', [{ name: 'model', model: next }])
 */
export async function retireErrors(memory: ErrorMemory, operators: readonly OperatorConfig[], version: string, swapped: ReadonlyArray<{ name: string; model: { score(keys: Float32Array[]): Promise<ArrayLike<number>> } }>): Promise<void> {
  const compensate = operators.find((o) => o.type === 'error-compensate');
  const target = compensate?.type === 'error-compensate' ? swapped.find((s) => s.name === compensate.score) : undefined;
  if (compensate?.type !== 'error-compensate' || target === undefined) {
    memory.retire(version);
    return;
  }
  try {
    const { kept, fixed, dropped } = await memory.reassess(version, (keys) => target.model.score(keys), compensate.minResidual);
    log.info(`error memory after the swap to ${version}: ${kept} errors the new model still makes kept, ${fixed} it fixed retired to 0, ${dropped} without a label dropped`);
  } catch (err) {
    log.warn(`error memory: re-scoring the stored errors with ${version} failed, all older errors retired: ${(err as Error).message}`);
  }
}

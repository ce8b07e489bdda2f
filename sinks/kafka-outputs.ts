import type { Message, TopicMessages } from 'kafkajs';
import type { Instrumentation } from '../contracts/events.ts';
import { toDecision, type DecisionContext } from '../lib/decision.ts';
import { deadLetter, type DeadLetter, type Envelope, type SideOutput } from '../lib/envelope.ts';
import type { Decision } from '../contracts/records.ts';
import { RecordError } from '../streams/errors.ts';
import type { TopicSerde } from '../streams/serde.ts';
import { DLQ_HEADERS } from '../contracts/dead-letter.ts';

export interface OutputTopics {
  decisions: TopicSerde<Decision>;
  accepted: TopicSerde<Decision>;
  deadLetter: string;
  /**
   * The fingerprint of the schema the input rollouts are decoded with (the rollout serde's).
   * When it is the decisions' `headFingerprint`, a decision whose rollout is untouched embeds
   * the input's Avro body instead of encoding the rollout again.
   */
  rolloutFingerprint?: string;
  /** Side outputs carry JSON values. */
  side: Record<SideOutput, string>;
}

/**
 * Where `encodeOutputs` reports a batch's decisions (counted by decision and reason) and dead
 * letters as instrumentation events: once its transaction commits (`afterCommit`, the processor's
 * PartitionContext.afterCommit), so a retried batch is counted once.
 */
export interface OutputReport {
  events: Instrumentation;
  /** The input topic the batch came from. */
  topic: string;
  afterCommit(effect: () => void): void;
}

/**
 * Turns one processed batch into the records its transaction writes (the processor adds the
 * state changes). Every output goes to the input's partition number: topics are
 * co-partitioned, so a group's records stay together and a partition's outputs stay in input
 * order.
 *
 * Each decision is encoded once, and its rollout mostly not at all: when the input was written
 * with the reader's own schema and no operator replaced the rollout (`Sample.wireRollout`), the
 * decision's body starts with the input's Avro body as it is, followed by the other fields
 * encoded — byte for byte what encoding the whole decision writes when the producer wrote
 * canonical Avro (as avsc, the Confluent serdes and Java's GenericDatumWriter do). A producer
 * that writes valid but non-canonical Avro (maps or arrays in several blocks, over-long varints)
 * has its bytes carried over as they are: still a valid encoding of the same rollout under the
 * same schema, which every reader decodes to the same value. Its accepted copy reuses those bytes when both topics share
 * the schema id (one schema content, two subjects: the registry gives one id), or a copy with
 * only the 4 id bytes rewritten when they do not — the Avro body of the same schema is the same.
 * A decision that does not encode (an operator put a value the schema cannot hold) is dead-
 * lettered, stage `encode`, with the field that does not fit; the rest of the batch flows.
 *
 * With `report`, the batch's `decisions` event and one `dead-letter` event per dead letter
 * follow its commit (nothing is counted when no one listens).
 *
 *   encodeOutputs(envelopes, 0, topics, { configHash: 'abc', pipelineRun: 'live' })
 *   // → [{ topic: 'p.decisions', messages: [...] }, { topic: 'p.accepted', ... }, ...]
 */
export function encodeOutputs(envelopes: readonly Envelope[], partition: number, topics: OutputTopics, context: DecisionContext, report?: OutputReport): TopicMessages[] {
  // Counted only for listeners: `decision\0reason` → count, and the dead letters' whereabouts.
  const counts = report?.events.has('decisions') ? new Map<string, number>() : undefined;
  const deadLetters = report?.events.has('dead-letter') ? ([] as DeadLetter[]) : undefined;
  const decisions: Message[] = [];
  const accepted: Message[] = [];
  const dead: Message[] = [];
  const side = new Map<string, Message[]>();
  const sameBody = topics.accepted.fingerprint === topics.decisions.fingerprint;
  const sameId = sameBody && topics.accepted.schemaId === topics.decisions.schemaId;
  const embedRollout = topics.rolloutFingerprint !== undefined && topics.rolloutFingerprint === topics.decisions.headFingerprint;
  for (const envelope of envelopes) {
    if (envelope.kind === 'tick') continue;
    if (envelope.kind === 'dead') {
      dead.push(deadLetterMessage(envelope, context.pipelineRun, partition));
      deadLetters?.push(envelope);
      continue;
    }
    if (envelope.kind === 'emit') {
      const topic = topics.side[envelope.output];
      let list = side.get(topic);
      if (list === undefined) side.set(topic, (list = []));
      list.push({ key: envelope.key, value: JSON.stringify({ ...envelope.value, pipeline_run: context.pipelineRun }) });
      continue;
    }
    const decision = toDecision(envelope, context);
    const isAccepted = decision.decision === 'accepted';
    let value: Buffer;
    let acceptedValue: Buffer | undefined;
    try {
      value = embedRollout && envelope.wireRollout === envelope.rollout ? topics.decisions.encodeWithHead(decision, envelope.payload.subarray(5)) : topics.decisions.encode(decision);
      if (isAccepted) acceptedValue = sameId ? value : sameBody ? withSchemaId(value, topics.accepted.schemaId) : topics.accepted.encode(decision);
    } catch (err) {
      if (!(err instanceof RecordError)) throw err;
      const undecodable = deadLetter(envelope, 'encode', `the decision does not encode: ${err.message}`);
      dead.push(deadLetterMessage(undecodable, context.pipelineRun, partition));
      deadLetters?.push(undecodable);
      continue;
    }
    if (counts !== undefined) {
      const k = `${decision.decision}\u0000${decision.reason}`;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    const key = decision.rollout.group_id;
    decisions.push({ key, partition, value });
    if (acceptedValue !== undefined) accepted.push({ key, partition, value: acceptedValue });
  }
  if (report !== undefined && ((counts !== undefined && counts.size > 0) || (deadLetters !== undefined && deadLetters.length > 0))) {
    report.afterCommit(() => reportOutputs(report, partition, counts, deadLetters));
  }
  return [
    { topic: topics.decisions.topic, messages: decisions },
    { topic: topics.accepted.topic, messages: accepted },
    { topic: topics.deadLetter, messages: dead },
    ...[...side].map(([topic, messages]) => ({ topic, messages })),
  ].filter((t) => t.messages.length > 0);
}

function reportOutputs(report: OutputReport, partition: number, counts: Map<string, number> | undefined, deadLetters: DeadLetter[] | undefined): void {
  const { events, topic } = report;
  if (counts !== undefined && counts.size > 0) {
    events.emit('decisions', {
      topic,
      partition,
      counts: [...counts].map(([k, count]) => {
        const cut = k.indexOf('\u0000');
        return { decision: k.slice(0, cut), reason: k.slice(cut + 1), count };
      }),
    });
  }
  for (const d of deadLetters ?? []) events.emit('dead-letter', { topic: d.source.topic, partition: d.source.partition, offset: d.source.offset, stage: d.stage, reason: d.reason });
}

/** The same wire-format record under another schema id (bytes 1–4). */
function withSchemaId(value: Buffer, schemaId: number): Buffer {
  const copy = Buffer.allocUnsafe(value.length);
  value.copy(copy);
  copy.writeInt32BE(schemaId, 1);
  return copy;
}

/** The dead-letter record of `dead`: the original bytes as the value, the why in DLQ_HEADERS. */
export function deadLetterMessage(dead: DeadLetter, run: string, partition: number): Message {
  return {
    key: dead.key,
    value: dead.payload,
    partition,
    headers: {
      [DLQ_HEADERS.stage]: dead.stage,
      [DLQ_HEADERS.reason]: dead.reason,
      [DLQ_HEADERS.topic]: dead.source.topic,
      [DLQ_HEADERS.partition]: String(dead.source.partition),
      [DLQ_HEADERS.offset]: dead.source.offset,
      [DLQ_HEADERS.run]: run,
    },
  };
}

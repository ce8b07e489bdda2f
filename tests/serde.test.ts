import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import avsc from 'avsc';
import type { KafkaMessage } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import type { DeadLetter, Envelope, Sample } from '../lib/envelope.ts';
import { EXAMPLE_CONFIG, loadConfig, withOverrides } from '../pipeline/config.ts';
import { decodeRollouts } from '../pipeline/decode.ts';
import { startPipeline } from '../pipeline/run.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { toDecision } from '../lib/decision.ts';
import { encodeOutputs, type OutputTopics } from '../sinks/kafka-outputs.ts';
import { DLQ_HEADERS } from '../contracts/dead-letter.ts';
import { rolloutSchema, type Decision, type Rollout } from '../contracts/records.ts';
import { RecordError } from '../streams/errors.ts';
import { confluentSerde, decisionSerde, registryClient, registryUnavailable, rolloutSerde, type TopicSerde } from '../streams/serde.ts';
import { rollout, sample } from './helpers/envelopes.ts';
import { connections, consumeTopic, testKafka, uniquePrefix } from './helpers/kafka.ts';

const client = registryClient(connections.schemaRegistryUrl);
const prefix = uniquePrefix('serde');

/** Rollouts that exercise every field type: nulls, empty and full maps, unicode, long text, float logprobs, steps. */
const rollouts: Rollout[] = [
  rollout(),
  rollout({ response: null, logprobs: null, rewards: {}, tags: {}, steps: [] }),
  rollout({ id: 'ünï-çødé-🚀', prompt: '数学: 2 + 2 = ?  — «quoted» \u0301 e\u0301', response: 'Ответ: 4 ✅\n\t\u0000 nul inside', tags: { 'clé': 'valeur', '': 'empty key' } }),
  rollout({ response: 'x'.repeat(100_000), prompt: 'long '.repeat(5000), token_count: 2_000_000_000 }),
  rollout({ logprobs: [-0.5, -1.25, 0, -3.0517578125e-5, -12.75], rewards: { correct: 0, style: 0.3333333333333333, len: -1e300 } }),
  rollout({ steps: [{ role: 'assistant', content: 'thinking…' }, { role: 'tool', content: '{"ok":true}' }, { role: '', content: '' }], response: '' }),
  rollout({ created_at: 0 }),
  rollout({ created_at: 8.64e15, token_count: -5 }),
  ...syntheticRollouts({ groups: 5, runId: 'serde' }).rollouts,
];

/**
 * Strings around avsc's switch at 64 bytes (its own loop below, utf8Write above): non-ASCII first
 * or last, exactly 64 and 65 chars, lone surrogates (written differently by the two; they decode
 * to U+FFFD, so a decision that embeds these bytes is not the re-encoding of its decoded rollout).
 */
const stringEdges = rollout({ id: 'a'.repeat(64), run_id: 'b'.repeat(65), prompt_id: `${'c'.repeat(63)}é`, prompt: `é${'d'.repeat(64)}`, group_id: '\ud800', model_name: `x\udc00y${'z'.repeat(70)}`, model_version: '🚀'.repeat(16), tags: { ['\ud83d']: `${'e'.repeat(62)}\u00ff` } });

function decisionOf(r: Rollout, i: number): Decision {
  return {
    rollout: r,
    scores: i % 2 === 0 ? { rule: 1, model: 0.25 } : {},
    duplicate_of: i % 3 === 0 ? null : `dup-${i}`,
    dedupe_method: i % 3 === 0 ? null : 'exact',
    reasons: i % 2 === 0 ? [] : ['below_min:model', 'duplicate'],
    decision: i % 2 === 0 ? 'accepted' : 'rejected',
    reason: i % 2 === 0 ? 'accepted' : 'below_min:model',
    config_hash: 'c0ffee',
    scorer_version: i % 4 === 0 ? null : 'v3',
    annotations: i % 2 === 0 ? {} : { qd_cell: '1|2|math', 'ключ': '値' },
    pipeline_run: 'serde-test',
    source: { topic: 't', partition: i % 3, offset: i === 1 ? '9223372036854775807' : String(i) },
  };
}
const decisions = rollouts.map(decisionOf);

/** A wire-format record written with a schema of our own choosing, as another producer would. */
function written(schemaId: number, schema: object, value: unknown): Buffer {
  const header = Buffer.alloc(5);
  header.writeInt32BE(schemaId, 1);
  return Buffer.concat([header, avsc.Type.forSchema(schema as never).toBuffer(value)]);
}

/** A record as kafkajs hands it over (record-batch format). */
const message = (value: Buffer | null, offset: number): KafkaMessage => ({ key: Buffer.from('k'), value, offset: String(offset), timestamp: String(1_700_000_000_000 + offset), attributes: 0, headers: {} });

describe('compiled registry serde (against the registry, bytes compared with @confluentinc/schemaregistry)', () => {
  it('writes the same bytes as the Confluent AvroSerializer for rollouts and decisions, and each decodes the other', async () => {
    const serdes: Array<[TopicSerde<never>, unknown[]]> = [
      [(await rolloutSerde(client, `${prefix}.rollouts`)) as TopicSerde<never>, [...rollouts, stringEdges]],
      [(await decisionSerde(client, `${prefix}.decisions`)) as TopicSerde<never>, [...decisions, decisionOf(stringEdges, decisions.length)]],
    ];
    for (const [serde, values] of serdes) {
      const reference = confluentSerde<unknown>(client, serde.topic, serde.schemaId);
      for (const value of values) {
        const ours = serde.encode(value as never);
        const theirs = await reference.serialize(value);
        expect(ours.equals(theirs)).toBe(true);
        expect(ours[0]).toBe(0);
        expect(ours.readInt32BE(1)).toBe(serde.schemaId);
        await serde.prepare([theirs]);
        const decodedOurs = serde.decode(theirs);
        const decodedTheirs = await reference.deserialize(ours);
        expect(decodedOurs).toEqual(decodedTheirs);
        // The same JS values as before: timestamps stay numbers of ms (no logical-type Dates),
        // offsets stay strings, nullable unions unwrapped (null or the string itself).
        const r = ((decodedOurs as Decision).rollout ?? decodedOurs) as Rollout;
        expect(typeof r.created_at).toBe('number');
        expect(r.response === null || typeof r.response === 'string').toBe(true);
      }
    }
    // Float logprobs round to float32 the same way on both sides; these are exact in float32.
    const serde = serdes[0]![0] as unknown as TopicSerde<Rollout>;
    expect(serde.decode(serde.encode(rollouts[4]!))).toEqual(rollouts[4]);
    const decisionsSerde = serdes[1]![0] as unknown as TopicSerde<Decision>;
    expect(decisionsSerde.decode(decisionsSerde.encode(decisions[1]!)).source.offset).toBe('9223372036854775807');
  });

  it('decodes a record of an evolved writer schema under the same subject to the reader shape, defaults filled', async () => {
    const topic = `${prefix}.evolved`;
    const serde = await rolloutSerde(client, topic);
    // A producer dropped model_name and run_id (defaults in the reader) and added a field.
    const evolved = {
      ...rolloutSchema,
      fields: [...rolloutSchema.fields.filter((f) => f.name !== 'model_name' && f.name !== 'run_id'), { name: 'temperature', type: 'double', default: 1 }],
    };
    const evolvedId = await client.register(`${topic}-value`, { schemaType: 'AVRO', schema: JSON.stringify(evolved) });
    expect(evolvedId).not.toBe(serde.schemaId);
    const { model_name: _m, run_id: _r, ...rest } = rollout({ id: 'evolved', tags: { skill: 'math' } });
    const bytes = written(evolvedId, evolved, { ...rest, temperature: 0.7 });

    const envelopes = await decodeRollouts([message(bytes, 0)], topic, 0, serde);
    expect(envelopes[0]!.kind).toBe('sample');
    const decoded = (envelopes[0] as Sample).rollout;
    expect(decoded).toEqual({ ...rest, model_name: '', run_id: '' });
    expect('temperature' in decoded).toBe(false);
    expect((envelopes[0] as Sample).brokerTimestamp).toBe(1_700_000_000_000);
    // …so the decision that carries it encodes (before: "Invalid message at rollout.run_id").
    const decisionsSerde = await decisionSerde(client, `${prefix}.evolved-decisions`);
    expect(() => decisionsSerde.encode(decisionOf(decoded, 0))).not.toThrow();
  });

  it('dead-letters, with a clear reason, records whose writer schema cannot be resolved or is not in the registry — fetched once', async () => {
    const topic = `${prefix}.unresolvable`;
    let lookups = 0;
    const counted = registryClient(connections.schemaRegistryUrl);
    const lookup = counted.getBySubjectAndId.bind(counted);
    counted.getBySubjectAndId = (...args) => (lookups++, lookup(...args));
    const serde = await rolloutSerde(counted, topic);

    // A rollout-like schema of another subject: tags as map<int> where the reader has map<string>.
    const other = `${prefix}.rollout-like-value`;
    // (`doc` makes the content, so the id, this run's own: the registry shares ids between equal contents.)
    const intTags = { ...rolloutSchema, doc: prefix, fields: rolloutSchema.fields.map((f) => (f.name === 'tags' ? { ...f, type: { type: 'map', values: 'int' } } : f)) };
    const intTagsId = await client.register(other, { schemaType: 'AVRO', schema: JSON.stringify(intTags) });
    // And one without `prompt`, which the reader requires (no default).
    const noPrompt = { ...rolloutSchema, doc: prefix, fields: rolloutSchema.fields.filter((f) => f.name !== 'prompt') };
    const noPromptId = await client.register(`${prefix}.no-prompt-value`, { schemaType: 'AVRO', schema: JSON.stringify(noPrompt) });
    const { prompt: _p, ...promptless } = rollout();
    const good = serde.encode(rollout({ id: 'good' }));
    const batch = [
      message(written(intTagsId, intTags, { ...rollout(), tags: { n: 3 } }), 0),
      message(good, 1),
      message(written(noPromptId, noPrompt, promptless), 2),
      message(Buffer.from([0, 0x7f, 0xff, 0xff, 0xf0, 1, 2, 3]), 3),
      message(good.subarray(0, good.length - 3), 4),
      message(Buffer.from('{"plain":"json"}'), 5),
      message(null, 6),
      message(written(intTagsId, intTags, { ...rollout(), tags: {} }), 7),
    ];
    const envelopes = await decodeRollouts(batch, topic, 0, serde);
    expect(envelopes.map((e) => e.kind)).toEqual(['dead', 'sample', 'dead', 'dead', 'dead', 'dead', 'dead', 'dead']);
    const reasons = envelopes.map((e) => (e.kind === 'dead' ? (e as DeadLetter).reason : ''));
    expect(reasons[0]).toBe(`not a rollout: writer schema ${intTagsId} (subject ${other}) cannot be resolved to flywheel.Rollout: tags.*: cannot read "int" as "string"`);
    expect(reasons[2]).toMatch(new RegExp(`^not a rollout: writer schema ${noPromptId} \\(subject ${prefix}\\.no-prompt-value\\) cannot be resolved to flywheel\\.Rollout: .*flywheel\\.Rollout\\.prompt`));
    expect(reasons[3]).toMatch(/^not a rollout: writer schema 2147483632 is not in the registry: Schema 2147483632 not found/);
    expect(reasons[4]).toMatch(/^not a rollout: the body is truncated/);
    expect(reasons[5]).toMatch(/^not in the registry's wire format: first byte is 0x7b/);
    expect(reasons[6]).toBe('empty record value');
    expect(reasons[7]).toBe(reasons[0]);
    expect(reasons.join('\n')).not.toMatch(/Cannot read properties/);

    // Known answers, good or bad, are not asked again.
    const asked = lookups;
    // One look-up per foreign id (map<int> tags, no prompt, unknown), none for the reader's own id.
    expect(asked).toBe(3);
    await decodeRollouts(batch, topic, 0, serde);
    expect(lookups).toBe(asked);
    expect(() => serde.decode(batch[0]!.value!)).toThrow(RecordError);
  });

  it('tells a registry that cannot be reached (retry) from an id it does not have (dead letter)', async () => {
    const down = registryClient('http://127.0.0.1:9/apis/ccompat/v7');
    const refused = await down.getBySubjectAndId('x-value', 1).catch((err: unknown) => err);
    expect(registryUnavailable(refused)).toBe(true);
    const missing = await client.getBySubjectAndId('x-value', 2147483632).catch((err: unknown) => err);
    expect((missing as { status: number }).status).toBe(404);
    expect(registryUnavailable(missing)).toBe(false);
  });

  it('encodes each decision once: the accepted copy is the same bytes, and an unencodable decision is dead-lettered while the batch flows', async () => {
    const decisionsTopic = await decisionSerde(client, `${prefix}.out.decisions`);
    const acceptedTopic = await decisionSerde(client, `${prefix}.out.accepted`);
    // One schema content under two subjects: Apicurio gives it one id, so the bytes are shared.
    expect(acceptedTopic.schemaId).toBe(decisionsTopic.schemaId);
    const topics: OutputTopics = { decisions: decisionsTopic, accepted: acceptedTopic, deadLetter: `${prefix}.out.dead-letter`, side: { control: 'c', weaknesses: 'w', preferencePairs: 'p' } };
    const bad = sample({ id: 'bad' }, { annotations: { qd_cell: 5 as unknown as string } });
    const batch: Envelope[] = [sample({ id: 'a' }), bad, sample({ id: 'b' }, { reasons: ['duplicate'] }), sample({ id: 'c' })];
    const context = { configHash: 'h', pipelineRun: 'run' };
    const outputs = encodeOutputs(batch, 1, topics, context);
    const byTopic = new Map(outputs.map((t) => [t.topic, t.messages]));
    const ids = async (topic: string, serde: TopicSerde<Decision>) => Promise.all((byTopic.get(topic) ?? []).map(async (m) => (await serde.deserialize(m.value as Buffer)).rollout.id));
    expect(await ids(decisionsTopic.topic, decisionsTopic)).toEqual(['a', 'b', 'c']);
    expect(await ids(acceptedTopic.topic, acceptedTopic)).toEqual(['a', 'c']);
    const [decidedA, , decidedC] = byTopic.get(decisionsTopic.topic)!;
    const [acceptedA, acceptedC] = byTopic.get(acceptedTopic.topic)!;
    expect(acceptedA!.value).toBe(decidedA!.value);
    expect(acceptedC!.value).toBe(decidedC!.value);
    const [dead] = byTopic.get(topics.deadLetter)!;
    expect(dead!.value).toBe(bad.payload);
    expect(dead!.headers![DLQ_HEADERS.stage]).toBe('encode');
    expect(dead!.headers![DLQ_HEADERS.reason]).toBe('the decision does not encode: cannot encode flywheel.Decision: annotations.qd_cell is 5, expected "string"');

    // Were the ids different, the accepted copy would be the same body under the accepted id.
    const otherId = decisionsTopic.schemaId + 1000;
    const rewritten = encodeOutputs(batch, 1, { ...topics, accepted: { ...acceptedTopic, schemaId: otherId } }, context).find((t) => t.topic === acceptedTopic.topic)!;
    const copy = rewritten.messages[0]!.value as Buffer;
    expect(copy.readInt32BE(1)).toBe(otherId);
    expect(copy.subarray(5).equals((decidedA!.value as Buffer).subarray(5))).toBe(true);
  });
});

describe('a decision embeds its input rollout bytes', () => {
  it('writes the bytes the Confluent serializer writes for the whole decision, and re-encodes a rollout that was resolved or replaced', async () => {
    const rolloutsTopic = await rolloutSerde(client, `${prefix}.embed.rollouts`);
    const decisionsTopic = await decisionSerde(client, `${prefix}.embed.decisions`);
    const reference = confluentSerde<Decision>(client, decisionsTopic.topic, decisionsTopic.schemaId);
    expect(decisionsTopic.headFingerprint).toBe(rolloutsTopic.fingerprint);
    const topics: OutputTopics = { decisions: decisionsTopic, accepted: decisionsTopic, deadLetter: `${prefix}.embed.dlq`, rolloutFingerprint: rolloutsTopic.fingerprint, side: { control: 'c', weaknesses: 'w', preferencePairs: 'p' } };
    const context = { configHash: 'h', pipelineRun: 'run' };
    // Written by the Confluent serializer, as another producer would, with the reader's id.
    const producer = confluentSerde<Rollout>(client, rolloutsTopic.topic, rolloutsTopic.schemaId);
    const payloads = await Promise.all(rollouts.map((r) => producer.serialize(r)));
    const envelopes = (await decodeRollouts(payloads.map(message), rolloutsTopic.topic, 0, rolloutsTopic)) as Sample[];
    expect(envelopes.every((e) => e.kind === 'sample' && e.wireRollout === e.rollout)).toBe(true);
    // Decided differently, so every tail field varies; one rollout replaced as validate's clamp does.
    const decided: Sample[] = envelopes.map((e, i) => ({ ...e, scores: { rule: i }, reasons: i % 2 === 0 ? [] : ['duplicate'], annotations: i % 3 === 0 ? {} : ({ cell: `c${i}` } as Record<string, string>) }));
    decided[1] = { ...decided[1]!, rollout: { ...decided[1]!.rollout, created_at: 1_700_000_000_001 } };
    const values = encodeOutputs(decided, 0, topics, context).find((t) => t.topic === decisionsTopic.topic)!.messages.map((m) => m.value as Buffer);
    expect(values).toHaveLength(decided.length);
    for (const [i, value] of values.entries()) {
      const whole = await reference.serialize({ ...toDecision(decided[i]!, context) });
      expect(value.equals(whole)).toBe(true);
    }
    expect((await reference.deserialize(values[1]!)).rollout.created_at).toBe(1_700_000_000_001);

    // Valid but non-canonical Avro (tags as one map block with a negative count and its byte size)
    // is carried over as it is: a different encoding of the same decision, which decodes the same.
    const canonical = await producer.serialize(rollout({ tags: { a: 'b' } }));
    const mapTail = Buffer.from([0x02, 0x02, 0x61, 0x02, 0x62, 0x00]);
    expect(canonical.subarray(-6).equals(mapTail)).toBe(true);
    const blocked = Buffer.concat([canonical.subarray(0, -6), Buffer.from([0x01, 0x08, 0x02, 0x61, 0x02, 0x62, 0x00])]);
    const [odd] = (await decodeRollouts([message(blocked, 98)], rolloutsTopic.topic, 0, rolloutsTopic)) as Sample[];
    const [oddValue] = encodeOutputs([odd!], 0, topics, context).find((t) => t.topic === decisionsTopic.topic)!.messages;
    const embedded = oddValue!.value as Buffer;
    expect(embedded.subarray(5, blocked.length).equals(blocked.subarray(5))).toBe(true);
    expect(await reference.deserialize(embedded)).toEqual(await reference.deserialize(await reference.serialize(toDecision(odd!, context))));

    // A writer schema that resolves (evolved): its body is not the reader's, so the rollout is encoded.
    const evolved = { ...rolloutSchema, fields: [...rolloutSchema.fields, { name: 'temperature', type: 'double', default: 1 }] };
    const evolvedId = await client.register(`${rolloutsTopic.topic}-value`, { schemaType: 'AVRO', schema: JSON.stringify(evolved) });
    const [resolved] = (await decodeRollouts([message(written(evolvedId, evolved, { ...rollouts[0]!, temperature: 0.5 }), 99)], rolloutsTopic.topic, 0, rolloutsTopic)) as Sample[];
    expect(resolved!.wireRollout).toBeUndefined();
    const [value] = encodeOutputs([resolved!], 0, topics, context).find((t) => t.topic === decisionsTopic.topic)!.messages;
    expect((value!.value as Buffer).equals(await reference.serialize(toDecision(resolved!, context)))).toBe(true);
  });
});

describe('a pipeline partition with evolved, unresolvable and ordinary records', () => {
  it('keeps flowing: the evolved records decided with reader defaults, the unresolvable one dead-lettered with its reason, the records after it decided', async () => {
    const name = uniquePrefix('serde-e2e');
    const serverUrl = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;
    const dir = mkdtempSync(join(tmpdir(), 'flywheel-serde-'));
    const database = `serde_${Date.now()}`;
    const store: ClickHouseStore = serverUrl ? await openStore({ url: serverUrl, database }) : await openStore({ path: join(dir, 'clickhouse') });
    const config = withOverrides(loadConfig(EXAMPLE_CONFIG), { name: 'serde', run: name, topics: { prefix: name, partitions: 1 } });
    const pipeline = await startPipeline(config, connections, { store });
    const kafka = testKafka('serde-e2e');
    const producer = kafka.producer();
    try {
      const topic = pipeline.catalog.rollouts;
      const serde = await rolloutSerde(client, topic);
      const evolved = { ...rolloutSchema, fields: [...rolloutSchema.fields.filter((f) => f.name !== 'model_name' && f.name !== 'run_id'), { name: 'temperature', type: 'double', default: 1 }] };
      const evolvedId = await client.register(`${topic}-value`, { schemaType: 'AVRO', schema: JSON.stringify(evolved) });
      const foreign = { ...rolloutSchema, doc: name, fields: rolloutSchema.fields.map((f) => (f.name === 'tags' ? { ...f, type: { type: 'map', values: 'int' } } : f)) };
      const foreignId = await client.register(`${name}.foreign-value`, { schemaType: 'AVRO', schema: JSON.stringify(foreign) });
      const r = (i: number) => rollout({ id: `${name}-${i}`, group_id: `g${i}`, prompt_id: `g${i}`, response: `Sample ${i}.\nAnswer: 4`, created_at: Date.now() - 1000 });
      const withoutRunAndModel = (x: Rollout) => {
        const { model_name: _m, run_id: _r, ...rest } = x;
        return { ...rest, temperature: 0.5 };
      };
      const values = [serde.encode(r(0)), written(evolvedId, evolved, withoutRunAndModel(r(1))), written(foreignId, foreign, { ...r(2), tags: { attempt: 1 } }), serde.encode(r(3)), written(evolvedId, evolved, withoutRunAndModel(r(4)))];
      await producer.connect();
      await producer.send({ topic, messages: values.map((value, i) => ({ key: `g${i}`, partition: 0, value })) });

      const decisionsSerde = await decisionSerde(client, pipeline.catalog.decisions);
      const decided = await Promise.all((await consumeTopic(kafka, pipeline.catalog.decisions, (m) => m.length >= 4, { settleMs: 500 })).map((m) => decisionsSerde.deserialize(m.value!)));
      expect(decided.map((d) => d.rollout.id)).toEqual([0, 1, 3, 4].map((i) => `${name}-${i}`));
      expect(decided.map((d) => d.decision)).toEqual(['accepted', 'accepted', 'accepted', 'accepted']);
      expect(decided[1]!.rollout).toMatchObject({ run_id: '', model_name: '', model_version: 'v1' });
      const [dead, ...more] = await consumeTopic(kafka, pipeline.catalog.deadLetter, (m) => m.length >= 1, { settleMs: 500 });
      expect(more).toEqual([]);
      expect(dead!.headers![DLQ_HEADERS.stage]!.toString()).toBe('decode');
      expect(dead!.headers![DLQ_HEADERS.reason]!.toString()).toBe(`not a rollout: writer schema ${foreignId} (subject ${name}.foreign-value) cannot be resolved to flywheel.Rollout: tags.*: cannot read "int" as "string"`);
      expect(dead!.value!.equals(values[2]!)).toBe(true);
    } finally {
      await producer.disconnect();
      await pipeline.stop();
      if (serverUrl) await store.command(`DROP DATABASE IF EXISTS ${database}`);
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bodies that do not fit', () => {
  it('reports a body cut anywhere as a bad record (a RecordError, dead-lettered), and extra bytes as trailing', async () => {
    const serde = await rolloutSerde(client, `${prefix}.cut`);
    const payload = serde.encode(rollouts[4]!);
    for (let cut = 5; cut < payload.length; cut++) {
      const err = (() => {
        try {
          serde.decode(payload.subarray(0, cut));
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(RecordError);
      expect((err as Error).message).toMatch(/^the body (is truncated|does not decode)/);
    }
    expect(() => serde.decode(Buffer.concat([payload, Buffer.from([0, 0])]))).toThrow('2 bytes of trailing data after the flywheel.Rollout');
    // A long beyond what a JS number holds exactly is refused, as avsc refuses it.
    const unsafe = rollout({ created_at: 2 ** 53 });
    expect(() => serde.encode(unsafe)).toThrow(/created_at is 9007199254740992/);
  });
});

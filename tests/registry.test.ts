import { describe, expect, it } from 'vitest';
import { rollout } from './helpers/envelopes.ts';
import { connections, uniquePrefix } from './helpers/kafka.ts';
import { decisionSchema, rolloutSchema, type Decision } from '../contracts/records.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';

describe('schema registry (Confluent API served by Apicurio)', () => {
  const client = registryClient(connections.schemaRegistryUrl);
  const topic = `${uniquePrefix('registry')}.rollouts`;

  it('registers a subject per topic, idempotently, and looks the schema up by id', async () => {
    const first = await rolloutSerde(client, topic);
    const again = await rolloutSerde(registryClient(connections.schemaRegistryUrl), topic);
    expect(again.schemaId).toBe(first.schemaId);
    // The subject exists with one version, registered once (listing all subjects would not do:
    // the registry pages them, and a long-lived one holds thousands of test subjects).
    expect(await client.getAllVersions(`${topic}-value`)).toHaveLength(1);
    const byId = await client.getBySubjectAndId(`${topic}-value`, first.schemaId);
    expect(JSON.parse(byId.schema)).toMatchObject({ name: 'Rollout', namespace: 'flywheel' });
    const latest = await client.getLatestSchemaMetadata(`${topic}-value`);
    expect(latest.id).toBe(first.schemaId);
  });

  it('round-trips a rollout in the wire format: magic byte, schema id, Avro body', async () => {
    const serde = await rolloutSerde(client, topic);
    const value = rollout({ logprobs: [-0.5, -1.25], steps: [{ role: 'tool', content: 'ran' }], tags: { skill: 'math' }, rewards: { correct: 1, style: 0.5 } });
    const bytes = await serde.serialize(value);
    expect(bytes[0]).toBe(0);
    expect(bytes.readInt32BE(1)).toBe(serde.schemaId);
    expect(await serde.deserialize(bytes)).toEqual(value);
  });

  it('round-trips a decision with its nested rollout and enum verdict', async () => {
    const serde = await decisionSerde(client, `${uniquePrefix('registry')}.decisions`);
    const decision: Decision = {
      rollout: rollout(),
      scores: { rule: 1 },
      duplicate_of: null,
      dedupe_method: null,
      reasons: [],
      decision: 'accepted',
      reason: 'accepted',
      config_hash: 'abc',
      scorer_version: 'v3',
      annotations: { qd_cell: '1|2|math' },
      pipeline_run: 'live',
      source: { topic: 't', partition: 2, offset: '9007199254740993' },
    };
    expect(await serde.deserialize(await serde.serialize(decision))).toEqual(decision);
  });

  it('refuses a value that does not fit the schema, and bytes that are not in the wire format', async () => {
    const serde = await rolloutSerde(client, topic);
    await expect(serde.serialize({ ...rollout(), token_count: 'many' } as never)).rejects.toThrow('cannot encode flywheel.Rollout: token_count is "many", expected "int"');
    await expect(serde.deserialize(Buffer.from('{"plain":"json"}'))).rejects.toThrow("not in the registry's wire format: first byte is 0x7b");
  });

  it('keeps the schemas the TypeScript types describe', () => {
    expect(rolloutSchema.fields.map((f) => f.name)).toEqual(Object.keys(rollout()));
    expect(decisionSchema.fields.map((f) => f.name)).toContain('source');
  });
});

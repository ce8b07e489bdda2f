import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decisionSerde, labelSerde, modelUpdateSerde, registryClient, rolloutSerde, type TopicSerde } from '../streams/serde.ts';
import { makeVectors, VECTORS_FILE } from './fixtures/make-vectors.ts';
import { connections, uniquePrefix } from './helpers/kafka.ts';

/**
 * The shared test vectors (tests/fixtures/features-vectors.json, also checked by the Python
 * SDK's pytest suite) still come out of the TypeScript code: feature vectors bit for bit,
 * MurmurHash3, the admission sequences, the schema texts and Avro bodies. A deliberate change to
 * features.ts or the schemas regenerates the file (node --import tsx tests/fixtures/make-vectors.ts)
 * and the Python port must follow.
 */
describe('shared vectors (TypeScript side)', () => {
  const stored = JSON.parse(readFileSync(VECTORS_FILE, 'utf8')) as ReturnType<typeof makeVectors>;
  const current = JSON.parse(JSON.stringify(makeVectors())) as ReturnType<typeof makeVectors>;

  it('features, hashes, admission and Avro bodies are what the fixtures file holds', () => {
    expect(current.features.length).toBeGreaterThan(50);
    for (const [i, c] of stored.features.entries()) expect(current.features[i], `${c.config}/${c.rollout}`).toEqual(c);
    expect(current.murmur3).toEqual(stored.murmur3);
    expect(current.textFeatures).toEqual(stored.textFeatures);
    expect(current.admission).toEqual(stored.admission);
    expect(current.schemas).toEqual(stored.schemas);
    expect(current.avro).toEqual(stored.avro);
  });

  it('the serdes on the real registry decode the stored bodies and write them back byte for byte', async () => {
    const registry = registryClient(connections.schemaRegistryUrl);
    const prefix = uniquePrefix('vectors');
    const serdes: Record<string, TopicSerde<unknown>> = {
      rollout: (await rolloutSerde(registry, `${prefix}.rollouts`)) as TopicSerde<unknown>,
      decision: (await decisionSerde(registry, `${prefix}.decisions`)) as TopicSerde<unknown>,
      label: (await labelSerde(registry, `${prefix}.labels`)) as TopicSerde<unknown>,
      modelUpdate: (await modelUpdateSerde(registry, `${prefix}.model-updates`)) as TopicSerde<unknown>,
    };
    for (const record of stored.avro) {
      const serde = serdes[record.schema]!;
      const header = Buffer.alloc(5);
      header.writeInt32BE(serde.schemaId, 1);
      const payload = Buffer.concat([header, Buffer.from(record.body, 'hex')]);
      expect(await serde.deserialize(payload), record.name).toEqual(record.value);
      expect((await serde.serialize(record.value)).subarray(5).toString('hex'), record.name).toBe(record.body);
    }
  });
});

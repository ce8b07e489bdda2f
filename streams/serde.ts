import {
  AvroDeserializer,
  AvroSerializer,
  SchemaRegistryClient,
  SerdeType,
  SubjectNameStrategyType,
} from '@confluentinc/schemaregistry';
import { decisionSchema, labelSchema, modelUpdateSchema, rolloutSchema, type Decision, type Label, type ModelUpdate, type Rollout } from './records.ts';

/** Encodes and decodes one record type on one topic in the registry's wire format. */
export interface TopicSerde<T> {
  readonly topic: string;
  readonly schemaId: number;
  serialize(value: T): Promise<Buffer>;
  deserialize(payload: Buffer): Promise<T>;
}

export function registryClient(url: string): SchemaRegistryClient {
  // axios waits forever by default: a registry that stalls must fail the call (and be retried),
  // not hang a worker's start-up or a batch.
  return new SchemaRegistryClient({ baseURLs: [url], maxRetries: 3, retriesWaitMs: 200, retriesMaxWaitMs: 2000, createAxiosDefaults: { timeout: 15_000 } });
}

/**
 * Registers `schema` under `<topic>-value` (idempotent: the registry returns the existing id)
 * and pins the serializer to that id, so records are never encoded with a schema inferred
 * from a value.
 */
export async function topicSerde<T>(client: SchemaRegistryClient, topic: string, schema: object): Promise<TopicSerde<T>> {
  const subject = `${topic}-value`;
  let schemaId: number;
  try {
    schemaId = await client.register(subject, { schemaType: 'AVRO', schema: JSON.stringify(schema) });
  } catch (err) {
    throw new Error(`schema registry: registering ${subject} failed: ${(err as Error).message}`);
  }
  // Subjects are named by topic, said explicitly: the default strategy first asks the registry's
  // associations endpoint, which Apicurio does not serve (404) and which sometimes stalls there.
  const naming = { subjectNameStrategyType: SubjectNameStrategyType.TOPIC };
  const serializer = new AvroSerializer(client, SerdeType.VALUE, { useSchemaId: schemaId, autoRegisterSchemas: false, ...naming });
  const deserializer = new AvroDeserializer(client, SerdeType.VALUE, naming);
  return {
    topic,
    schemaId,
    serialize: (value) => serializer.serialize(topic, value),
    deserialize: (payload) => deserializer.deserialize(topic, payload) as Promise<T>,
  };
}

export const rolloutSerde = (client: SchemaRegistryClient, topic: string) => topicSerde<Rollout>(client, topic, rolloutSchema);
export const decisionSerde = (client: SchemaRegistryClient, topic: string) => topicSerde<Decision>(client, topic, decisionSchema);
export const labelSerde = (client: SchemaRegistryClient, topic: string) => topicSerde<Label>(client, topic, labelSchema);
export const modelUpdateSerde = (client: SchemaRegistryClient, topic: string) => topicSerde<ModelUpdate>(client, topic, modelUpdateSchema);

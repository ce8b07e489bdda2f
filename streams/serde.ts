import { Agent as HttpsAgent } from 'node:https';
import avsc from 'avsc';
import {
  AvroDeserializer,
  AvroSerializer,
  SchemaRegistryClient,
  SerdeType,
  SubjectNameStrategyType,
  type SchemaInfo,
} from '@confluentinc/schemaregistry';
import type { Connections } from './connections.ts';
import { FlywheelError, RecordError, UnavailableError } from './errors.ts';
import { decisionSchema, labelSchema, modelUpdateSchema, rolloutSchema, type Decision, type Label, type ModelUpdate, type Rollout } from '../contracts/records.ts';

type AvroType = avsc.Type;
type Resolver = ReturnType<AvroType['createResolver']>;
type AvroSchema = Parameters<typeof avsc.Type.forSchema>[0];

/**
 * Encodes and decodes one record type on one topic in the registry's wire format: byte 0x00,
 * the schema id as a 4-byte big-endian int, the Avro binary body.
 *
 * The hot path is synchronous: `prepare` a batch's payloads once (it fetches and compiles any
 * writer schema id not seen before, from the registry, in parallel), then `decode` each one;
 * `encode` never needs the registry. `serialize`/`deserialize` are the same as promises, for
 * callers that handle one record at a time.
 *
 *   await serde.prepare(messages.map((m) => m.value));
 *   const rollout = serde.decode(messages[0].value);   // throws RecordError for a bad record
 *   const bytes = serde.encode(rollout);
 */
export interface TopicSerde<T> {
  readonly topic: string;
  /** `<topic>-value`: where the reader schema is registered. */
  readonly subject: string;
  /** The id of the reader schema, which `encode` writes. */
  readonly schemaId: number;
  /** The reader schema's full name, e.g. `flywheel.Rollout`. */
  readonly typeName: string;
  /**
   * SHA-256 (hex) of the reader schema's Avro parsing canonical form: two serdes with the same
   * fingerprint write the same Avro body for a value, whatever their ids.
   */
  readonly fingerprint: string;
  /**
   * Makes every writer schema id in `payloads` decodable: fetched from the registry once per id
   * (in parallel), compiled, and resolved to the reader schema. An id the registry does not
   * have, or a schema that does not resolve, is remembered as a reason that `decode` throws
   * (RecordError) for each such record. Rejects only when the registry cannot be asked
   * (network, 5xx, 429, auth) with an UnavailableError: that says nothing about the records,
   * so the caller retries.
   */
  prepare(payloads: Iterable<Buffer | null | undefined>): Promise<void>;
  /** Decodes a prepared payload to the reader's shape (defaults filled); throws RecordError. */
  decode(payload: Buffer): T;
  /** Encodes with the reader schema's id; throws RecordError naming the field that does not fit. */
  encode(value: T): Buffer;
  /**
   * The Avro body (bytes 5…, a view, not a copy) of a prepared, decodable payload when its
   * writer schema is the reader schema itself (no resolution): those bytes are then an Avro
   * encoding of `decode(payload)` under this serde's schema, and another record that embeds
   * the value can embed them as they are (`encodeWithHead`). Undefined for a resolved writer.
   */
  readerBody(payload: Buffer): Buffer | undefined;
  /**
   * SHA-256 (hex) of the canonical form of the reader schema's first field, when the reader is a
   * record whose fields after the first compile on their own; else undefined (no `encodeWithHead`).
   * E.g. a Decision's: the Rollout schema's fingerprint.
   */
  readonly headFingerprint: string | undefined;
  /**
   * Encodes `value` as `encode` does, its first field taken as already encoded: `head` must be
   * the Avro body of `value`'s first field under a schema with `headFingerprint` (e.g. a
   * rollout's `readerBody`). An Avro record is its fields' encodings in order, so the result is
   * `encode(value)` byte for byte whenever `head` is what encoding that field would write.
   *
   *   decisions.encodeWithHead(decision, rollouts.readerBody(payload)!)   // skips re-encoding the rollout
   */
  encodeWithHead(value: T, head: Buffer): Buffer;
  serialize(value: T): Promise<Buffer>;
  deserialize(payload: Buffer): Promise<T>;
}

/**
 * The one way a registry client is made. Given the Connections (what workers, trainers and the
 * CLI pass), it sends their basic auth and trusts their CA file; given a bare URL (tests, benches),
 * neither.
 *
 *   const registry = registryClient(connectionsFromEnv());
 */
export function registryClient(target: string | Pick<Connections, 'schemaRegistryUrl' | 'schemaRegistry'>): SchemaRegistryClient {
  const url = typeof target === 'string' ? target : target.schemaRegistryUrl;
  const security = typeof target === 'string' ? undefined : target.schemaRegistry;
  const ca = security?.tls?.ca;
  return new SchemaRegistryClient({
    baseURLs: [url],
    maxRetries: 3,
    retriesWaitMs: 200,
    retriesMaxWaitMs: 2000,
    // axios waits forever by default: a registry that stalls must fail the call (and be retried),
    // not hang a worker's start-up or a batch.
    createAxiosDefaults: { timeout: 15_000, ...(security?.tls && { httpsAgent: new HttpsAgent({ keepAlive: true, rejectUnauthorized: security.tls.rejectUnauthorized, ...(ca !== undefined && { ca }) }) }) },
    ...(security?.auth && { basicAuthCredentials: { credentialsSource: 'USER_INFO' as const, userInfo: `${security.auth.username}:${security.auth.password.reveal()}` } }),
  });
}

/**
 * Whether a registry call failed because the registry could not serve it (retry later) rather
 * than because of what was asked (an id it does not have).
 */
export function registryUnavailable(err: unknown): boolean {
  // Ours say so themselves.
  if (err instanceof FlywheelError) return err.retriable;
  const status = (err as { status?: unknown }).status;
  // No HTTP status: the network or the client failed (refused, timed out, reset…), not the ask.
  if (typeof status !== 'number') return true;
  return status >= 500 || status === 429 || status === 408 || status === 401 || status === 403;
}

/** Writer schemas remembered per serde; negative entries are bounded (ids come from input bytes). */
const MAX_UNKNOWN_IDS = 10_000;

/** What a writer schema id decodes with, or why it cannot. */
type WriterEntry = { resolver: Resolver | undefined } | { error: string };

/**
 * Registers `schema` under `<topic>-value` (idempotent: the registry returns the existing id),
 * pins the encoder to that id, and compiles the schema once. Records written with another
 * id are decoded by Avro schema resolution from their writer's schema (fetched by id) to
 * this one, as the Avro specification says: fields the writer lacks take the reader's
 * defaults, fields the reader lacks are skipped.
 */
export async function topicSerde<T>(client: SchemaRegistryClient, topic: string, schema: object): Promise<TopicSerde<T>> {
  const subject = `${topic}-value`;
  let schemaId: number;
  try {
    schemaId = await client.register(subject, { schemaType: 'AVRO', schema: JSON.stringify(schema) });
  } catch (err) {
    throw new Error(`schema registry: registering ${subject} failed: ${(err as Error).message}`);
  }
  // The same options as the Confluent serde's `Type.forSchema(schema, conf)`: no logical types
  // (timestamp-millis stays a number of ms), unions unwrapped when unambiguous ('auto').
  const reader = avsc.Type.forSchema(schema as AvroSchema);
  const typeName = reader.name ?? reader.typeName;
  const writers = new Map<number, WriterEntry>([[schemaId, { resolver: undefined }]]);
  const pending = new Map<number, Promise<void>>();
  let unknown = 0;

  const learn = async (id: number): Promise<void> => {
    let entry: WriterEntry;
    try {
      entry = await writerEntry(client, subject, id, reader, typeName);
    } catch (err) {
      if (registryUnavailable(err)) throw new UnavailableError('schema registry', client.config().baseURLs.join(','), `looking up writer schema ${id}: ${(err as Error).message}`, { cause: err });
      entry = { error: `writer schema ${id} is not in the registry: ${(err as Error).message}` };
    }
    if ('error' in entry && ++unknown > MAX_UNKNOWN_IDS) {
      // Forget the oldest negative entry (a Map keeps insertion order); known ids stay.
      for (const [k, v] of writers) {
        if ('error' in v) {
          writers.delete(k);
          unknown--;
          break;
        }
      }
    }
    writers.set(id, entry);
  };

  const header = Buffer.alloc(5);
  header.writeInt32BE(schemaId, 1);
  let scratch = Buffer.alloc(64 * 1024);
  header.copy(scratch);
  /** Makes `scratch` at least `size` bytes, header kept. */
  const grow = (size: number) => {
    const grown = Buffer.alloc(Math.max(scratch.length * 2, size));
    header.copy(grown);
    scratch = grown;
  };
  /** One copy out of the scratch buffer, as `toBuffer` makes, with the header included. */
  const copyOut = (end: number) => {
    const out = Buffer.allocUnsafe(end);
    scratch.copy(out, 0, 0, end);
    return out;
  };
  const head = headAndTail(schema);

  const serde: TopicSerde<T> = {
    topic,
    subject,
    schemaId,
    typeName,
    fingerprint: reader.fingerprint('sha256').toString('hex'),
    async prepare(payloads) {
      const waits: Promise<void>[] = [];
      for (const p of payloads) {
        if (p === null || p === undefined || p.length < 5 || p[0] !== 0) continue;
        const id = p.readInt32BE(1);
        if (writers.has(id)) continue;
        let wait = pending.get(id);
        if (wait === undefined) {
          wait = learn(id).finally(() => pending.delete(id));
          pending.set(id, wait);
        }
        waits.push(wait);
      }
      if (waits.length > 0) await Promise.all(waits);
    },
    decode(payload) {
      const problem = wireFormatProblem(payload);
      if (problem !== undefined) throw new RecordError(problem);
      const id = payload.readInt32BE(1);
      const entry = writers.get(id);
      if (entry === undefined) throw new Error(`schema id ${id} was not prepared: call prepare() with the batch before decode()`);
      if ('error' in entry) throw new RecordError(entry.error);
      let decoded: { value: unknown; offset: number };
      try {
        decoded = reader.decode(payload, 5, entry.resolver);
      } catch (err) {
        throw new RecordError(`the body does not decode as ${typeName} (writer schema ${id}): ${(err as Error).message}`);
      }
      if (decoded.offset < 0) throw new RecordError(`the body is truncated: it ends before the ${typeName} (writer schema ${id}) does`);
      if (decoded.offset !== payload.length) throw new RecordError(`${payload.length - decoded.offset} bytes of trailing data after the ${typeName} (writer schema ${id})`);
      return decoded.value as T;
    },
    encode(value) {
      let end: number;
      try {
        end = reader.encode(value, scratch, 5);
        if (end < 0) {
          // Too small by -end bytes: grow (and keep the header), then write again.
          grow(scratch.length - end);
          end = reader.encode(value, scratch, 5);
        }
      } catch (err) {
        throw new RecordError(`cannot encode ${typeName}: ${invalidPath(reader, value) ?? (err as Error).message}`);
      }
      return copyOut(end);
    },
    readerBody(payload) {
      if (payload.length < 5 || payload[0] !== 0) return undefined;
      const entry = writers.get(payload.readInt32BE(1));
      return entry !== undefined && 'resolver' in entry && entry.resolver === undefined ? payload.subarray(5) : undefined;
    },
    headFingerprint: head?.fingerprint,
    encodeWithHead(value, body) {
      if (head === undefined) return serde.encode(value);
      const start = 5 + body.length;
      let end: number;
      try {
        if (scratch.length < start + 1) grow(start + 1024);
        body.copy(scratch, 5);
        end = head.tail.encode(value, scratch, start);
        if (end < 0) {
          grow(scratch.length - end);
          body.copy(scratch, 5);
          end = head.tail.encode(value, scratch, start);
        }
      } catch (err) {
        throw new RecordError(`cannot encode ${typeName}: ${invalidPath(reader, value) ?? (err as Error).message}`);
      }
      return copyOut(end);
    },
    serialize: async (value) => serde.encode(value),
    deserialize: async (payload) => {
      await serde.prepare([payload]);
      return serde.decode(payload);
    },
  };
  return serde;
}

/**
 * A record schema split after its first field: that field's fingerprint, and the other fields
 * compiled as a record of their own (its encoding is theirs, in order). Undefined when the schema
 * is not a record, its first field is not a record, or the rest does not compile alone (a later
 * field naming a type defined inside the first).
 */
function headAndTail(schema: object): { fingerprint: string; tail: AvroType } | undefined {
  const record = schema as { type?: unknown; name?: string; namespace?: string; fields?: Array<{ type: unknown }> };
  if (record.type !== 'record' || !Array.isArray(record.fields) || record.fields.length === 0) return undefined;
  try {
    const first = avsc.Type.forSchema(record.fields[0]!.type as AvroSchema, { namespace: record.namespace });
    if (first.typeName !== 'record') return undefined;
    const tail = avsc.Type.forSchema({ type: 'record', name: `${record.name ?? 'Record'}Tail`, namespace: record.namespace, fields: record.fields.slice(1) } as AvroSchema);
    return { fingerprint: first.fingerprint('sha256').toString('hex'), tail };
  } catch {
    return undefined;
  }
}

/** Why `payload` is not in the registry's wire format, or undefined when it is. */
export function wireFormatProblem(payload: Buffer | null): string | undefined {
  if (payload === null || payload.length === 0) return 'empty record value';
  if (payload[0] !== 0 || payload.length < 5) {
    const first = payload[0]!.toString(16).padStart(2, '0');
    return `not in the registry's wire format: first byte is 0x${first}, not the magic byte 0x00 followed by a schema id`;
  }
  return undefined;
}

async function writerEntry(client: SchemaRegistryClient, subject: string, id: number, reader: AvroType, typeName: string): Promise<WriterEntry> {
  const info = await client.getBySubjectAndId(subject, id);
  if (info.schemaType !== undefined && info.schemaType !== 'AVRO') return { error: `writer schema ${id} is a ${info.schemaType} schema, not Avro` };
  const referenced = await referencedSchemas(client, info);
  let writer: AvroType;
  try {
    const registry: Record<string, AvroType> = {};
    for (const r of referenced) avsc.Type.forSchema(JSON.parse(r.schema) as AvroSchema, { registry });
    writer = avsc.Type.forSchema(JSON.parse(info.schema) as AvroSchema, { registry });
  } catch (err) {
    return { error: `writer schema ${id} is not a usable Avro schema: ${(err as Error).message}` };
  }
  // The same schema under another id (e.g. registered elsewhere): nothing to resolve.
  if (reader.equals(writer)) return { resolver: undefined };
  try {
    return { resolver: reader.createResolver(writer) };
  } catch (err) {
    const where = resolutionPath(reader, writer);
    const subjects = await subjectsOf(client, id);
    return { error: `writer schema ${id} (${subjects}) cannot be resolved to ${typeName}: ${where === undefined ? '' : `${where}: `}${(err as Error).message}` };
  }
}

/** The schemas `info` references (by subject and version), innermost first, so each compiles before its users. */
async function referencedSchemas(client: SchemaRegistryClient, info: SchemaInfo, depth = 0): Promise<SchemaInfo[]> {
  // The writer schema's fault, not the registry's: no retry helps (see registryUnavailable).
  if (depth > 16) throw new RecordError('schema references nest deeper than 16');
  const out: SchemaInfo[] = [];
  for (const ref of info.references ?? []) {
    const referenced = await client.getSchemaMetadata(ref.subject, ref.version);
    out.push(...(await referencedSchemas(client, referenced, depth + 1)), referenced);
  }
  return out;
}

/** The subjects a schema id is registered under, for a reason a person can follow up. */
async function subjectsOf(client: SchemaRegistryClient, id: number): Promise<string> {
  try {
    const base = client.config().baseURLs[0];
    const response = await fetch(`${base}/schemas/ids/${id}/versions`, { signal: AbortSignal.timeout(5000) });
    if (!response.ok) return 'subject unknown';
    const versions = (await response.json()) as Array<{ subject: string; version: number }>;
    if (versions.length === 0) return 'subject unknown';
    const names = versions.slice(0, 3).map((v) => v.subject).join(', ');
    return `subject ${names}${versions.length > 3 ? ` and ${versions.length - 3} more` : ''}`;
  } catch {
    return 'subject unknown';
  }
}

interface FieldLike {
  name: string;
  type: AvroType;
  aliases: string[];
}

/**
 * The innermost field where resolving `writer` to `reader` fails (avsc says what does not
 * match, not where): `tags.*` is a map's values, `steps[]` an array's items.
 */
function resolutionPath(reader: AvroType, writer: AvroType, path: string[] = []): string | undefined {
  const fails = (r: AvroType, w: AvroType) => {
    try {
      r.createResolver(w);
      return false;
    } catch {
      return true;
    }
  };
  if (reader.typeName === 'record' && writer.typeName === 'record') {
    const writerFields = (writer as unknown as { fields: FieldLike[] }).fields;
    for (const field of (reader as unknown as { fields: FieldLike[] }).fields) {
      const match = writerFields.find((w) => w.name === field.name || field.aliases.includes(w.name));
      if (match === undefined) continue;
      if (fails(field.type, match.type)) return resolutionPath(field.type, match.type, [...path, field.name]) ?? [...path, field.name].join('.');
    }
    return path.length === 0 ? undefined : path.join('.');
  }
  if (reader.typeName === 'array' && writer.typeName === 'array') {
    const items = (t: AvroType) => (t as unknown as { itemsType: AvroType }).itemsType;
    return resolutionPath(items(reader), items(writer), [...path.slice(0, -1), `${path.at(-1) ?? ''}[]`]);
  }
  if (reader.typeName === 'map' && writer.typeName === 'map') {
    const values = (t: AvroType) => (t as unknown as { valuesType: AvroType }).valuesType;
    return resolutionPath(values(reader), values(writer), [...path, '*']);
  }
  return path.length === 0 ? undefined : path.join('.');
}

/** Where `value` does not fit `type`, as `rollout.run_id is undefined, expected "string"`. */
function invalidPath(type: AvroType, value: unknown): string | undefined {
  let found: string | undefined;
  type.isValid(value, {
    errorHook: (path, any, t) => {
      found ??= `${path.length === 0 ? 'the value' : path.join('.')} is ${describe(any)}, expected ${JSON.stringify(t.schema())}`;
    },
  });
  return found;
}

function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

/**
 * The `@confluentinc/schemaregistry` serde of the same subject and pinned id: the reference the
 * compiled serde is byte-compatible with (tests and the bench compare against it). Not used on
 * Flywheel's own paths: it redoes schema work for every message.
 */
export function confluentSerde<T>(client: SchemaRegistryClient, topic: string, schemaId: number): { serialize(value: T): Promise<Buffer>; deserialize(payload: Buffer): Promise<T> } {
  // Subjects are named by topic, said explicitly: the default strategy first asks the registry's
  // associations endpoint, which Apicurio does not serve (404) and which sometimes stalls there.
  const naming = { subjectNameStrategyType: SubjectNameStrategyType.TOPIC };
  const serializer = new AvroSerializer(client, SerdeType.VALUE, { useSchemaId: schemaId, autoRegisterSchemas: false, ...naming });
  const deserializer = new AvroDeserializer(client, SerdeType.VALUE, naming);
  return {
    serialize: (value) => serializer.serialize(topic, value),
    deserialize: (payload) => deserializer.deserialize(topic, payload) as Promise<T>,
  };
}

export const rolloutSerde = (client: SchemaRegistryClient, topic: string) => topicSerde<Rollout>(client, topic, rolloutSchema);
export const decisionSerde = (client: SchemaRegistryClient, topic: string) => topicSerde<Decision>(client, topic, decisionSchema);
export const labelSerde = (client: SchemaRegistryClient, topic: string) => topicSerde<Label>(client, topic, labelSchema);
export const modelUpdateSerde = (client: SchemaRegistryClient, topic: string) => topicSerde<ModelUpdate>(client, topic, modelUpdateSchema);

/**
 * Two replacements in kafkajs 2.2.4's produce path, byte for byte and object for object what
 * kafkajs's own code returns, at a fraction of the allocation. A processor transaction sends
 * thousands of records to one partition (decisions, accepted copies, changelog records), and
 * there kafkajs's versions were most of a pipeline worker's CPU and JS heap per record:
 *
 * - `groupMessagesPerPartition` (first step of every send) rebuilt the partition's array for
 *   every message (`[...current, message]` in a reduce): n²/2 array slots per send, ~8 % of the
 *   worker's self time and most of its ~100 KB of JS heap per record. Here: one push each.
 * - the v0 `Record` encoder (one per message) zero-filled a 512-byte buffer, built every varint
 *   as a JS array turned into a Buffer, and every varlong through `Long` objects. Here: the
 *   record's exact size first, then one pooled buffer written in place. Records with headers,
 *   or with a timestamp delta outside int32, still go through kafkajs's encoder.
 *
 * - the Produce request (v3, which v4–v7 wrap): kafkajs encoded each record into an Encoder of
 *   its own (after spreading the message into a new object), concatenated them into a batch
 *   body grown by doubling, computed the batch's CRC32C a byte at a time, then copied the
 *   batch into the partition's, the topic's and the request's Encoders. Here (no compression):
 *   every size first, then one buffer, each record written in place, the CRC32C over the body
 *   native (slice-by-8 in JS where the native binary does not load). With compression
 *   kafkajs's own request builds the body. The request's framing (`protocol/request.js`: size, api key and version, correlation id, client id) is
 *   likewise written into one exact buffer instead of two doubling ones.
 *
 * kafkajs reads these modules once, when they load, so this must run before the first import
 * of kafkajs evaluates: pipeline/run.ts, streams/kafka.ts and bench/worker.ts import it first.
 * `linearGrouping` says whether the grouping replacement took (the record encoder loads
 * lazily, with the first produce request, so it always does).
 *
 *   import './kafkajs-producer.ts';   // before `import … from 'kafkajs'`
 */
import { createRequire } from 'node:module';

interface GroupArgs {
  topic: string;
  partitionMetadata: unknown[];
  messages: unknown[];
  partitioner: (args: { topic: string; partitionMetadata: unknown[]; message: unknown }) => number;
}

function groupMessagesPerPartition({ topic, partitionMetadata, messages, partitioner }: GroupArgs): Record<number, unknown[]> {
  if (partitionMetadata.length === 0) return {};
  const result: Record<number, unknown[]> = {};
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message });
    (result[partition] ??= []).push(message);
  }
  return result;
}

interface RecordArgs {
  offsetDelta?: number;
  timestampDelta?: number;
  key?: Buffer | string | null;
  value?: Buffer | string | null;
  headers?: Record<string, unknown>;
}

/** kafkajs's Encoder, as far as a record needs it: the encoded bytes and how many. */
interface EncoderLike {
  buf: Buffer;
  offset: number;
}

type RecordEncoder = (args: RecordArgs) => EncoderLike;

const zigzag = (v: number) => (v << 1) ^ (v >> 31);

function sizeOfUVarInt(u: number): number {
  let bytes = 1;
  while ((u & 0xffffff80) !== 0) {
    bytes++;
    u >>>= 7;
  }
  return bytes;
}

function writeUVarInt(buf: Buffer, at: number, u: number): number {
  while ((u & 0xffffff80) !== 0) {
    buf[at++] = (u & 0x7f) | 0x80;
    u >>>= 7;
  }
  buf[at++] = u & 0x7f;
  return at;
}

/** Bytes of a key or value as kafkajs writes it (varint length, -1 for null, then the bytes). */
const byteLengthOf = (v: Buffer | string | null | undefined) => (v == null ? -1 : typeof v === 'string' ? Buffer.byteLength(v) : v.length);

/** A key or value the fast paths write themselves (kafkajs also takes other types). */
const plain = (k: unknown) => k == null || typeof k === 'string' || Buffer.isBuffer(k);

function fastRecord(original: RecordEncoder, encoderPrototype: object): RecordEncoder {
  return (args) => {
    const { offsetDelta = 0, timestampDelta = 0, key, value, headers } = args;
    if (
      (headers !== undefined && Object.keys(headers).length > 0) ||
      !plain(key) ||
      !plain(value) ||
      !Number.isInteger(timestampDelta) ||
      timestampDelta !== (timestampDelta | 0) ||
      offsetDelta !== (offsetDelta | 0)
    ) {
      return original(args);
    }
    const keyLength = byteLengthOf(key);
    const valueLength = byteLengthOf(value);
    // Within int32, a zigzag varlong is the zigzag varint: the same bytes.
    const ts = zigzag(timestampDelta);
    const od = zigzag(offsetDelta);
    const k = zigzag(keyLength);
    const v = zigzag(valueLength);
    const body = 1 + sizeOfUVarInt(ts) + sizeOfUVarInt(od) + sizeOfUVarInt(k) + Math.max(keyLength, 0) + sizeOfUVarInt(v) + Math.max(valueLength, 0) + 1;
    const total = sizeOfUVarInt(zigzag(body)) + body;
    const buf = Buffer.allocUnsafe(total);
    let at = writeUVarInt(buf, 0, zigzag(body));
    buf[at++] = 0; // attributes
    at = writeUVarInt(buf, at, ts);
    at = writeUVarInt(buf, at, od);
    at = writeUVarInt(buf, at, k);
    if (typeof key === 'string') at += buf.write(key, at, keyLength, 'utf8');
    else if (key != null) at += key.copy(buf, at);
    at = writeUVarInt(buf, at, v);
    if (typeof value === 'string') at += buf.write(value, at, valueLength, 'utf8');
    else if (value != null) at += value.copy(buf, at);
    buf[at++] = 0; // no headers: varint 0
    const encoder = Object.create(encoderPrototype) as EncoderLike;
    encoder.buf = buf;
    encoder.offset = at;
    return encoder;
  };
}

const require = createRequire(import.meta.url);
const groupingPath = require.resolve('kafkajs/src/producer/groupMessagesPerPartition.js');
const senderPath = require.resolve('kafkajs/src/producer/sendMessages.js');
const recordPath = require.resolve('kafkajs/src/protocol/recordBatch/record/v0/index.js');
const encoderPath = require.resolve('kafkajs/src/protocol/encoder.js');

/** False when kafkajs's producer had loaded before this module (the quadratic grouping stays). */
export const linearGrouping: boolean = require.cache[senderPath] === undefined;
if (linearGrouping) {
  require(groupingPath);
  require.cache[groupingPath]!.exports = groupMessagesPerPartition;
}

/** kafkajs's own record encoder, for comparison (tests) and for the records the fast path leaves to it. */
export const kafkajsRecord = require(recordPath) as RecordEncoder;
const encoderClass = require(encoderPath) as { prototype: object };
/** The replacement; in effect unless a produce request module had loaded first (`fastRecords`). */
export const fastRecordEncoder: RecordEncoder = fastRecord(kafkajsRecord, encoderClass.prototype);
const producePath = require.resolve('kafkajs/src/protocol/requests/produce/v3/request.js');
export const fastRecords: boolean = require.cache[producePath] === undefined;
if (fastRecords) require.cache[recordPath]!.exports = fastRecordEncoder;

// ---------------------------------------------------------------------------------------------
// CRC32C (Castagnoli): the checksum of a record batch's body. @node-rs/crc32's, which uses the
// CPU's CRC32 instruction, where its prebuilt binary loads (10× the slice-by-8 below here:
// 4,100 against 420 MB/s; the demo worker spent 6 % of its CPU in the JS one); else slice-by-8.

const nativeCrc32c: ((input: Buffer, initialState?: number) => number) | undefined = (() => {
  try {
    return (require('@node-rs/crc32') as { crc32c(input: Buffer, initialState?: number): number }).crc32c;
  } catch {
    return undefined;
  }
})();

/** Whether `crc32c` runs the native checksum. */
export const nativeChecksum: boolean = nativeCrc32c !== undefined;

const CRC_TABLES: Int32Array[] = (() => {
  const t0 = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t0[n] = c;
  }
  const tables = [t0];
  for (let k = 1; k < 8; k++) {
    const prev = tables[k - 1]!;
    const t = new Int32Array(256);
    for (let n = 0; n < 256; n++) t[n] = (prev[n]! >>> 8) ^ t0[prev[n]! & 0xff]!;
    tables.push(t);
  }
  return tables;
})();

/** CRC32C of `buf[start, end)`, as an unsigned 32-bit number (kafkajs's crc32C gives the same). */
export function crc32c(buf: Uint8Array, start = 0, end = buf.length): number {
  if (nativeCrc32c === undefined) return crc32cPortable(buf, start, end);
  return nativeCrc32c(Buffer.from(buf.buffer, buf.byteOffset + start, end - start)) >>> 0;
}

/** `crc32c` in JS, slice-by-8: where the native binary is not available. */
export function crc32cPortable(buf: Uint8Array, start = 0, end = buf.length): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC_TABLES as [Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array];
  let crc = -1;
  let i = start;
  const stop8 = end - ((end - start) & 7);
  while (i < stop8) {
    const a = (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24)) ^ crc;
    crc = t7[a & 0xff]! ^ t6[(a >>> 8) & 0xff]! ^ t5[(a >>> 16) & 0xff]! ^ t4[a >>> 24]! ^ t3[buf[i + 4]!]! ^ t2[buf[i + 5]!]! ^ t1[buf[i + 6]!]! ^ t0[buf[i + 7]!]!;
    i += 8;
  }
  while (i < end) crc = t0[(crc ^ buf[i++]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// The Produce request, v3 layout (v4–v7 send the same body under another version number).

interface ProduceMessage {
  key?: Buffer | string | null;
  value?: Buffer | string | null;
  headers?: Record<string, unknown>;
  timestamp?: number | string | null;
}

interface ProduceArgs {
  acks: number;
  timeout: number;
  transactionalId?: string | null;
  producerId?: unknown;
  producerEpoch?: number;
  compression?: number;
  topicData: Array<{ topic: string; partitions: Array<{ partition: number; firstSequence?: number; messages: ProduceMessage[] }> }>;
}

interface ProduceRequest {
  encode: () => Promise<EncoderLike>;
  [field: string]: unknown;
}

type ProduceRequestBuilder = (args: ProduceArgs) => ProduceRequest;

interface LongLike {
  getHighBits(): number;
  getLowBits(): number;
}

const longPath = require.resolve('kafkajs/src/utils/long.js');
const Long = require(longPath) as { fromValue(v: unknown): LongLike; fromInt(v: number): LongLike };
const NO_PRODUCER_ID = Long.fromInt(-1);

function writeInt64(buf: Buffer, at: number, value: unknown): number {
  const long = Long.fromValue(value);
  buf.writeInt32BE(long.getHighBits(), at);
  buf.writeInt32BE(long.getLowBits(), at + 4);
  return at + 8;
}

/** A record's encoding when the fast path takes it: its length prefix and body sizes; else kafkajs's bytes. */
interface PlannedRecord {
  /** The whole record (length varint included), bytes. */
  size: number;
  /** The record after its length varint, bytes. */
  body: number;
  keyLength: number;
  valueLength: number;
  timestampDelta: number;
  /** kafkajs's own encoding, for a record the fast path leaves to it (headers, odd types). */
  bytes?: Buffer;
}

interface PlannedBatch {
  partition: number;
  firstSequence: number | undefined;
  messages: ProduceMessage[];
  records: PlannedRecord[];
  firstTimestamp: unknown;
  maxTimestamp: unknown;
  /** The batch from PartitionLeaderEpoch to the end of its records (RecordBatch's `Length`). */
  length: number;
}

const RECORD_BATCH_HEAD = 4 + 1 + 4; // partition leader epoch, magic, crc
const RECORD_BATCH_BODY_HEAD = 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4; // attributes … first sequence, record count

const stringBytes = (s: string | null | undefined) => (s == null ? 0 : Buffer.byteLength(s, 'utf8'));

function planRecord(message: ProduceMessage, offsetDelta: number, timestampDelta: number): PlannedRecord {
  const { key, value, headers } = message;
  if (
    (headers !== undefined && headers !== null && Object.keys(headers).length > 0) ||
    !plain(key) ||
    !plain(value) ||
    !Number.isInteger(timestampDelta) ||
    timestampDelta !== (timestampDelta | 0)
  ) {
    // As kafkajs builds the record: the message's own fields, then the deltas.
    const encoder = kafkajsRecord({ ...(message as RecordArgs), offsetDelta, timestampDelta });
    const bytes = encoder.buf.subarray(0, encoder.offset);
    return { size: bytes.length, body: 0, keyLength: 0, valueLength: 0, timestampDelta, bytes };
  }
  const keyLength = byteLengthOf(key);
  const valueLength = byteLengthOf(value);
  const body =
    1 +
    sizeOfUVarInt(zigzag(timestampDelta)) +
    sizeOfUVarInt(zigzag(offsetDelta)) +
    sizeOfUVarInt(zigzag(keyLength)) +
    Math.max(keyLength, 0) +
    sizeOfUVarInt(zigzag(valueLength)) +
    Math.max(valueLength, 0) +
    1;
  return { size: sizeOfUVarInt(zigzag(body)) + body, body, keyLength, valueLength, timestampDelta };
}

function writeRecord(buf: Buffer, at: number, message: ProduceMessage, record: PlannedRecord, offsetDelta: number): number {
  if (record.bytes !== undefined) return at + record.bytes.copy(buf, at);
  const { key, value } = message;
  at = writeUVarInt(buf, at, zigzag(record.body));
  buf[at++] = 0; // attributes
  at = writeUVarInt(buf, at, zigzag(record.timestampDelta));
  at = writeUVarInt(buf, at, zigzag(offsetDelta));
  at = writeUVarInt(buf, at, zigzag(record.keyLength));
  if (typeof key === 'string') at += buf.write(key, at, record.keyLength, 'utf8');
  else if (key != null) at += (key as Buffer).copy(buf, at);
  at = writeUVarInt(buf, at, zigzag(record.valueLength));
  if (typeof value === 'string') at += buf.write(value, at, record.valueLength, 'utf8');
  else if (value != null) at += (value as Buffer).copy(buf, at);
  buf[at++] = 0; // no headers
  return at;
}

function planBatch(partition: { partition: number; firstSequence?: number; messages: ProduceMessage[] }): PlannedBatch {
  const { messages } = partition;
  // Exactly kafkajs's timestamps: the (string-)sorted given ones, else now for all.
  const dateNow = Date.now();
  let firstTimestamp: unknown = dateNow;
  let maxTimestamp: unknown = dateNow;
  let given = false;
  for (const m of messages) if (m.timestamp != null) given = true;
  if (given) {
    const sorted = messages
      .map((m) => m.timestamp)
      .filter((t) => t != null)
      .sort();
    firstTimestamp = sorted[0];
    maxTimestamp = sorted[sorted.length - 1];
  }
  const records = new Array<PlannedRecord>(messages.length);
  let length = RECORD_BATCH_HEAD + RECORD_BATCH_BODY_HEAD;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    const timestampDelta = given ? ((m.timestamp || dateNow) as number) - (firstTimestamp as number) : 0;
    const record = planRecord(m, i, timestampDelta);
    records[i] = record;
    length += record.size;
  }
  return { partition: partition.partition, firstSequence: partition.firstSequence, messages, records, firstTimestamp, maxTimestamp, length };
}

/** The v3 Produce request body of `args` (no compression), byte for byte what kafkajs's encode returns. */
export function encodeProduceRequest(args: ProduceArgs, encoderPrototype: object = encoderClass.prototype): EncoderLike {
  const { acks, timeout, transactionalId = null, producerId = NO_PRODUCER_ID, producerEpoch = 0, topicData } = args;
  const transactional = !!transactionalId; // as kafkajs: an empty id is not transactional
  let total = 2 + stringBytes(transactionalId) + 2 + 4 + 4;
  const plans = topicData.map(({ topic, partitions }) => {
    total += 2 + stringBytes(topic) + 4;
    const batches = partitions.map((p) => {
      const plan = planBatch(p);
      total += 4 + 4 + 8 + 4 + plan.length;
      return plan;
    });
    return { topic, batches };
  });
  const buf = Buffer.allocUnsafe(total);
  let at = 0;
  const writeString = (value: string | null) => {
    if (value == null) {
      buf.writeInt16BE(-1, at);
      at += 2;
      return;
    }
    const length = Buffer.byteLength(value, 'utf8');
    buf.writeInt16BE(length, at);
    at += 2;
    at += buf.write(value, at, length, 'utf8');
  };
  writeString(transactionalId);
  buf.writeInt16BE(acks, at);
  buf.writeInt32BE(timeout, (at += 2));
  buf.writeInt32BE(plans.length, (at += 4));
  at += 4;
  for (const { topic, batches } of plans) {
    writeString(topic);
    buf.writeInt32BE(batches.length, at);
    at += 4;
    for (const batch of batches) {
      buf.writeInt32BE(batch.partition, at);
      buf.writeInt32BE(8 + 4 + batch.length, at + 4); // the record set: first offset, length, batch
      at = writeInt64(buf, at + 8, 0); // first offset
      buf.writeInt32BE(batch.length, at);
      at += 4;
      buf.writeInt32BE(0, at); // partition leader epoch
      buf[at + 4] = 2; // magic
      const crcAt = at + 5;
      at += RECORD_BATCH_HEAD;
      const bodyStart = at;
      buf.writeInt16BE(transactional ? 16 : 0, at); // attributes: no compression, create time, transactional bit
      buf.writeInt32BE(batch.records.length - 1, at + 2); // last offset delta
      at = writeInt64(buf, at + 6, batch.firstTimestamp);
      at = writeInt64(buf, at, batch.maxTimestamp);
      at = writeInt64(buf, at, producerId);
      buf.writeInt16BE(producerEpoch, at);
      buf.writeInt32BE(batch.firstSequence ?? 0, at + 2);
      buf.writeInt32BE(batch.records.length, at + 6);
      at += 10;
      for (let i = 0; i < batch.records.length; i++) at = writeRecord(buf, at, batch.messages[i]!, batch.records[i]!, i);
      buf.writeUInt32BE(crc32c(buf, bodyStart, at), crcAt);
    }
  }
  if (at !== total) throw new Error(`produce request: wrote ${at} bytes of ${total} planned`);
  const encoder = Object.create(encoderPrototype) as EncoderLike;
  encoder.buf = buf;
  encoder.offset = at;
  return encoder;
}

/** kafkajs's v3 Produce request with the body written by `encodeProduceRequest` (compressed ones stay kafkajs's). */
function fastProduce(original: ProduceRequestBuilder): ProduceRequestBuilder {
  return (args) => {
    const request = original(args);
    if ((args.compression ?? 0) !== 0) return request;
    return { ...request, encode: async () => encodeProduceRequest(args) };
  };
}

/** Whether the replacement Produce request is in effect (a produce request module loaded first: no). */
export const fastProduceRequests: boolean = fastRecords;
/** kafkajs's own v3 Produce request builder (tests compare with it). */
export const kafkajsProduceRequest = require(producePath) as ProduceRequestBuilder;
if (fastProduceRequests) require.cache[producePath]!.exports = fastProduce(kafkajsProduceRequest);

// ---------------------------------------------------------------------------------------------
// Request framing (protocol/request.js): Size, ApiKey, ApiVersion, CorrelationId, ClientId, body.

interface FramingArgs {
  correlationId: number;
  clientId: string | null;
  request: { apiKey: number; apiVersion: number; encode: () => Promise<EncoderLike> | EncoderLike };
}

type Framing = (args: FramingArgs) => Promise<EncoderLike>;

async function frameRequest({ correlationId, clientId, request: { apiKey, apiVersion, encode } }: FramingArgs): Promise<EncoderLike> {
  const payload = await encode();
  const clientIdBytes = clientId == null ? 0 : Buffer.byteLength(clientId, 'utf8');
  const size = 2 + 2 + 4 + 2 + clientIdBytes + payload.offset;
  const buf = Buffer.allocUnsafe(4 + size);
  buf.writeInt32BE(size, 0);
  buf.writeInt16BE(apiKey, 4);
  buf.writeInt16BE(apiVersion, 6);
  buf.writeInt32BE(correlationId, 8);
  buf.writeInt16BE(clientId == null ? -1 : clientIdBytes, 12);
  if (clientId != null) buf.write(clientId, 14, clientIdBytes, 'utf8');
  payload.buf.copy(buf, 14 + clientIdBytes, 0, payload.offset);
  const encoder = Object.create(encoderClass.prototype) as EncoderLike;
  encoder.buf = buf;
  encoder.offset = buf.length;
  return encoder;
}

const framingPath = require.resolve('kafkajs/src/protocol/request.js');
const connectionPath = require.resolve('kafkajs/src/network/connection.js');
/** Whether the one-buffer framing is in effect (false when kafkajs's connection module had loaded first). */
export const fastFraming: boolean = require.cache[connectionPath] === undefined;
/** kafkajs's own framing (tests compare with it). */
export const kafkajsFraming = require(framingPath) as Framing;
if (fastFraming) require.cache[framingPath]!.exports = frameRequest;

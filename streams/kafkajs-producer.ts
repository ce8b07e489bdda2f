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

function fastRecord(original: RecordEncoder, encoderPrototype: object): RecordEncoder {
  return (args) => {
    const { offsetDelta = 0, timestampDelta = 0, key, value, headers } = args;
    const plain = (k: unknown) => k == null || typeof k === 'string' || Buffer.isBuffer(k);
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

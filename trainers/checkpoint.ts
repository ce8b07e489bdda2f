import { createHash, randomUUID } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * A trainer checkpoint file: the trainer's state and the input offsets it covers, in one file,
 * replaced atomically (temp file + fsync + rename + fsync of the directory). Whatever the file
 * says is what the trainer had trained when it was written: the offsets in it are
 * authoritative over the consumer group's committed offsets.
 *
 * Layout (all integers little-endian):
 *   "FLYWCKP1"                 8 bytes magic
 *   header length              u32
 *   header                     UTF-8 JSON (CheckpointHeader)
 *   padding to 8 bytes
 *   arrays                     raw typed-array bytes, each 8-byte aligned, as the header lists
 *   sha256                     32 bytes over everything before it
 * Big numeric state (a D×D matrix) goes in `arrays`, so it is neither inflated by JSON nor
 * rounded: Float64 values come back bit for bit.
 */

export interface TopicPartitionOffset {
  topic: string;
  partition: number;
  /** The next offset to read: everything before it is covered. Decimal string (int64). */
  offset: string;
}

export type CheckpointArray = Float64Array | Float32Array | Int32Array | Uint8Array;

export interface Checkpoint<S = unknown> {
  /** The consumer group the offsets belong to. */
  group: string;
  /** Epoch milliseconds when written. */
  savedAt: number;
  offsets: TopicPartitionOffset[];
  /** The trainer's own state (JSON). */
  state: S;
  arrays: Record<string, CheckpointArray>;
  /** The client's admission state (e.g. the replay buffer), restored with the offsets. */
  admission: unknown;
}

interface ArrayEntry {
  name: string;
  dtype: 'float64' | 'float32' | 'int32' | 'uint8';
  byteOffset: number;
  length: number;
}

interface CheckpointHeader {
  format: 1;
  group: string;
  savedAt: number;
  offsets: TopicPartitionOffset[];
  state: unknown;
  admission: unknown;
  arrays: ArrayEntry[];
}

const MAGIC = Buffer.from('FLYWCKP1', 'latin1');

function dtypeOf(a: CheckpointArray): ArrayEntry['dtype'] {
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Int32Array) return 'int32';
  return 'uint8';
}

const align8 = (n: number) => (n + 7) & ~7;

/** Encodes a checkpoint (see the layout above). */
export function encodeCheckpoint(checkpoint: Checkpoint): Buffer {
  const entries: ArrayEntry[] = [];
  let cursor = 0;
  for (const [name, array] of Object.entries(checkpoint.arrays)) {
    entries.push({ name, dtype: dtypeOf(array), byteOffset: cursor, length: array.length });
    cursor = align8(cursor + array.byteLength);
  }
  const header: CheckpointHeader = {
    format: 1,
    group: checkpoint.group,
    savedAt: checkpoint.savedAt,
    offsets: checkpoint.offsets,
    state: checkpoint.state,
    admission: checkpoint.admission ?? null,
    arrays: entries,
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const dataStart = align8(MAGIC.length + 4 + json.length);
  const out = Buffer.alloc(dataStart + cursor + 32);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(json.length, MAGIC.length);
  json.copy(out, MAGIC.length + 4);
  for (const entry of entries) {
    const array = checkpoint.arrays[entry.name]!;
    Buffer.from(array.buffer, array.byteOffset, array.byteLength).copy(out, dataStart + entry.byteOffset);
  }
  createHash('sha256').update(out.subarray(0, out.length - 32)).digest().copy(out, out.length - 32);
  return out;
}

/** Decodes and verifies a checkpoint; throws on a truncated, corrupted or foreign file. */
export function decodeCheckpoint<S = unknown>(bytes: Buffer): Checkpoint<S> {
  if (bytes.length < MAGIC.length + 4 + 32 || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error('not a Flywheel trainer checkpoint (bad magic)');
  const digest = createHash('sha256').update(bytes.subarray(0, bytes.length - 32)).digest();
  if (!digest.equals(bytes.subarray(bytes.length - 32))) throw new Error('checkpoint is corrupted (sha256 mismatch)');
  const length = bytes.readUInt32LE(MAGIC.length);
  const header = JSON.parse(bytes.subarray(MAGIC.length + 4, MAGIC.length + 4 + length).toString('utf8')) as CheckpointHeader;
  if (header.format !== 1) throw new Error(`unknown checkpoint format ${String(header.format)}`);
  const dataStart = align8(MAGIC.length + 4 + length);
  const arrays: Record<string, CheckpointArray> = {};
  for (const entry of header.arrays) {
    const start = dataStart + entry.byteOffset;
    // Copy into a fresh, aligned buffer: the file's bytes are not guaranteed aligned in memory.
    const width = entry.dtype === 'float64' ? 8 : entry.dtype === 'uint8' ? 1 : 4;
    const copy = new ArrayBuffer(entry.length * width);
    new Uint8Array(copy).set(bytes.subarray(start, start + entry.length * width));
    arrays[entry.name] =
      entry.dtype === 'float64' ? new Float64Array(copy) : entry.dtype === 'float32' ? new Float32Array(copy) : entry.dtype === 'int32' ? new Int32Array(copy) : new Uint8Array(copy);
  }
  return { group: header.group, savedAt: header.savedAt, offsets: header.offsets, state: header.state as S, arrays, admission: header.admission };
}

/**
 * Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename over
 * `path`, fsync of the directory (so the rename itself survives a power cut). A crash at any
 * point leaves either the old file or the new one, never a mix; a leftover temp file is
 * harmless (and removed by the next write that fails).
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomUUID().slice(0, 8)}.tmp`);
  const file = await open(tmp, 'w', 0o644);
  try {
    await file.writeFile(bytes);
    await file.sync();
  } catch (err) {
    await file.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
  await file.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic there.
  } finally {
    await dir.close();
  }
}

export async function writeCheckpointFile(path: string, checkpoint: Checkpoint): Promise<void> {
  await writeFileAtomic(path, encodeCheckpoint(checkpoint));
}

/** The checkpoint at `path`, or undefined when there is none yet. A corrupted file throws. */
export async function readCheckpointFile<S = unknown>(path: string): Promise<Checkpoint<S> | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return decodeCheckpoint<S>(bytes);
}

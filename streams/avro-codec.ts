import avsc from 'avsc';

/**
 * Avro binary codecs compiled per schema, the hot path of streams/serde.ts. avsc (which the
 * Confluent serde uses, so the bytes it writes are the reference) compiles a type into a tree of
 * small `_read`/`_write` methods called through a Tap object; for a fixed schema this generates
 * one straight-line function instead: every field, map and array inlined, the position a local
 * of the codec's closure, JS objects built as literals (one hidden class per record).
 *
 * The decoder is generated for a pair (writer schema, reader schema), so schema resolution is the
 * same compiled path: the writer's fields are read in the writer's order, fields the reader lacks
 * are skipped, fields the writer lacks take the reader's default. What it does not generate itself
 * (type promotions such as int → long, unions or enums that differ between writer and reader,
 * recursive records, wrapped unions) it hands to avsc for that sub-value, so every schema avsc can
 * resolve decodes, with avsc's values. The encoder writes exactly what avsc's `Type.encode` writes
 * (same varints, same string bytes — including avsc's own encoding of lone surrogates in short
 * strings — same defaults for absent fields), checked against @confluentinc/schemaregistry's
 * bytes in tests/serde.test.ts.
 *
 *   const decode = compileDecoder(writerType, readerType);   // throws Unsupported: use avsc
 *   const rollout = decode(payload, 5);                       // throws BodyError / Error
 *   const encode = compileEncoder(readerType);
 *   const bytes = encode(rollout, header);                    // header ++ Avro body, a fresh Buffer
 */

type AvroType = avsc.Type;

/** The generator does not handle this schema; the caller uses avsc for it. */
export class Unsupported extends Error {}

/** The Avro body does not fit its buffer: it ends early, or bytes follow it. */
export class BodyError extends Error {
  constructor(
    readonly kind: 'truncated' | 'trailing',
    /** For 'trailing': how many bytes follow the value. */
    readonly extra = 0,
  ) {
    super(kind === 'truncated' ? 'the body is truncated' : `${extra} bytes of trailing data`);
  }
}

/** A value that does not fit the schema (the caller says where, with avsc's `isValid`). */
export class InvalidValue extends Error {}

/** Decodes the Avro body `buf[start…]`, which must end exactly at `buf.length`. */
export type Decoder<T> = (buf: Buffer, start: number) => T;

/**
 * Encodes `value` after the bytes of `before` (e.g. the wire-format header) and `middle` (e.g. an
 * embedded, already encoded first field), into one fresh Buffer.
 */
export type Encoder<T> = (value: T, before: Buffer, middle?: Buffer) => Buffer;

interface Field {
  name: string;
  type: AvroType;
  aliases: string[];
  defaultValue(): unknown;
}
const fieldsOf = (t: AvroType) => (t as unknown as { fields: Field[] }).fields;
const itemsOf = (t: AvroType) => (t as unknown as { itemsType: AvroType }).itemsType;
const valuesOf = (t: AvroType) => (t as unknown as { valuesType: AvroType }).valuesType;
const branchesOf = (t: AvroType) => (t as unknown as { types: AvroType[] }).types;
const symbolsOf = (t: AvroType) => (t as unknown as { symbols: string[] }).symbols;
const sizeOf = (t: AvroType) => {
  const size = (t as unknown as { size: unknown }).size;
  // It goes into the source as a literal: a number, whatever the schema said.
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new Unsupported(`fixed size ${String(size)}`);
  return size;
};

/** avsc's range for a long read or written as a JS number. */
const SAFE_LONG = 9007199254740990;

/** State shared by the generated code and its helpers (one per compiled function). */
const DECODE_HELPERS = `
let buf, pos, end;
function long() {
  let n = 0, k = 0, b, h;
  do { b = buf[pos++]; h = b & 0x80; n |= (b & 0x7f) << k; k += 7; } while (h && k < 28);
  if (h) {
    let f = n, fk = 268435456;
    do { b = buf[pos++]; f += (b & 0x7f) * fk; fk *= 128; } while (b & 0x80);
    return (f % 2 ? -(f + 1) : f) / 2;
  }
  return (n >> 1) ^ -(n & 1);
}
function safeLong() {
  const n = long();
  if (!(n >= -${SAFE_LONG} && n <= ${SAFE_LONG})) throw new Error('potential precision loss');
  return n;
}
function str() {
  const n = long();
  const from = pos;
  if (n < 0 || from + n > end) throw truncated();
  const to = pos = from + n;
  // Most strings are short: a call into C++ (utf8Slice) per string is most of a record's decode.
  // A short ASCII string is instead cut from one Latin-1 string of the whole body, made once per
  // record (ASCII bytes are the same characters in UTF-8 and Latin-1). V8 copies a substring
  // shorter than 13 chars, so it does not keep the body's string alive; longer ones, non-ASCII
  // ones and those of large bodies go through utf8Slice, as in avsc.
  if (n >= 13 || end - base > 4096) return buf.utf8Slice(from, to);
  for (let i = from; i < to; i++) if (buf[i] >= 0x80) return buf.utf8Slice(from, to);
  if (text === undefined) text = buf.latin1Slice(base, end);
  return text.substring(from - base, to - base);
}
/** The body as Latin-1 (made on the first short string), and where it starts in buf. */
let text, base;
function bytes(n) {
  if (n < 0 || pos + n > end) throw truncated();
  const out = Buffer.allocUnsafe(n);
  buf.copy(out, 0, pos, pos + n);
  pos += n;
  return out;
}
function double() {
  if (pos + 8 > end) throw truncated();
  const d = buf.readDoubleLE(pos);
  pos += 8;
  return d;
}
function float() {
  if (pos + 4 > end) throw truncated();
  const d = buf.readFloatLE(pos);
  pos += 4;
  return d;
}
function skipString() { const n = long(); if (n < 0) throw truncated(); pos += n; }
function viaAvsc(type, resolver) {
  const d = type.decode(buf, pos, resolver);
  if (d.offset < 0) throw truncated();
  pos = d.offset;
  return d.value;
}
`;

/**
 * The decoder of bodies written with `writer`, giving values of `reader` (avsc's values: records
 * as plain objects with the reader's fields in order, maps as objects, unions unwrapped, longs as
 * numbers). `writer` must resolve to `reader` (check with `reader.createResolver(writer)` first:
 * its error says why not). Throws Unsupported when it cannot generate the decoder.
 */
export function compileDecoder<T>(writer: AvroType, reader: AvroType): Decoder<T> {
  const gen = new Gen();
  const value = gen.read(writer, reader);
  const source = `${DECODE_HELPERS}
return function decode(b, start) {
  buf = b; pos = start; end = b.length; text = undefined; base = start;
  ${gen.lines.join('\n  ')}
  if (pos > end) throw truncated();
  if (pos < end) throw trailing(end - pos);
  return ${value};
};`;
  return gen.build(source, {
    truncated: () => new BodyError('truncated'),
    trailing: (n: number) => new BodyError('trailing', n),
  }) as Decoder<T>;
}

const ENCODE_HELPERS = `
let out = Buffer.alloc(64 * 1024), pos = 0;
function grow(n) {
  const bigger = Buffer.alloc(Math.max(out.length * 2, pos + n));
  out.copy(bigger, 0, 0, pos);
  out = bigger;
}
function long(n) {
  if (pos + 10 > out.length) grow(10);
  if (n >= -1073741824 && n < 1073741824) {
    let m = n >= 0 ? n << 1 : (~n << 1) | 1;
    do { out[pos] = m & 0x7f; m >>= 7; } while (m && (out[pos++] |= 0x80));
  } else {
    let f = n >= 0 ? n * 2 : (-n * 2) - 1;
    do { out[pos] = f & 0x7f; f /= 128; } while (f >= 1 && (out[pos++] |= 0x80));
  }
  pos++;
}
function str(s) {
  if (typeof s !== 'string') throw invalid();
  const n = s.length;
  if (n <= 64) {
    // ASCII (the common case): one byte per char, written here.
    if (pos + 10 + n > out.length) grow(10 + n);
    const mark = pos;
    long(n);
    let i = 0;
    for (; i < n; i++) { const c = s.charCodeAt(i); if (c >= 0x80) break; out[pos + i] = c; }
    if (i === n) { pos += n; return; }
    pos = mark;
  }
  const len = Buffer.byteLength(s);
  long(len);
  if (pos + len > out.length) grow(len);
  if (len > 64) { out.utf8Write(s, pos, len); pos += len; return; }
  // avsc's own loop for short strings (it differs from utf8Write on lone surrogates).
  for (let i = 0, l = s.length; i < l; i++) {
    let c1 = s.charCodeAt(i), c2;
    if (c1 < 0x80) out[pos++] = c1;
    else if (c1 < 0x800) { out[pos++] = c1 >> 6 | 0xc0; out[pos++] = c1 & 0x3f | 0x80; }
    else if ((c1 & 0xfc00) === 0xd800 && ((c2 = s.charCodeAt(i + 1)) & 0xfc00) === 0xdc00) {
      c1 = 0x10000 + ((c1 & 0x03ff) << 10) + (c2 & 0x03ff); i++;
      out[pos++] = c1 >> 18 | 0xf0; out[pos++] = c1 >> 12 & 0x3f | 0x80; out[pos++] = c1 >> 6 & 0x3f | 0x80; out[pos++] = c1 & 0x3f | 0x80;
    } else { out[pos++] = c1 >> 12 | 0xe0; out[pos++] = c1 >> 6 & 0x3f | 0x80; out[pos++] = c1 & 0x3f | 0x80; }
  }
}
function raw(b) {
  if (pos + b.length > out.length) grow(b.length);
  b.copy(out, pos);
  pos += b.length;
}
function double(d) {
  if (typeof d !== 'number') throw invalid();
  if (pos + 8 > out.length) grow(8);
  out.writeDoubleLE(d, pos);
  pos += 8;
}
function float(d) {
  if (typeof d !== 'number') throw invalid();
  if (pos + 4 > out.length) grow(4);
  out.writeFloatLE(d, pos);
  pos += 4;
}
`;

/**
 * The encoder of `type` (writes what avsc's `type.encode` writes). Throws Unsupported when it
 * cannot generate one. The returned function throws InvalidValue (or a TypeError, for a record
 * that is not an object) when the value does not fit.
 */
export function compileEncoder<T>(type: AvroType): Encoder<T> {
  const gen = new Gen();
  gen.write(type, 'value');
  const source = `${ENCODE_HELPERS}
return function encode(value, before, middle) {
  pos = 0;
  ${gen.lines.join('\n  ')}
  // The value was written alone; the bytes before it are copied once, into the result.
  const at = before.length + (middle === undefined ? 0 : middle.length);
  const copy = Buffer.allocUnsafe(at + pos);
  copy.set(before, 0);
  if (middle !== undefined) copy.set(middle, before.length);
  out.copy(copy, at, 0, pos);
  return copy;
};`;
  return gen.build(source, { invalid: () => new InvalidValue('invalid value') }) as Encoder<T>;
}

/** Source text and the constants it refers to (K0, K1, …). */
class Gen {
  readonly lines: string[] = [];
  private readonly constants: unknown[] = [];
  private vars = 0;
  /** Records being generated: a record inside itself is recursive (left to avsc). */
  private readonly open = new Set<AvroType>();

  build(source: string, named: Record<string, unknown>): unknown {
    const names = [...Object.keys(named), ...this.constants.map((_, i) => `K${i}`)];
    // Source from the schema alone, never from data; a writer schema comes from the registry, so
    // its names enter the source only through JSON.stringify, and values only as constants.
    return new Function(...names, source)(...Object.values(named), ...this.constants);
  }

  private constant(value: unknown): string {
    this.constants.push(value);
    return `K${this.constants.length - 1}`;
  }

  private fresh(): string {
    return `v${this.vars++}`;
  }

  private emit(line: string): void {
    this.lines.push(line);
  }

  /** Emits the reading of a `writer` value as a `reader` value; returns the variable holding it. */
  read(writer: AvroType, reader: AvroType): string {
    if (writer === reader || reader.equals(writer)) return this.readSame(reader);
    const v = this.fresh();
    if (writer.typeName === 'record' && reader.typeName === 'record' && !this.open.has(reader)) {
      this.open.add(reader);
      const readerFields = fieldsOf(reader);
      const taken = new Map<Field, string>();
      for (const wf of fieldsOf(writer)) {
        const matches = readerFields.filter((rf) => rf.name === wf.name || rf.aliases.includes(wf.name));
        if (matches.length > 1) throw new Unsupported(`two reader fields take ${wf.name}`);
        if (matches.length === 0) this.skip(wf.type);
        else taken.set(matches[0]!, this.read(wf.type, matches[0]!.type));
      }
      const parts = readerFields.map((rf) => `${key(rf.name)}: ${taken.get(rf) ?? this.defaultOf(rf)}`);
      this.emit(`const ${v} = { ${parts.join(', ')} };`);
      this.open.delete(reader);
      return v;
    }
    if (writer.typeName === 'array' && reader.typeName === 'array') return this.readBlocks(v, '[]', () => `${v}.push(${this.read(itemsOf(writer), itemsOf(reader))});`);
    if (writer.typeName === 'map' && reader.typeName === 'map') return this.readBlocks(v, '{}', () => `${v}[k${v}] = ${this.read(valuesOf(writer), valuesOf(reader))};`, true);
    // Promotions, enums and unions that differ: avsc's resolver for this sub-value.
    this.emit(`const ${v} = viaAvsc(${this.constant(reader)}, ${this.constant(reader.createResolver(writer))});`);
    return v;
  }

  private readSame(type: AvroType): string {
    const v = this.fresh();
    switch (type.typeName) {
      case 'null':
        return 'null';
      case 'boolean':
        this.emit(`const ${v} = !!buf[pos++];`);
        return v;
      case 'int':
        this.emit(`const ${v} = long();`);
        return v;
      case 'long':
        this.emit(`const ${v} = safeLong();`);
        return v;
      case 'float':
        this.emit(`const ${v} = float();`);
        return v;
      case 'double':
        this.emit(`const ${v} = double();`);
        return v;
      case 'string':
        this.emit(`const ${v} = str();`);
        return v;
      case 'bytes':
        this.emit(`const ${v} = bytes(long());`);
        return v;
      case 'fixed':
        this.emit(`const ${v} = bytes(${sizeOf(type)});`);
        return v;
      case 'enum': {
        const symbols = this.constant(symbolsOf(type));
        this.emit(`const ${v} = ${symbols}[long()];`);
        this.emit(`if (${v} === undefined) throw new Error(${JSON.stringify(`invalid ${type.name ?? 'enum'} enum index`)});`);
        return v;
      }
      case 'union:unwrapped': {
        this.emit(`let ${v};`);
        this.emit(`switch (long()) {`);
        for (const [i, branch] of branchesOf(type).entries()) {
          this.emit(`case ${i}: {`);
          this.emit(`${v} = ${this.readSame(branch)};`);
          this.emit(`break; }`);
        }
        this.emit(`default: throw new Error('invalid union index');`);
        this.emit(`}`);
        return v;
      }
      case 'array':
        return this.readBlocks(v, '[]', () => `${v}.push(${this.readSame(itemsOf(type))});`);
      case 'map':
        return this.readBlocks(v, '{}', () => `${v}[k${v}] = ${this.readSame(valuesOf(type))};`, true);
      case 'record': {
        if (this.open.has(type)) throw new Unsupported(`recursive record ${type.name}`);
        this.open.add(type);
        const parts = fieldsOf(type).map((f) => `${key(f.name)}: ${this.readSame(f.type)}`);
        this.emit(`const ${v} = { ${parts.join(', ')} };`);
        this.open.delete(type);
        return v;
      }
      default:
        throw new Unsupported(`type ${type.typeName}`);
    }
  }

  /** An array or map: blocks of items until a zero count (a negative count carries a byte size). */
  private readBlocks(v: string, empty: string, item: () => string, keyed = false): string {
    this.emit(`const ${v} = ${empty};`);
    this.emit(`for (let n = long(); n !== 0; n = long()) {`);
    this.emit(`if (n < 0) { n = -n; long(); }`);
    this.emit(`while (n-- > 0) {`);
    this.emit(`if (pos > end) throw truncated();`);
    if (keyed) this.emit(`const k${v} = str();`);
    // The item's own statements are emitted inside the loop, then the line that stores it.
    this.emit(item());
    this.emit(`} }`);
    return v;
  }

  /** The reader field's default, a fresh copy for maps, arrays and records. */
  private defaultOf(field: Field): string {
    const value = field.defaultValue();
    if (value === undefined) throw new Unsupported(`${field.name} has no default`);
    if (value === null || typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))) return JSON.stringify(value);
    return `${this.constant(() => field.defaultValue())}()`;
  }

  /** Emits the skipping of a `type` value (a writer field the reader does not have). */
  private skip(type: AvroType): void {
    switch (type.typeName) {
      case 'null':
        return;
      case 'boolean':
        this.emit('pos++;');
        return;
      case 'int':
      case 'long':
      case 'enum':
        this.emit('long();');
        return;
      case 'float':
        this.emit('pos += 4;');
        return;
      case 'double':
        this.emit('pos += 8;');
        return;
      case 'string':
      case 'bytes':
        this.emit('skipString();');
        return;
      case 'fixed':
        this.emit(`pos += ${sizeOf(type)};`);
        return;
      default:
        // Rarely on the path (a dropped field of a complex type): read it with avsc, unused.
        this.emit(`viaAvsc(${this.constant(type)}, undefined);`);
    }
  }

  /** Emits the writing of the value in variable `x` as `type`. */
  write(type: AvroType, x: string): void {
    switch (type.typeName) {
      case 'null':
        this.emit(`if (${x} !== null) throw invalid();`);
        return;
      case 'boolean':
        this.emit(`if (typeof ${x} !== 'boolean') throw invalid();`);
        this.emit(`if (pos + 1 > out.length) grow(1);`);
        this.emit(`out[pos++] = ${x} ? 1 : 0;`);
        return;
      case 'int':
        this.emit(`if (${x} !== (${x} | 0)) throw invalid();`);
        this.emit(`long(${x});`);
        return;
      case 'long':
        this.emit(`if (typeof ${x} !== 'number' || ${x} % 1 || !(${x} >= -${SAFE_LONG} && ${x} <= ${SAFE_LONG})) throw invalid();`);
        this.emit(`long(${x});`);
        return;
      case 'float':
        this.emit(`float(${x});`);
        return;
      case 'double':
        this.emit(`double(${x});`);
        return;
      case 'string':
        this.emit(`str(${x});`);
        return;
      case 'bytes':
        this.emit(`if (!Buffer.isBuffer(${x})) throw invalid();`);
        this.emit(`long(${x}.length);`);
        this.emit(`raw(${x});`);
        return;
      case 'fixed':
        this.emit(`if (!Buffer.isBuffer(${x}) || ${x}.length !== ${sizeOf(type)}) throw invalid();`);
        this.emit(`raw(${x});`);
        return;
      case 'enum': {
        const index = this.constant(new Map(symbolsOf(type).map((s, i) => [s, i])));
        const i = this.fresh();
        this.emit(`const ${i} = ${index}.get(${x});`);
        this.emit(`if (${i} === undefined) throw invalid();`);
        this.emit(`long(${i});`);
        return;
      }
      case 'array': {
        const n = this.fresh();
        const e = this.fresh();
        this.emit(`if (!Array.isArray(${x})) throw invalid();`);
        this.emit(`const ${n} = ${x}.length;`);
        this.emit(`if (${n} !== 0) { long(${n});`);
        this.emit(`for (let i${n} = 0; i${n} < ${n}; i${n}++) { const ${e} = ${x}[i${n}];`);
        this.write(itemsOf(type), e);
        this.emit(`} }`);
        this.emit(`long(0);`);
        return;
      }
      case 'map': {
        const keys = this.fresh();
        const e = this.fresh();
        this.emit(`if (!${x} || typeof ${x} !== 'object' || Array.isArray(${x})) throw invalid();`);
        this.emit(`const ${keys} = Object.keys(${x});`);
        this.emit(`if (${keys}.length !== 0) { long(${keys}.length);`);
        this.emit(`for (let i${keys} = 0; i${keys} < ${keys}.length; i${keys}++) { const k${keys} = ${keys}[i${keys}]; str(k${keys}); const ${e} = ${x}[k${keys}];`);
        this.write(valuesOf(type), e);
        this.emit(`} }`);
        this.emit(`long(0);`);
        return;
      }
      case 'union:unwrapped': {
        // avsc picks the branch by the value's kind ("bucket"); an unwrapped union has one per kind.
        const buckets = new Map<string, number>();
        for (const [i, branch] of branchesOf(type).entries()) buckets.set(bucketOf(branch), i);
        const branch = (bucket: string) => {
          const i = buckets.get(bucket);
          if (i === undefined) {
            this.emit(`throw invalid();`);
            return;
          }
          this.emit(`long(${i});`);
          if (bucket !== 'null') this.write(branchesOf(type)[i]!, x);
        };
        this.emit(`if (${x} === null) {`);
        branch('null');
        for (const kind of ['string', 'number', 'boolean']) {
          this.emit(`} else if (typeof ${x} === '${kind}') {`);
          branch(kind);
        }
        this.emit(`} else if (Array.isArray(${x})) {`);
        branch('array');
        this.emit(`} else if (Buffer.isBuffer(${x})) {`);
        branch('buffer');
        this.emit(`} else if (typeof ${x} === 'object') {`);
        branch('object');
        this.emit(`} else { throw invalid(); }`);
        return;
      }
      case 'record': {
        if (this.open.has(type)) throw new Unsupported(`recursive record ${type.name}`);
        this.open.add(type);
        for (const f of fieldsOf(type)) {
          const v = this.fresh();
          this.emit(`const ${v} = ${x}[${JSON.stringify(f.name)}];`);
          const value = f.defaultValue();
          if (value === undefined) {
            this.write(f.type, v);
          } else {
            // As avsc: an absent field with a default writes the default's encoding.
            this.emit(`if (${v} === undefined) { raw(${this.constant(f.type.toBuffer(value))}); } else {`);
            this.write(f.type, v);
            this.emit(`}`);
          }
        }
        this.open.delete(type);
        return;
      }
      default:
        throw new Unsupported(`type ${type.typeName}`);
    }
  }
}

/** avsc's union bucket of a branch type (getTypeBucket). */
function bucketOf(type: AvroType): string {
  switch (type.typeName) {
    case 'double':
    case 'float':
    case 'int':
    case 'long':
      return 'number';
    case 'bytes':
    case 'fixed':
      return 'buffer';
    case 'enum':
      return 'string';
    case 'map':
    case 'record':
    case 'error':
      return 'object';
    default:
      return type.typeName;
  }
}

/** A record field's key in an object literal (`__proto__` there would set the prototype). */
function key(name: string): string {
  if (name === '__proto__') throw new Unsupported('a field named __proto__');
  return JSON.stringify(name);
}

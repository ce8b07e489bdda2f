// SQL text helpers shared by both ClickHouse backends: quoting, client-side parameter binding,
// the JSONEachRow encoding of inserted rows and the decoding of query results. Everything here
// must produce SQL that ClickHouse 18.16 (Debian's clickhouse-server) and 26.x (chdb) both accept.

export type StoreKind = 'embedded' | 'server';
export type ParamValue = string | number;

/** An error from either backend, carrying the statement's first line so a log says which one failed. */
export class ClickHouseStoreError extends Error {
  override readonly name = 'ClickHouseStoreError';
  /** ClickHouse's exception code (e.g. 62 syntax error, 60 unknown table), when the message had one. */
  readonly code: number | undefined;
  constructor(
    readonly kind: StoreKind,
    readonly statement: string,
    readonly detail: string,
    options?: { cause?: unknown; code?: number },
  ) {
    super(`ClickHouse (${kind}) failed on \`${statement}\`: ${detail}`, options);
    this.code = options?.code ?? clickHouseCode(detail);
  }
}

/** First non-empty line of a statement, shortened for messages. */
export function firstLine(sql: string): string {
  const line = sql.split('\n').map((l) => l.trim()).find((l) => l !== '') ?? '';
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** ClickHouse error text in both spellings: 26.x `Code: 62. DB::Exception: …`, 18.16 `Code: 62, e.displayText() = …`. */
export function clickHouseCode(message: string): number | undefined {
  const m = /Code: (\d+)[.,]/.exec(message);
  return m ? Number(m[1]) : undefined;
}

/** Trims 18.16's noisy `e.displayText() = DB::Exception: …, e.what() = DB::Exception` framing. */
export function cleanMessage(message: string): string {
  return message
    .replace(/e\.displayText\(\) = /, '')
    .replace(/,? e\.what\(\) = DB::Exception\s*$/, '')
    .trim();
}

export function storeError(kind: StoreKind, sql: string, err: unknown): ClickHouseStoreError {
  if (err instanceof ClickHouseStoreError) return err;
  const message = err instanceof Error ? err.message : String(err);
  // @clickhouse/client's ClickHouseError keeps the code apart from the message (26.x servers).
  const own = (err as { code?: unknown } | null)?.code;
  const code = typeof own === 'string' && /^\d+$/.test(own) ? Number(own) : typeof own === 'number' ? own : undefined;
  return new ClickHouseStoreError(kind, firstLine(sql), cleanMessage(message), { cause: err, code });
}

// ---------------------------------------------------------------------------------------------
// Quoting

const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `name` → `` `name` ``. Only plain identifiers: this is about safety, not about exotic names. */
export function quoteIdent(name: string): string {
  if (!IDENT_RE.test(name)) throw new Error(`invalid ClickHouse identifier ${JSON.stringify(name)}`);
  return `\`${name}\``;
}

/** `db.table` or `table` → backtick-quoted, each part validated. */
export function quoteTable(name: string): string {
  const parts = name.split('.');
  if (parts.length > 2) throw new Error(`invalid ClickHouse table name ${JSON.stringify(name)}`);
  return parts.map(quoteIdent).join('.');
}

/** Validates a possibly db-qualified table name and returns it unquoted (chdb's insert wants that). */
export function checkTable(name: string): string {
  quoteTable(name);
  return name;
}

/** A ClickHouse string literal; escapes what both versions' lexers treat specially. */
export function quoteString(value: string): string {
  let out = "'";
  for (const ch of value) {
    switch (ch) {
      case '\\': out += '\\\\'; break;
      case "'": out += "\\'"; break;
      case '\n': out += '\\n'; break;
      case '\r': out += '\\r'; break;
      case '\t': out += '\\t'; break;
      case '\0': out += '\\0'; break;
      case '\b': out += '\\b'; break;
      case '\f': out += '\\f'; break;
      default: out += ch;
    }
  }
  return `${out}'`;
}

// ---------------------------------------------------------------------------------------------
// Parameters: `{name:Type}` placeholders, ClickHouse's own syntax, substituted here as literals.
// ClickHouse 18.16 has no server-side parameters (`param_x` is an unknown setting there), so both
// backends bind the same way; queries written this way keep working if binding moves server-side.

const TYPE_RE = /^[A-Za-z][A-Za-z0-9_]*(\([A-Za-z0-9_, ]*\))?$/;
const NUMBER_RE = /^-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function unwrapType(type: string): string {
  let t = type.trim();
  for (;;) {
    const m = /^(Nullable|LowCardinality)\((.*)\)$/.exec(t);
    if (!m) return t;
    t = m[2]!.trim();
  }
}

function literal(name: string, type: string, value: ParamValue): string {
  const base = unwrapType(type);
  if (base === 'Identifier') {
    if (typeof value !== 'string') throw new Error(`parameter ${name}: Identifier needs a string`);
    return quoteTable(value);
  }
  if (/^(U?Int\d+|Float\d+|Decimal\d*(\(.*\))?)$/.test(base)) {
    const text = typeof value === 'number' ? String(value) : value.trim();
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new Error(`parameter ${name}: ${value} is not a finite number`);
    }
    if (!NUMBER_RE.test(text)) throw new Error(`parameter ${name}: ${JSON.stringify(value)} is not a ${type}`);
    // Bare literal, not a cast: LIMIT/OFFSET accept nothing else on 18.16.
    return text;
  }
  if (base === 'String' || base.startsWith('FixedString(')) return quoteString(String(value));
  if (!TYPE_RE.test(type.trim())) {
    throw new Error(`parameter ${name}: unsupported type ${JSON.stringify(type)}`);
  }
  // DateTime, Date, UUID, Enum…: let ClickHouse parse the text as the declared type, as it would
  // for a server-side parameter. A number for a DateTime is a Unix timestamp.
  if (typeof value === 'number' && /^DateTime/.test(base)) return `toDateTime(${Math.trunc(value)})`;
  return `CAST(${quoteString(String(value))} AS ${type.trim()})`;
}

/**
 * Replaces `{name:Type}` placeholders outside string literals, quoted identifiers and comments.
 * Every placeholder must have a value; a value without a placeholder is an error too (typos).
 */
export function bindParams(sql: string, params: Record<string, ParamValue> | undefined): string {
  if (!params || Object.keys(params).length === 0) return sql;
  const used = new Set<string>();
  let out = '';
  let i = 0;
  while (i < sql.length) {
    const ch = sql[i]!;
    if (ch === "'" || ch === '"' || ch === '`') {
      let j = i + 1;
      while (j < sql.length && sql[j] !== ch) j += sql[j] === '\\' ? 2 : 1;
      out += sql.slice(i, j + 1);
      i = j + 1;
    } else if (ch === '-' && sql[i + 1] === '-') {
      const j = sql.indexOf('\n', i);
      const end = j === -1 ? sql.length : j;
      out += sql.slice(i, end);
      i = end;
    } else if (ch === '/' && sql[i + 1] === '*') {
      const j = sql.indexOf('*/', i + 2);
      const end = j === -1 ? sql.length : j + 2;
      out += sql.slice(i, end);
      i = end;
    } else if (ch === '{') {
      const m = /^\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^{}]+?)\s*\}/.exec(sql.slice(i));
      if (!m) {
        out += ch;
        i += 1;
        continue;
      }
      const name = m[1]!;
      if (!Object.hasOwn(params, name)) throw new Error(`no value for query parameter {${name}:${m[2]}}`);
      out += literal(name, m[2]!, params[name]!);
      used.add(name);
      i += m[0].length;
    } else {
      out += ch;
      i += 1;
    }
  }
  const unused = Object.keys(params).filter((k) => !used.has(k));
  if (unused.length > 0) throw new Error(`query parameters without a placeholder: ${unused.join(', ')}`);
  return out;
}

/** Drops trailing whitespace and semicolons so a FORMAT clause can follow. */
export function trimStatement(sql: string): string {
  return sql.replace(/[\s;]+$/, '');
}

/** query() decodes JSON itself; a FORMAT clause of the caller's would fight with that. */
export function assertNoFormat(sql: string): void {
  if (/\bFORMAT\s+[A-Za-z]\w*\s*$/i.test(trimStatement(sql))) {
    throw new Error('query() chooses the output format itself; drop the FORMAT clause (raw() takes one)');
  }
}

// ---------------------------------------------------------------------------------------------
// Inserted rows → JSONEachRow

/**
 * Encodes rows as JSONEachRow plus the column list to name in the INSERT.
 * Naming the columns matters on 18.16: it fills an omitted column with its DEFAULT expression
 * only when the INSERT lists columns (otherwise with the type's zero, e.g. inserted_at =
 * 0000-00-00 00:00:00), and it makes an unknown key an error on both versions (26.x would
 * otherwise skip it silently).
 * Dates become Unix seconds (time-zone free; 18.16 cannot parse ISO strings), bigints become
 * strings (ClickHouse parses quoted 64-bit integers), undefined drops the key.
 */
export function encodeRows(rows: readonly Record<string, unknown>[]): { columns: string[]; body: string } {
  const columns: string[] = [];
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const row of rows) {
    for (const [k, v] of Object.entries(row)) {
      if (v !== undefined && !seen.has(k)) {
        quoteIdent(k);
        seen.add(k);
        columns.push(k);
      }
    }
    lines.push(JSON.stringify(row, jsonReplacer));
  }
  return { columns, body: `${lines.join('\n')}\n` };
}

function jsonReplacer(this: unknown, key: string, value: unknown): unknown {
  // `value` has already been through Date.prototype.toJSON; the holder still has the Date.
  const original = key === '' ? value : (this as Record<string, unknown>)[key];
  if (original instanceof Date) {
    const t = original.getTime();
    if (Number.isNaN(t)) throw new Error(`invalid Date in column ${key}`);
    return Math.floor(t / 1000);
  }
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new Error(`column ${key}: ${value} cannot be sent as JSON`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Query results (FORMAT JSON) → rows with the same JS types from both versions

type Convert = (v: unknown) => unknown;

const BIG_INT_RE = /^U?Int(64|128|256)$/;

/** Converts one column by its ClickHouse type; undefined when values pass through unchanged. */
function converterFor(type: string): Convert | undefined {
  const t = type.trim();
  let m = /^(?:Nullable|LowCardinality)\((.*)\)$/.exec(t);
  if (m) {
    const inner = converterFor(m[1]!);
    return inner && ((v) => (v === null ? null : inner(v)));
  }
  m = /^Array\((.*)\)$/.exec(t);
  if (m) {
    const inner = converterFor(m[1]!);
    return inner && ((v) => (Array.isArray(v) ? v.map(inner) : v));
  }
  // 64-bit and wider integers arrive as strings (output_format_json_quote_64bit_integers=1, on
  // in both backends so that no value above 2^53 is rounded by JSON.parse). Safe ones become
  // numbers like every other integer column; larger ones become bigint, never a rounded number.
  if (BIG_INT_RE.test(t)) {
    return (v) => {
      if (typeof v !== 'string') return v;
      const n = Number(v);
      return Number.isSafeInteger(n) ? n : BigInt(v);
    };
  }
  // 18.16 prints the zero DateTime as 0000-00-00 00:00:00, 26.x as the Unix epoch.
  if (/^DateTime(\(.*\))?$/.test(t)) return (v) => (v === '0000-00-00 00:00:00' ? '1970-01-01 00:00:00' : v);
  if (t === 'Date') return (v) => (v === '0000-00-00' ? '1970-01-01' : v);
  return undefined;
}

export interface JsonResult {
  meta?: { name: string; type: string }[];
  data?: Record<string, unknown>[];
}

/** Parses a FORMAT JSON body; an empty body (a statement without output) is no rows. */
export function decodeJson(kind: StoreKind, sql: string, text: string): Record<string, unknown>[] {
  if (text.trim() === '') return [];
  let parsed: JsonResult;
  try {
    parsed = JSON.parse(text) as JsonResult;
  } catch (err) {
    // Over HTTP an error that happens after the first bytes were sent arrives in the body.
    throw new ClickHouseStoreError(kind, firstLine(sql), `unreadable result: …${text.slice(-500)}`, { cause: err });
  }
  const data = parsed.data ?? [];
  const converters: [string, Convert][] = [];
  for (const col of parsed.meta ?? []) {
    const c = converterFor(col.type);
    if (c) converters.push([col.name, c]);
  }
  if (converters.length > 0) {
    for (const row of data) {
      for (const [name, c] of converters) row[name] = c(row[name]);
    }
  }
  return data;
}

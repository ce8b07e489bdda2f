import type { Rollout } from '../contracts/records.ts';
import type { Sample } from './envelope.ts';

/**
 * Flywheel's one expression language: rule-filter's `when` conditions and reward-combine's
 * `expression` scores. Parsed and type-checked once, when the operator is built; evaluated per
 * sample by walking closures (no eval, no Function).
 *
 * Grammar, loosest binding first:
 *   expression := or
 *   or      := and (("or" | "||") and)*
 *   and     := not (("and" | "&&") not)*
 *   not     := ("not" | "!") not | compare
 *   compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?     — not chainable
 *   sum     := product (("+" | "-") product)*
 *   product := unary (("*" | "/") unary)*
 *   unary   := "-" unary | primary
 *   primary := number | string | "true" | "false" | name | function "(" expression ("," expression)* ")"
 *            | "(" expression ")"
 *
 * Lexemes, one way each:
 * - numbers `0.5`, `.5`, `1e3`; strings in single quotes, `'math'` (`\'` and `\\` escape);
 * - names: dotted segments of letters, digits and `_` (`rule.reward`, `tags.source`); a segment
 *   with other characters, or a name spelled like a keyword, goes in backticks (`` `odd-name` ``,
 *   `` tags.`a b` ``, `` `and` ``); double quotes are refused, because the two dialects this
 *   language replaced read them one as a name and one as a string;
 * - functions: `min(x, …)` and `max(x, …)` over numbers, `exists(x)` (true when x is known);
 *   a function is a name followed by `(`, and only these three exist.
 *
 * Types: number, string, boolean. Arithmetic and min/max take numbers; a boolean there counts
 * as 1 or 0 (so `correct * (confidence > 0.5)` gates a score); `< <= > >=` compare two numbers or
 * two strings; `== !=` two values of one type; `and or not` take booleans only (a number is not
 * a condition: write `x != 0`). A type error is a parse error.
 *
 * Three-valued logic, as SQL's NULL: every value may be *unknown* (evaluates to `null`):
 * - a name whose value is missing (no such score, tag…), or a number that is not finite, is unknown;
 * - arithmetic, min/max, comparisons and `not` over an unknown are unknown, and an arithmetic
 *   result that is not finite (`x / 0`) is unknown;
 * - `false and unknown` is false, `true or unknown` is true; otherwise `and`/`or` over an unknown
 *   are unknown (evaluation stops at the first false for `and`, the first true for `or`);
 * - `exists(x)` is true or false, never unknown.
 * The caller decides what an unknown result means (rule-filter: its `onMissing`; reward-combine:
 * no score is written).
 *
 * Errors: an ExpressionError names the config field the caller passed and the 1-based column,
 * with a caret under it.
 *
 * Names resolve through a Vocabulary the caller gives (`sampleVocabulary` for the operators);
 * its lookups read own properties only, so `constructor`, `__proto__`, `toString`… are ordinary
 * (missing) names, never members of Object.prototype.
 *
 * @example
 *   const e = compileExpression("rule.reward < 0.5 or tags.source == 'web'", {
 *     field: 'rules[0].when', vocabulary: sampleVocabulary(), result: 'boolean' });
 *   e.evaluate(sample); // true, false, or null (unknown: say rule.reward is missing and the tag is 'book')
 */

export type ValueType = 'number' | 'string' | 'boolean';
/** A value, or null for unknown. */
export type Value = number | string | boolean | null;
interface TypeOf {
  number: number;
  string: string;
  boolean: boolean;
}

/** How a name reads its value: its type, fixed at parse time, and a reader (null = unknown). */
export interface Binding<C> {
  type: ValueType;
  read: (context: C) => Value;
}

/** Resolves a name (segments joined by "."; `path` keeps them apart) to a binding, or undefined when the name means nothing. */
export type Vocabulary<C> = (name: string, path: readonly string[]) => Binding<C> | undefined;

export interface Expression<C, T extends ValueType> {
  readonly source: string;
  readonly type: T;
  /** The distinct names the expression reads, in first-use order. */
  readonly names: readonly string[];
  /** The value for one context; null when unknown. */
  evaluate(context: C): TypeOf[T] | null;
}

export interface CompileOptions<C, T extends ValueType> {
  /** The config field the source came from, named in errors (e.g. `rules[0].when`). */
  field: string;
  vocabulary: Vocabulary<C>;
  /** The type the whole expression must have; `number` also takes a boolean (as 1 or 0). */
  result: T;
}

export class ExpressionError extends Error {
  override readonly name = 'ExpressionError';

  constructor(
    readonly field: string,
    readonly source: string,
    /** 1-based column of the problem. */
    readonly column: number,
    readonly problem: string,
  ) {
    super(`${field}: ${problem} at column ${column}\n  ${source}\n  ${' '.repeat(column - 1)}^`);
  }
}

/** Parses and type-checks `source`; throws ExpressionError. */
export function compileExpression<C, T extends ValueType>(source: string, options: CompileOptions<C, T>): Expression<C, T> {
  const parser = new Parser<C>(source, options.field, lex(source, options.field), options.vocabulary);
  const root = parser.parse();
  let evaluate = root.eval;
  if (root.type !== options.result) {
    if (options.result === 'number' && root.type === 'boolean') evaluate = asNumber(root).eval;
    else {
      const wanted = options.result === 'boolean' ? 'a condition (true or false)' : `a ${options.result}`;
      throw new ExpressionError(options.field, source, root.pos + 1, `expected ${wanted} as the whole expression, got a ${root.type}`);
    }
  }
  return { source, type: options.result, names: parser.names, evaluate: evaluate as (context: C) => TypeOf[T] | null };
}

// ---------------------------------------------------------------------------------------------
// Names over a Sample: the vocabulary both operators use, so an expression means the same in each.

const STRING_FIELDS = ['id', 'run_id', 'prompt_id', 'group_id', 'model_name', 'model_version', 'prompt'] as const;

/**
 * The names of a sample:
 * - `scores.<s>`, `rewards.<r>` (numbers), `tags.<t>`, `annotations.<a>` (strings);
 * - the rollout fields `id`, `run_id`, `prompt_id`, `group_id`, `model_name`, `model_version`,
 *   `prompt`, `response` (strings; `response` joins the steps when there is none),
 *   `token_count`, `created_at`, `prompt_chars`, `response_chars` (numbers);
 * - any other name is a score, or else a reward of that name (`rule.reward`, `correct`).
 * `missing: 'zero'` reads a missing score or reward as 0 instead of unknown.
 */
export function sampleVocabulary(options: { missing?: 'unknown' | 'zero' } = {}): Vocabulary<Sample> {
  const orMissing = options.missing === 'zero' ? 0 : null;
  const number = (read: (s: Sample) => number | undefined): Binding<Sample> => ({ type: 'number', read: (s) => read(s) ?? orMissing });
  const string = (read: (s: Sample) => string | undefined): Binding<Sample> => ({ type: 'string', read: (s) => read(s) ?? null });
  return (name, path) => {
    const [head, ...tail] = path;
    const key = tail.join('.');
    if (tail.length > 0 && head === 'scores') return number((s) => own(s.scores, key));
    if (tail.length > 0 && head === 'rewards') return number((s) => own(s.rollout.rewards, key));
    if (tail.length > 0 && head === 'tags') return string((s) => own(s.rollout.tags, key));
    if (tail.length > 0 && head === 'annotations') return string((s) => own(s.annotations, key));
    if ((STRING_FIELDS as readonly string[]).includes(name)) return string((s) => s.rollout[name as (typeof STRING_FIELDS)[number]]);
    if (name === 'response') return string((s) => responseText(s.rollout));
    if (name === 'token_count' || name === 'created_at') return number((s) => s.rollout[name]);
    if (name === 'prompt_chars') return number((s) => s.rollout.prompt.length);
    if (name === 'response_chars') return number((s) => responseText(s.rollout).length);
    return number((s) => scoreOrReward(s, name));
  };
}

/** The sample's score `name`, else its reward `name`, else undefined; own properties only. */
export function scoreOrReward(sample: Sample, name: string): number | undefined {
  return own(sample.scores, name) ?? own(sample.rollout.rewards, name);
}

/**
 * `record[key]` when the record has it itself, else undefined: a name like `constructor` or
 * `__proto__` must not resolve to a member of Object.prototype.
 */
export function own<V>(record: Readonly<Record<string, V>>, key: string): V | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

function responseText(r: Rollout): string {
  return r.response ?? r.steps.map((step) => step.content).join('\n');
}

// ---------------------------------------------------------------------------------------------
// Lexer and parser.

interface Token {
  kind: 'number' | 'string' | 'name' | 'op' | 'end';
  /** As written (for messages); for a name, its segments joined by "." without backticks. */
  text: string;
  value: number | string;
  /** A name's segments; `quoted` when any was in backticks (then it is never a keyword or function). */
  path: readonly string[];
  quoted: boolean;
  /** 0-based offset in the source. */
  pos: number;
  length: number;
}

interface Node<C> {
  type: ValueType;
  /** 0-based offset of the node's first character. */
  pos: number;
  eval: (context: C) => Value;
}

const TWO_CHAR_OPS = ['<=', '>=', '==', '!=', '&&', '||'];
const ONE_CHAR_OPS = '<>+-*/(),!';
const KEYWORDS = new Set(['and', 'or', 'not', 'true', 'false']);
const COMPARISONS = ['<', '<=', '>', '>=', '==', '!='];

function lex(source: string, field: string): Token[] {
  const fail = (pos: number, problem: string): never => {
    throw new ExpressionError(field, source, pos + 1, problem);
  };
  const tokens: Token[] = [];
  const push = (kind: Token['kind'], text: string, value: number | string, pos: number, length: number, path: string[] = [], quoted = false) =>
    tokens.push({ kind, text, value, pos, length, path, quoted });
  // A quoted run starting at `at` (a string or a backticked segment): its text and its end.
  const quotedRun = (at: number, what: string): { text: string; end: number } => {
    const quote = source[at]!;
    let text = '';
    for (let i = at + 1; i < source.length; i++) {
      const c = source[i]!;
      if (c === '\\' && i + 1 < source.length) text += source[++i];
      else if (c === quote) return { text, end: i + 1 };
      else text += c;
    }
    return fail(at, `unterminated ${what}`);
  };

  let i = 0;
  while (i < source.length) {
    const rest = source.slice(i);
    const c = rest[0]!;
    const space = /^\s+/.exec(rest);
    if (space) {
      i += space[0].length;
      continue;
    }
    const number = /^(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/.exec(rest);
    if (number) {
      push('number', number[0], Number(number[0]), i, number[0].length);
      i += number[0].length;
      continue;
    }
    if (c === "'") {
      const { text, end } = quotedRun(i, 'string');
      push('string', source.slice(i, end), text, i, end - i);
      i = end;
      continue;
    }
    if (c === '"') fail(i, "double quotes are not used: write a string in single quotes ('text'), a name with other characters in backticks (`name`)");
    if (/^[A-Za-z_`]/.test(rest)) {
      const start = i;
      const path: string[] = [];
      let quoted = false;
      for (;;) {
        if (source[i] === '`') {
          const run = quotedRun(i, 'quoted name');
          if (run.text === '') fail(i, 'empty quoted name');
          path.push(run.text);
          quoted = true;
          i = run.end;
        } else {
          const segment = (path.length === 0 ? /^[A-Za-z_]\w*/ : /^\w+/).exec(source.slice(i))!;
          path.push(segment[0]);
          i += segment[0].length;
        }
        if (source[i] !== '.' || !/^[\w`]/.test(source.slice(i + 1))) break;
        i++;
      }
      const text = path.join('.');
      push('name', quoted ? source.slice(start, i) : text, text, start, i - start, path, quoted);
      continue;
    }
    const two = rest.slice(0, 2);
    if (TWO_CHAR_OPS.includes(two)) {
      push('op', two, two, i, 2);
      i += 2;
      continue;
    }
    if (c === '=') fail(i, 'use == to compare');
    if (ONE_CHAR_OPS.includes(c)) {
      push('op', c, c, i, 1);
      i += 1;
      continue;
    }
    fail(i, `unexpected character "${c}"`);
  }
  push('end', 'end of input', '', source.length, 0);
  return tokens;
}

type Fn<C> = (args: Node<C>[], call: Token) => Node<C>;

class Parser<C> {
  private i = 0;
  readonly names: string[] = [];
  // A Map, not an object literal: `constructor(x)` must not find Object.prototype's.
  private readonly functions = new Map<string, Fn<C>>([
    ['min', (args, call) => this.extremum(args, call, Math.min)],
    ['max', (args, call) => this.extremum(args, call, Math.max)],
    [
      'exists',
      (args, call) => {
        if (args.length !== 1) this.fail(call.pos, `exists() takes one argument, got ${args.length}`);
        const inner = args[0]!;
        return { type: 'boolean', pos: call.pos, eval: (c) => inner.eval(c) !== null };
      },
    ],
  ]);

  constructor(
    private readonly source: string,
    private readonly field: string,
    private readonly tokens: Token[],
    private readonly vocabulary: Vocabulary<C>,
  ) {}

  parse(): Node<C> {
    const root = this.or();
    const next = this.peek();
    if (next.kind !== 'end') this.fail(next.pos, `unexpected ${quote(next)}`);
    return root;
  }

  private or(): Node<C> {
    let left = this.and();
    for (let op = this.accept('or', '||'); op !== undefined; op = this.accept('or', '||')) {
      const l = this.condition(left, op, 'left');
      const r = this.condition(this.and(), op, 'right');
      left = {
        type: 'boolean',
        pos: l.pos,
        eval: (c) => {
          const a = l.eval(c);
          if (a === true) return true;
          const b = r.eval(c);
          return b === true ? true : a === null || b === null ? null : false;
        },
      };
    }
    return left;
  }

  private and(): Node<C> {
    let left = this.not();
    for (let op = this.accept('and', '&&'); op !== undefined; op = this.accept('and', '&&')) {
      const l = this.condition(left, op, 'left');
      const r = this.condition(this.not(), op, 'right');
      left = {
        type: 'boolean',
        pos: l.pos,
        eval: (c) => {
          const a = l.eval(c);
          if (a === false) return false;
          const b = r.eval(c);
          return b === false ? false : a === null || b === null ? null : true;
        },
      };
    }
    return left;
  }

  private not(): Node<C> {
    const op = this.accept('not', '!');
    if (op === undefined) return this.compare();
    const inner = this.condition(this.not(), op, 'after');
    return {
      type: 'boolean',
      pos: op.pos,
      eval: (c) => {
        const v = inner.eval(c);
        return v === null ? null : !v;
      },
    };
  }

  private compare(): Node<C> {
    const left = this.sum();
    const op = this.accept(...COMPARISONS);
    if (op === undefined) return left;
    const right = this.sum();
    const again = this.accept(...COMPARISONS);
    if (again !== undefined) this.fail(again.pos, 'comparisons cannot be chained; use "and"');
    const equality = op.text === '==' || op.text === '!=';
    if (!equality && (left.type === 'boolean' || right.type === 'boolean')) {
      this.fail(op.pos, `"${op.text}" compares two numbers or two strings, not a ${left.type} and a ${right.type}`);
    }
    if (left.type !== right.type) this.fail(right.pos, `expected a ${left.type} right of "${op.text}" (the left side is a ${left.type}), got a ${right.type}`);
    const test = COMPARE[op.text]!;
    return {
      type: 'boolean',
      pos: left.pos,
      eval: (c) => {
        const a = left.eval(c);
        if (a === null) return null;
        const b = right.eval(c);
        return b === null ? null : test(a, b);
      },
    };
  }

  private sum(): Node<C> {
    let left = this.product();
    for (let op = this.accept('+', '-'); op !== undefined; op = this.accept('+', '-')) left = this.arithmetic(op, left, this.product());
    return left;
  }

  private product(): Node<C> {
    let left = this.unary();
    for (let op = this.accept('*', '/'); op !== undefined; op = this.accept('*', '/')) left = this.arithmetic(op, left, this.unary());
    return left;
  }

  private arithmetic(op: Token, left: Node<C>, right: Node<C>): Node<C> {
    const l = this.number(left, `left of "${op.text}"`);
    const r = this.number(right, `right of "${op.text}"`);
    const apply = ARITHMETIC[op.text]!;
    return {
      type: 'number',
      pos: l.pos,
      eval: (c) => {
        const a = l.eval(c) as number | null;
        if (a === null) return null;
        const b = r.eval(c) as number | null;
        return b === null ? null : finiteOrNull(apply(a, b));
      },
    };
  }

  private unary(): Node<C> {
    const minus = this.accept('-');
    if (minus === undefined) return this.primary();
    const inner = this.number(this.unary(), 'after "-"');
    return {
      type: 'number',
      pos: minus.pos,
      eval: (c) => {
        const v = inner.eval(c) as number | null;
        return v === null ? null : -v;
      },
    };
  }

  private primary(): Node<C> {
    const t = this.peek();
    if (this.accept('(')) {
      const inner = this.or();
      this.expect(')', t);
      return { ...inner, pos: t.pos };
    }
    if (t.kind === 'number') {
      this.i++;
      const value = t.value as number;
      return { type: 'number', pos: t.pos, eval: () => value };
    }
    if (t.kind === 'string') {
      this.i++;
      const value = t.value as string;
      return { type: 'string', pos: t.pos, eval: () => value };
    }
    if (t.kind === 'name' && !t.quoted && (t.text === 'true' || t.text === 'false')) {
      this.i++;
      const value = t.text === 'true';
      return { type: 'boolean', pos: t.pos, eval: () => value };
    }
    if (t.kind === 'name' && (t.quoted || !KEYWORDS.has(t.text))) {
      this.i++;
      const next = this.peek();
      if (!t.quoted && next.kind === 'op' && next.text === '(') return this.call(t);
      return this.name(t);
    }
    return this.fail(t.pos, `expected a value but found ${quote(t)}`);
  }

  private call(t: Token): Node<C> {
    const fn = this.functions.get(t.text);
    if (fn === undefined) this.fail(t.pos, `unknown function "${t.text}" (known: ${[...this.functions.keys()].sort().join(', ')})`);
    const open = this.peek();
    this.i++;
    if (this.peek().kind === 'op' && this.peek().text === ')') this.fail(this.peek().pos, `${t.text}() needs an argument`);
    const args = [this.or()];
    while (this.accept(',')) args.push(this.or());
    this.expect(')', open);
    return fn!(args, t);
  }

  private name(t: Token): Node<C> {
    const binding = this.vocabulary(t.value as string, t.path);
    if (binding === undefined) return this.fail(t.pos, `unknown name "${t.value}"`);
    if (!this.names.includes(t.value as string)) this.names.push(t.value as string);
    const read = binding.read;
    // A non-finite number read from the context is unknown, as a non-finite result is.
    if (binding.type === 'number') {
      return {
        type: 'number',
        pos: t.pos,
        eval: (c) => {
          const v = read(c) as number | null;
          return v === null ? null : finiteOrNull(v);
        },
      };
    }
    return { type: binding.type, pos: t.pos, eval: read };
  }

  private extremum(args: Node<C>[], call: Token, pick: (...values: number[]) => number): Node<C> {
    const numbers = args.map((a, i) => this.number(a, `as argument ${i + 1} of ${call.text}()`));
    return {
      type: 'number',
      pos: call.pos,
      eval: (c) => {
        const values: number[] = [];
        for (const a of numbers) {
          const v = a.eval(c) as number | null;
          if (v === null) return null;
          values.push(v);
        }
        return pick(...values);
      },
    };
  }

  /** A number, or a boolean read as 1 or 0; anything else is a type error. */
  private number(n: Node<C>, where: string): Node<C> {
    if (n.type === 'number') return n;
    if (n.type === 'boolean') return asNumber(n);
    return this.fail(n.pos, `expected a number ${where}, got a ${n.type}`);
  }

  private condition(n: Node<C>, op: Token, side: 'left' | 'right' | 'after'): Node<C> {
    if (n.type === 'boolean') return n;
    const hint = n.type === 'number' ? ' (compare it, e.g. x != 0)' : '';
    const where = side === 'after' ? `after "${op.text}"` : `${side} of "${op.text}"`;
    return this.fail(n.pos, `expected a condition ${where}, got a ${n.type}${hint}`);
  }

  private peek(): Token {
    return this.tokens[this.i]!;
  }

  private accept(...texts: string[]): Token | undefined {
    const t = this.peek();
    if ((t.kind === 'op' || (t.kind === 'name' && !t.quoted)) && texts.includes(t.text)) {
      this.i++;
      return t;
    }
    return undefined;
  }

  private expect(text: string, opened: Token): void {
    const t = this.peek();
    if (this.accept(text) === undefined) this.fail(t.pos, `expected "${text}" (for the "${opened.text}" at column ${opened.pos + 1}) but found ${quote(t)}`);
  }

  private fail(pos: number, problem: string): never {
    throw new ExpressionError(this.field, this.source, pos + 1, problem);
  }
}

function asNumber<C>(n: Node<C>): Node<C> {
  return {
    type: 'number',
    pos: n.pos,
    eval: (c) => {
      const v = n.eval(c);
      return v === null ? null : v ? 1 : 0;
    },
  };
}

function quote(t: Token): string {
  return t.kind === 'end' ? 'end of input' : `"${t.text}"`;
}

function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

const COMPARE: Record<string, (a: number | string | boolean, b: number | string | boolean) => boolean> = {
  '<': (a, b) => a < b,
  '<=': (a, b) => a <= b,
  '>': (a, b) => a > b,
  '>=': (a, b) => a >= b,
  '==': (a, b) => a === b,
  '!=': (a, b) => a !== b,
};

const ARITHMETIC: Record<string, (a: number, b: number) => number> = {
  '+': (a, b) => a + b,
  '-': (a, b) => a - b,
  '*': (a, b) => a * b,
  '/': (a, b) => a / b,
};

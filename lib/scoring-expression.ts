/**
 * A tiny arithmetic language over named values, parsed once and evaluated per sample without
 * eval/Function. Grammar, loosest binding first:
 *   or      := and (("or" | "||") and)*
 *   and     := not (("and" | "&&") not)*
 *   not     := ("not" | "!") not | compare
 *   compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?     — not chainable
 *   sum     := product (("+" | "-") product)*
 *   product := unary (("*" | "/") unary)*
 *   unary   := "-" unary | primary
 *   primary := number | name | ("min" | "max") "(" or ("," or)* ")" | "(" or ")"
 * A name is letters, digits, "_" and "." (not starting with a digit), or any text in single or
 * double quotes (for names with other characters, or named like a keyword). Comparisons and
 * logic give 1 or 0; a value is true when it is neither 0 nor NaN.
 */
export interface Expression {
  /** The distinct names the expression reads, in first-use order. */
  readonly names: readonly string[];
  /** Evaluates with `values[i]` as the value of `names[i]`. */
  evaluate(values: readonly number[]): number;
}

export class ExpressionError extends Error {
  constructor(
    readonly source: string,
    /** 1-based character position of the problem. */
    readonly position: number,
    problem: string,
  ) {
    super(`expression error at position ${position}: ${problem}\n  ${source}\n  ${' '.repeat(position - 1)}^`);
    this.name = 'ExpressionError';
  }
}

type Node = (values: readonly number[]) => number;

interface Token {
  kind: 'number' | 'name' | 'op' | 'end';
  text: string;
  value: number;
  /** 0-based offset in the source. */
  at: number;
  quoted: boolean;
}

const KEYWORDS = new Set(['and', 'or', 'not']);
const FUNCTIONS: Record<string, (args: number[]) => number> = {
  min: (args) => Math.min(...args),
  max: (args) => Math.max(...args),
};
const COMPARE: Record<string, (a: number, b: number) => boolean> = {
  '<': (a, b) => a < b,
  '<=': (a, b) => a <= b,
  '>': (a, b) => a > b,
  '>=': (a, b) => a >= b,
  '==': (a, b) => a === b,
  '!=': (a, b) => a !== b,
};

const truthy = (v: number) => v !== 0 && !Number.isNaN(v);

export function parseExpression(source: string): Expression {
  const tokens = tokenize(source);
  const names: string[] = [];
  let pos = 0;
  const peek = () => tokens[pos]!;
  const fail = (token: Token, problem: string): never => {
    throw new ExpressionError(source, token.at + 1, problem);
  };
  const describe = (t: Token) => (t.kind === 'end' ? 'end of input' : `"${t.text}"`);
  const isOp = (...ops: string[]) => {
    const t = peek();
    return (t.kind === 'op' || (t.kind === 'name' && !t.quoted)) && ops.includes(t.text);
  };
  const expect = (op: string) => {
    if (!isOp(op)) fail(peek(), `expected "${op}" but found ${describe(peek())}`);
    pos++;
  };

  const binary = (next: () => Node, ops: Record<string, (a: number, b: number) => number>): Node => {
    let left = next();
    while (isOp(...Object.keys(ops))) {
      const apply = ops[tokens[pos++]!.text]!;
      const l = left;
      const r = next();
      left = (v) => apply(l(v), r(v));
    }
    return left;
  };
  const or = (): Node =>
    binary(and, {
      or: (a, b) => (truthy(a) || truthy(b) ? 1 : 0),
      '||': (a, b) => (truthy(a) || truthy(b) ? 1 : 0),
    });
  const and = (): Node =>
    binary(not, {
      and: (a, b) => (truthy(a) && truthy(b) ? 1 : 0),
      '&&': (a, b) => (truthy(a) && truthy(b) ? 1 : 0),
    });
  const not = (): Node => {
    if (isOp('not', '!')) {
      pos++;
      const inner = not();
      return (v) => (truthy(inner(v)) ? 0 : 1);
    }
    return compare();
  };
  const compare = (): Node => {
    const left = sum();
    if (!isOp(...Object.keys(COMPARE))) return left;
    const test = COMPARE[tokens[pos++]!.text]!;
    const right = sum();
    if (isOp(...Object.keys(COMPARE))) fail(peek(), 'comparisons cannot be chained; use "and"');
    return (v) => (test(left(v), right(v)) ? 1 : 0);
  };
  const sum = (): Node => binary(product, { '+': (a, b) => a + b, '-': (a, b) => a - b });
  const product = (): Node => binary(unary, { '*': (a, b) => a * b, '/': (a, b) => a / b });
  const unary = (): Node => {
    if (isOp('-')) {
      pos++;
      const inner = unary();
      return (v) => -inner(v);
    }
    return primary();
  };
  const primary = (): Node => {
    const t = peek();
    if (t.kind === 'number') {
      pos++;
      return () => t.value;
    }
    if (isOp('(')) {
      pos++;
      const inner = or();
      expect(')');
      return inner;
    }
    if (t.kind === 'name') {
      pos++;
      const next = peek();
      if (!t.quoted && next.kind === 'op' && next.text === '(') {
        // Own properties only: `constructor(x)` must not call Object.prototype's constructor.
        const fn = Object.hasOwn(FUNCTIONS, t.text) ? FUNCTIONS[t.text] : undefined;
        if (fn === undefined) fail(t, `unknown function "${t.text}" (known: ${Object.keys(FUNCTIONS).join(', ')})`);
        pos++;
        if (isOp(')')) fail(peek(), `${t.text}() needs at least one argument`);
        const args = [or()];
        while (isOp(',')) {
          pos++;
          args.push(or());
        }
        expect(')');
        return (v) => fn!(args.map((a) => a(v)));
      }
      if (!t.quoted && KEYWORDS.has(t.text)) fail(t, `expected a value but found "${t.text}"`);
      let index = names.indexOf(t.text);
      if (index === -1) index = names.push(t.text) - 1;
      return (v) => v[index]!;
    }
    return fail(t, `expected a value but found ${describe(t)}`);
  };

  const root = or();
  if (peek().kind !== 'end') fail(peek(), `unexpected ${describe(peek())}`);
  return { names, evaluate: root };
}

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  const token = (kind: Token['kind'], text: string, at: number, value = Number.NaN, quoted = false) =>
    tokens.push({ kind, text, value, at, quoted });
  let i = 0;
  while (i < source.length) {
    const rest = source.slice(i);
    const space = /^\s+/.exec(rest);
    if (space) {
      i += space[0].length;
      continue;
    }
    const number = /^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/.exec(rest);
    if (number) {
      token('number', number[0], i, Number(number[0]));
      i += number[0].length;
      continue;
    }
    const name = /^[A-Za-z_][A-Za-z0-9_.]*/.exec(rest);
    if (name) {
      token('name', name[0], i);
      i += name[0].length;
      continue;
    }
    const quote = rest[0];
    if (quote === '"' || quote === "'") {
      const end = source.indexOf(quote, i + 1);
      if (end === -1) throw new ExpressionError(source, i + 1, 'unterminated quoted name');
      if (end === i + 1) throw new ExpressionError(source, i + 1, 'empty quoted name');
      token('name', source.slice(i + 1, end), i, Number.NaN, true);
      i = end + 1;
      continue;
    }
    const op = /^(<=|>=|==|!=|&&|\|\||[-+*/<>(),!])/.exec(rest);
    if (op) {
      token('op', op[0], i);
      i += op[0].length;
      continue;
    }
    throw new ExpressionError(source, i + 1, `unexpected character "${rest[0]}"`);
  }
  token('end', '', source.length);
  return tokens;
}

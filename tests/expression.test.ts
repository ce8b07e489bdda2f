import { describe, expect, it } from 'vitest';
import { compileExpression, ExpressionError, own, sampleVocabulary, type Value, type ValueType, type Vocabulary } from '../lib/expression.ts';
import { sample } from './helpers/envelopes.ts';

// A context of plain values; a name's type is fixed by `types`, its value read from the record (own properties only).
type Row = Record<string, Value>;
const types: Record<string, ValueType> = { a: 'number', b: 'number', c: 'number', s: 'string', t: 'string', flag: 'boolean', 'odd-name': 'number', and: 'number' };
const rows: Vocabulary<Row> = (name) => {
  const type = own(types, name);
  return type === undefined ? undefined : { type, read: (row) => own(row, name) ?? null };
};

const bool = (source: string, row: Row = {}) => compileExpression(source, { field: 'f', vocabulary: rows, result: 'boolean' }).evaluate(row);
const num = (source: string, row: Row = {}) => compileExpression(source, { field: 'f', vocabulary: rows, result: 'number' }).evaluate(row);
const failure = (source: string, result: ValueType = 'boolean', field = 'rules[0].when'): ExpressionError => {
  try {
    compileExpression(source, { field, vocabulary: rows, result });
  } catch (err) {
    expect(err, source).toBeInstanceOf(ExpressionError);
    return err as ExpressionError;
  }
  throw new Error(`no error for ${source}`);
};

describe('expression grammar and precedence', () => {
  it('follows arithmetic precedence, left associativity and unary minus', () => {
    expect(num('1 + 2 * 3')).toBe(7);
    expect(num('(1 + 2) * 3')).toBe(9);
    expect(num('8 / 4 / 2')).toBe(1);
    expect(num('10 - 4 - 3')).toBe(3);
    expect(num('2 - -1')).toBe(3);
    expect(num('-2 * 3 + .5e1')).toBe(-1);
    expect(num('1e3 + 0.25')).toBe(1000.25);
  });

  it('binds not tighter than and, and tighter than or; comparisons bind tighter than all three', () => {
    // `not a == 1` is `not (a == 1)`; `x or y and z` is `x or (y and z)`.
    expect(bool('not a == 1', { a: 2 })).toBe(true);
    expect(bool('a == 1 or a == 2 and a == 3', { a: 1 })).toBe(true);
    expect(bool('(a == 1 or a == 2) and a == 3', { a: 1 })).toBe(false);
    expect(bool('not a == 1 and a == 2', { a: 2 })).toBe(true);
    expect(bool('1 + a * 3 == 7 && -a < 0 || false', { a: 2 })).toBe(true);
    expect(bool('!(a > 1) || !flag', { a: 2, flag: true })).toBe(false);
  });

  it('compares numbers with numbers, strings with strings, conditions with == and !=', () => {
    expect(bool("s == 'math' and t != 'web'", { s: 'math', t: 'book' })).toBe(true);
    expect(bool("s < 'n'", { s: 'math' })).toBe(true);
    expect(bool('flag == (a > 1)', { flag: true, a: 2 })).toBe(true);
    expect(bool("s == 'it\\'s'", { s: "it's" })).toBe(true);
  });

  it('reads dotted names, names in backticks, and keywords quoted as names', () => {
    const e = compileExpression('max(rule.reward, `odd-name`) + min(rule.reward, 1, `and`)', {
      field: 'f',
      vocabulary: (name) => ({ type: 'number', read: (row: Row) => own(row, name) ?? null }),
      result: 'number',
    });
    expect(e.names).toEqual(['rule.reward', 'odd-name', 'and']);
    expect(e.evaluate({ 'rule.reward': 0.5, 'odd-name': 0.25, and: 0 })).toBe(0.5);
    const path: string[][] = [];
    compileExpression('tags.`a b`.c > 0', { field: 'f', vocabulary: (_n, p) => (path.push([...p]), { type: 'number', read: () => 1 }), result: 'boolean' });
    expect(path).toEqual([['tags', 'a b', 'c']]);
  });

  it('counts a boolean as 1 or 0 in arithmetic, in min/max and as a number result', () => {
    expect(num('a * (b > 0.5)', { a: 0.8, b: 0.9 })).toBe(0.8);
    expect(num('a * (b > 0.5)', { a: 0.8, b: 0.1 })).toBe(0);
    expect(num('a > 1', { a: 2 })).toBe(1);
    expect(num('max(flag, 0.5)', { flag: true })).toBe(1);
  });
});

describe('three-valued logic', () => {
  const unknown = {};
  it('makes a missing name unknown, and unknown propagate through arithmetic, comparisons, min/max and not', () => {
    expect(num('a + 1', unknown)).toBeNull();
    expect(num('min(a, 1)', unknown)).toBeNull();
    expect(num('-a', unknown)).toBeNull();
    expect(bool('a > 1', unknown)).toBeNull();
    expect(bool("s == 'x'", unknown)).toBeNull();
    expect(bool('not (a > 1)', unknown)).toBeNull();
    expect(num('a * (b > 0.5)', { a: 1 })).toBeNull();
  });

  it('gives and/or the Kleene truth tables: false and unknown is false, true or unknown is true', () => {
    const T = 'a == 1';
    const F = 'a == 2';
    const U = 'b == 1';
    const row = { a: 1 };
    const table: Array<[string, boolean | null]> = [
      [`${T} and ${U}`, null],
      [`${F} and ${U}`, false],
      [`${U} and ${F}`, false],
      [`${U} and ${U}`, null],
      [`${T} or ${U}`, true],
      [`${U} or ${T}`, true],
      [`${F} or ${U}`, null],
      [`${U} or ${U}`, null],
      [`${T} and ${T}`, true],
      [`${F} or ${F}`, false],
    ];
    for (const [source, expected] of table) expect(bool(source, row), source).toBe(expected);
  });

  it('makes a non-finite result or input unknown, and exists() is never unknown', () => {
    expect(num('a / b', { a: 1, b: 0 })).toBeNull();
    expect(num('a / b', { a: 0, b: 0 })).toBeNull();
    expect(num('a * 1e308 * 10', { a: 1 })).toBeNull();
    expect(num('a + 1', { a: Number.NaN })).toBeNull();
    expect(num('a + 1', { a: Number.POSITIVE_INFINITY })).toBeNull();
    expect(bool('exists(a)', { a: 1 })).toBe(true);
    expect(bool('exists(a)', unknown)).toBe(false);
    expect(bool('exists(a / b)', { a: 1, b: 0 })).toBe(false);
    expect(bool('not exists(s) or s == \'x\'', unknown)).toBe(true);
  });

  it('stops at the first false for and, the first true for or', () => {
    let reads = 0;
    const counting: Vocabulary<Row> = (name) => ({ type: 'number', read: (row) => (reads++, own(row, name) ?? null) });
    const e = compileExpression('a > 1 and b > 1', { field: 'f', vocabulary: counting, result: 'boolean' });
    expect(e.evaluate({ a: 0, b: 5 })).toBe(false);
    expect(reads).toBe(1);
    const o = compileExpression('a > 1 or b > 1', { field: 'f', vocabulary: counting, result: 'boolean' });
    expect(o.evaluate({ a: 5, b: 0 })).toBe(true);
    expect(reads).toBe(2);
  });
});

describe('expression errors', () => {
  it('names the field and the 1-based column, with a caret under it', () => {
    const cut = failure('a < ');
    expect(cut.field).toBe('rules[0].when');
    expect(cut.column).toBe(5);
    expect(cut.message).toBe('rules[0].when: expected a value but found end of input at column 5\n  a < \n      ^');
    expect(failure('1 +', 'number', 'expression').message).toMatch(/^expression: expected a value but found end of input at column 4\n/);
  });

  it('reports each kind of mistake at its column', () => {
    const cases: Array<[string, number, string, ValueType?]> = [
      ['a + )', 5, 'expected a value but found ")"', 'number'],
      ['min(a', 6, 'expected ")" (for the "(" at column 4) but found end of input', 'number'],
      ['(a > 1', 7, 'expected ")" (for the "(" at column 1) but found end of input'],
      ['foo(1)', 1, 'unknown function "foo" (known: exists, max, min)', 'number'],
      ['constructor(1)', 1, 'unknown function "constructor" (known: exists, max, min)', 'number'],
      ['toString(1)', 1, 'unknown function "toString"', 'number'],
      ['__proto__(1)', 1, 'unknown function "__proto__"', 'number'],
      ["s == 'open", 6, 'unterminated string'],
      ['`odd', 1, 'unterminated quoted name', 'number'],
      ['`` > 1', 1, 'empty quoted name'],
      ['s == "x"', 6, 'double quotes are not used'],
      ['a $ b', 3, 'unexpected character "$"', 'number'],
      ['a = 1', 3, 'use == to compare'],
      ['', 1, 'expected a value but found end of input'],
      ['a b', 3, 'unexpected "b"', 'number'],
      ['a > 1 b', 7, 'unexpected "b"'],
      ['min()', 5, 'min() needs an argument', 'number'],
      ['exists(a, b)', 1, 'exists() takes one argument, got 2'],
      ['a < b < c', 7, 'comparisons cannot be chained; use "and"'],
      ['a > 1 and or', 11, 'expected a value but found "or"'],
      ['zzz > 1', 1, 'unknown name "zzz"'],
      ['s > 3', 5, 'expected a string right of ">" (the left side is a string), got a number'],
      ['(a > 1) < 2', 9, '"<" compares two numbers or two strings, not a boolean and a number'],
      ['s + 1', 1, 'expected a number left of "+", got a string', 'number'],
      ['a and flag', 1, 'expected a condition left of "and", got a number (compare it, e.g. x != 0)'],
      ['flag or s', 9, 'expected a condition right of "or", got a string'],
      ['not a', 5, 'expected a condition after "not", got a number'],
      ['a + 1', 1, 'expected a condition (true or false) as the whole expression, got a number'],
      ['s', 1, 'expected a number as the whole expression, got a string', 'number'],
      ['max(s)', 5, 'expected a number as argument 1 of max(), got a string', 'number'],
    ];
    for (const [source, column, problem, result] of cases) {
      const error = failure(source, result ?? 'boolean');
      expect(error.column, source).toBe(column);
      expect(error.problem, source).toContain(problem);
      expect(error.message, source).toContain(`${problem}`);
      expect(error.message, source).toContain(`at column ${column}\n`);
    }
  });
});

describe('prototype safety', () => {
  const prototypeNames = ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf'];

  it('reads a prototype member as a missing value, never as a function or object', () => {
    const s = sample({ rewards: { correct: 1 }, tags: {} }, { scores: { a: 1 }, annotations: {} });
    for (const key of prototypeNames) {
      for (const name of [key, `scores.${key}`, `rewards.${key}`]) {
        const e = compileExpression(`${name} + 1`, { field: 'f', vocabulary: sampleVocabulary(), result: 'number' });
        expect(e.evaluate(s), name).toBeNull();
        expect(compileExpression(`exists(${name})`, { field: 'f', vocabulary: sampleVocabulary(), result: 'boolean' }).evaluate(s), name).toBe(false);
      }
      for (const name of [`tags.${key}`, `annotations.${key}`]) {
        expect(compileExpression(`${name} == 'x'`, { field: 'f', vocabulary: sampleVocabulary(), result: 'boolean' }).evaluate(s), name).toBeNull();
      }
    }
  });

  it('reads an own property of such a name as an ordinary value', () => {
    const s = sample({ rewards: JSON.parse('{"__proto__": 3}') as Record<string, number> }, { scores: { constructor: 2 } });
    expect(compileExpression('constructor + rewards.__proto__', { field: 'f', vocabulary: sampleVocabulary(), result: 'number' }).evaluate(s)).toBe(5);
  });

  it('resolves no function through the prototype, and treats code-like input as names', () => {
    for (const key of prototypeNames) expect(failure(`${key}(1)`, 'number').problem).toContain(`unknown function "${key}"`);
    expect(failure('process.exit(1)', 'number').problem).toContain('unknown function "process.exit"');
    const e = compileExpression('constructor + __proto__', { field: 'f', vocabulary: sampleVocabulary(), result: 'number' });
    expect(e.names).toEqual(['constructor', '__proto__']);
    expect(e.evaluate(sample())).toBeNull();
  });
});

describe('sampleVocabulary', () => {
  const s = sample(
    { token_count: 10, prompt: 'abcd', response: null, steps: [{ role: 'assistant', content: 'ab' }, { role: 'assistant', content: 'c' }], rewards: { correct: 1, judge: 0.2 }, tags: { source: 'web' } },
    { scores: { judge: 0.6, 'rule.reward': 0.4 }, annotations: { cell: 'x' } },
  );
  const value = (source: string, result: ValueType, missing?: 'unknown' | 'zero') =>
    compileExpression(source, { field: 'f', vocabulary: sampleVocabulary({ missing }), result }).evaluate(s);

  it('reads scores before rewards for a bare name, and each map by its prefix', () => {
    expect(value('judge', 'number')).toBe(0.6);
    expect(value('rewards.judge', 'number')).toBe(0.2);
    expect(value('scores.judge + correct', 'number')).toBe(1.6);
    expect(value('rule.reward', 'number')).toBe(0.4);
    expect(value("tags.source == 'web' and annotations.cell == 'x'", 'boolean')).toBe(true);
  });

  it('reads the rollout fields with their types', () => {
    expect(value('prompt_chars / token_count', 'number')).toBe(0.4);
    expect(value('response_chars', 'number')).toBe(4);
    expect(value("response == 'ab\nc' and model_version == 'v1'", 'boolean')).toBe(true);
    expect(() => value('prompt + 1', 'number')).toThrow('expected a number left of "+", got a string');
  });

  it('reads a missing score or reward as 0 when asked, tags stay unknown', () => {
    expect(value('missing + 1', 'number')).toBeNull();
    expect(value('missing + 1', 'number', 'zero')).toBe(1);
    expect(value("tags.nope == 'x'", 'boolean', 'zero')).toBeNull();
  });
});

import type { Rollout } from '../../contracts/records.ts';
import { mapSamples, type Curator, type Sample } from '../../lib/envelope.ts';

export interface Rule {
  /** Names the reason: `rule:<name>`. */
  name: string;
  /** A condition that rejects the sample when true, e.g. `rule.reward < 0.5 or token_count > 4000`. */
  when: string;
}

export interface RuleFilterConfig {
  rules: Rule[];
  /** A rule that cannot be decided because a value it needs is missing: let through, or rejected (`rule:<name>:missing`). */
  onMissing: 'pass' | 'reject';
}

export const ruleFilterDefaults: RuleFilterConfig = { rules: [], onMissing: 'pass' };

/**
 * Rejects samples by named rule expressions; every rule that holds adds `rule:<name>`, so
 * analytics count each. Rules are parsed and type-checked once, when the operator is built; a
 * bad rule throws a RuleSyntaxError naming the rule and the column. Evaluation walks the
 * parsed tree (no eval, no Function).
 *
 * The language:
 * - values: numbers (`0.5`, `1e3`), strings (`'math'` or `"math"`), `true`, `false`;
 * - names: `scores.<s>`, `rewards.<r>`, `tags.<t>`, `annotations.<a>`; the rollout fields `id`,
 *   `run_id`, `prompt_id`, `group_id`, `model_name`, `model_version`, `prompt`, `response`
 *   (strings), `token_count`, `created_at`, `prompt_chars`, `response_chars` (numbers); any
 *   other dotted name is a score (`rule.reward` = `scores.rule.reward`);
 * - operators, loosest first: `or` (`||`), `and` (`&&`), `not` (`!`), comparisons
 *   `< <= > >= == !=` (numbers with numbers, strings with strings), `+ -`, `* /`, unary `-`;
 *   parentheses; `exists(x)` is true when x has a value.
 * - a missing score, reward, tag or annotation, or a non-finite arithmetic result, is unknown;
 *   unknown propagates through arithmetic and comparisons, and `and`/`or` follow three-valued
 *   logic (false and unknown = false, true or unknown = true). A rule that ends unknown is
 *   decided by `onMissing`.
 */
export function ruleFilter(config: RuleFilterConfig): Curator {
  const names = new Set<string>();
  const rules = config.rules.map((rule) => {
    if (rule.name.trim() === '') throw new Error('every rule needs a name: it becomes the reason rule:<name>');
    if (names.has(rule.name)) throw new Error(`rule "${rule.name}" is defined twice`);
    names.add(rule.name);
    return { name: rule.name, test: compileRule(rule.when, rule.name) };
  });
  return mapSamples('rule-filter', (sample) => {
    const reasons: string[] = [];
    for (const rule of rules) {
      const holds = rule.test(sample);
      if (holds === true) reasons.push(`rule:${rule.name}`);
      else if (holds === null && config.onMissing === 'reject') reasons.push(`rule:${rule.name}:missing`);
    }
    return reasons.length === 0 ? sample : { ...sample, reasons: [...sample.reasons, ...reasons] };
  });
}

export class RuleSyntaxError extends Error {
  constructor(
    readonly rule: string | undefined,
    readonly source: string,
    /** 0-based offset into `source`. */
    readonly position: number,
    readonly detail: string,
  ) {
    super(`${rule === undefined ? 'rule' : `rule "${rule}"`}: ${detail} at column ${position + 1}\n  ${source}\n  ${' '.repeat(position)}^`);
    this.name = 'RuleSyntaxError';
  }
}

/** True, false, or null when a value the rule needs is missing. */
export type CompiledRule = (sample: Sample) => boolean | null;

/** Parses and type-checks a rule; throws RuleSyntaxError. */
export function compileRule(source: string, name?: string): CompiledRule {
  const parser = new Parser(source, name, lex(source, name));
  const node = parser.parse();
  return node.eval as CompiledRule;
}

type Type = 'number' | 'string' | 'boolean';
type Value = number | string | boolean | null;

interface Node {
  type: Type;
  pos: number;
  eval: (sample: Sample) => Value;
}

interface Token {
  kind: 'number' | 'string' | 'name' | 'op' | 'end';
  text: string;
  value: number | string;
  pos: number;
}

const TWO_CHAR_OPS = ['<=', '>=', '==', '!=', '&&', '||'];
const ONE_CHAR_OPS = '<>+-*/()!';

function lex(source: string, rule: string | undefined): Token[] {
  const fail = (pos: number, detail: string): never => {
    throw new RuleSyntaxError(rule, source, pos, detail);
  };
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const rest = source.slice(i);
    const space = /^\s+/.exec(rest);
    if (space) {
      i += space[0].length;
      continue;
    }
    const number = /^(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/.exec(rest);
    const name = /^[A-Za-z_]\w*(?:\.\w+)*/.exec(rest);
    const c = rest[0]!;
    if (number) tokens.push({ kind: 'number', text: number[0], value: Number(number[0]), pos: i });
    else if (name) tokens.push({ kind: 'name', text: name[0], value: name[0], pos: i });
    else if (c === '"' || c === "'") {
      const string = new RegExp(`^${c}((?:[^${c}\\\\]|\\\\.)*)${c}`).exec(rest) ?? fail(i, 'unterminated string');
      tokens.push({ kind: 'string', text: string[0], value: string[1]!.replace(/\\(.)/g, '$1'), pos: i });
    } else if (TWO_CHAR_OPS.includes(rest.slice(0, 2))) tokens.push({ kind: 'op', text: rest.slice(0, 2), value: rest.slice(0, 2), pos: i });
    else if (c === '=') fail(i, 'use == to compare');
    else if (ONE_CHAR_OPS.includes(c)) tokens.push({ kind: 'op', text: c, value: c, pos: i });
    else fail(i, `unexpected character "${c}"`);
    i += tokens.at(-1)!.text.length;
  }
  tokens.push({ kind: 'end', text: 'end of rule', value: '', pos: source.length });
  return tokens;
}

const STRING_FIELDS = ['id', 'run_id', 'prompt_id', 'group_id', 'model_name', 'model_version', 'prompt'] as const;
const KEYWORDS = new Set(['and', 'or', 'not', 'true', 'false', 'exists']);

class Parser {
  private i = 0;

  constructor(
    private readonly source: string,
    private readonly rule: string | undefined,
    private readonly tokens: Token[],
  ) {}

  parse(): Node {
    const node = this.or();
    const next = this.peek();
    if (next.kind !== 'end') this.fail(next.pos, `unexpected "${next.text}"`);
    return this.want(node, 'boolean', 'as the rule (a condition that is true or false)');
  }

  private or(): Node {
    let left = this.and();
    while (this.accept('or', '||')) {
      const l = this.want(left, 'boolean', 'left of "or"');
      const r = this.want(this.and(), 'boolean', 'right of "or"');
      left = node('boolean', l.pos, (s) => {
        const a = l.eval(s);
        if (a === true) return true;
        const b = r.eval(s);
        return b === true ? true : a === null || b === null ? null : false;
      });
    }
    return left;
  }

  private and(): Node {
    let left = this.not();
    while (this.accept('and', '&&')) {
      const l = this.want(left, 'boolean', 'left of "and"');
      const r = this.want(this.not(), 'boolean', 'right of "and"');
      left = node('boolean', l.pos, (s) => {
        const a = l.eval(s);
        if (a === false) return false;
        const b = r.eval(s);
        return b === false ? false : a === null || b === null ? null : true;
      });
    }
    return left;
  }

  private not(): Node {
    const op = this.accept('not', '!');
    if (op === undefined) return this.comparison();
    const inner = this.want(this.not(), 'boolean', 'after "not"');
    return node('boolean', op.pos, (s) => {
      const v = inner.eval(s);
      return v === null ? null : !v;
    });
  }

  private comparison(): Node {
    const left = this.sum();
    const op = this.accept('<', '<=', '>', '>=', '==', '!=');
    if (op === undefined) return left;
    const right = this.sum();
    if (left.type === 'boolean' && (op.text === '==' || op.text === '!=')) this.want(right, 'boolean', `right of "${op.text}"`);
    else if (left.type === 'boolean') this.fail(op.pos, `"${op.text}" compares numbers or strings, not conditions`);
    else this.want(right, left.type, `right of "${op.text}" (the left side is a ${left.type})`);
    const compare = COMPARE[op.text]!;
    return node('boolean', left.pos, (s) => {
      const a = left.eval(s);
      const b = right.eval(s);
      return a === null || b === null ? null : compare(a, b);
    });
  }

  private sum(): Node {
    let left = this.product();
    for (let op = this.accept('+', '-'); op !== undefined; op = this.accept('+', '-')) left = this.arithmetic(op, left, this.product());
    return left;
  }

  private product(): Node {
    let left = this.unary();
    for (let op = this.accept('*', '/'); op !== undefined; op = this.accept('*', '/')) left = this.arithmetic(op, left, this.unary());
    return left;
  }

  private arithmetic(op: Token, left: Node, right: Node): Node {
    const l = this.want(left, 'number', `left of "${op.text}"`);
    const r = this.want(right, 'number', `right of "${op.text}"`);
    const apply = ARITHMETIC[op.text]!;
    return node('number', l.pos, (s) => {
      const a = l.eval(s) as number | null;
      const b = r.eval(s) as number | null;
      return a === null || b === null ? null : finiteOrNull(apply(a, b));
    });
  }

  private unary(): Node {
    const minus = this.accept('-');
    if (minus === undefined) return this.atom();
    const inner = this.want(this.unary(), 'number', 'after "-"');
    return node('number', minus.pos, (s) => {
      const v = inner.eval(s) as number | null;
      return v === null ? null : -v;
    });
  }

  private atom(): Node {
    const t = this.peek();
    if (this.accept('(')) {
      const inner = this.or();
      this.expect(')', t.pos);
      return inner;
    }
    this.i++;
    if (t.kind === 'number') return node('number', t.pos, () => t.value);
    if (t.kind === 'string') return node('string', t.pos, () => t.value);
    if (t.kind === 'name' && (t.text === 'true' || t.text === 'false')) return node('boolean', t.pos, () => t.text === 'true');
    if (t.kind === 'name' && t.text === 'exists') {
      this.expect('(', t.pos);
      const inner = this.or();
      this.expect(')', t.pos);
      return node('boolean', t.pos, (s) => inner.eval(s) !== null);
    }
    if (t.kind === 'name' && !KEYWORDS.has(t.text)) return resolveName(t);
    return this.fail(t.pos, `expected a value, got "${t.text}"`);
  }

  private peek(): Token {
    return this.tokens[this.i]!;
  }

  private accept(...texts: string[]): Token | undefined {
    const t = this.peek();
    if ((t.kind === 'op' || t.kind === 'name') && texts.includes(t.text)) {
      this.i++;
      return t;
    }
    return undefined;
  }

  private expect(text: string, openedAt: number): void {
    const t = this.peek();
    if (this.accept(text) === undefined) this.fail(t.pos, `expected "${text}" (opened at column ${openedAt + 1}), got "${t.text}"`);
  }

  private want(n: Node, type: Type, where: string): Node {
    if (n.type !== type) this.fail(n.pos, `expected a ${type} ${where}, got a ${n.type}`);
    return n;
  }

  private fail(pos: number, detail: string): never {
    throw new RuleSyntaxError(this.rule, this.source, pos, detail);
  }
}

function node(type: Type, pos: number, evaluate: (s: Sample) => Value): Node {
  return { type, pos, eval: evaluate };
}

function resolveName(t: Token): Node {
  const [head, ...tail] = t.text.split('.');
  const key = tail.join('.');
  if (tail.length > 0 && head === 'scores') return node('number', t.pos, (s) => own(s.scores, key));
  if (tail.length > 0 && head === 'rewards') return node('number', t.pos, (s) => own(s.rollout.rewards, key));
  if (tail.length > 0 && head === 'tags') return node('string', t.pos, (s) => own(s.rollout.tags, key));
  if (tail.length > 0 && head === 'annotations') return node('string', t.pos, (s) => own(s.annotations, key));
  const name = t.text;
  if ((STRING_FIELDS as readonly string[]).includes(name)) return node('string', t.pos, (s) => s.rollout[name as (typeof STRING_FIELDS)[number]]);
  if (name === 'response') return node('string', t.pos, (s) => responseText(s.rollout));
  if (name === 'token_count' || name === 'created_at') return node('number', t.pos, (s) => s.rollout[name]);
  if (name === 'prompt_chars') return node('number', t.pos, (s) => s.rollout.prompt.length);
  if (name === 'response_chars') return node('number', t.pos, (s) => responseText(s.rollout).length);
  return node('number', t.pos, (s) => own(s.scores, name));
}

/**
 * `record[key]` if the record has it itself, else null (missing): a name like `constructor`
 * or `__proto__` must not resolve to a member of Object.prototype.
 */
function own<V>(record: Record<string, V>, key: string): V | null {
  return Object.hasOwn(record, key) ? (record[key] ?? null) : null;
}

function responseText(r: Rollout): string {
  return r.response ?? r.steps.map((step) => step.content).join('\n');
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

import { mapSamples, type Curator } from '../../lib/envelope.ts';
import { responseText } from '../../contracts/features.ts';

export interface HeuristicsConfig {
  /** Score names; a null name turns that score off. */
  names: {
    /** Response length in characters. */
    chars: string | null;
    /** `token_count`. */
    tokens: string | null;
    /** Fraction of the response's word n-grams that repeat an earlier one, in [0, 1). */
    repetition: string | null;
    /** 1 when the response runs past `overthinking.maxTokens` without an answer, else 0. */
    overthinking: string | null;
    /** 1 when the response matches `format.pattern`, else 0 (off while pattern is null). */
    format: string | null;
  };
  /** Word n-gram size for repetition (3: "the answer is the answer is" repeats). */
  repetitionN: number;
  overthinking: {
    maxTokens: number;
    /** A final answer: regular expression (flags "s"). */
    answerPattern: string;
  };
  format: {
    /** Regular expression the response must match, or null for no format score. */
    pattern: string | null;
    /** RegExp flags, e.g. "i", "m". */
    flags: string;
  };
}

export const heuristicsDefaults: HeuristicsConfig = {
  names: {
    chars: 'heuristic.chars',
    tokens: 'heuristic.tokens',
    repetition: 'heuristic.repetition',
    overthinking: 'heuristic.overthinking',
    format: 'heuristic.format',
  },
  repetitionN: 3,
  overthinking: { maxTokens: 4096, answerPattern: String.raw`Answer:|\\boxed\{|</answer>` },
  format: { pattern: null, flags: '' },
};

/**
 * Cheap text scores of the response (or the trajectory's contents without one), each under its
 * configured name:
 * - chars and tokens: lengths;
 * - repetition: (n-grams − distinct n-grams) / n-grams over lower-cased words; 0 when the
 *   response has fewer than n words;
 * - overthinking: a long chain (token_count > maxTokens) that never reached an answer pattern;
 * - format: whether the response matches the pattern.
 * Both patterns are compiled when the operator is built, so a bad one fails at startup with
 * the field named. Scores only; filters decide.
 *
 * @example
 *   heuristics({ ...heuristicsDefaults, overthinking: { maxTokens: 100, answerPattern: 'Answer:' } })
 *   // response "so so so so\nAnswer: 4", token_count 12
 *   //   → scores { 'heuristic.chars': 21, 'heuristic.tokens': 12, 'heuristic.repetition': 0.25, 'heuristic.overthinking': 0 }
 *   // response "hmm, wait, let me reconsider", token_count 101 → 'heuristic.overthinking': 1
 */
export function heuristics(config: HeuristicsConfig): Curator {
  const answer = compile('overthinking.answerPattern', config.overthinking.answerPattern, 's');
  const format = config.format.pattern === null ? null : compile('format.pattern', config.format.pattern, config.format.flags);
  const { names } = config;
  return mapSamples('heuristics', (sample) => {
    const text = responseText(sample.rollout);
    const tokens = sample.rollout.token_count;
    const scores: Record<string, number> = {};
    if (names.chars !== null) scores[names.chars] = text.length;
    if (names.tokens !== null) scores[names.tokens] = tokens;
    if (names.repetition !== null) scores[names.repetition] = repetition(text, config.repetitionN);
    if (names.overthinking !== null) scores[names.overthinking] = tokens > config.overthinking.maxTokens && !answer.test(text) ? 1 : 0;
    if (names.format !== null && format !== null) scores[names.format] = format.test(text) ? 1 : 0;
    return { ...sample, scores: { ...sample.scores, ...scores } };
  });
}

/** Fraction of word n-grams that are repeats of an earlier one. */
export function repetition(text: string, n: number): number {
  const words = text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
  const total = words.length - n + 1;
  if (total <= 0) return 0;
  const seen = new Set<string>();
  for (let i = 0; i < total; i++) seen.add(words.slice(i, i + n).join(' '));
  return (total - seen.size) / total;
}

function compile(field: string, pattern: string, flags: string): RegExp {
  // A global or sticky regex keeps lastIndex between test() calls and would skip matches.
  if (/[gy]/.test(flags)) throw new Error(`heuristics ${field}: flags "g" and "y" are not allowed`);
  try {
    return new RegExp(pattern, flags);
  } catch (err) {
    throw new Error(`heuristics ${field}: ${(err as Error).message}`);
  }
}

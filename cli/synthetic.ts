import type { Rollout } from '../contracts/records.ts';

/**
 * Synthetic rollouts whose fate is known in advance, for the demo, the tests and benchmarks.
 * Prompts are arithmetic questions answered by several samples each (one group per prompt).
 * Some answers are wrong, some miss the "Answer:" format, some repeat an earlier sample of their
 * group with only case and spacing changed, some are invalid rollouts, and some records are not
 * rollouts at all (raw bytes).
 */
export type Fate = 'accept' | 'wrong' | 'unformatted' | 'duplicate' | 'invalid';

export interface SyntheticOptions {
  groups: number;
  samplesPerGroup: number;
  seed: number;
  runId: string;
  duplicateRate: number;
  invalidRate: number;
  /** How many raw non-rollout records to add. */
  garbage: number;
  /**
   * How strongly the wording gives correctness away (0: not at all): with this probability a
   * right answer shows its check and a wrong one hedges — a signal a text scorer can learn.
   */
  signal: number;
}

export interface SyntheticData {
  rollouts: Rollout[];
  fates: Map<string, Fate>;
  garbage: Buffer[];
}

export const syntheticDefaults: SyntheticOptions = {
  groups: 500,
  samplesPerGroup: 4,
  seed: 7,
  runId: 'synthetic',
  duplicateRate: 0.06,
  invalidRate: 0.01,
  garbage: 5,
  signal: 0,
};

/** mulberry32: small, fast, and the same sequence on every machine. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SKILLS = ['addition', 'multiplication', 'subtraction'] as const;
const OPENERS = ['Let me work this out.', 'First, read the question.', 'Step by step:', 'We compute carefully.', 'Think about the numbers.'];
const CHECKS = ['Checking by the inverse operation confirms it.', 'I verified the result twice.', 'Substituting back gives the same value.'];
const HEDGES = ['Probably, though I rushed it.', 'I guessed the last digit.', 'Not sure about the carry.'];

export function syntheticRollouts(options: Partial<SyntheticOptions> = {}): SyntheticData {
  const o = { ...syntheticDefaults, ...options };
  const random = prng(o.seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const rollouts: Rollout[] = [];
  const fates = new Map<string, Fate>();
  const start = Date.UTC(2026, 10, 1);
  for (let g = 0; g < o.groups; g++) {
    const skill = SKILLS[g % SKILLS.length]!;
    const a = 2 + Math.floor(random() * 97);
    const b = 2 + Math.floor(random() * 97);
    const [symbol, truth] = skill === 'addition' ? ['+', a + b] : skill === 'multiplication' ? ['*', a * b] : ['-', a - b];
    const difficulty = skill === 'multiplication' ? 0.55 : 0.8;
    const promptId = `${o.runId}-p${g}`;
    const prompt = `What is ${a} ${symbol} ${b}?`;
    const group: Rollout[] = [];
    for (let s = 0; s < o.samplesPerGroup; s++) {
      const id = `${promptId}-s${s}`;
      const base: Rollout = {
        id,
        run_id: o.runId,
        prompt_id: promptId,
        prompt,
        group_id: promptId,
        response: null,
        steps: [],
        model_name: 'synthetic-policy',
        model_version: 'v1',
        rewards: {},
        logprobs: null,
        token_count: 0,
        created_at: start + (g * o.samplesPerGroup + s) * 1000,
        tags: { skill, source: 'synthetic' },
      };
      const earlier = group.filter((r) => fates.get(r.id) !== 'invalid');
      if (earlier.length > 0 && random() < o.duplicateRate) {
        const copy = pick(earlier);
        const response = `  ${copy.response!.toUpperCase()}  `.replace(/ /g, '  ');
        const rollout = { ...base, response, rewards: { ...copy.rewards }, token_count: copy.token_count };
        group.push(rollout);
        fates.set(id, 'duplicate');
        continue;
      }
      const correct = random() < difficulty;
      const formatted = random() < 0.9;
      const answer = correct ? truth : truth + 1 + Math.floor(random() * 9);
      const tell = o.signal > 0 && random() < o.signal ? ` ${pick(correct ? CHECKS : HEDGES)}` : '';
      const reasoning = `${pick(OPENERS)} Sample ${s} of ${promptId} computes ${a} ${symbol} ${b}.${tell}`;
      const response = formatted ? `${reasoning}\nAnswer: ${answer}` : `${reasoning} I believe it is ${answer}.`;
      const tokens = response.split(/\s+/).length;
      const logprobs = Array.from({ length: Math.min(tokens, 16) }, () => -random() * (correct ? 1 : 1.3));
      let rollout: Rollout = { ...base, response, rewards: { correct: correct ? 1 : 0 }, token_count: tokens, logprobs };
      let fate: Fate = !correct ? 'wrong' : !formatted ? 'unformatted' : 'accept';
      if (random() < o.invalidRate) {
        rollout = random() < 0.5 ? { ...rollout, prompt: '' } : { ...rollout, rewards: { correct: Number.NaN } };
        fate = 'invalid';
      }
      group.push(rollout);
      fates.set(id, fate);
    }
    rollouts.push(...group);
  }
  // Plain JSON, and (the last one) the wire format's header with a schema id nobody registered.
  const garbage = Array.from({ length: o.garbage }, (_, i) =>
    i === o.garbage - 1 && i > 0 ? Buffer.from([0, 0x7f, 0xff, 0xff, 0xf0, 1, 2, 3]) : Buffer.from(`{"not":"avro","n":${i}}`),
  );
  return { rollouts, fates, garbage };
}

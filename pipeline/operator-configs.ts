import { z } from 'zod';
import { contaminationFilterDefaults } from '../operators/filter/contamination-filter.ts';
import { heuristicsDefaults } from '../operators/score/heuristics.ts';
import { rewardCombineDefaults } from '../operators/score/reward-combine.ts';
import { compileExpression, ExpressionError, sampleVocabulary } from '../lib/expression.ts';
import { selfCertaintyDefaults } from '../operators/score/self-certainty.ts';
import { semanticDedupeDefaults } from '../operators/dedupe/semantic-dedupe.ts';
import { errorCompensateDefaults } from '../operators/score/error-compensate.ts';
import { exploreExploitDefaults } from '../operators/balance/explore-exploit.ts';
import { qdArchiveDefaults } from '../operators/balance/qd-archive.ts';
import { quotaBalanceDefaults } from '../operators/balance/quota-balance.ts';
import { groupFilterDefaults } from '../operators/filter/group-filter.ts';
import { acceptanceControlDefaults } from '../operators/filter/acceptance-control.ts';
import { minHashDefaults } from '../lib/minhash.ts';
import { checkNearDedupeConfig, nearDedupeDefaults, type NearDedupeConfig } from '../operators/dedupe/near-dedupe.ts';
import { preferencePairsDefaults } from '../operators/signals/preference-pairs.ts';
import { compileRule } from '../operators/filter/rule-filter.ts';
import { stalenessFilterDefaults } from '../operators/filter/staleness-filter.ts';
import { weaknessTrackerDefaults } from '../operators/signals/weakness-tracker.ts';
import type { Head } from '../lib/text-model.ts';

/**
 * Config schemas for operators whose defaults live beside the operator (`xxxDefaults`): the file
 * names what may be set and checks its type; whatever is left out takes the operator's default.
 */
export function withDefaults<T extends string, S extends z.ZodRawShape, D extends object>(type: T, shape: S, defaults: D) {
  const schema = z.strictObject({ type: z.literal(type), ...shape });
  // Fields the operator has a default for take its type; the others (required ones) their own.
  return schema.transform((given) => ({ ...defaults, ...given }) as unknown as D & Omit<z.output<typeof schema>, keyof D> & { type: T });
}

const count = z.number().int().positive();
const positiveNumber = z.number().positive();
const fraction = z.number().min(0).max(1);
const ms = z.number().int().nonnegative();
const name = z.string().min(1);

export const nearDedupeConfig = withDefaults(
  'near-dedupe',
  {
    scope: z.enum(['global', 'group']).optional(),
    threshold: fraction.optional(),
    text: z.enum(['response', 'prompt_response']).optional(),
    minShingles: count.optional(),
    minhash: z
      .strictObject({
        permutations: count.optional(),
        bands: count.optional(),
        shingle: z.enum(['word', 'char']).optional(),
        shingleSize: count.optional(),
        seed: z.number().int().optional(),
        bits: count.optional(),
      })
      .transform((m) => ({ ...minHashDefaults, ...m }))
      .optional(),
    maxEntries: count.optional(),
    ttlMs: ms.nullable().optional(),
    maxBucketSize: count.optional(),
    evictionsPerStep: count.optional(),
    clock: z.enum(['event', 'event+tick']).optional(),
    refreshOnHit: z.boolean().optional(),
    annotateSignature: z.boolean().optional(),
  },
  nearDedupeDefaults,
).superRefine((config, ctx) => {
  try {
    checkNearDedupeConfig(config as NearDedupeConfig);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message, path: ['minhash'] });
  }
});

export const groupFilterConfig = withDefaults(
  'group-filter',
  {
    groupSize: count.nullable().optional(),
    maxWaitMs: ms.optional(),
    timeBasis: z.enum(['event', 'processing', 'both']).optional(),
    maxSkewMs: ms.optional(),
    reward: name.optional(),
    minVarianceSamples: count.optional(),
    minSize: count.optional(),
    onIncomplete: z.enum(['reject', 'pass']).optional(),
    maxOpenGroups: count.optional(),
    maxGroupSize: count.optional(),
    relative: z.array(name).optional(),
    relativeLength: z.boolean().optional(),
  },
  groupFilterDefaults,
);

/** acceptance-control (operators/filter/acceptance-control.ts): `score` is required; `target` strictly between 0 and 1. */
export const acceptanceControlConfig = withDefaults(
  'acceptance-control',
  {
    score: name,
    mode: z.enum(['rate', 'top-k']).optional(),
    target: z.number().gt(0).lt(1).optional(),
    initial: z.number().nullable().optional(),
    gain: positiveNumber.optional(),
    window: count.optional(),
    min: z.number().nullable().optional(),
    max: z.number().nullable().optional(),
    k: count.optional(),
    onMissing: z.enum(['reject', 'pass']).optional(),
  },
  acceptanceControlDefaults,
);

export const stalenessFilterConfig = withDefaults(
  'staleness-filter',
  { maxLag: z.number().int().nonnegative().optional(), onUnknown: z.enum(['pass', 'reject']).optional() },
  stalenessFilterDefaults,
);

export const contaminationFilterConfig = withDefaults(
  'contamination-filter',
  {
    evalSets: z.array(name).min(1, 'name at least one evaluation set file').optional(),
    n: count.optional(),
    minN: count.optional(),
    maxItemsPerNgram: count.optional(),
    maxNgrams: count.optional(),
    idField: name.optional(),
    textFields: z.array(name).min(1).optional(),
    minOverlap: count.optional(),
    minFraction: fraction.optional(),
    fields: z.array(z.enum(['prompt', 'response'])).min(1).optional(),
  },
  contaminationFilterDefaults,
);

const rule = z.strictObject({ name, when: z.string() }).superRefine((r, ctx) => {
  try {
    compileRule(r.when, r.name);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message, path: ['when'] });
  }
});

export const ruleFilterConfig = withDefaults(
  'rule-filter',
  { rules: z.array(rule).min(1, 'list at least one rule').optional(), onMissing: z.enum(['pass', 'reject']).optional() },
  { rules: [] as Array<{ name: string; when: string }>, onMissing: 'pass' as 'pass' | 'reject' },
);

export const weaknessTrackerConfig = withDefaults(
  'weakness-tracker',
  {
    reward: name.optional(),
    passThreshold: z.number().optional(),
    window: count.optional(),
    minAttempts: count.optional(),
    maxPassRate: fraction.optional(),
    cooldownAttempts: z.number().int().nonnegative().optional(),
    cooldownMs: ms.optional(),
    maxPrompts: count.optional(),
    maxPromptChars: count.optional(),
  },
  weaknessTrackerDefaults,
);

export const preferencePairsConfig = withDefaults(
  'preference-pairs',
  {
    reward: name.optional(),
    threshold: z.number().optional(),
    score: name.nullable().optional(),
    maxPairsPerGroup: count.optional(),
    excludeReasons: z.array(z.string()).optional(),
    neutralReasons: z.array(z.string()).optional(),
  },
  preferencePairsDefaults,
);

const numericRef = z.union([
  z.strictObject({ score: name }),
  z.strictObject({ reward: name }),
  z.strictObject({ field: z.literal('token_count') }),
]);
const labelRef = z.union([z.strictObject({ tag: name }), z.strictObject({ annotation: name })]);

export const quotaBalanceConfig = withDefaults(
  'quota-balance',
  {
    bucketBy: labelRef.optional(),
    unknownBucket: name.optional(),
    quota: z.number().int().nonnegative().optional(),
    quotas: z.record(z.string(), z.number().int().nonnegative()).optional(),
    score: name.optional(),
    windowMs: count.optional(),
    slideMs: count.optional(),
    maxSkewMs: ms.optional(),
    maxOutOfOrdernessMs: ms.optional(),
    allowedLatenessMs: ms.optional(),
    maxDelayMs: ms.optional(),
    retentionMs: ms.optional(),
    maxHeld: count.optional(),
    maxWindows: count.optional(),
  },
  quotaBalanceDefaults,
).refine((c) => c.slideMs === undefined || c.windowMs % c.slideMs === 0, { message: 'windowMs must be a multiple of slideMs', path: ['slideMs'] });

export const qdArchiveConfig = withDefaults(
  'qd-archive',
  {
    descriptors: z
      .array(
        z.union([
          z.strictObject({ name, value: numericRef, edges: z.array(z.number()).min(1) }),
          z.strictObject({ name, label: labelRef, categories: z.array(z.string()).min(1) }),
        ]),
      )
      .min(1)
      .optional(),
    score: name.optional(),
    mode: z.enum(['annotate', 'elites-only']).optional(),
    reportEvery: count.optional(),
    maxCells: count.optional(),
  },
  qdArchiveDefaults,
);

const bounded = <T extends z.ZodRawShape, D extends object>(shape: T, defaults: D) =>
  z.strictObject(shape).transform((given) => ({ ...defaults, ...given }) as unknown as D).optional();
const ee = exploreExploitDefaults;

export const exploreExploitConfig = withDefaults(
  'explore-exploit',
  {
    score: name.optional(),
    correctReward: name.optional(),
    correctMin: z.number().optional(),
    answerPattern: z.string().optional(),
    k: count.optional(),
    windowGroups: count.optional(),
    windowSamples: count.optional(),
    maxVersions: count.optional(),
    reportEvery: count.optional(),
    minGroups: count.optional(),
    threshold: bounded(
      { initial: z.number().optional(), min: z.number().optional(), max: z.number().optional(), gain: positiveNumber.optional(), maxStep: positiveNumber.optional(), deadBand: z.number().nonnegative().optional() },
      ee.threshold,
    ),
    targets: bounded(
      { passAtK: fraction.optional(), distinctCorrect: z.number().positive().nullable().optional(), acceptRate: fraction.optional(), precision: fraction.optional(), auc: fraction.optional() },
      ee.targets,
    ),
    temperature: bounded({ initial: positiveNumber.optional(), min: positiveNumber.optional(), max: positiveNumber.optional(), step: positiveNumber.optional() }, ee.temperature),
    samplesPerPrompt: bounded({ initial: count.optional(), min: count.optional(), max: count.optional(), step: count.optional() }, ee.samplesPerPrompt),
  },
  exploreExploitDefaults,
);

export const errorCompensateConfig = withDefaults(
  'error-compensate',
  { score: name.optional(), k: count.optional(), minSimilarity: z.number().min(-1).max(1).optional(), similarity: z.enum(['blocks', 'text', 'standardized', 'whole']).optional(), minResidual: z.number().nonnegative().optional(), min: z.number().optional(), max: z.number().optional(), shrinkage: z.number().nonnegative().optional(), calibrate: z.boolean().optional() },
  errorCompensateDefaults,
);

const providers = z.array(z.enum(['cpu', 'cuda'])).min(1);
const microBatch = { maxBatch: count.optional(), latencyMs: ms.optional() };

/** A model the operator loads: a file to start from, and the name it is announced under for hot swaps. */
const featuresModelRef = z.strictObject({
  /** 'features' (the default): the model takes the pipeline's feature vectors. */
  kind: z.literal('features').default('features'),
  /** Announcements on <prefix>.model-updates with this model name replace the model live. */
  name,
  /** The ONNX file to start with; without it, the newest announced artifact of `name`. */
  path: name.optional(),
  version: name.optional(),
  executionProviders: providers.default(['cpu']),
});

/**
 * A text model: a directory with model.onnx (inputs input_ids, attention_mask, optionally
 * token_type_ids) and its tokenizer.json — see pipeline/text-models.ts and README "Bring your
 * own model". E.g. { kind: 'text', dir: 'models/minilm', pooling: 'mean', normalize: true }.
 */
const textModelFields = {
  kind: z.literal('text'),
  dir: name,
  /** 'response', 'prompt+response' (a text pair) or a template with {prompt} and {response}. */
  text: name.default('response'),
  /** Truncation, special tokens included. */
  maxTokens: count.default(128),
  pooling: z.enum(['mean', 'cls']).default('mean'),
  normalize: z.boolean().default(true),
  head: z
    .string()
    .regex(/^(logit|sigmoid|regression|softmax:\d+)$/, "head must be 'logit', 'sigmoid', 'regression' or 'softmax:<class>'")
    .default('logit')
    .transform((h) => h as Head),
  /** Most tokens (rows × longest sequence) per model run. */
  batchTokens: count.default(4096),
  /** The output read (default: "logits" to score, "last_hidden_state" to embed). */
  outputName: name.optional(),
  version: name.optional(),
  executionProviders: providers.default(['cpu']),
};
const textModelRef = z.strictObject({ name, ...textModelFields });
const modelRef = z.union([featuresModelRef, textModelRef]);

export const onnxScoreConfig = z.strictObject({
  type: z.literal('onnx-score'),
  name: name.default('model'),
  model: modelRef,
  skipRejected: z.boolean().default(false),
  ...microBatch,
}).transform((c) => ({ maxBatch: 64, latencyMs: 20, ...c }));

export const semanticDedupeConfig = withDefaults(
  'semantic-dedupe',
  {
    encoder: z.union([
      z.strictObject({ kind: z.literal('features').default('features'), path: name, executionProviders: providers.default(['cpu']) }),
      z.strictObject(textModelFields),
    ]),
    threshold: z.number().min(-1).max(1).optional(),
    maxEntries: count.optional(),
    ttlMs: count.nullable().optional(),
    evictionsPerStep: count.optional(),
    scope: z.enum(['global', 'group']).optional(),
    index: z.enum(['hnsw', 'clusters', 'exact']).optional(),
    clusters: count.optional(),
    probes: count.optional(),
    scoreName: name.optional(),
    /** Which samples are embedded and compared (an expression, as rule-filter's `when`). */
    when: z
      .string()
      .superRefine((w, ctx) => {
        try {
          compileExpression(w, { field: 'when', vocabulary: sampleVocabulary(), result: 'boolean' });
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
        }
      })
      .nullable()
      .optional(),
    ...microBatch,
  },
  semanticDedupeDefaults,
);

export const selfCertaintyConfig = withDefaults('self-certainty', { name: name.optional() }, selfCertaintyDefaults);

export const rewardCombineConfig = withDefaults(
  'reward-combine',
  {
    name: name.optional(),
    mode: z.enum(['weighted', 'min', 'max', 'expression']).optional(),
    weights: z.record(z.string(), z.number()).optional(),
    normalize: z.boolean().optional(),
    inputs: z.array(name).optional(),
    expression: z.string().optional(),
    onMissing: z.enum(['skip', 'zero']).optional(),
  },
  rewardCombineDefaults,
).superRefine((c, ctx) => {
  if (c.mode !== 'expression') return;
  try {
    compileExpression(c.expression, { field: 'expression', vocabulary: sampleVocabulary(), result: 'number' });
  } catch (err) {
    ctx.addIssue({ code: 'custom', path: ['expression'], message: err instanceof ExpressionError ? err.message : String(err) });
  }
});

const scoreName = name.nullable().optional();
export const heuristicsConfig = withDefaults(
  'heuristics',
  {
    names: z
      .strictObject({ chars: scoreName, tokens: scoreName, repetition: scoreName, overthinking: scoreName, format: scoreName })
      .transform((n) => ({ ...heuristicsDefaults.names, ...n }))
      .optional(),
    repetitionN: count.optional(),
    overthinking: z
      .strictObject({ maxTokens: count.optional(), answerPattern: z.string().optional() })
      .transform((o) => ({ ...heuristicsDefaults.overthinking, ...o }))
      .optional(),
    format: z
      .strictObject({ pattern: z.string().nullable().optional(), flags: z.string().optional() })
      .transform((f) => ({ ...heuristicsDefaults.format, ...f }))
      .optional(),
  },
  heuristicsDefaults,
);

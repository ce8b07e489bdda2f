import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { exactDedupeDefaults } from '../operators/dedupe/exact-dedupe.ts';
import { createdAtDefaults, validateDefaults } from '../operators/filter/validate.ts';
import { featureDefaults } from '../contracts/features.ts';
import { isBuiltinType, storeOf } from './builtins.ts';
import { LOG_FORMATS, LOG_LEVELS } from '../lib/log.ts';
import {
  contaminationFilterConfig,
  errorCompensateConfig,
  exploreExploitConfig,
  qdArchiveConfig,
  quotaBalanceConfig,
  groupFilterConfig,
  acceptanceControlConfig,
  heuristicsConfig,
  nearDedupeConfig,
  onnxScoreConfig,
  rewardCombineConfig,
  selfCertaintyConfig,
  semanticDedupeConfig,
  preferencePairsConfig,
  ruleFilterConfig,
  stalenessFilterConfig,
  weaknessTrackerConfig,
} from './operator-configs.ts';

const name = z.string().regex(/^[A-Za-z0-9._-]+$/, 'use letters, digits, ".", "_" or "-"');
const scores = z.record(z.string(), z.number());

const regex = z.string().refine((p) => {
  try {
    new RegExp(p);
    return true;
  } catch {
    return false;
  }
}, 'not a valid regular expression');

export const operatorConfigSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('validate'),
    maxChars: z.number().int().positive().default(validateDefaults.maxChars),
    /** Bounds on rollout.created_at; see operators/filter/validate.ts. */
    createdAt: z
      .strictObject({
        maxFutureMs: z.number().int().nonnegative().nullable().optional(),
        maxPastMs: z.number().int().nonnegative().nullable().optional(),
        min: z.number().int().nonnegative().optional(),
        max: z.number().int().positive().optional(),
        onSkew: z.enum(['reject', 'clamp']).optional(),
      })
      .transform((given) => ({ ...createdAtDefaults, ...given }))
      .refine((b) => b.min < b.max, { message: 'min must be before max', path: ['max'] })
      .default(createdAtDefaults),
  }),
  z.strictObject({
    type: z.literal('rule-score'),
    name: name.default('rule'),
    rewards: z.record(z.string(), z.number().nonnegative()).default({}),
    format: z
      .strictObject({
        pattern: regex.optional(),
        minChars: z.number().int().nonnegative().optional(),
        maxChars: z.number().int().positive().optional(),
      })
      .default({}),
  }),
  z.strictObject({
    type: z.literal('exact-dedupe'),
    scope: z.enum(['global', 'group']).default('global'),
    maxEntries: z.number().int().positive().default(exactDedupeDefaults.maxEntries),
    ttlMs: z.number().int().positive().nullable().default(exactDedupeDefaults.ttlMs),
    refreshOnHit: z.boolean().default(exactDedupeDefaults.refreshOnHit),
    maxSkewMs: z.number().int().nonnegative().default(exactDedupeDefaults.maxSkewMs),
    allowedLatenessMs: z.number().int().nonnegative().default(exactDedupeDefaults.allowedLatenessMs),
    maxEvictionsPerBatch: z.number().int().positive().default(exactDedupeDefaults.maxEvictionsPerBatch),
  }),
  z.strictObject({
    type: z.literal('threshold-filter'),
    min: scores.default({}),
    max: scores.default({}),
    onMissing: z.enum(['reject', 'pass']).default('reject'),
  }),
  nearDedupeConfig,
  groupFilterConfig,
  acceptanceControlConfig,
  stalenessFilterConfig,
  contaminationFilterConfig,
  ruleFilterConfig,
  weaknessTrackerConfig,
  preferencePairsConfig,
  quotaBalanceConfig,
  qdArchiveConfig,
  exploreExploitConfig,
  errorCompensateConfig,
  onnxScoreConfig,
  semanticDedupeConfig,
  selfCertaintyConfig,
  rewardCombineConfig,
  heuristicsConfig,
]);

/**
 * Orders of built-in operators that make no sense, refused at start rather than discovered in
 * the data, each with the index of the operator at fault. The config schema and the topology
 * builder both ask this, so a JSON config and a topology built in code are held to one rule.
 * A step is its type and, for the operators whose needs depend on it, its `mode`.
 *
 *   operatorOrderProblems([{ type: 'preference-pairs' }, { type: 'validate' }])
 *   // → [{ index: 0, message: 'preference-pairs must be the last operator: …' }, …]
 *   operatorOrderProblems([{ type: 'acceptance-control', mode: 'top-k' }])
 *   // → [{ index: 0, message: 'acceptance-control in mode top-k needs a group-filter before it: …' }]
 */
export function operatorOrderProblems(steps: ReadonlyArray<{ type: string; mode?: unknown }>): Array<{ index: number; message: string }> {
  const problems: Array<{ index: number; message: string }> = [];
  const types = steps.map((s) => s.type);
  const group = types.indexOf('group-filter');
  const pairs = types.indexOf('preference-pairs');
  if (pairs >= 0) {
    if (pairs !== types.length - 1) problems.push({ index: pairs, message: 'preference-pairs must be the last operator: it pairs by the final reasons' });
    if (group < 0 || group > pairs) problems.push({ index: pairs, message: 'preference-pairs needs a group-filter before it: it pairs samples of a group released together' });
  }
  steps.forEach((step, index) => {
    // Without whole groups every sample would be dead-lettered at run time (no group.size).
    if (step.type === 'acceptance-control' && step.mode === 'top-k' && (group < 0 || group > index)) {
      problems.push({ index, message: 'acceptance-control in mode top-k needs a group-filter before it: it ranks the samples of a group released together' });
    }
  });
  const seen = new Set<string>();
  types.forEach((type, index) => {
    // Built-ins keep a store named after their type (pipeline/builtins.ts): two would share it.
    if (isBuiltinType(type) && storeOf(type) !== undefined && seen.has(type)) problems.push({ index, message: `${type} appears twice; its state store would be shared` });
    seen.add(type);
  });
  return problems;
}

function checkOperatorOrder(operators: ReadonlyArray<{ type: string }>, ctx: z.RefinementCtx): void {
  for (const { index, message } of operatorOrderProblems(operators)) ctx.addIssue({ code: 'custom', path: [index, 'type'], message });
}

export const pipelineConfigSchema = z.strictObject({
  /** Application id: names the consumer group, the transactional ids and the changelog topics. */
  name,
  /** Label of this curating run on every output row; replays use their own. */
  run: name.default('live'),
  topics: z
    .strictObject({
      prefix: name.default('flywheel'),
      partitions: z.number().int().min(1).max(256).default(3),
    })
    .default({ prefix: 'flywheel', partitions: 3 }),
  source: z
    .strictObject({
      /** A new consumer group starts at the beginning of the rollouts topic, not at its end. */
      fromBeginning: z.boolean().default(true),
      partitionsConsumedConcurrently: z.number().int().min(1).max(64).default(3),
      /** Upper bound of one fetched batch per partition, hence of one transaction's input. */
      maxBatchBytes: z.number().int().min(1024).default(1_048_576),
      /** Punctuation interval: operators holding samples release them on these ticks too. */
      tickMs: z.number().int().min(50).default(1000),
    })
    .default({ fromBeginning: true, partitionsConsumedConcurrently: 3, maxBatchBytes: 1_048_576, tickMs: 1000 }),
  /** The one feature layout of the pipeline: model scoring, error memory and trainers share it. */
  features: z
    .strictObject({
      dims: z.number().int().min(8).max(1 << 20).optional(),
      wordNgrams: z.array(z.number().int().min(1).max(5)).optional(),
      charNgrams: z.array(z.number().int().min(1).max(8)).optional(),
      rewardNames: z.array(z.string()).optional(),
      /** Rewards of rewardNames taken as log(p / (1 − p)), clamped (see FeatureConfig.logitRewards). */
      logitRewards: z.array(z.string()).optional(),
      maxChars: z.number().int().positive().optional(),
    })
    .default({})
    .transform((f) => ({ ...featureDefaults, ...f }))
    .superRefine((f, ctx) => {
      f.logitRewards.forEach((reward, i) => {
        if (!f.rewardNames.includes(reward)) ctx.addIssue({ code: 'custom', path: ['logitRewards', i], message: `"${reward}" is not in features.rewardNames: list it there to take it as a logit` });
      });
    }),
  /** Verified labels: how long a score waits for its label, and the error memory's size. */
  labels: z
    .strictObject({
      joinTtlMs: z.number().int().positive().default(24 * 3600 * 1000),
      memoryCapacity: z.number().int().positive().default(10_000),
    })
    .default({ joinTtlMs: 24 * 3600 * 1000, memoryCapacity: 10_000 }),
  /** Seed the dedupe indexes from data already stored, once per partition (see pipeline/seed.ts). */
  seed: z
    .strictObject({
      jsonl: z.array(z.string().min(1)).default([]),
      /** Accepted samples of these runs in the pipeline's ClickHouse store. */
      clickhouseRuns: z.array(name).default([]),
    })
    .optional(),
  operators: z.array(operatorConfigSchema).min(1, 'list at least one operator').superRefine(checkOperatorOrder),
  /** Log lines (see lib/log.ts); FLYWHEEL_LOG_LEVEL / FLYWHEEL_LOG_FORMAT in the environment win. */
  log: z
    .strictObject({
      level: z.enum(LOG_LEVELS).default('info'),
      format: z.enum(LOG_FORMATS).default('text'),
    })
    .default({ level: 'info', format: 'text' }),
  clickhouse: z
    .strictObject({
      /** The embedded store's data directory (ignored when a server URL is given). */
      path: z.string().default('.flywheel/clickhouse'),
      /** A ClickHouse server's HTTP URL; CLICKHOUSE_URL in the environment wins. */
      url: z.url().optional(),
      /** The server's database for Flywheel's tables (created when missing). */
      database: name.optional(),
      /**
       * At most this long (ms) a decision waits in Kafka for more to join it in one INSERT
       * (the sink's `flushIntervalMs`): at a low rate the sink inserts about once per interval
       * per partition instead of once per few records; at a high rate nothing waits.
       */
      flushIntervalMs: z.number().int().min(0).max(3000).default(1000),
      /**
       * The HTTP endpoint a worker serves its embedded store on (sinks/clickhouse/http-endpoint.ts):
       * 127.0.0.1 and read-only (SELECT-like statements only) unless these say otherwise. It has
       * no authentication: another host or writes are for a trusted network only.
       */
      endpoint: z
        .strictObject({
          host: z.string().min(1).default('127.0.0.1'),
          allowWrites: z.boolean().default(false),
        })
        .optional(),
    })
    .default({ path: '.flywheel/clickhouse', flushIntervalMs: 1000 }),
  /**
   * The worker's ops HTTP server (/metrics, /healthz, /readyz, the dashboard; see ops/server.ts).
   * `port: 0` picks a free port (the worker prints the URL), `port: null` runs none;
   * FLYWHEEL_HTTP_HOST / FLYWHEEL_HTTP_PORT in the environment win.
   */
  ops: z
    .strictObject({
      http: z
        .strictObject({
          host: z.string().min(1).default('127.0.0.1'),
          port: z.number().int().min(0).max(65535).nullable().default(9464),
        })
        .default({ host: '127.0.0.1', port: 9464 }),
    })
    .default({ http: { host: '127.0.0.1', port: 9464 } }),
});

export type PipelineConfig = z.infer<typeof pipelineConfigSchema>;
export type OperatorConfig = z.infer<typeof operatorConfigSchema>;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Validates a parsed config; errors name each field and what is wrong with it. */
export function parseConfig(raw: unknown, origin = 'config'): PipelineConfig {
  const result = pipelineConfigSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(`${origin} is not a valid pipeline config:\n${z.prettifyError(result.error)}`);
  return result.data;
}

export function loadConfig(path: string): PipelineConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  return parseConfig(raw, path);
}

/** The example pipeline in the repo: the demo runs it, and the tests check its decisions. */
export const EXAMPLE_CONFIG = new URL('../deploy/pipeline.json', import.meta.url).pathname;

/** A config with some settings replaced (name, run, topics…), validated again. */
export function withOverrides(config: PipelineConfig, overrides: Partial<z.input<typeof pipelineConfigSchema>>): PipelineConfig {
  return parseConfig({ ...config, ...overrides });
}

/** Identifies what decides: the operators and their settings, in order. Recorded on every decision. */
export function configHash(config: PipelineConfig): string {
  return createHash('sha256').update(JSON.stringify(config.operators)).digest('hex').slice(0, 16);
}

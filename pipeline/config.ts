import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';

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
    maxChars: z.number().int().positive().default(200_000),
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
  }),
  z.strictObject({
    type: z.literal('threshold-filter'),
    min: scores.default({}),
    max: scores.default({}),
    onMissing: z.enum(['reject', 'pass']).default('reject'),
  }),
]);

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
  operators: z.array(operatorConfigSchema).min(1, 'list at least one operator'),
  clickhouse: z
    .strictObject({
      /** The embedded store's data directory (ignored when a server URL is given). */
      path: z.string().default('.flywheel/clickhouse'),
      /** A ClickHouse server's HTTP URL; CLICKHOUSE_URL in the environment wins. */
      url: z.url().optional(),
      /** The server's database for Flywheel's tables (created when missing). */
      database: name.optional(),
    })
    .default({ path: '.flywheel/clickhouse' }),
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

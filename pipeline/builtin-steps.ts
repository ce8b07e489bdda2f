/*
 * The built-in operators as topology steps, one typed factory each, taking what the JSON
 * config's `operators` entry of that type takes (without `type`), with the same defaults and the
 * same validation:
 *
 *   topology({ name: 'curate' }).source('rollouts').pipe(validate(), ruleScore({ rewards: { correct: 1 } }), exactDedupe())
 *
 * A factory validates now and builds nothing: each partition's instance is built when the
 * partition is assigned, over its restored state.
 */
import { z } from 'zod';
import { ConfigError, operatorConfigSchema } from './config.ts';
import type { BuiltinConfig, BuiltinType } from './builtins.ts';
import type { BuiltinStep } from './operator.ts';

/** The settings a built-in of type `T` takes: its config entry without `type`. */
export type BuiltinInput<T extends BuiltinType> = Omit<Extract<z.input<typeof operatorConfigSchema>, { type: T }>, 'type'>;

/** A step over an already validated config entry (a JSON config's operators compile to these). */
export function builtinStep<T extends BuiltinType>(config: BuiltinConfig<T>): BuiltinStep<T> {
  return { kind: 'builtin', name: config.type as T, config };
}

/** Validates `settings` as the config schema does for an entry of type `type`; errors name the field. */
export function builtin<T extends BuiltinType>(type: T, settings: BuiltinInput<T>): BuiltinStep<T> {
  const result = operatorConfigSchema.safeParse({ ...settings, type });
  if (!result.success) throw new ConfigError(`${type}: ${z.prettifyError(result.error)}`);
  return builtinStep(result.data as BuiltinConfig<T>);
}

type Factory<T extends BuiltinType> = {} extends BuiltinInput<T> ? (settings?: BuiltinInput<T>) => BuiltinStep<T> : (settings: BuiltinInput<T>) => BuiltinStep<T>;
const factory = <T extends BuiltinType>(type: T) => ((settings: BuiltinInput<T> = {} as BuiltinInput<T>) => builtin(type, settings)) as Factory<T>;

export const validate = factory('validate');
export const ruleScore = factory('rule-score');
export const exactDedupe = factory('exact-dedupe');
export const thresholdFilter = factory('threshold-filter');
export const nearDedupe = factory('near-dedupe');
export const groupFilter = factory('group-filter');
export const stalenessFilter = factory('staleness-filter');
export const contaminationFilter = factory('contamination-filter');
export const ruleFilter = factory('rule-filter');
export const weaknessTracker = factory('weakness-tracker');
export const preferencePairs = factory('preference-pairs');
export const quotaBalance = factory('quota-balance');
export const qdArchive = factory('qd-archive');
export const exploreExploit = factory('explore-exploit');
export const errorCompensate = factory('error-compensate');
export const onnxScore = factory('onnx-score');
export const semanticDedupe = factory('semantic-dedupe');
export const selfCertainty = factory('self-certainty');
export const rewardCombine = factory('reward-combine');
export const heuristics = factory('heuristics');

import { contaminationFilter } from '../operators/filter/contamination-filter.ts';
import { errorCompensate } from '../operators/score/error-compensate.ts';
import { exploreExploit, exploreExploitStore } from '../operators/balance/explore-exploit.ts';
import { featurize } from '../contracts/features.ts';
import { heuristics } from '../operators/score/heuristics.ts';
import { onnxScore } from '../operators/score/onnx-score.ts';
import { rewardCombine } from '../operators/score/reward-combine.ts';
import { selfCertainty } from '../operators/score/self-certainty.ts';
import { semanticDedupe, semanticDedupeStore } from '../operators/dedupe/semantic-dedupe.ts';
import { qdArchive, qdArchiveStore } from '../operators/balance/qd-archive.ts';
import { quotaBalance, quotaBalanceStore } from '../operators/balance/quota-balance.ts';
import type { Curator } from '../lib/envelope.ts';
import { exactDedupe, exactDedupeStore } from '../operators/dedupe/exact-dedupe.ts';
import { groupFilter, groupFilterStore } from '../operators/filter/group-filter.ts';
import { acceptanceControl, acceptanceControlStore } from '../operators/filter/acceptance-control.ts';
import { nearDedupe, nearDedupeStore } from '../operators/dedupe/near-dedupe.ts';
import { preferencePairs } from '../operators/signals/preference-pairs.ts';
import { ruleFilter } from '../operators/filter/rule-filter.ts';
import { ruleScore } from '../operators/score/rule-score.ts';
import { stalenessFilter } from '../operators/filter/staleness-filter.ts';
import { thresholdFilter } from '../operators/filter/threshold-filter.ts';
import { validate } from '../operators/filter/validate.ts';
import { weaknessTracker, weaknessTrackerStore } from '../operators/signals/weakness-tracker.ts';
import type { KeyValueStore, StoreSpec } from '../streams/state-store.ts';
import type { OperatorConfig } from './config.ts';
import type { OperatorResources } from './curators.ts';

export type BuiltinType = OperatorConfig['type'];
export type BuiltinConfig<T extends BuiltinType> = Extract<OperatorConfig, { type: T }>;

/** What a built-in operator is built from on one partition. */
export interface BuiltinContext {
  /** Its own state store (stateful built-ins only). */
  store: () => KeyValueStore;
  resources: OperatorResources;
  /** Its position among the pipeline's built-in operators: the key of what was loaded for it (OperatorFiles). */
  index: number;
}

/** One built-in operator: the state store it keeps, if any, and how one partition's instance is built. */
export interface Builtin<T extends BuiltinType> {
  store?: StoreSpec;
  build(config: BuiltinConfig<T>, ctx: BuiltinContext): Curator;
}

/**
 * The one registry of built-in operators, by config `type`: the config schema's validation
 * (one stateful operator of a type per pipeline), the topology's stores, `describe` and the
 * partition chains all read it.
 */
export const builtins: { [T in BuiltinType]: Builtin<T> } = {
  validate: { build: (op) => validate(op) },
  'rule-score': { build: (op) => ruleScore(op) },
  'exact-dedupe': { store: exactDedupeStore, build: (op, ctx) => exactDedupe(op, ctx.store()) },
  'threshold-filter': { build: (op) => thresholdFilter(op) },
  'near-dedupe': { store: nearDedupeStore, build: (op, ctx) => nearDedupe(op, ctx.store(), op.scope === 'global' ? ctx.resources.remoteIndex : undefined) },
  'group-filter': { store: groupFilterStore, build: (op, ctx) => groupFilter(op, ctx.store()) },
  'acceptance-control': { store: acceptanceControlStore, build: (op, ctx) => acceptanceControl(op, ctx.store()) },
  'staleness-filter': { build: (op, ctx) => stalenessFilter(op, ctx.resources.versions) },
  'contamination-filter': { build: (op, ctx) => contaminationFilter(op, ctx.resources.files.evalIndexes.get(ctx.index)!) },
  'rule-filter': { build: (op) => ruleFilter(op) },
  'weakness-tracker': { store: weaknessTrackerStore, build: (op, ctx) => weaknessTracker(op, ctx.store()) },
  'preference-pairs': { build: (op) => preferencePairs(op) },
  'quota-balance': { store: quotaBalanceStore, build: (op, ctx) => quotaBalance(op, ctx.store()) },
  'qd-archive': { store: qdArchiveStore, build: (op, ctx) => qdArchive(op, ctx.store()) },
  'explore-exploit': { store: exploreExploitStore, build: (op, ctx) => exploreExploit(op, ctx.store()) },
  'error-compensate': { build: (op, ctx) => errorCompensate(op, ctx.resources.errorMemory, (s) => featurize(s.rollout, ctx.resources.features), ctx.resources.features.dims) },
  'onnx-score': { build: (op, ctx) => onnxScore({ ...op, features: ctx.resources.features }, ctx.resources.files.models.get(ctx.index)!) },
  'semantic-dedupe': { store: semanticDedupeStore, build: (op, ctx) => semanticDedupe(op, ctx.resources.files.encoders.get(ctx.index)!, ctx.store()) },
  'self-certainty': { build: (op) => selfCertainty(op) },
  'reward-combine': { build: (op) => rewardCombine(op) },
  heuristics: { build: (op) => heuristics(op) },
};

/** The store an operator type keeps, if any. */
export function storeOf(type: BuiltinType): StoreSpec | undefined {
  return builtins[type].store;
}

/** Builds one partition's instance of a built-in from its (validated) config. */
export function buildBuiltin<T extends BuiltinType>(config: BuiltinConfig<T>, ctx: BuiltinContext): Curator {
  return (builtins[config.type] as Builtin<T>).build(config, ctx);
}

export function isBuiltinType(type: string): type is BuiltinType {
  return Object.hasOwn(builtins, type);
}

import { identity, pipe } from 'rxjs';
import { contaminationFilter, type EvalIndex } from '../operators/filter/contamination-filter.ts';
import { loadEvalSets } from './eval-sets.ts';
import { errorCompensate } from '../operators/score/error-compensate.ts';
import type { ErrorMemory } from '../lib/error-memory.ts';
import { exploreExploit, exploreExploitStore } from '../operators/balance/explore-exploit.ts';
import { featureSize, featurize, type FeatureConfig } from '../contracts/features.ts';
import { heuristics } from '../operators/score/heuristics.ts';
import { ModelHolder } from '../lib/model-holder.ts';
import { OnnxEncoder, OnnxScoringModel } from './onnx-models.ts';
import { onnxScore } from '../operators/score/onnx-score.ts';
import { rewardCombine } from '../operators/score/reward-combine.ts';
import { selfCertainty } from '../operators/score/self-certainty.ts';
import { semanticDedupe, semanticDedupeStore, type Encoder } from '../operators/dedupe/semantic-dedupe.ts';
import { qdArchive, qdArchiveStore } from '../operators/balance/qd-archive.ts';
import { quotaBalance, quotaBalanceStore } from '../operators/balance/quota-balance.ts';
import type { Curator } from '../lib/envelope.ts';
import { exactDedupe, exactDedupeStore } from '../operators/dedupe/exact-dedupe.ts';
import { groupFilter, groupFilterStore } from '../operators/filter/group-filter.ts';
import { nearDedupe, nearDedupeStore, type RemoteIndex } from '../operators/dedupe/near-dedupe.ts';
import { preferencePairs } from '../operators/signals/preference-pairs.ts';
import { ruleFilter } from '../operators/filter/rule-filter.ts';
import { ruleScore } from '../operators/score/rule-score.ts';
import { stalenessFilter, type ModelVersions } from '../operators/filter/staleness-filter.ts';
import { thresholdFilter } from '../operators/filter/threshold-filter.ts';
import { validate } from '../operators/filter/validate.ts';
import { weaknessTracker, weaknessTrackerStore } from '../operators/signals/weakness-tracker.ts';
import type { PartitionState, StoreSpec } from '../streams/state-store.ts';
import type { OperatorConfig } from './config.ts';

/** What operators need from outside their partition: loaded once per worker, shared by partitions. */
export interface OperatorResources {
  /** Model versions announced on the model-updates topic. */
  versions: ModelVersions;
  /** Evaluation sets, models and encoders, by the operator's position in the config. */
  files: OperatorFiles;
  /** Near-duplicate signatures published by every partition (cross-partition dedupe). */
  remoteIndex?: RemoteIndex;
  /** Recent scorer errors, fed from the scorer-errors topic (ReLoop2-style compensation). */
  errorMemory: ErrorMemory;
  /** The pipeline's one feature layout: model scoring, error memory, trainers. */
  features: FeatureConfig;
}

/** What operators load from files, by their position in the config. */
export interface OperatorFiles {
  evalIndexes: Map<number, EvalIndex>;
  /** onnx-score: the model each one scores with, swappable while running. */
  models: Map<number, ModelHolder>;
  /** semantic-dedupe: its encoder. */
  encoders: Map<number, Encoder>;
}

/**
 * Loads what operators name — evaluation sets, ONNX models, encoders — failing at start with the
 * file's error. An onnx-score without `model.path` starts from the newest artifact announced
 * under its model name (`announced`).
 */
export async function loadOperatorFiles(
  operators: readonly OperatorConfig[],
  features: FeatureConfig,
  announced: (model: string) => { artifact: string; version: string } | undefined,
): Promise<OperatorFiles> {
  const files: OperatorFiles = { evalIndexes: new Map(), models: new Map(), encoders: new Map() };
  for (const [i, op] of operators.entries()) {
    if (op.type === 'contamination-filter') files.evalIndexes.set(i, await loadEvalSets(op.evalSets, op));
    if (op.type === 'semantic-dedupe') files.encoders.set(i, await OnnxEncoder.load(op.encoder.path, { features, executionProviders: op.encoder.executionProviders }));
    if (op.type === 'onnx-score') {
      const latest = announced(op.model.name);
      const source = op.model.path ?? latest?.artifact;
      if (source === undefined) {
        throw new Error(`onnx-score "${op.name}": no model to start with — set model.path, or announce a model named "${op.model.name}" on the model-updates topic`);
      }
      const version = op.model.path !== undefined ? op.model.version : latest?.version;
      const model = await OnnxScoringModel.load(source, version, { executionProviders: op.model.executionProviders });
      // Refused at start as hot-swap refuses it later: otherwise every batch would fail on it.
      const mismatch = await model.mismatch(featureSize(features));
      if (mismatch !== null) throw new Error(`onnx-score "${op.name}": the model at ${source} does not fit the feature layout: ${mismatch}`);
      files.models.set(i, new ModelHolder(model));
    }
  }
  return files;
}

const STORES: Partial<Record<OperatorConfig['type'], StoreSpec>> = {
  'exact-dedupe': exactDedupeStore,
  'near-dedupe': nearDedupeStore,
  'group-filter': groupFilterStore,
  'weakness-tracker': weaknessTrackerStore,
  'quota-balance': quotaBalanceStore,
  'qd-archive': qdArchiveStore,
  'explore-exploit': exploreExploitStore,
  'semantic-dedupe': semanticDedupeStore,
};

/** The store an operator type keeps, if any. */
export function storeOf(type: OperatorConfig['type']): StoreSpec | undefined {
  return STORES[type];
}

/** The state stores the configured operators need, each declared once. */
export function declaredStores(operators: readonly OperatorConfig[]): StoreSpec[] {
  const stores = new Map<string, StoreSpec>();
  for (const op of operators) {
    const store = STORES[op.type];
    if (store !== undefined) stores.set(store.name, store);
  }
  return [...stores.values()];
}

/** One partition's operator chain, in config order, over that partition's state. */
export function buildCurators(operators: readonly OperatorConfig[], state: PartitionState, resources: OperatorResources): Curator {
  const steps = operators.map((op, i): Curator => {
    switch (op.type) {
      case 'validate':
        return validate(op);
      case 'rule-score':
        return ruleScore(op);
      case 'exact-dedupe':
        return exactDedupe(op, state.store(exactDedupeStore.name));
      case 'threshold-filter':
        return thresholdFilter(op);
      case 'near-dedupe':
        return nearDedupe(op, state.store(nearDedupeStore.name), op.scope === 'global' ? resources.remoteIndex : undefined);
      case 'group-filter':
        return groupFilter(op, state.store(groupFilterStore.name));
      case 'staleness-filter':
        return stalenessFilter(op, resources.versions);
      case 'contamination-filter':
        return contaminationFilter(op, resources.files.evalIndexes.get(i)!);
      case 'rule-filter':
        return ruleFilter(op);
      case 'weakness-tracker':
        return weaknessTracker(op, state.store(weaknessTrackerStore.name));
      case 'preference-pairs':
        return preferencePairs(op);
      case 'quota-balance':
        return quotaBalance(op, state.store(quotaBalanceStore.name));
      case 'qd-archive':
        return qdArchive(op, state.store(qdArchiveStore.name));
      case 'explore-exploit':
        return exploreExploit(op, state.store(exploreExploitStore.name));
      case 'error-compensate':
        return errorCompensate(op, resources.errorMemory, (s) => featurize(s.rollout, resources.features));
      case 'onnx-score':
        return onnxScore({ ...op, features: resources.features }, resources.files.models.get(i)!);
      case 'semantic-dedupe':
        return semanticDedupe(op, resources.files.encoders.get(i)!, state.store(semanticDedupeStore.name));
      case 'self-certainty':
        return selfCertainty(op);
      case 'reward-combine':
        return rewardCombine(op);
      case 'heuristics':
        return heuristics(op);
    }
  });
  return steps.reduce<Curator>((chain, step) => pipe(chain, step), identity);
}

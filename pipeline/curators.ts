import { identity, pipe } from 'rxjs';
import { loadEvalSets } from './eval-sets.ts';
import type { ErrorMemory } from '../lib/error-memory.ts';
import { featureSize, type FeatureConfig } from '../contracts/features.ts';
import { ModelHolder } from '../lib/model-holder.ts';
import { OnnxEncoder, OnnxScoringModel } from './onnx-models.ts';
import { TextModel } from './text-models.ts';
import type { Curator } from '../lib/envelope.ts';
import type { EvalIndex } from '../operators/filter/contamination-filter.ts';
import type { Encoder } from '../operators/dedupe/semantic-dedupe.ts';
import type { RemoteIndex } from '../operators/dedupe/near-dedupe.ts';
import type { ModelVersions } from '../operators/filter/staleness-filter.ts';
import { buildBuiltin, storeOf } from './builtins.ts';
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
    if (op.type === 'semantic-dedupe') {
      const enc = op.encoder;
      files.encoders.set(i, enc.kind === 'text' ? await TextModel.load(enc.dir, enc) : await OnnxEncoder.load(enc.path, { features, executionProviders: enc.executionProviders }));
    }
    if (op.type === 'onnx-score' && op.model.kind === 'text') {
      const model = await TextModel.load(op.model.dir, op.model);
      const mismatch = await model.mismatch();
      if (mismatch !== null) throw new Error(`onnx-score "${op.name}": the text model at ${op.model.dir} cannot score: ${mismatch}`);
      files.models.set(i, new ModelHolder(model));
    } else if (op.type === 'onnx-score' && op.model.kind === 'features') {
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

/** The state stores the configured operators need, each declared once. */
export function declaredStores(operators: readonly OperatorConfig[]): StoreSpec[] {
  const stores = new Map<string, StoreSpec>();
  for (const op of operators) {
    const store = storeOf(op.type);
    if (store !== undefined) stores.set(store.name, store);
  }
  return [...stores.values()];
}

/** One partition's operator chain, in config order, over that partition's state. */
export function buildCurators(operators: readonly OperatorConfig[], state: PartitionState, resources: OperatorResources): Curator {
  const steps = operators.map((op, index): Curator => buildBuiltin(op, { store: () => state.store(storeOf(op.type)!.name), resources, index }));
  return steps.reduce<Curator>((chain, step) => pipe(chain, step), identity);
}

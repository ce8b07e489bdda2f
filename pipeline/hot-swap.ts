import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Instrumentation } from '../contracts/events.ts';
import type { ErrorMemory } from '../lib/error-memory.ts';
import { log } from '../lib/log.ts';
import { featureSize } from '../contracts/features.ts';
import type { ScoringModel } from '../lib/model-holder.ts';
import { OnnxScoringModel } from './onnx-models.ts';
import { loadAnnouncedTextModel } from './text-models.ts';
import type { ModelUpdate } from '../contracts/records.ts';
import type { PipelineConfig } from './config.ts';
import type { OperatorFiles } from './curators.ts';
import { retireErrors } from './feedback.ts';

/** What became of one model announcement. */
export type ModelUpdateOutcome =
  | { kind: 'swapped'; model: string; version: string; operators: number }
  | { kind: 'kept'; model: string; version: string; current: string[]; reason: string };

/**
 * A model announced on the model-updates topic replaces the model of every onnx-score operator
 * that follows its name, while the worker runs:
 * 1. the artifact is read and, when the announcement carries one, its sha256 checked — for a
 *    text model (`model.kind: 'text'`) the artifact is a model directory and the checksum that
 *    of its `model.onnx`;
 * 2. it is loaded once per operator and checked: a feature model against the pipeline's
 *    feature layout (`OnnxScoringModel.mismatch`: the declared input width, then a dry run on
 *    one all-zero row of `featureSize(config.features)` values), a text model by a dry run
 *    through its tokenizer and head (`TextModel.mismatch`);
 * 3. only if every step passed for every operator is it swapped in, between micro-batches
 *    (ModelHolder), so no record is dropped or scored twice and each decision names the version
 *    that scored it; the error memory then keeps only the older errors the new model still
 *    makes (`retireErrors`), since it was trained on the labels they came from.
 * A bad announcement (unreadable artifact, wrong checksum, a model that does not load or does
 * not take the layout's vectors) changes nothing: the current models keep scoring and the
 * memory keeps its errors. Swapping in a model of the wrong width would instead fail every
 * later batch, and retry it, forever. Either way the outcome is returned and reported
 * (`reportModelUpdate`), and with `options.events` each operator that was to change gets a
 * `model.swap` event (`refused` set to the reason when nothing changed).
 *
 *   await hotSwap({ model: 'scorer', version: 'v2', artifact: '/m/v2.onnx', checksum, metrics: {}, at }, config, files, memory, { events })
 *   // → { kind: 'swapped', … } or { kind: 'kept', reason: 'model v2 takes 3 features, the layout has 262', … }
 */
export async function hotSwap(
  update: ModelUpdate,
  config: PipelineConfig,
  files: OperatorFiles,
  memory: ErrorMemory,
  options: { events?: Instrumentation } = {},
): Promise<ModelUpdateOutcome | null> {
  const targets = config.operators.flatMap((op, i) => (op.type === 'onnx-score' && op.model.name === update.model ? [{ op, holder: files.models.get(i)! }] : []));
  if (targets.length === 0) return null;
  const pending = targets.filter(({ holder }) => holder.current().version !== update.version);
  // Before the swap: the versions each operator goes from.
  const before = pending.map(({ op, holder }) => ({ operator: op.name, from: holder.current().version ?? null }));
  const loaded: Array<{ name: string; holder: (typeof targets)[number]['holder']; next: ScoringModel & { dispose(): Promise<void> } }> = [];
  let outcome: ModelUpdateOutcome;
  try {
    const textual = pending.filter(({ op }) => op.model.kind === 'text');
    const featured = pending.filter(({ op }) => op.model.kind !== 'text');
    for (const { op, holder } of textual) {
      if (op.model.kind !== 'text') continue;
      const next = await loadAnnouncedTextModel(update, op.model);
      loaded.push({ name: op.name, holder, next });
      const mismatch = await next.mismatch();
      if (mismatch !== null) throw new Error(mismatch);
    }
    if (featured.length > 0) {
      const bytes = new Uint8Array(await readFile(update.artifact));
      const checksum = createHash('sha256').update(bytes).digest('hex');
      if (update.checksum !== '' && checksum !== update.checksum) throw new Error(`checksum ${checksum} does not match the announced ${update.checksum}`);
      const width = featureSize(config.features);
      for (const { op, holder } of featured) {
        const next = await OnnxScoringModel.load(bytes, update.version, { executionProviders: op.model.executionProviders });
        loaded.push({ name: op.name, holder, next });
        const mismatch = await next.mismatch(width);
        if (mismatch !== null) throw new Error(mismatch);
      }
    }
    for (const { holder, next } of loaded) void holder.swap(next);
    // Errors the new model still makes stay in the memory; the rest are retired.
    await retireErrors(memory, config.operators, update.version, loaded.map(({ name, next }) => ({ name, model: next })));
    outcome = { kind: 'swapped', model: update.model, version: update.version, operators: loaded.length };
  } catch (err) {
    await Promise.all(loaded.map(({ next }) => next.dispose()));
    outcome = { kind: 'kept', model: update.model, version: update.version, current: targets.map(({ holder }) => holder.current().version), reason: (err as Error).message };
  }
  reportModelUpdate(outcome);
  const { events } = options;
  if (events?.has('model.swap')) {
    for (const { operator, from } of before) {
      events.emit('model.swap', { operator, from, to: update.version, ...(outcome.kind === 'kept' ? { refused: outcome.reason } : {}) });
    }
  }
  return outcome;
}

type Listener = (outcome: ModelUpdateOutcome) => void;
const listeners = new Set<Listener>();

/**
 * Calls `listener` with the outcome of every model announcement from now on, in every pipeline of
 * the process; returns the unsubscribe function. A pipeline's own `model.swap` events
 * (contracts/events.ts) say the same per operator.
 */
export function onModelUpdate(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/**
 * The one place an announcement's outcome is reported: a log line, then the `onModelUpdate`
 * listeners.
 */
export function reportModelUpdate(outcome: ModelUpdateOutcome): void {
  if (outcome.kind === 'swapped') log.info(`scoring with ${outcome.model} ${outcome.version} from now on`);
  else log.warn(`model update ${outcome.model} ${outcome.version} not applied, still scoring with ${outcome.current.join(', ')}: ${outcome.reason}`);
  for (const listener of listeners) {
    try {
      listener(outcome);
    } catch (err) {
      log.error(`a model-update listener failed: ${(err as Error).message}`);
    }
  }
}

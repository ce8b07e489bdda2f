import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { ErrorMemory } from '../operators/error-memory.ts';
import { OnnxScoringModel } from '../operators/model-holder.ts';
import type { ModelUpdate } from '../streams/records.ts';
import type { PipelineConfig } from './config.ts';
import type { OperatorFiles } from './curators.ts';

/**
 * A model announced on the model-updates topic replaces the model of every onnx-score operator
 * that follows its name, while the worker runs: the artifact is read and its checksum checked,
 * then swapped in between micro-batches (ModelHolder), so no record is dropped or scored twice
 * and each decision names the version that scored it. The error memory then retires the errors
 * of older versions: the new model was trained on the labels they came from.
 * A bad announcement (unreadable artifact, wrong checksum) is reported and the current model
 * kept: scoring goes on.
 */
export async function hotSwap(update: ModelUpdate, config: PipelineConfig, files: OperatorFiles, memory: ErrorMemory): Promise<void> {
  const targets = config.operators.flatMap((op, i) => (op.type === 'onnx-score' && op.model.name === update.model ? [{ op, i }] : []));
  if (targets.length === 0) return;
  try {
    const bytes = new Uint8Array(await readFile(update.artifact));
    const checksum = createHash('sha256').update(bytes).digest('hex');
    if (update.checksum !== '' && checksum !== update.checksum) throw new Error(`checksum ${checksum} does not match the announced ${update.checksum}`);
    for (const { op, i } of targets) {
      const holder = files.models.get(i)!;
      if (holder.current().version === update.version) continue;
      const next = await OnnxScoringModel.load(bytes, update.version, { executionProviders: op.model.executionProviders });
      void holder.swap(next);
    }
    memory.retire(update.version);
    process.stderr.write(`[flywheel] scoring with ${update.model} ${update.version} from now on\n`);
  } catch (err) {
    process.stderr.write(`[flywheel] model update ${update.model} ${update.version} not applied, keeping the current model: ${(err as Error).message}\n`);
  }
}

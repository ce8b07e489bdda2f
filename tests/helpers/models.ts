import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { prng } from '../../cli/synthetic.ts';
import { featureLayout, featureSize, type FeatureConfig } from '../../contracts/features.ts';
import { linearModelOnnx, projectionEncoderOnnx } from '../../contracts/onnx-codec.ts';

/**
 * A logistic scorer over the pipeline's features that leans on one numeric feature (by its
 * layout name, e.g. `reward:correct`), written to `dir` as ONNX. Made here, by the project.
 */
export function writeScorer(dir: string, features: FeatureConfig, version: string, lean: Record<string, number>, bias = 0): string {
  const size = featureSize(features);
  const weights = new Float32Array(size);
  featureLayout(features).forEach((name, i) => {
    if (lean[name] !== undefined) weights[features.dims + i] = lean[name]!;
  });
  const path = join(dir, `scorer-${version}.onnx`);
  writeFileSync(path, linearModelOnnx({ weights, bias, inputDim: size, output: 'logistic', version }));
  return path;
}

/** A seeded random-projection text encoder over the pipeline's hashed text features, as ONNX. */
export function writeEncoder(dir: string, features: FeatureConfig, outputDim = 32, seed = 11): string {
  const inputDim = features.dims;
  const random = prng(seed);
  const matrix = Float32Array.from({ length: inputDim * outputDim }, () => random() * 2 - 1);
  const path = join(dir, 'encoder.onnx');
  writeFileSync(path, projectionEncoderOnnx({ matrix, inputDim, outputDim, version: 'enc-1' }));
  return path;
}

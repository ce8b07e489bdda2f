import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { onnxMetadata } from '../contracts/onnx-codec.ts';
import { featureDefaults, textFeaturesInto, type FeatureConfig } from '../contracts/features.ts';
import type { ScoringModel } from '../lib/model-holder.ts';
import type { Encoder } from '../operators/dedupe/semantic-dedupe.ts';

/*
 * ONNX models loaded from files: the pipeline's edge opens sessions here and hands the operators
 * a ScoringModel (onnx-score) or an Encoder (semantic-dedupe), which know nothing of files.
 */

export type ExecutionProvider = 'cpu' | 'cuda';

export interface OnnxModelOptions {
  /**
   * Providers to try, in order. If the session cannot be created with them (no GPU, no CUDA
   * libraries), it is created on the CPU instead and `fallbackReason` says why.
   */
  executionProviders: ExecutionProvider[];
  inputName: string;
  outputName: string;
}

export const onnxModelDefaults: OnnxModelOptions = { executionProviders: ['cpu'], inputName: 'features', outputName: 'score' };

/**
 * An onnxruntime session whose model maps input float[N, D] to output [N] or [N, 1].
 * onnxruntime-node wraps a Float32Array input in place (its tensor points at the array's
 * memory) and copies only the output ([N] floats) into a new array, so `scoreRows` costs the
 * session's run and nothing per row.
 */
export class OnnxScoringModel implements ScoringModel {
  private released = false;
  /** The input width the model declares (its input's second dimension), null when symbolic. */
  readonly inputWidth: number | null;

  private constructor(
    readonly version: string,
    private readonly session: InferenceSession,
    private readonly options: OnnxModelOptions,
    /** The provider the session runs on. */
    readonly executionProvider: ExecutionProvider,
    /** Why the configured providers were not used, when the session fell back to the CPU. */
    readonly fallbackReason: string | null,
  ) {
    const input = session.inputMetadata.find((m) => m.name === options.inputName);
    const width = input?.isTensor ? input.shape[1] : undefined;
    this.inputWidth = typeof width === 'number' ? width : null;
  }

  /**
   * Loads a model from a file path or its bytes. `version` defaults to the model's
   * `version` metadata (as linearModelOnnx writes it); a model with neither is refused, since
   * scores must say which model gave them.
   */
  static async load(source: string | Uint8Array, version?: string, options: Partial<OnnxModelOptions> = {}): Promise<OnnxScoringModel> {
    const opts = { ...onnxModelDefaults, ...options };
    const bytes = typeof source === 'string' ? new Uint8Array(await readFile(source)) : source;
    const resolved = version ?? onnxMetadata(bytes).version;
    if (resolved === undefined || resolved === '') throw new Error('ONNX scoring model has no version: pass one or set metadata "version"');
    const { session, provider, fallbackReason } = await createSession(bytes, opts.executionProviders);
    return new OnnxScoringModel(resolved, session, opts, provider, fallbackReason);
  }

  /**
   * Why this model cannot score vectors of `width` values, or null when it can: its input and
   * output must exist, a declared input width must equal `width`, and a dry run on one all-zero
   * row must give one finite score (this also catches widths the metadata leaves symbolic).
   *
   *   await model.mismatch(featureSize(features))  // null, or e.g. 'model m-7 takes 3 features, the layout has 262'
   */
  async mismatch(width: number): Promise<string | null> {
    const input = this.session.inputMetadata.find((m) => m.name === this.options.inputName);
    if (input === undefined) return `model ${this.version} has no input "${this.options.inputName}" (it has ${this.session.inputNames.join(', ')})`;
    if (!this.session.outputNames.includes(this.options.outputName)) {
      return `model ${this.version} has no output "${this.options.outputName}" (it has ${this.session.outputNames.join(', ')})`;
    }
    if (this.inputWidth !== null && this.inputWidth !== width) return `model ${this.version} takes ${this.inputWidth} features, the layout has ${width}`;
    try {
      const [score] = await this.scoreRows(new Float32Array(width), 1, width);
      if (!Number.isFinite(score)) return `model ${this.version} gives a non-finite score (${score}) for an all-zero row`;
    } catch (err) {
      return `model ${this.version} fails on a row of ${width} features: ${(err as Error).message}`;
    }
    return null;
  }

  async scoreRows(input: Float32Array, rows: number, width: number): Promise<Float32Array> {
    if (this.released) throw new Error(`model ${this.version} was released`);
    if (rows === 0) return new Float32Array(0);
    const size = rows * width;
    if (input.length < size) throw new RangeError(`model ${this.version}: ${rows} rows of ${width} need ${size} values, the buffer has ${input.length}`);
    // A view, not a copy: the tensor reads the caller's buffer in place.
    const data = input.length === size ? input : input.subarray(0, size);
    const result = await this.session.run({ [this.options.inputName]: new Tensor('float32', data, [rows, width]) });
    const output = result[this.options.outputName];
    if (output === undefined) throw new Error(`model ${this.version} has no output "${this.options.outputName}"`);
    if (output.type !== 'float32' || output.size !== rows) {
      throw new Error(`model ${this.version} gave ${output.size} ${output.type} values for ${rows} inputs`);
    }
    return output.data as Float32Array;
  }

  async score(features: Float32Array[]): Promise<Float32Array> {
    if (this.released) throw new Error(`model ${this.version} was released`);
    if (features.length === 0) return new Float32Array(0);
    const width = features[0]!.length;
    const input = new Float32Array(features.length * width);
    features.forEach((f, i) => {
      if (f.length !== width) throw new Error(`feature vectors differ in length (${f.length} vs ${width})`);
      input.set(f, i * width);
    });
    return this.scoreRows(input, features.length, width);
  }

  async dispose(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }
}

/** A session on the configured providers, or on the CPU when they cannot be had. */
export async function createSession(
  bytes: Uint8Array,
  providers: ExecutionProvider[],
): Promise<{ session: InferenceSession; provider: ExecutionProvider; fallbackReason: string | null }> {
  const wanted = providers.length === 0 ? (['cpu'] as ExecutionProvider[]) : providers;
  try {
    const session = await InferenceSession.create(bytes, { executionProviders: wanted });
    return { session, provider: wanted[0]!, fallbackReason: null };
  } catch (err) {
    if (wanted.length === 1 && wanted[0] === 'cpu') throw err;
    const session = await InferenceSession.create(bytes, { executionProviders: ['cpu'] });
    return { session, provider: 'cpu', fallbackReason: `${wanted.join(',')} unavailable: ${(err as Error).message}` };
  }
}

export interface OnnxEncoderOptions {
  /** How texts become the model's input (`textFeatures` rows, length `features.dims`). */
  features: FeatureConfig;
  /** Defaults to the model's `version` metadata, else a hash of its bytes. */
  version?: string;
  executionProviders: ExecutionProvider[];
  inputName: string;
  outputName: string;
}

export const onnxEncoderDefaults: OnnxEncoderOptions = {
  features: featureDefaults,
  executionProviders: ['cpu'],
  inputName: 'features',
  outputName: 'embedding',
};

/**
 * An encoder on onnxruntime: hashed text features (float[N, features.dims], as
 * `textFeatures` makes them) in, "embedding" float[N, D] out — e.g. a projectionEncoderOnnx
 * model.
 */
export class OnnxEncoder implements Encoder {
  private constructor(
    readonly version: string,
    private readonly session: InferenceSession,
    private readonly options: OnnxEncoderOptions,
  ) {}

  static async load(source: string | Uint8Array, options: Partial<OnnxEncoderOptions> = {}): Promise<OnnxEncoder> {
    const opts = { ...onnxEncoderDefaults, ...options };
    const bytes = typeof source === 'string' ? new Uint8Array(await readFile(source)) : source;
    const version = opts.version ?? onnxMetadata(bytes).version ?? `sha256:${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}`;
    const { session } = await createSession(bytes, opts.executionProviders);
    const input = session.inputMetadata.find((m) => m.name === opts.inputName);
    const width = input?.isTensor ? input.shape[1] : undefined;
    if (input === undefined || (typeof width === 'number' && width !== opts.features.dims)) {
      await session.release();
      throw new Error(
        input === undefined
          ? `encoder model has no input "${opts.inputName}"`
          : `encoder model takes ${String(width)} features but features.dims is ${opts.features.dims}`,
      );
    }
    return new OnnxEncoder(version, session, opts);
  }

  async embed(texts: string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return [];
    const dims = this.options.features.dims;
    // One buffer per call, each row hashed in place (the encoder is shared by partitions whose
    // calls overlap, so a buffer kept between calls could be overwritten mid-run).
    const input = new Float32Array(texts.length * dims);
    texts.forEach((text, i) => textFeaturesInto(text, this.options.features, input, i * dims));
    const result = await this.session.run({ [this.options.inputName]: new Tensor('float32', input, [texts.length, dims]) });
    const output = result[this.options.outputName];
    if (output === undefined || output.type !== 'float32' || output.dims.length !== 2 || output.dims[0] !== texts.length) {
      throw new Error(`encoder ${this.version} did not return "${this.options.outputName}" float32[${texts.length}, D]`);
    }
    const data = output.data as Float32Array;
    const width = output.dims[1]!;
    // Views of the output, which is fresh per call: `unit` copies what it keeps.
    return texts.map((_, i) => data.subarray(i * width, (i + 1) * width));
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

import { readFile } from 'node:fs/promises';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { onnxMetadata } from '../trainers/onnx-model.ts';

/** A model that scores feature vectors: one score per vector, in order. */
export interface ScoringModel {
  /** Recorded with every score the model gives (sample.scorerVersion). */
  readonly version: string;
  /**
   * The hot path: scores `rows` vectors of `width` values laid out row after row in
   * `input[0 .. rows × width)` — the caller's reusable batch buffer, read in place (not copied)
   * and not kept once the promise settles. Resolves to `rows` scores.
   */
  scoreRows(input: Float32Array, rows: number, width: number): Promise<Float32Array>;
  /** Scores separate vectors of one length (convenience; copies them into one batch). */
  score(features: Float32Array[]): Promise<Float32Array>;
  /** Frees the model's resources; the holder calls it once no batch uses the model any more. */
  dispose?(): Promise<void>;
}

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

/** The model a batch scores with; `release` must be called once the batch is done with it. */
export interface ModelLease {
  readonly model: ScoringModel;
  release(): void;
}

/**
 * Holds the scoring model and swaps it without losing or double-scoring records:
 * 1. a micro-batch calls `acquire()` once at its start and scores all its samples with that
 *    model, so every score in a batch comes from one model and records its version;
 * 2. `swap(next)` makes later batches use `next` at once; batches already running finish on
 *    the model they hold;
 * 3. the old model is disposed when its last lease is released (at once if it has none), and
 *    the promise `swap` returns settles then.
 */
export class ModelHolder {
  private model: ScoringModel;
  private readonly leases = new Map<ScoringModel, number>();
  private readonly waiting = new Map<ScoringModel, Array<() => void>>();
  private readonly disposed = new WeakSet<ScoringModel>();

  constructor(initial: ScoringModel) {
    this.model = initial;
  }

  current(): ScoringModel {
    return this.model;
  }

  acquire(): ModelLease {
    const model = this.model;
    this.leases.set(model, (this.leases.get(model) ?? 0) + 1);
    let released = false;
    return {
      model,
      release: () => {
        if (released) return;
        released = true;
        const left = this.leases.get(model)! - 1;
        if (left > 0) return void this.leases.set(model, left);
        this.leases.delete(model);
        const waiters = this.waiting.get(model) ?? [];
        this.waiting.delete(model);
        for (const resolve of waiters) resolve();
      },
    };
  }

  swap(next: ScoringModel): Promise<void> {
    const old = this.model;
    if (next === old) return Promise.resolve();
    this.model = next;
    const idle = new Promise<void>((resolve) => {
      if (!this.leases.has(old)) return resolve();
      this.waiting.set(old, [...(this.waiting.get(old) ?? []), resolve]);
    });
    return idle.then(async () => {
      // Swapped back in while draining: it is in use again and must stay.
      if (this.model === old || this.disposed.has(old)) return;
      this.disposed.add(old);
      await old.dispose?.();
    });
  }
}

import { readFile } from 'node:fs/promises';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { onnxMetadata } from '../trainers/onnx-model.ts';

/** A model that scores feature vectors: one score per vector, in order. */
export interface ScoringModel {
  /** Recorded with every score the model gives (sample.scorerVersion). */
  readonly version: string;
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

/** An onnxruntime session whose model maps input float[N, D] to output [N] or [N, 1]. */
export class OnnxScoringModel implements ScoringModel {
  private released = false;

  private constructor(
    readonly version: string,
    private readonly session: InferenceSession,
    private readonly options: OnnxModelOptions,
    /** The provider the session runs on. */
    readonly executionProvider: ExecutionProvider,
    /** Why the configured providers were not used, when the session fell back to the CPU. */
    readonly fallbackReason: string | null,
  ) {}

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

  async score(features: Float32Array[]): Promise<Float32Array> {
    if (this.released) throw new Error(`model ${this.version} was released`);
    if (features.length === 0) return new Float32Array(0);
    const dim = features[0]!.length;
    const input = new Float32Array(features.length * dim);
    features.forEach((f, i) => {
      if (f.length !== dim) throw new Error(`feature vectors differ in length (${f.length} vs ${dim})`);
      input.set(f, i * dim);
    });
    const result = await this.session.run({ [this.options.inputName]: new Tensor('float32', input, [features.length, dim]) });
    const output = result[this.options.outputName];
    if (output === undefined) throw new Error(`model ${this.version} has no output "${this.options.outputName}"`);
    if (output.type !== 'float32' || output.size !== features.length) {
      throw new Error(`model ${this.version} gave ${output.size} ${output.type} values for ${features.length} inputs`);
    }
    return output.data as Float32Array;
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

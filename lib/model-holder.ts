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

import { linearModelOnnx } from '../contracts/onnx-codec.ts';

/**
 * Incremental linear learners on CPU, over the pipeline's feature vectors (contracts/features.ts),
 * exportable as the ONNX models the onnx-score operator loads.
 *
 * Both keep a dense (D+1)×(D+1) matrix (D features + the bias, which is the last coordinate):
 * one update costs O(D²) time (≈1 M multiply-adds at D≈1000, about a millisecond) and the
 * matrix takes 8(D+1)² bytes (8.5 MB at D = 1031). That is fine up to D ≈ 2000; beyond, use
 * a diagonal/low-rank approximation or a GPU trainer (docs/trainer-contract.md).
 *
 * What is exact and what is not:
 * - RecursiveRidge is exact: after any sequence of updates its weights are the weighted ridge
 *   solution (Σ βⁿ⁻ⁱ rᵢ zᵢzᵢ' + ρΛ)⁻¹ Σ βⁿ⁻ⁱ rᵢ yᵢ zᵢ (z = [x, 1], Λ = diag(λ…λ, λ_bias),
 *   r = example weight, β = forgetting factor, ρ = `priorWeight`); with β = 1 and r = 1 that is
 *   (X'X + Λ)⁻¹X'y. Equal to a direct solve up to floating-point rounding (tests/trainers.test.ts).
 *
 * Forgetting forgets the data, not the prior ("stabilised forgetting", Kulhavý & Zarrop 1993):
 * the Kalman step P ← P/β that makes old examples fade scales the prior's precision down with
 * them (ρ ← βρ), and left alone ρ = βⁿ → 0, so after a few windows the model is unregularised
 * and fits whatever recent labels it has ever closer. So every `priorRestoreEvery` examples
 * (and before every export: `restorePrior`) the lost (1 − ρ)Λ is added back exactly,
 * P ← ((P)⁻¹ + (1 − ρ)Λ)⁻¹ and w ← w − P(1 − ρ)Λw (the minimiser with the whole prior), and
 * ρ ← 1: the exponentially weighted ridge with a fixed regulariser, (Σ βⁿ⁻ⁱ zᵢzᵢ' + Λ)⁻¹ Σ βⁿ⁻ⁱ yᵢzᵢ.
 * Between restorations ρ ≥ β^priorRestoreEvery. A restoration costs O(n³) (a Cholesky
 * factorisation of I + √DP√D, Woodbury), so the default interval n = D + 1 examples keeps its
 * amortised cost O(n²) per example, that of an update.
 * - OnlineLogistic is an online Newton method (the extended-Kalman / Laplace-propagation
 *   update): each example's log-loss is replaced by its second-order Taylor expansion at the
 *   weights current when it arrived, and the weights are the EXACT minimiser of the prior plus
 *   the sum of those expansions. It is NOT the exact L2-regularised logistic MAP over all data
 *   (no finite sufficient statistics exist for that); it approaches it as the weights settle,
 *   and `logisticMap` (batch Newton) gives the exact MAP for comparison.
 */

export interface RidgeConfig {
  /** Feature dimension D (the bias is added internally). */
  dim: number;
  /** L2 penalty on the feature weights (> 0). */
  lambda: number;
  /** L2 penalty on the bias (> 0; default: lambda). */
  biasLambda?: number;
  /** Exponential forgetting β in (0, 1] of the examples (not the prior); 1 (default) weighs all examples equally. */
  forgetting?: number;
  /** With forgetting, the full prior is restored every this many examples (default dim + 1; see the file comment). */
  priorRestoreEvery?: number;
}

export interface LogisticConfig {
  dim: number;
  /** Gaussian prior precision on the feature weights (> 0). */
  lambda: number;
  biasLambda?: number;
  /**
   * Exponential forgetting β in (0, 1], as for ridge: before each example the precision is
   * scaled by β (P ← P/β, the Kalman random-walk step), so an example n steps old weighs βⁿ
   * (effective window ≈ 1/(1 − β)). 1 (default) never forgets. E.g. 0.995 ≈ the last 200. The
   * prior is restored every `priorRestoreEvery` examples, so it does not fade (file comment).
   */
  forgetting?: number;
  /** With forgetting, the full prior is restored every this many examples (default dim + 1). */
  priorRestoreEvery?: number;
}

export interface LinearWeights {
  weights: Float64Array;
  bias: number;
}

export interface LinearState {
  examples: number;
  P: Float64Array;
  w: Float64Array;
  /**
   * ρ: the share of the prior's precision P holds (1 right after a restoration). Absent in
   * checkpoints written before the prior was restored: then it is β^examples (the prior faded
   * with every example), and the learner restores it on load.
   */
  priorWeight?: number;
  /** Examples since the prior was last restored (absent: as for priorWeight). */
  sinceRestore?: number;
}

/** Common machinery: P (the inverse of the precision), w, z = [x, 1] and the prior's restoration. */
abstract class LinearLearner {
  readonly n: number;
  readonly forgetting: number;
  /** Examples between restorations of the prior (with forgetting). */
  readonly priorRestoreEvery: number;
  protected readonly P: Float64Array;
  protected readonly w: Float64Array;
  protected readonly u: Float64Array;
  protected readonly z: Float64Array;
  /** The prior's precision per coordinate: λ for the features, λ_bias for the bias. */
  private readonly lambdas: Float64Array;
  examples = 0;
  private weightOfPrior = 1;
  private sinceRestore = 0;
  private sinceSymmetrised = 0;

  protected constructor(
    readonly dim: number,
    lambda: number,
    biasLambda: number,
    forgetting: number | undefined,
    priorRestoreEvery: number | undefined,
    state?: LinearState,
  ) {
    if (!(dim >= 1) || !Number.isInteger(dim)) throw new Error(`dim must be a positive integer, got ${dim}`);
    if (!(lambda > 0) || !(biasLambda > 0)) throw new Error(`penalties must be > 0 (lambda ${lambda}, biasLambda ${biasLambda})`);
    this.forgetting = forgetting ?? 1;
    if (!(this.forgetting > 0 && this.forgetting <= 1)) throw new Error(`forgetting must be in (0, 1], got ${this.forgetting}`);
    this.n = dim + 1;
    const n = this.n;
    this.priorRestoreEvery = priorRestoreEvery ?? n;
    if (!(this.priorRestoreEvery >= 1) || !Number.isInteger(this.priorRestoreEvery)) throw new Error(`priorRestoreEvery must be a positive integer, got ${priorRestoreEvery}`);
    this.lambdas = Float64Array.from({ length: n }, (_, i) => (i < dim ? lambda : biasLambda));
    this.u = new Float64Array(n);
    this.z = new Float64Array(n);
    if (state !== undefined) {
      if (state.P.length !== n * n || state.w.length !== n) throw new Error(`state is for another dimension (P ${state.P.length}, w ${state.w.length}, dim ${dim})`);
      this.P = Float64Array.from(state.P);
      this.w = Float64Array.from(state.w);
      this.examples = state.examples;
      if (state.priorWeight !== undefined) {
        if (!(state.priorWeight > 0 && state.priorWeight <= 1)) throw new Error(`state's priorWeight must be in (0, 1], got ${state.priorWeight}`);
        this.weightOfPrior = state.priorWeight;
        this.sinceRestore = state.sinceRestore ?? 0;
      } else {
        // Written before restorations existed: every update scaled the prior by β.
        this.weightOfPrior = Math.max(Number.MIN_VALUE, this.forgetting ** state.examples);
        this.restorePrior();
      }
    } else {
      this.P = new Float64Array(n * n);
      this.w = new Float64Array(n);
      for (let i = 0; i < n; i++) this.P[i * n + i] = 1 / this.lambdas[i]!;
    }
  }

  /** ρ: the share of the prior's precision the model holds now (1 without forgetting or right after `restorePrior`). */
  get priorWeight(): number {
    return this.weightOfPrior;
  }

  /** What a checkpoint needs besides `arrays()` to resume exactly. */
  state(): { examples: number; priorWeight: number; sinceRestore: number } {
    return { examples: this.examples, priorWeight: this.weightOfPrior, sinceRestore: this.sinceRestore };
  }

  /**
   * Adds back the prior precision forgetting took, (1 − ρ)Λ, exactly: with D = (1 − ρ)Λ,
   * P ← (P⁻¹ + D)⁻¹ = P − K'S⁻¹K (K = √D·P, S = I + √D·P·√D, Woodbury; S is well conditioned,
   * its eigenvalues ≥ 1), then w ← w − P·D·w, the minimiser of the same objective with the whole
   * prior (it is centred at 0). O(n³); a no-op when ρ = 1.
   *
   *   learner.restorePrior()  // learner.priorWeight → 1
   */
  restorePrior(): void {
    this.sinceRestore = 0;
    if (this.weightOfPrior === 1) return;
    const { n, P, w } = this;
    const lost = 1 - this.weightOfPrior;
    const root = Float64Array.from(this.lambdas, (l) => Math.sqrt(lost * l));
    // K = √D P (row i scaled by root[i]); S = I + K √D.
    const K = new Float64Array(n * n);
    const S = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      const ri = root[i]!;
      const row = i * n;
      for (let j = 0; j < n; j++) {
        const k = ri * P[row + j]!;
        K[row + j] = k;
        S[row + j] = k * root[j]!;
      }
      S[row + i]! += 1;
    }
    const L = cholesky(S, n);
    // Y = L⁻¹ K, in place in K (forward substitution over all columns at once).
    for (let i = 0; i < n; i++) {
      const row = i * n;
      for (let k = 0; k < i; k++) {
        const lik = L[row + k]!;
        if (lik === 0) continue;
        const other = k * n;
        for (let j = 0; j < n; j++) K[row + j]! -= lik * K[other + j]!;
      }
      const inv = 1 / L[row + i]!;
      for (let j = 0; j < n; j++) K[row + j]! *= inv;
    }
    // P ← P − Y'Y (upper triangle accumulated row by row of Y, then mirrored).
    for (let i = 0; i < n; i++) {
      const yrow = i * n;
      for (let j = 0; j < n; j++) {
        const yij = K[yrow + j]!;
        if (yij === 0) continue;
        const prow = j * n;
        for (let l = j; l < n; l++) P[prow + l]! -= yij * K[yrow + l]!;
      }
    }
    for (let j = 0; j < n; j++) for (let l = j + 1; l < n; l++) P[l * n + j] = P[j * n + l]!;
    // w ← w − P (D w).
    const dw = Float64Array.from(w, (x, i) => lost * this.lambdas[i]! * x);
    const step = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const row = i * n;
      let s = 0;
      for (let j = 0; j < n; j++) s += P[row + j]! * dw[j]!;
      step[i] = s;
    }
    for (let i = 0; i < n; i++) w[i]! -= step[i]!;
    this.weightOfPrior = 1;
  }

  /** After an update: the prior faded by β with the data; restore it when its interval is up. */
  protected afterUpdate(): void {
    this.examples++;
    if (this.forgetting === 1) return;
    this.weightOfPrior *= this.forgetting;
    if (++this.sinceRestore >= this.priorRestoreEvery) this.restorePrior();
  }

  /** x·w + b. */
  margin(x: ArrayLike<number>): number {
    if (x.length !== this.dim) throw new Error(`feature vector has ${x.length} entries, expected ${this.dim}`);
    let s = this.w[this.dim]!;
    for (let i = 0; i < this.dim; i++) s += x[i]! * this.w[i]!;
    return s;
  }

  abstract predict(x: ArrayLike<number>): number;

  linearWeights(): LinearWeights {
    return { weights: this.w.slice(0, this.dim), bias: this.w[this.dim]! };
  }

  /** z = [x, 1]; u = P z using only the non-zero entries of z (P is symmetric); returns z'u. */
  protected project(x: ArrayLike<number>): number {
    const { n, P, u, z } = this;
    if (x.length !== this.dim) throw new Error(`feature vector has ${x.length} entries, expected ${this.dim}`);
    for (let i = 0; i < this.dim; i++) {
      const v = x[i]!;
      if (!Number.isFinite(v)) throw new Error(`feature ${i} is not finite (${v})`);
      z[i] = v;
    }
    z[this.dim] = 1;
    u.fill(0);
    for (let j = 0; j < n; j++) {
      const zj = z[j]!;
      if (zj === 0) continue;
      const row = j * n;
      for (let i = 0; i < n; i++) u[i]! += P[row + i]! * zj;
    }
    let s = 0;
    for (let i = 0; i < n; i++) s += z[i]! * u[i]!;
    return s;
  }

  /** P ← (P − c·u u') / scale, kept symmetric against rounding drift. */
  protected rankOneDowndate(c: number, scale: number): void {
    const { n, P, u } = this;
    const inv = 1 / scale;
    for (let i = 0; i < n; i++) {
      const cu = c * u[i]!;
      const row = i * n;
      if (scale === 1) for (let j = 0; j < n; j++) P[row + j]! -= cu * u[j]!;
      else for (let j = 0; j < n; j++) P[row + j] = (P[row + j]! - cu * u[j]!) * inv;
    }
    if (++this.sinceSymmetrised >= 256) {
      this.sinceSymmetrised = 0;
      for (let i = 0; i < n; i++) {
        for (let j = i + 1; j < n; j++) {
          const m = (P[i * n + j]! + P[j * n + i]!) / 2;
          P[i * n + j] = m;
          P[j * n + i] = m;
        }
      }
    }
  }

  /** Arrays for a checkpoint (copied). */
  arrays(): { P: Float64Array; w: Float64Array } {
    return { P: this.P.slice(), w: this.w.slice() };
  }

  abstract toOnnx(version: string): Uint8Array;
}

/**
 * Recursive least squares with a ridge prior (exact; see the file comment). `update` returns
 * the prediction made before learning from the example (prequential).
 */
export class RecursiveRidge extends LinearLearner {
  readonly kind = 'ridge' as const;

  constructor(
    readonly config: RidgeConfig,
    state?: LinearState,
  ) {
    super(config.dim, config.lambda, config.biasLambda ?? config.lambda, config.forgetting, config.priorRestoreEvery, state);
  }

  predict(x: ArrayLike<number>): number {
    return this.margin(x);
  }

  /**
   * Sherman–Morrison: u = Pz, k = r·u / (β + r·z'u), w += k(y − w'z), P = (P − k u')/β.
   * O(n·nnz(x)) for u, O(n²) for P.
   */
  update(x: ArrayLike<number>, y: number, weight = 1): number {
    if (!Number.isFinite(y)) throw new Error(`label is not finite (${y})`);
    if (!(weight > 0)) throw new Error(`example weight must be > 0, got ${weight}`);
    const s = this.project(x);
    const { n, u, w, z } = this;
    let prediction = 0;
    for (let i = 0; i < n; i++) prediction += w[i]! * z[i]!;
    const beta = this.forgetting;
    const denom = beta + weight * s;
    const gain = (weight * (y - prediction)) / denom;
    for (let i = 0; i < n; i++) w[i]! += gain * u[i]!;
    this.rankOneDowndate(weight / denom, beta);
    this.afterUpdate();
    return prediction;
  }

  /** A linear ONNX scorer (score = x·w + b, not clamped). */
  toOnnx(version: string): Uint8Array {
    const { weights, bias } = this.linearWeights();
    return linearModelOnnx({ weights: Float32Array.from(weights), bias, inputDim: this.dim, output: 'linear', version });
  }
}

const sigmoid = (t: number) => (t >= 0 ? 1 / (1 + Math.exp(-t)) : Math.exp(t) / (1 + Math.exp(t)));

/**
 * Online Newton logistic regression (approximate; see the file comment). With p = σ(w'z),
 * g = r(p − y), h = r·p(1 − p), u = Pz, s = z'u and forgetting β:
 * w ← w − g·u/(β + h·s),  P ← (P − h·u u'/(β + h·s))/β — the update with P/β as the prior
 * covariance, so old examples fade as in RecursiveRidge, and the prior is restored as there (the
 * weights are then the minimiser of the whole prior plus the faded expansions). Labels may be
 * soft, in [0, 1].
 */
export class OnlineLogistic extends LinearLearner {
  readonly kind = 'logistic' as const;

  constructor(
    readonly config: LogisticConfig,
    state?: LinearState,
  ) {
    super(config.dim, config.lambda, config.biasLambda ?? config.lambda, config.forgetting, config.priorRestoreEvery, state);
  }

  predict(x: ArrayLike<number>): number {
    return sigmoid(this.margin(x));
  }

  /** Returns the probability predicted before the update. */
  update(x: ArrayLike<number>, y: number, weight = 1): number {
    if (!(y >= 0 && y <= 1)) throw new Error(`logistic label must be in [0, 1], got ${y}`);
    if (!(weight > 0)) throw new Error(`example weight must be > 0, got ${weight}`);
    const s = this.project(x);
    const { n, u, w, z } = this;
    let t = 0;
    for (let i = 0; i < n; i++) t += w[i]! * z[i]!;
    const p = sigmoid(t);
    const g = weight * (p - y);
    const h = weight * p * (1 - p);
    const beta = this.forgetting;
    const denom = beta + h * s;
    for (let i = 0; i < n; i++) w[i]! -= (g * u[i]!) / denom;
    this.rankOneDowndate(h / denom, beta);
    this.afterUpdate();
    return p;
  }

  toOnnx(version: string): Uint8Array {
    const { weights, bias } = this.linearWeights();
    return linearModelOnnx({ weights: Float32Array.from(weights), bias, inputDim: this.dim, output: 'logistic', version });
  }
}

export type IncrementalLearner = RecursiveRidge | OnlineLogistic;

export type LearnerConfig = ({ kind: 'ridge' } & Omit<RidgeConfig, 'dim'>) | ({ kind: 'logistic' } & Omit<LogisticConfig, 'dim'>);

export function createLearner(config: LearnerConfig, dim: number, state?: LinearState): IncrementalLearner {
  return config.kind === 'ridge' ? new RecursiveRidge({ ...config, dim }, state) : new OnlineLogistic({ ...config, dim }, state);
}

/** The per-example loss each learner reports: squared error for ridge, log-loss for logistic. */
export function exampleLoss(kind: IncrementalLearner['kind'], prediction: number, y: number): number {
  if (kind === 'ridge') return (prediction - y) ** 2;
  const p = Math.min(1 - 1e-12, Math.max(1e-12, prediction));
  return -(y * Math.log(p) + (1 - y) * Math.log(1 - p));
}

// ─── Direct solvers (the reference the incremental learners are tested against) ───────────────

/** The Cholesky factor L (row-major, lower) of symmetric positive definite A = L L'; throws when A is not. */
function cholesky(A: Float64Array, n: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = A[i * n + j]!;
      for (let k = 0; k < j; k++) sum -= L[i * n + k]! * L[j * n + k]!;
      if (i === j) {
        if (!(sum > 0)) throw new Error(`matrix is not positive definite (pivot ${i}: ${sum})`);
        L[i * n + i] = Math.sqrt(sum);
      } else L[i * n + j] = sum / L[j * n + j]!;
    }
  }
  return L;
}

/**
 * Solves A x = b for symmetric positive definite A (row-major n×n) by Cholesky, A = L L'.
 * Throws when A is not positive definite.
 */
export function choleskySolve(A: Float64Array, b: Float64Array, n: number): Float64Array {
  const L = cholesky(A, n);
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let sum = b[i]!;
    for (let k = 0; k < i; k++) sum -= L[i * n + k]! * y[k]!;
    y[i] = sum / L[i * n + i]!;
  }
  const x = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let sum = y[i]!;
    for (let k = i + 1; k < n; k++) sum -= L[k * n + i]! * x[k]!;
    x[i] = sum / L[i * n + i]!;
  }
  return x;
}

export interface BatchRidgeOptions {
  lambda: number;
  biasLambda?: number;
  /** Per-example weights r (default 1). */
  weights?: ArrayLike<number>;
  /** Forgetting β: example i of N gets β^(N−1−i) (default 1). */
  forgetting?: number;
  /** The prior's weight ρ (default 1: a fixed regulariser, what RecursiveRidge holds right after `restorePrior`). */
  priorWeight?: number;
}

/** The ridge solution by a direct solve: (Σ cᵢ zᵢzᵢ' + ρΛ)⁻¹ Σ cᵢ yᵢ zᵢ with z = [x, 1]. */
export function ridgeSolve(rows: ReadonlyArray<ArrayLike<number>>, y: ArrayLike<number>, options: BatchRidgeOptions): LinearWeights {
  if (rows.length === 0) throw new Error('no rows');
  const dim = rows[0]!.length;
  const n = dim + 1;
  const beta = options.forgetting ?? 1;
  const N = rows.length;
  const A = new Float64Array(n * n);
  const b = new Float64Array(n);
  const z = new Float64Array(n);
  rows.forEach((x, r) => {
    const c = (options.weights?.[r] ?? 1) * beta ** (N - 1 - r);
    for (let i = 0; i < dim; i++) z[i] = x[i]!;
    z[dim] = 1;
    for (let i = 0; i < n; i++) {
      const ci = c * z[i]!;
      if (ci === 0) continue;
      b[i]! += ci * y[r]!;
      for (let j = 0; j < n; j++) A[i * n + j]! += ci * z[j]!;
    }
  });
  const prior = options.priorWeight ?? 1;
  for (let i = 0; i < dim; i++) A[i * n + i]! += prior * options.lambda;
  A[n * n - 1]! += prior * (options.biasLambda ?? options.lambda);
  const w = choleskySolve(A, b, n);
  return { weights: w.slice(0, dim), bias: w[dim]! };
}

/**
 * The exact MAP of L2-regularised logistic regression, min Σ logloss(yᵢ, σ(w'zᵢ)) + ½ w'Λw, by
 * Newton's method (IRLS) to convergence. O(N n² + n³) per iteration.
 */
export function logisticMap(
  rows: ReadonlyArray<ArrayLike<number>>,
  y: ArrayLike<number>,
  options: { lambda: number; biasLambda?: number; iterations?: number; tolerance?: number },
): LinearWeights & { iterations: number } {
  if (rows.length === 0) throw new Error('no rows');
  const dim = rows[0]!.length;
  const n = dim + 1;
  const lambdas = Float64Array.from({ length: n }, (_, i) => (i < dim ? options.lambda : (options.biasLambda ?? options.lambda)));
  const w = new Float64Array(n);
  const z = new Float64Array(n);
  const maxIterations = options.iterations ?? 100;
  for (let it = 1; it <= maxIterations; it++) {
    const H = new Float64Array(n * n);
    const g = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      H[i * n + i] = lambdas[i]!;
      g[i] = lambdas[i]! * w[i]!;
    }
    rows.forEach((x, r) => {
      for (let i = 0; i < dim; i++) z[i] = x[i]!;
      z[dim] = 1;
      let t = 0;
      for (let i = 0; i < n; i++) t += w[i]! * z[i]!;
      const p = sigmoid(t);
      const h = p * (1 - p);
      for (let i = 0; i < n; i++) {
        g[i]! += (p - y[r]!) * z[i]!;
        const hz = h * z[i]!;
        if (hz === 0) continue;
        for (let j = 0; j < n; j++) H[i * n + j]! += hz * z[j]!;
      }
    });
    const step = choleskySolve(H, g, n);
    let size = 0;
    for (let i = 0; i < n; i++) {
      w[i]! -= step[i]!;
      size = Math.max(size, Math.abs(step[i]!));
    }
    if (size < (options.tolerance ?? 1e-12)) return { weights: w.slice(0, dim), bias: w[dim]!, iterations: it };
  }
  return { weights: w.slice(0, dim), bias: w[dim]!, iterations: maxIterations };
}

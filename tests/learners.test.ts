import { describe, expect, it } from 'vitest';
import { prng } from '../cli/synthetic.ts';
import { aucMannWhitney } from '../operators/balance/explore-exploit.ts';
import { createLearner, type LearnerConfig } from '../trainers/incremental.ts';

// A label shift on a deterministic stream: the same features, but after the shift the label
// follows another weight vector (half the signal reversed). A learner that forgets should get
// back to a good AUC on the new concept with fewer labels than one that weighs all history.

const DIM = 6;
const BEFORE = [1.5, -1, 0.8, 0, 0.5, -0.7];
const AFTER = [-1.5, 1, 0.8, 1.2, 0.5, 0.7];

function gaussian(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

function stream(seed: number, n: number, w: readonly number[]): { x: number[]; y: number }[] {
  const rand = prng(seed);
  return Array.from({ length: n }, () => {
    const x = Array.from({ length: DIM }, () => gaussian(rand));
    const t = x.reduce((s, v, i) => s + v * w[i]!, 0);
    return { x, y: rand() < 1 / (1 + Math.exp(-t)) ? 1 : 0 };
  });
}

/**
 * Labels seen after the shift until the learner's AUC on held-out data of the new concept is
 * within 0.03 of what it reached before the shift on the old one (checked every 25 labels);
 * Infinity when it never gets there within the stream.
 */
function labelsToRecover(config: LearnerConfig): { before: number; labels: number } {
  const learner = createLearner(config, DIM);
  const auc = (test: { x: number[]; y: number }[]) => aucMannWhitney(test.map((e) => [learner.predict(e.x), e.y === 1]))!;
  for (const e of stream(1, 3000, BEFORE)) learner.update(e.x, e.y);
  const before = auc(stream(2, 1000, BEFORE));
  const testAfter = stream(3, 1000, AFTER);
  const after = stream(4, 3000, AFTER);
  for (let i = 0; i < after.length; i++) {
    learner.update(after[i]!.x, after[i]!.y);
    if ((i + 1) % 25 === 0 && auc(testAfter) >= before - 0.03) return { before, labels: i + 1 };
  }
  return { before, labels: Infinity };
}

describe('forgetting after a label shift', () => {
  for (const kind of ['logistic', 'ridge'] as const) {
    it(`${kind}: forgetting recovers the pre-shift AUC with fewer labels than no forgetting`, () => {
      const plain = labelsToRecover({ kind, lambda: 1 });
      const forgetting = labelsToRecover({ kind, lambda: 1, forgetting: 0.998 });
      // Both learned the first concept well, so "recovered" means something.
      expect(plain.before).toBeGreaterThan(0.75);
      expect(forgetting.before).toBeGreaterThan(0.75);
      expect(forgetting.labels).toBeLessThan(Infinity);
      expect(forgetting.labels * 2).toBeLessThan(plain.labels);
    });
  }

  it('forgetting 1 is the learner without forgetting, and values outside (0, 1] are refused', () => {
    const a = createLearner({ kind: 'logistic', lambda: 1 }, DIM);
    const b = createLearner({ kind: 'logistic', lambda: 1, forgetting: 1 }, DIM);
    for (const e of stream(5, 200, BEFORE)) {
      a.update(e.x, e.y);
      b.update(e.x, e.y);
    }
    const probe = stream(6, 20, BEFORE);
    expect(probe.map((e) => b.predict(e.x))).toEqual(probe.map((e) => a.predict(e.x)));
    expect(() => createLearner({ kind: 'logistic', lambda: 1, forgetting: 0 }, DIM)).toThrow(/forgetting must be in \(0, 1\]/);
    expect(() => createLearner({ kind: 'logistic', lambda: 1, forgetting: 1.5 }, DIM)).toThrow(/forgetting/);
  });
});

// Sparse, high-dimensional and stationary, like hashed text: each example has a few of 120
// features on, 10 of which carry the signal. With a window (1/(1 − β) = 100 labels) about as
// long as the dimension, the prior is what keeps the rarely seen features' weights sane; a
// learner whose forgetting also fades the prior (ρ = β⁴⁰⁰⁰ ≈ 1e-17 here: what forgetting did
// before the prior was restored, emulated by never restoring it) overfits its last window.
describe('forgetting keeps the prior', () => {
  const SPARSE_DIM = 120;
  const signal = Array.from({ length: SPARSE_DIM }, (_, i) => (i < 10 ? (i % 2 === 0 ? 1.5 : -1.5) : 0));
  function sparseStream(seed: number, n: number): { x: number[]; y: number }[] {
    const rand = prng(seed);
    return Array.from({ length: n }, () => {
      const x = Array.from({ length: SPARSE_DIM }, (): number => (rand() < 0.06 ? 1 : 0));
      const t = x.reduce((s, v, i) => s + v * signal[i]!, 0);
      return { x, y: rand() < 1 / (1 + Math.exp(-t)) ? 1 : 0 };
    });
  }
  const train = sparseStream(7, 4000);
  const test = sparseStream(8, 2000);
  const heldOutAuc = (config: LearnerConfig) => {
    const learner = createLearner(config, SPARSE_DIM);
    for (const e of train) learner.update(e.x, e.y);
    return aucMannWhitney(test.map((e) => [learner.predict(e.x), e.y === 1]))!;
  };

  for (const [kind, margin] of [['logistic', 0.05], ['ridge', 0.01]] as const) {
    it(`${kind}: after 40 windows of labels, the held-out AUC with the prior restored beats the faded prior's`, () => {
      const plain = heldOutAuc({ kind, lambda: 1 });
      const kept = heldOutAuc({ kind, lambda: 1, forgetting: 0.99 });
      const faded = heldOutAuc({ kind, lambda: 1, forgetting: 0.99, priorRestoreEvery: 1e9 });
      console.log(`${kind} on a sparse stationary stream: held-out AUC no forgetting ${plain.toFixed(3)}, forgetting 0.99 with the prior kept ${kept.toFixed(3)}, faded ${faded.toFixed(3)}`);
      // The data carry signal; a window of 100 labels sees less of it than all 4000 do.
      expect(plain).toBeGreaterThan(0.68);
      expect(kept).toBeLessThan(plain);
      expect(kept).toBeGreaterThan(faded + margin);
    });
  }
});

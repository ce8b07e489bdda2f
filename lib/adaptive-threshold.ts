/**
 * One proportional control step of a threshold, the mechanism the explore-exploit controller and
 * the acceptance-control operator share: an error inside the dead band changes nothing; outside
 * it the threshold moves by gain × error, at most maxStep, and stays within [min, max]. A
 * positive error raises the threshold (too much passes), a negative one lowers it.
 *
 *   stepThreshold(0.5, 0.2, { gain: 0.5, maxStep: 0.05, deadBand: 0.05, min: 0, max: 1 })   // 0.55
 *   stepThreshold(0.5, -0.04, { gain: 0.5, maxStep: 0.05, deadBand: 0.05, min: 0, max: 1 })  // 0.5 (inside the dead band)
 */
export interface ThresholdStep {
  /** Threshold units per unit of error. */
  gain: number;
  /** Largest move in one step. */
  maxStep: number;
  /** |error| at or below this: no move. */
  deadBand: number;
  /** Bounds of the threshold (null: unbounded). */
  min: number | null;
  max: number | null;
}

export function stepThreshold(threshold: number, error: number, step: ThresholdStep): number {
  if (!(Math.abs(error) > step.deadBand)) return threshold;
  const moved = threshold + Math.sign(error) * Math.min(step.maxStep, step.gain * Math.abs(error));
  return Math.min(step.max ?? Infinity, Math.max(step.min ?? -Infinity, moved));
}

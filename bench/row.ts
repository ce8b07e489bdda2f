/**
 * One line of `npm run bench`: a Flywheel figure and its anchor, measured in the same run on
 * the same data, so the ratio holds on a noisy shared machine where absolute times do not.
 *
 *   { figure: 'MinHash-LSH near-dedupe', unit: 'docs/s', flywheel: 52_000, anchor: 'rensa', anchorValue: 44_000, target: '≥ 1' }
 *
 * `ratio` is flywheel ÷ anchorValue (higher is better); a figure without an anchor (e.g. bytes
 * per index entry) leaves `anchor` empty and states its bound in `target`.
 */
export interface BenchRow {
  figure: string;
  unit: string;
  flywheel: number;
  anchor: string;
  anchorValue: number | null;
  /** The target for the ratio (or for the value when there is no anchor), e.g. '≥ 0.5'. */
  target?: string;
  /** Anything a reader needs to interpret the figure (batch size, precision/recall, …). */
  note?: string;
}

export function ratio(row: BenchRow): number | null {
  return row.anchorValue === null || row.anchorValue === 0 ? null : row.flywheel / row.anchorValue;
}

/** The median of passes (the figure a bench reports from several). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

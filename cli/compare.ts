import { compareRuns, formatComparison, type CompareOptions } from '../analytics/compare.ts';
import type { ClickHouseStore } from '../sinks/clickhouse/store.ts';

/**
 * `flywheel compare <runA> <runB>`: two curating runs side by side — accepted-set overlap
 * (matched by rollout id), decisions, reasons, score distributions, and precision/recall against
 * the verified reward — as aligned text tables. The caller opens (and closes) the store, as
 * `flywheel sql` does.
 */
export async function compareCommand(runA: string, runB: string, store: ClickHouseStore, opts: CompareOptions = {}): Promise<string> {
  if (runA === '' || runB === '') throw new Error('compare needs two run names, e.g. flywheel compare live candidate');
  return formatComparison(await compareRuns(store, runA, runB, opts));
}

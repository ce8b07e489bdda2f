import type { KeyValueStore } from '../../streams/state-store.ts';
import { deadLetter, isRejected, type Curator, type Envelope, type Sample } from '../../lib/envelope.ts';
import { sessionCurator } from '../../lib/filters-internals.ts';
import { labelOf, numericOf, readJson, writeJson, type LabelRef, type NumericRef } from '../../lib/balance-internals.ts';

/**
 * One axis of the grid. Numeric: bin i holds edges[i-1] <= value < edges[i] (edges ascending,
 * edges.length + 1 bins). Categorical: one bin per listed category.
 */
export type QdDescriptor = { name: string; value: NumericRef; edges: number[] } | { name: string; label: LabelRef; categories: string[] };

export interface QdArchiveConfig {
  descriptors: QdDescriptor[];
  /** The elite of a cell is the sample with the highest value of this score. */
  score: string;
  /** "annotate" only labels; "elites-only" also rejects samples that did not become elites. */
  mode: 'annotate' | 'elites-only';
  /** A coverage report every this many samples (and on a tick after new samples). */
  reportEvery: number;
  /** Largest grid allowed (the product of the descriptors' bin counts): the store's bound. */
  maxCells: number;
}

export const qdArchiveDefaults: QdArchiveConfig = {
  descriptors: [{ name: 'length', value: { field: 'token_count' }, edges: [256, 1024, 4096] }],
  score: 'rule',
  mode: 'annotate',
  reportEvery: 1000,
  maxCells: 10_000,
};

/** The elite per cell and the report counter (changelog-backed). */
export const qdArchiveStore = { name: 'qd-archive' } as const;

/** What the archive publishes on the control topic (key `qd-coverage`). */
export type QdCoverage = {
  kind: 'qd_coverage';
  filled: number;
  total: number;
  coverage: number;
  by_cell_best: Record<string, number>;
};

/** Cells of the grid: the product of the descriptors' bin counts (edges + 1, or categories). */
export function qdCellCount(descriptors: readonly QdDescriptor[]): number {
  return descriptors.reduce((n, d) => n * ('edges' in d ? d.edges.length + 1 : d.categories.length), 1);
}

/**
 * A quality–diversity (MAP-Elites style) archive over a grid of descriptors. Per sample:
 *
 * 1. Its cell is the bin of every descriptor, written `name=bin|name=bin` (numeric bins by
 *    index, categorical by category), annotated `qd.cell`. A sample with a descriptor value
 *    missing or a category not listed has no cell: no annotation, and in elites-only mode the
 *    reason `qd:no_cell`.
 * 2. A candidate (not yet rejected, with a finite score) becomes the cell's elite when the cell
 *    is empty or its score beats the elite's strictly (the incumbent keeps ties; a re-sent
 *    elite is still the elite). The elite's id and score are kept in the store, one entry per
 *    cell, so at most `total` entries.
 * 3. `qd.elite` is `1` when the sample is (became) its cell's elite, else `0`; elites-only mode
 *    rejects the others with `qd:not_elite`. Since elites are decided on arrival, that mode
 *    passes every improvement of a cell, not only the final best. Already rejected samples get
 *    annotations only.
 * 4. Every `reportEvery` samples, and on a tick when samples came since the last report, it
 *    emits Emit{output:'control', key:'qd-coverage', value: QdCoverage} after the envelope.
 *
 * @example
 *   qdArchive({ ...qdArchiveDefaults, score: 'combined', descriptors: [
 *     { name: 'length', value: { field: 'token_count' }, edges: [256] },
 *     { name: 'skill', label: { tag: 'skill' }, categories: ['addition', 'subtraction'] },
 *   ] }, state.store(qdArchiveStore.name))   // 2 × 2 = 4 cells
 *   // a 100-token `addition` sample scoring 0.8, cell empty → annotations { 'qd.cell': 'length=0|skill=addition', 'qd.elite': '1' }
 *   // a later one there scoring 0.8 (a tie)                → 'qd.elite': '0' (the incumbent keeps ties)
 */
export function qdArchive(config: QdArchiveConfig, store: KeyValueStore): Curator {
  const total = qdCellCount(config.descriptors);
  if (config.descriptors.length === 0 || total === 0 || total > config.maxCells) {
    throw new Error(`qd-archive: the grid has ${total} cells; it needs at least one descriptor and at most maxCells (${config.maxCells}) cells`);
  }

  const cellOf = (sample: Sample): string | undefined => {
    const parts: string[] = [];
    for (const d of config.descriptors) {
      if ('edges' in d) {
        const value = numericOf(sample, d.value);
        if (value === undefined || Number.isNaN(value)) return undefined;
        parts.push(`${d.name}=${d.edges.filter((edge) => edge <= value).length}`);
      } else {
        const value = labelOf(sample, d.label);
        if (value === undefined || !d.categories.includes(value)) return undefined;
        parts.push(`${d.name}=${value}`);
      }
    }
    return parts.join('|');
  };

  const report = (cells: Record<string, Elite>): Envelope => {
    const byCellBest = Object.fromEntries(Object.entries(cells).map(([cell, elite]) => [cell, elite.score]));
    const filled = Object.keys(cells).length;
    const value: QdCoverage = { kind: 'qd_coverage', filled, total, coverage: filled / total, by_cell_best: byCellBest };
    return { kind: 'emit', output: 'control', key: 'qd-coverage', value };
  };

  // The cells and the report counter are read once per batch and written back when its input
  // completes (the changelog keeps a key's last value per transaction anyway): per sample they
  // were parsed and serialised whole, O(cells) of JSON for each sample.
  return sessionCurator(() => {
    let cells: Record<string, Elite> | undefined;
    let pending = 0;
    const loaded = (): Record<string, Elite> => {
      if (cells === undefined) {
        cells = readJson<Record<string, Elite>>(store, 'cells', {});
        pending = readJson<number>(store, 'pending', 0);
      }
      return cells;
    };
    return {
      next(envelope, out) {
        if (envelope.kind !== 'sample' && envelope.kind !== 'tick') return void out.push(envelope);
        const archive = loaded();
        if (envelope.kind === 'tick') {
          if (pending === 0) return void out.push(envelope);
          pending = 0;
          return void out.push(report(archive), envelope);
        }
        let decided: Envelope;
        try {
          decided = place(envelope, cellOf(envelope), archive, config);
        } catch (err) {
          return void out.push(deadLetter(envelope, 'qd-archive', (err as Error).message));
        }
        pending += 1;
        out.push(decided);
        if (pending >= config.reportEvery) {
          pending = 0;
          out.push(report(archive));
        }
      },
      complete() {
        if (cells === undefined) return;
        writeJson(store, 'cells', cells);
        writeJson(store, 'pending', pending);
      },
    };
  });
}

interface Elite {
  id: string;
  score: number;
}

/** Annotates the sample and updates `cells` in place when it becomes an elite. */
function place(sample: Sample, cell: string | undefined, cells: Record<string, Elite>, config: QdArchiveConfig): Sample {
  const filtering = config.mode === 'elites-only' && !isRejected(sample);
  if (cell === undefined) return filtering ? { ...sample, reasons: [...sample.reasons, 'qd:no_cell'] } : sample;
  const score = sample.scores[config.score];
  const incumbent = cells[cell];
  let elite = false;
  if (!isRejected(sample) && score !== undefined && Number.isFinite(score)) {
    elite = incumbent === undefined || score > incumbent.score || incumbent.id === sample.rollout.id;
    if (elite && (incumbent === undefined || score > incumbent.score)) cells[cell] = { id: sample.rollout.id, score };
  }
  const annotated = { ...sample, annotations: { ...sample.annotations, 'qd.cell': cell, 'qd.elite': elite ? '1' : '0' } };
  return filtering && !elite ? { ...annotated, reasons: [...annotated.reasons, 'qd:not_elite'] } : annotated;
}

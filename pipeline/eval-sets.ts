import { readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { buildEvalIndex, contaminationFilterDefaults, type EvalIndex, type EvalIndexOptions, type EvalSet } from '../operators/filter/contamination-filter.ts';

/**
 * Reads evaluation sets from files; each set is named after its file (without extension).
 * A malformed JSONL line fails the load, naming file and line.
 */
export async function loadEvalSets(paths: readonly string[], options: Partial<EvalIndexOptions> = {}): Promise<EvalIndex> {
  const o = { ...contaminationFilterDefaults, ...options };
  const sets = await Promise.all(paths.map(async (path): Promise<EvalSet> => ({ name: basename(path, extname(path)), items: parseItems(path, await readFile(path, 'utf8'), o) })));
  return buildEvalIndex(sets, o);
}

function parseItems(path: string, content: string, o: EvalIndexOptions): EvalSet['items'] {
  const items: EvalSet['items'] = [];
  content.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    if (extname(path) !== '.jsonl') return void items.push({ id: String(i + 1), text: line });
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(line) as Record<string, unknown>;
    } catch (err) {
      throw new Error(`${path}:${i + 1}: not JSON (${(err as Error).message})`);
    }
    const id = record[o.idField];
    const text = o.textFields.flatMap((f) => (typeof record[f] === 'string' ? [record[f]] : [])).join('\n');
    items.push({ id: typeof id === 'string' || typeof id === 'number' ? String(id) : String(i + 1), text });
  });
  return items;
}

/**
 * A real text model end to end in process: tokenize + run + pool of all-MiniLM-L6-v2
 * (models/setup.sh) through pipeline/text-models.ts (@huggingface/tokenizers + onnxruntime-node),
 * against the anchor: Python tokenizers + onnxruntime on the same files, texts and batch size
 * (models/reference.py in its bench mode, in a child process). Both run their sessions with
 * onnxruntime's default thread pool on the same machine; the passes alternate (one Node pass,
 * one Python pass), after a warm-up of each, and each figure is the median pass.
 * Target (issue #11): ratio ≥ 0.8.
 *
 *   const rows = await benchTextModels();     // BenchRow[]
 *   node --import tsx bench/text-models.ts    // prints them
 */
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { responseText } from '../contracts/features.ts';
import { formatTable } from '../lib/table.ts';
import { TextModel } from '../pipeline/text-models.ts';
import { median, ratio, type BenchRow } from './row.ts';

const REPO = new URL('..', import.meta.url).pathname;
const BATCH = 32;
const ROWS = 512;
const PASSES = 3;

function run(command: string, args: string[], input = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => void (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => void (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} ${args.join(' ')} exited ${code}: ${err.slice(-500)}`))));
    child.stdin.end(input);
  });
}

export async function benchTextModels(): Promise<BenchRow[]> {
  const dir = (await run('bash', ['models/setup.sh'])).trim().split('\n').at(-1)!;
  const python = (await run('bash', ['models/setup.sh', '--python'])).trim().split('\n').at(-1)!;
  const texts = syntheticRollouts({ groups: ROWS / 4, samplesPerGroup: 4, invalidRate: 0, garbage: 0 })
    .rollouts.slice(0, ROWS)
    .map((r) => `${r.prompt}\n${responseText(r)}`);
  // A token budget that never splits a batch of BATCH rows, so both sides run the same batches.
  const model = await TextModel.load(dir, { batchTokens: BATCH * 128 });
  const nodePass = async () => {
    const start = performance.now();
    for (let i = 0; i < texts.length; i += BATCH) await model.embed(texts.slice(i, i + BATCH));
    return (performance.now() - start) / 1000;
  };
  const pythonPass = async () => {
    const out = JSON.parse(await run(python, ['models/reference.py', dir], JSON.stringify({ texts, batch: BATCH, bench: true, passes: 1 }))) as { seconds: number[] };
    return out.seconds[0]!;
  };
  await nodePass();
  await pythonPass();
  const node: number[] = [];
  const py: number[] = [];
  for (let p = 0; p < PASSES; p++) {
    node.push(await nodePass());
    py.push(await pythonPass());
  }
  await model.dispose();
  return [
    {
      figure: 'text model: tokenize + score (all-MiniLM-L6-v2)',
      unit: 'rows/s',
      flywheel: ROWS / median(node),
      anchor: 'Python tokenizers + onnxruntime',
      anchorValue: ROWS / median(py),
      target: '≥ 0.8',
      note: `${ROWS} synthetic prompt+response texts, batches of ${BATCH}, mean pooling + normalisation, CPU`,
    },
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const rows = await benchTextModels();
  console.log(formatTable(rows.map((r) => ({ ...r, ratio: ratio(r) }))));
}

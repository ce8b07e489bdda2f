import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { map, type Observable } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decisionHash } from '../cli/replay.ts';
import { syntheticRollouts } from '../cli/synthetic.ts';
import type { Envelope, Sample } from '../lib/envelope.ts';
import { ErrorMemory } from '../lib/error-memory.ts';
import { AnnouncedVersions } from '../operators/filter/staleness-filter.ts';
import {
  errorCompensate,
  exactDedupe,
  heuristics,
  nearDedupe,
  onnxScore,
  qdArchive,
  ruleScore,
  selfCertainty,
  semanticDedupe,
  thresholdFilter,
  validate,
  weaknessTracker,
} from '../pipeline/builtin-steps.ts';
import { ConfigError, configHash, EXAMPLE_CONFIG, loadConfig, withOverrides, type PipelineConfig } from '../pipeline/config.ts';
import type { OperatorResources } from '../pipeline/curators.ts';
import { describePipeline } from '../pipeline/describe.ts';
import { defineStore, operator, stateless } from '../pipeline/operator.ts';
import { startPipeline } from '../pipeline/run.ts';
import { bundledTextModel } from '../pipeline/text-models.ts';
import { topology, topologyFromConfig, TopologyError, type Topology, type TopologySettingsInput } from '../pipeline/topology.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { registryClient, rolloutSerde } from '../streams/serde.ts';
import { PartitionState } from '../streams/state-store.ts';
import { sample as sampleOf, through } from './helpers/envelopes.ts';
import { connections, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';
import { writeScorer } from './helpers/models.ts';

const DEMO_CONFIG = new URL('../deploy/flywheel-demo.json', import.meta.url).pathname;

/** deploy/pipeline.json, written in code. */
function curate(settings: Partial<TopologySettingsInput> = {}): Topology {
  return topology({ name: 'curate', run: 'live', topics: { prefix: 'flywheel', partitions: 3 }, ...settings })
    .source('rollouts', { fromBeginning: true, partitionsConsumedConcurrently: 3 })
    .pipe(
      validate({ maxChars: 200_000 }),
      ruleScore({ name: 'rule', rewards: { correct: 1 }, format: { pattern: 'Answer:\\s*-?\\d+' } }),
      exactDedupe({ scope: 'global' }),
      thresholdFilter({ min: { rule: 1 } }),
    )
    .sink({ clickhouse: { path: '.flywheel/clickhouse' } });
}

/** deploy/flywheel-demo.json, written in code (`modelPath`: start the scorer from this file). */
function demo(settings: Partial<TopologySettingsInput> = {}, modelPath?: string): Topology {
  return topology({
    name: 'flywheel-demo',
    run: 'live',
    topics: { prefix: 'flywheel-demo', partitions: 3 },
    features: { dims: 256, wordNgrams: [1, 2], charNgrams: [], rewardNames: [] },
    labels: { joinTtlMs: 3_600_000, memoryCapacity: 5000 },
    ...settings,
  })
    .source('rollouts', { tickMs: 500 })
    .pipe(
      validate(),
      heuristics({ format: { pattern: 'Answer:' } }),
      selfCertainty(),
      ruleScore({ name: 'rule', rewards: { correct: 1 }, format: { pattern: 'Answer:\\s*-?\\d+' } }),
      onnxScore({ name: 'model', model: { name: 'scorer', ...(modelPath === undefined ? {} : { path: modelPath }) } }),
      errorCompensate({ score: 'model', k: 16, minSimilarity: 0.6 }),
      exactDedupe({ scope: 'global' }),
      nearDedupe({ scope: 'group', threshold: 0.8 }),
      semanticDedupe({ scope: 'group', threshold: 0.75, when: "tags.source == 'explanations'", encoder: { kind: 'text', dir: '.cache/models/all-minilm-l6-v2' } }),
      qdArchive({
        descriptors: [
          { name: 'skill', label: { tag: 'skill' }, categories: ['addition', 'multiplication', 'subtraction'] },
          { name: 'length', value: { field: 'token_count' }, edges: [16, 20, 24] },
        ],
        score: 'model',
        reportEvery: 500,
      }),
      thresholdFilter({ min: { model: 0.5, 'rule.format': 1 } }),
      weaknessTracker({ minAttempts: 4, maxPassRate: 0.25 }),
    )
    .sink({ clickhouse: { path: '.flywheel/demo/clickhouse' } });
}

describe('a JSON config and the same topology built in code', () => {
  it.each([
    ['deploy/pipeline.json', EXAMPLE_CONFIG, () => curate()],
    ['deploy/flywheel-demo.json', DEMO_CONFIG, () => demo()],
  ])('%s: the same value, description and config hash', (_name, file, build) => {
    const config = loadConfig(file);
    const built = build();
    expect(built.config).toEqual(config);
    expect(built.describe()).toBe(describePipeline(config));
    expect(built.describe()).toBe(topologyFromConfig(config).describe());
    expect(built.hash()).toBe(configHash(config));
  });

  it('describes a user operator with its stores, and counts it in the hash', () => {
    const counts = defineStore<number>('prompt-counts');
    const cap = operator({ name: 'cap', stores: [counts], version: '2' }, () => (source) => source);
    const withCap = curate().pipe(cap);
    expect(withCap.describe()).toMatch(/5\. cap \(operator 2\)\s+store prompt-counts → flywheel\.curate\.prompt-counts-changelog/);
    expect(withCap.describe()).toContain('stores: exact-dedupe, prompt-counts');
    expect(withCap.stores()).toEqual([
      { name: 'exact-dedupe', owner: 'exact-dedupe' },
      { name: 'prompt-counts', owner: 'cap' },
    ]);
    expect(withCap.hash()).not.toBe(curate().hash());
    expect(curate().pipe(operator({ name: 'cap', stores: [counts], version: '3' }, () => (s) => s)).hash()).not.toBe(withCap.hash());
  });
});

describe('topology validation names the problem', () => {
  const counts = defineStore<number>('counts');
  const pass = () => (source: Observable<Envelope>) => source;

  it('a store declared by two operators, or taking a built-in store, or a reserved one', () => {
    const a = operator({ name: 'a', stores: [counts] }, pass);
    const b = operator({ name: 'b', stores: [defineStore<string>('counts')] }, pass);
    expect(() => curate().pipe(a, b).describe()).toThrow(/step 6 \(b\): store "counts" is already declared by step 5 \(a\); a store belongs to one operator/);
    const shadow = operator({ name: 'shadow', stores: [defineStore('exact-dedupe')] }, pass);
    expect(curate().pipe(shadow).problems()).toEqual(['step 5 (shadow): store "exact-dedupe" is already declared by step 3 (exact-dedupe); a store belongs to one operator']);
    const twice = operator({ name: 'twice', stores: [counts, counts] }, pass);
    expect(curate().pipe(twice).problems()).toEqual(['step 5 (twice): declares store "counts" twice']);
    expect(curate().pipe(operator({ name: 'j', stores: [defineStore('label-join-scored')] }, pass)).problems()[0]).toMatch(/"label-join-scored" is the pipeline's own/);
    const long = operator({ name: 'long', stores: [defineStore('s'.repeat(240))] }, pass);
    expect(curate().pipe(long).problems()).toEqual([`store "${'s'.repeat(240)}" of long: its changelog topic flywheel.curate.${'s'.repeat(240)}-changelog is longer than Kafka's 249 characters`]);
    // Two stateful built-ins of one type: the JSON config's own message.
    expect(curate().pipe(exactDedupe({ scope: 'group' })).problems()).toEqual(['step 5 (exact-dedupe): exact-dedupe appears twice; its state store would be shared']);
  });

  it('an unknown or missing source, no steps, duplicate operator names', async () => {
    const steps = [validate(), operator({ name: 'x', stores: [counts] }, pass)];
    await expect(topology({ name: 'p' }).source('labels').pipe(...steps).start(connections)).rejects.toThrow(TopologyError);
    expect(topology({ name: 'p' }).source('labels').pipe(...steps).problems()).toEqual([
      `unknown source "labels": a topology reads "rollouts" (the topic flywheel.rollouts); PipelineOptions.inputTopic reads another topic of rollouts`,
    ]);
    expect(topology({ name: 'p' }).problems()).toEqual([`no source: call .source('rollouts')`, 'no steps: pipe at least one operator']);
    expect(topology({ name: 'p' }).source('rollouts').pipe(operator({ name: 'x' }, pass), operator({ name: 'x' }, pass)).problems()).toEqual([
      'step 2 (x): the name "x" is taken by step 1; operator names must be unique',
    ]);
    expect(topology({ name: 'p' }).source('rollouts').pipe(operator({ name: 'validate' }, pass), validate()).problems()).toEqual([
      'step 1 (validate): the name "validate" is taken by step 2; operator names must be unique',
    ]);
  });

  it('settings and built-in step settings, by field', () => {
    expect(() => thresholdFilter({ onMissing: 'maybe' as 'pass' })).toThrow(ConfigError);
    expect(() => thresholdFilter({ onMissing: 'maybe' as 'pass' })).toThrow(/threshold-filter[\s\S]*onMissing/);
    expect(() => topology({ name: 'bad name' })).toThrow(/name/);
    expect(() => curate().source('rollouts', { tickMs: 1 })).toThrow(/source\.tickMs/);
  });
});

describe('a user operator over its partition stores', () => {
  const resources: OperatorResources = {
    versions: new AnnouncedVersions(),
    files: { evalIndexes: new Map(), models: new Map(), encoders: new Map() },
    errorMemory: new ErrorMemory(10),
    features: loadConfig(EXAMPLE_CONFIG).features,
  };
  const seen = defineStore<{ n: number }>('seen');
  const counter = operator({ name: 'counter', stores: [seen] }, (ctx) =>
    map((e: Envelope) => {
      if (e.kind !== 'sample') return e;
      const n = (ctx.store(seen).get(e.rollout.prompt_id)?.n ?? 0) + 1;
      ctx.store(seen).put(e.rollout.prompt_id, { n });
      return { ...e, annotations: { ...e.annotations, count: `${ctx.partition}:${n}` } };
    }),
  );
  const run = async (t: Topology, state: PartitionState, samples: Sample[]) =>
    (await through(t.chain(state.partition, state, resources), samples)).map((e) => (e.kind === 'sample' ? e.annotations.count : e.kind));

  it('reads its own writes, keeps them on commit, forgets them on abort', async () => {
    const t = topology({ name: 'p' }).source('rollouts').pipe(counter);
    const state = new PartitionState(2, t.stores().map((s) => s.name));
    const sample = () => sampleOf({ prompt_id: 'p1' });
    expect(await run(t, state, [sample(), sample()])).toEqual(['2:1', '2:2']);
    state.abort();
    expect(await run(t, state, [sample()])).toEqual(['2:1']);
    state.commit();
    expect(await run(t, state, [sample()])).toEqual(['2:2']);
    // On the changelog as the codec writes it.
    expect(state.pendingChanges()).toEqual([{ store: 'seen', key: 'p1', value: '{"n":2}' }]);
  });

  it('takes a plain RxJS operator as a stateless step', async () => {
    const tagged = map((e: Envelope) => (e.kind === 'sample' ? { ...e, annotations: { ...e.annotations, seen: 'yes' } } : e));
    const t = topology({ name: 'p' }).source('rollouts').pipe(tagged, stateless(map((e: Envelope) => e), 'noop'));
    expect(t.describe()).toMatch(/1\. stateless \(stateless\)\n\s+2\. noop \(stateless\)/);
    expect(t.stores()).toEqual([]);
    const out = await through(t.chain(0, new PartitionState(0, []), resources), [sampleOf()]);
    expect(out.map((e) => (e.kind === 'sample' ? e.annotations.seen : e.kind))).toEqual(['yes']);
  });

  it('may use only the stores it declared', async () => {
    const other = defineStore<number>('other');
    const sneaky = operator({ name: 'sneaky' }, (ctx) => {
      ctx.store(other);
      return (s) => s;
    });
    const t = topology({ name: 'p' }).source('rollouts').pipe(sneaky);
    expect(() => t.chain(0, new PartitionState(0, []), resources)).toThrow(/operator "sneaky" uses store "other" without declaring it/);
  });
});

describe('the same decisions from the JSON config and the builder, on the same input', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-topology-'));
  const serverUrl = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;
  const database = `topology_${Date.now()}`;
  const kafka = testKafka('topology');
  let store: ClickHouseStore | undefined;

  // The demo config's semantic-dedupe encoder: models/setup.sh links it where the config says.
  beforeAll(() => void bundledTextModel(), 10 * 60_000);

  afterAll(async () => {
    await store?.command(`DROP DATABASE IF EXISTS ${database}`);
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `json` and `built` side by side on the same rollouts (each on its own topics); returns each run's decision hash. */
  async function both(json: PipelineConfig, built: Topology) {
    if (!serverUrl) throw new Error('FLYWHEEL_TEST_CLICKHOUSE_URL is not set: run the tests with `npm test`, which starts a ClickHouse server');
    store ??= await openStore({ url: serverUrl, database });
    const data = syntheticRollouts({ groups: 60, runId: json.run, garbage: 2 });
    const total = data.rollouts.length + data.garbage.length;
    const running = [await startPipeline(json, connections, { store }), await built.start(connections, { store })];
    try {
      for (const r of running) {
        const serde = await rolloutSerde(registryClient(connections.schemaRegistryUrl), r.catalog.rollouts);
        await produceRollouts(kafka, serde, data.rollouts, { raw: data.garbage });
      }
      for (const r of running) {
        await waitUntil(() => r.progress.stored.samples + r.progress.stored.dead_letters >= total, () => `${r.catalog.rollouts} to store ${total} records (${JSON.stringify(r.progress)})`, 180_000);
      }
    } finally {
      await Promise.all(running.map((r) => r.stop()));
    }
    const hashes = await store.query<{ run: string; config_hash: string; n: number }>(
      `SELECT pipeline_run AS run, config_hash, count() AS n FROM samples WHERE pipeline_run IN ({a:String}, {b:String}) GROUP BY run, config_hash ORDER BY run`,
      { a: json.run, b: built.settings.run },
    );
    return { hashes, json: await decisionHash(store, json.run), built: await decisionHash(store, built.settings.run), decided: data.rollouts.length - [...data.fates.values()].filter((f) => f === 'invalid').length };
  }

  it('deploy/pipeline.json', async () => {
    const prefix = uniquePrefix('topo-json');
    const json = withOverrides(loadConfig(EXAMPLE_CONFIG), { run: `${prefix}-json`, topics: { prefix: `${prefix}-a`, partitions: 3 } });
    const built = curate({ run: `${prefix}-built`, topics: { prefix: `${prefix}-b`, partitions: 3 } });
    const result = await both(json, built);
    expect(result.built).toBe(result.json);
    expect(result.hashes).toEqual([
      { run: `${prefix}-built`, config_hash: configHash(json), n: result.decided },
      { run: `${prefix}-json`, config_hash: configHash(json), n: result.decided },
    ]);
  }, 240_000);

  it('deploy/flywheel-demo.json, its scorer started from a file', async () => {
    const prefix = uniquePrefix('topo-demo');
    const demoConfig = loadConfig(DEMO_CONFIG);
    const model = writeScorer(dir, demoConfig.features, 'v1', { logprob_mean: 3 }, 1.5);
    const json = withOverrides(demoConfig, {
      run: `${prefix}-json`,
      topics: { prefix: `${prefix}-a`, partitions: 3 },
      operators: demoConfig.operators.map((op) => (op.type === 'onnx-score' ? { ...op, model: { ...op.model, path: model } } : op)),
    });
    const built = demo({ run: `${prefix}-built`, topics: { prefix: `${prefix}-b`, partitions: 3 } }, model);
    expect(built.hash()).toBe(configHash(json));
    const result = await both(json, built);
    expect(result.built).toBe(result.json);
    expect(result.hashes.map((h) => [h.config_hash, h.n])).toEqual([
      [configHash(json), result.decided],
      [configHash(json), result.decided],
    ]);
  }, 240_000);
});

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFailed } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import type { Decision, Rollout } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { topicCatalog } from '../streams/topics.ts';
import { expectDecidedOnce } from './helpers/expected.ts';
import { connections, consumeTopic, createCatalogTopics, testKafka, uniquePrefix } from './helpers/kafka.ts';
import { exited } from './helpers/workers.ts';

const REPO = new URL('..', import.meta.url).pathname;
const EXAMPLE = join(REPO, 'examples/capped-prompts');
const K = 2;

/**
 * A worker of the example, as its user runs it (`node --import tsx main.ts`), from this
 * checkout: tsx maps `import … from 'flywheel'` to index.ts through tsconfig.json's `paths`, so
 * it runs the sources, not a build.
 */
function startExample(prefix: string, clickhouse: string, log: string[]): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', join(EXAMPLE, 'main.ts')], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
    // Small fetches: many transactions, so the kill lands between and inside them.
    env: { ...process.env, CAPPED_PREFIX: prefix, CAPPED_K: String(K), CAPPED_CLICKHOUSE_PATH: clickhouse, CAPPED_MAX_BATCH_BYTES: '8192' },
  });
  child.stdout!.on('data', (d: Buffer) => log.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => log.push(d.toString()));
  return child;
}

describe("the example's own stateful operator, its worker SIGKILLed mid-stream and restarted", () => {
  const prefix = uniquePrefix('user-op');
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-user-op-'));
  const kafka = testKafka('user-op');
  // One input, sent to two pipelines: one is killed and restarted, the other runs uninterrupted.
  const crashed = { prefix: `${prefix}-crash`, log: [] as string[], worker: undefined as ChildProcess | undefined };
  const reference = { prefix: `${prefix}-ref`, log: [] as string[], worker: undefined as ChildProcess | undefined };
  const data = syntheticRollouts({ groups: 200, runId: prefix, garbage: 2 });

  afterAll(async () => {
    for (const w of [crashed.worker, reference.worker]) w?.kill('SIGKILL');
    await Promise.all([crashed.worker, reference.worker].map((w) => w && exited(w)));
    rmSync(dir, { recursive: true, force: true });
  });

  it('restores its store: decisions exactly as the uninterrupted run, each record decided once', async () => {
    onTestFailed(() => console.error(`--- crashed worker ---\n${crashed.log.join('')}\n--- reference worker ---\n${reference.log.join('')}`));
    const registry = registryClient(connections.schemaRegistryUrl);
    const runs = await Promise.all(
      [crashed, reference].map(async (run) => {
        const catalog = topicCatalog(run.prefix);
        await createCatalogTopics(kafka, catalog);
        return { catalog, rollouts: await rolloutSerde(registry, catalog.rollouts), decisions: await decisionSerde(registry, catalog.decisions) };
      }),
    );
    const [crash, ref] = runs as [(typeof runs)[number], (typeof runs)[number]];
    for (const run of runs) await produceRollouts(kafka, run.rollouts, data.rollouts, { raw: data.garbage });
    const decidable = data.rollouts.filter((r) => data.fates.get(r.id) !== 'invalid');

    crashed.worker = startExample(crashed.prefix, join(dir, 'crash-clickhouse'), crashed.log);
    reference.worker = startExample(reference.prefix, join(dir, 'ref-clickhouse'), reference.log);
    const before = await consumeTopic(kafka, crash.catalog.decisions, (m) => m.length >= decidable.length / 3, { settleMs: 0 });
    crashed.worker.kill('SIGKILL');
    await exited(crashed.worker);
    expect(before.length, 'the kill must land mid-stream').toBeLessThan(decidable.length);

    // Late samples of prompts whose K acceptances were committed before the kill: only the
    // restored counts can cap them (a fresh store would accept them).
    const acceptedBefore = new Map<string, Decision[]>();
    for (const d of await Promise.all(before.map((m) => crash.decisions.deserialize(m.value!)))) {
      if (d.decision === 'accepted') acceptedBefore.set(d.rollout.prompt_id, [...(acceptedBefore.get(d.rollout.prompt_id) ?? []), d]);
    }
    const full = [...acceptedBefore.values()].filter((ds) => ds.length === K);
    expect(full.length, 'prompts at their cap before the kill').toBeGreaterThan(10);
    const late: Rollout[] = full.slice(0, 30).map(([d]) => ({ ...d!.rollout, id: `${d!.rollout.id}-late`, response: `${d!.rollout.response} (checked again later)` }));

    crashed.worker = startExample(crashed.prefix, join(dir, 'crash-clickhouse'), crashed.log);
    for (const run of runs) await produceRollouts(kafka, run.rollouts, late);
    const total = decidable.length + late.length;
    const read = async (run: typeof crash) =>
      Promise.all((await consumeTopic(kafka, run.catalog.decisions, (m) => m.length >= total, { settleMs: 3000, timeoutMs: 180_000 })).map((m) => run.decisions.deserialize(m.value!)));
    const [afterCrash, uninterrupted] = await Promise.all([read(crash), read(ref)]);

    // What the operator must do: per prompt, in input order, the first K candidates that pass
    // the built-in steps are accepted, later ones capped (late ones come after their prompt's).
    const expectedAccepted = new Set<string>();
    const counts = new Map<string, number>();
    for (const r of [...data.rollouts, ...late]) {
      if (!(data.fates.get(r.id) === 'accept' || r.id.endsWith('-late'))) continue;
      const n = counts.get(r.prompt_id) ?? 0;
      if (n < K) expectedAccepted.add(r.id);
      counts.set(r.prompt_id, n + 1);
    }
    expectDecidedOnce(afterCrash, total, expectedAccepted);
    expectDecidedOnce(uninterrupted, total, expectedAccepted);
    const lateDecisions = afterCrash.filter((d) => d.rollout.id.endsWith('-late'));
    expect(lateDecisions.map((d) => d.reason)).toEqual(late.map(() => 'cap:per-prompt'));
    expect(afterCrash.filter((d) => d.reason === 'cap:per-prompt').length).toBeGreaterThan(late.length);

    // Decision for decision (verdict, reasons, scores, config hash), the same as without the crash.
    const byId = (ds: Decision[]) => new Map(ds.map((d) => [d.rollout.id, { decision: d.decision, reasons: d.reasons, scores: d.scores, config_hash: d.config_hash }]));
    expect(byId(afterCrash)).toEqual(byId(uninterrupted));
  }, 300_000);
});

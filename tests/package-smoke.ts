/**
 * What tests/package.test.ts runs in its scratch project, compiled by that project's tsc against
 * the installed package's declarations and run with plain node: the example topology
 * (examples/capped-prompts: built-in operators and a stateful operator of its own), on the real
 * services, through the public API only (`import … from 'flywheel'`).
 *
 * 1. starts the topology (prefix SMOKE_PREFIX, embedded store in SMOKE_CLICKHOUSE_PATH) and
 *    listens to its batch.commit events;
 * 2. produces SMOKE_PROMPTS prompts × SMOKE_SAMPLES correct, formatted, distinct samples;
 * 3. reads the decisions topic (read_committed) until every rollout has a decision and every
 *    rollout's batch has committed, then stops and prints one JSON line:
 *    `{ committed, decisions: [{ id, prompt, decision, reason }] }`.
 *
 * In the repo it runs on the sources: `node --import tsx tests/package-smoke.ts`.
 */
import { connectionsFromEnv, createKafka, decisionSerde, produceRollouts, registryClient, rolloutSerde, type Decision, type Rollout } from 'flywheel';
import { cappedPrompts } from '../examples/capped-prompts/topology.ts';

const env = process.env;
const prefix = env.SMOKE_PREFIX ?? `smoke-${Date.now()}`;
const prompts = Number(env.SMOKE_PROMPTS ?? 3);
const samples = Number(env.SMOKE_SAMPLES ?? 4);
const k = Number(env.SMOKE_K ?? 2);
const timeoutMs = Number(env.SMOKE_TIMEOUT_MS ?? 90_000);

const connections = connectionsFromEnv();
const running = await cappedPrompts({ prefix, k, clickhouse: { path: env.SMOKE_CLICKHOUSE_PATH ?? `.flywheel/${prefix}/clickhouse` } }).start(connections);
let committed = 0;
running.events.on('batch.commit', (e) => (committed += e.payload.records));

const now = Date.now();
const rollouts: Rollout[] = Array.from({ length: prompts * samples }, (_, i) => {
  const p = Math.floor(i / samples);
  return {
    id: `${prefix}-p${p}-s${i % samples}`,
    run_id: prefix,
    prompt_id: `p${p}`,
    prompt: `What is ${p} + ${i % samples}?`,
    group_id: `p${p}`,
    response: `Adding them gives ${p + (i % samples)} (sample ${i}). Answer: ${p + (i % samples)}`,
    steps: [],
    model_name: 'smoke',
    model_version: 'v1',
    rewards: { correct: 1 },
    logprobs: null,
    token_count: 12,
    created_at: now,
    tags: {},
  };
});

const registry = registryClient(connections);
const kafka = createKafka(connections, 'flywheel-package-smoke');
const decisionsSerde = await decisionSerde(registry, running.catalog.decisions);
const decisions: Decision[] = [];
const reader = kafka.consumer({ groupId: `${prefix}-reader`, readUncommitted: false, maxWaitTimeInMs: 500 });
await reader.connect();
try {
  await reader.subscribe({ topic: running.catalog.decisions, fromBeginning: true });
  await reader.run({ eachMessage: async ({ message }) => void decisions.push(await decisionsSerde.deserialize(message.value!)) });
  await produceRollouts(kafka, await rolloutSerde(registry, running.catalog.rollouts), rollouts);
  const deadline = Date.now() + timeoutMs;
  while (decisions.length < rollouts.length || committed < rollouts.length) {
    if (Date.now() > deadline) throw new Error(`after ${timeoutMs} ms: ${decisions.length} of ${rollouts.length} decisions read, ${committed} records committed`);
    await new Promise((r) => setTimeout(r, 200));
  }
} finally {
  await reader.disconnect();
  await running.stop();
}
console.log(JSON.stringify({ committed, decisions: decisions.map((d) => ({ id: d.rollout.id, prompt: d.rollout.prompt_id, decision: d.decision, reason: d.reason })) }));
process.exit(0);

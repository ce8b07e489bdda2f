import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Kafka } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticRollouts } from '../cli/synthetic.ts';
import type { Decision, ModelUpdate, Rollout } from '../contracts/records.ts';
import { decisionSerde, modelUpdateSerde, registryClient, type TopicSerde } from '../streams/serde.ts';
import { topicCatalog, type TopicCatalog } from '../streams/topics.ts';
import type { StarvationSignal } from '../trainers/admission.ts';
import { readCheckpointFile } from '../trainers/checkpoint.ts';
import { TrainerClient, type TrainerClientOptions, type TrainingBatch } from '../trainers/client.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil, createCatalogTopics } from './helpers/kafka.ts';

/** A minimal accepted Decision around a rollout, as the pipeline would write it. */
function decisionOf(rollout: Rollout, run: string, i: number): Decision {
  return {
    rollout,
    scores: { rule: rollout.rewards.correct ?? 0 },
    duplicate_of: null,
    dedupe_method: null,
    reasons: [],
    decision: 'accepted',
    reason: 'accepted',
    config_hash: 'trainer-test',
    scorer_version: null,
    annotations: {},
    pipeline_run: run,
    source: { topic: `${run}.rollouts`, partition: 0, offset: String(i) },
  };
}

/** Writes decisions the way the pipeline does: in transactions, keyed by group id; `abort` adds an aborted transaction. */
async function produceDecisions(kafka: Kafka, serde: TopicSerde<Decision>, decisions: Decision[], options: { perTransaction?: number; aborted?: Decision[] } = {}): Promise<void> {
  const producer = kafka.producer({ transactionalId: `trainer-test-${randomUUID()}`, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    const per = options.perTransaction ?? 37;
    const encode = async (d: Decision) => ({ key: d.rollout.group_id, value: await serde.serialize(d) });
    for (let i = 0; i < decisions.length; i += per) {
      const transaction = await producer.transaction();
      await transaction.send({ topic: serde.topic, messages: await Promise.all(decisions.slice(i, i + per).map(encode)) });
      await transaction.commit();
      if (options.aborted !== undefined && i === per) {
        const doomed = await producer.transaction();
        await doomed.send({ topic: serde.topic, messages: await Promise.all(options.aborted.map(encode)) });
        await doomed.abort();
      }
    }
  } finally {
    await producer.disconnect();
  }
}

async function setUp(name: string): Promise<{ prefix: string; catalog: TopicCatalog; kafka: Kafka; accepted: TopicSerde<Decision> }> {
  const prefix = uniquePrefix(name);
  const catalog = topicCatalog(prefix);
  const kafka = testKafka(name);
  await createCatalogTopics(kafka, catalog);
  const accepted = await decisionSerde(registryClient(connections.schemaRegistryUrl), catalog.accepted);
  return { prefix, catalog, kafka, accepted };
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'flywheel-trainer-client-'));
  dirs.push(d);
  return d;
}

describe('trainer client: resume exactly after the last checkpoint', () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  let expected: string[];
  const groupId = `trainer-resume-${randomUUID().slice(0, 8)}`;
  let checkpointPath: string;

  beforeAll(async () => {
    env = await setUp('trainer-resume');
    checkpointPath = join(tempDir(), 'trainer.ckpt');
    const data = syntheticRollouts({ groups: 150, runId: env.prefix, garbage: 0, invalidRate: 0 });
    const decisions = data.rollouts.map((r, i) => decisionOf(r, env.prefix, i));
    expected = decisions.map((d) => d.rollout.id);
    const aborted = decisions.slice(0, 5).map((d, i) => decisionOf({ ...d.rollout, id: `aborted-${i}` }, env.prefix, i));
    await produceDecisions(env.kafka, env.accepted, decisions, { aborted });
  });

  type Crash = { kind: 'none' } | { kind: 'before-write' | 'after-write' | 'abandon'; afterCommits: number };
  interface State {
    trained: string[];
  }

  /**
   * One trainer run: restores `trained` from the checkpoint, trains (appends ids) batch by
   * batch, checkpoints every k batches; crashes as told. Returns what this run trained.
   */
  async function run(crash: Crash, k = 2): Promise<{ trained: string[]; restoredCount: number; commits: number }> {
    const options: TrainerClientOptions = { kafka: env.kafka, registry: registryClient(connections.schemaRegistryUrl), catalog: env.catalog, groupId, trainer: 'resume-test', checkpointPath };
    const client = await TrainerClient.open(options);
    const state: State = (client.restored?.state as State | undefined) ?? { trained: [] };
    const restoredCount = state.trained.length;
    const thisRun: string[] = [];
    let commits = 0;
    let sinceCommit = 0;
    const commit = (batch: TrainingBatch) => client.commit(batch, (cp) => cp.write(state));
    try {
      for await (const batch of state.trained.length >= expected.length ? [] : client.batches({ maxRecords: 23, maxWaitMs: 300 })) {
        for (const d of batch.decisions) {
          state.trained.push(d.value.rollout.id);
          thisRun.push(d.value.rollout.id);
        }
        sinceCommit++;
        const done = state.trained.length >= expected.length;
        if (crash.kind !== 'none' && commits === crash.afterCommits) {
          if (crash.kind === 'before-write') {
            await expect(client.commit(batch, async () => Promise.reject(new Error('killed before the checkpoint write')))).rejects.toThrow('killed before');
            break;
          }
          if (crash.kind === 'after-write') {
            await expect(client.commit(batch, async (cp) => {
              await cp.write(state);
              throw new Error('killed after the checkpoint write, before the Kafka commit');
            })).rejects.toThrow('killed after');
            break;
          }
          // abandon: train a few more batches, never commit them, walk away.
          if (sinceCommit >= 3) break;
          continue;
        }
        if (sinceCommit >= k || done) {
          await commit(batch);
          commits++;
          sinceCommit = 0;
        }
        if (done) break;
      }
      if (crash.kind === 'none') {
        // Nothing more may come: a duplicate would show up here.
        await new Promise((r) => setTimeout(r, 1500));
        expect(client.metrics.buffered).toBe(0);
      }
    } finally {
      await client.close();
    }
    return { trained: thisRun, restoredCount, commits };
  }

  async function committedOffsets(): Promise<Map<string, bigint>> {
    const admin = env.kafka.admin();
    await admin.connect();
    try {
      const [topic] = await admin.fetchOffsets({ groupId, topics: [env.catalog.accepted] });
      return new Map(topic!.partitions.map((p) => [`${p.partition}`, BigInt(p.offset)]));
    } finally {
      await admin.disconnect();
    }
  }

  it('trains every record exactly once across crashes at every point', async () => {
    const runs: Array<Awaited<ReturnType<typeof run>>> = [];
    const checkpointed = async () => ((await readCheckpointFile<State>(checkpointPath))?.state.trained ?? []).length;

    // 1. Crash inside the checkpoint callback before the file is written (after 3 good commits).
    runs.push(await run({ kind: 'before-write', afterCommits: 3 }));
    const afterRun1 = await checkpointed();
    expect(runs[0]!.trained.length).toBeGreaterThan(afterRun1); // work was lost with the crash…
    // 2. …and is redone from the checkpoint. Crash after the write, before the Kafka commit.
    runs.push(await run({ kind: 'after-write', afterCommits: 2 }));
    expect(runs[1]!.restoredCount).toBe(afterRun1);
    const checkpoint = (await readCheckpointFile<State>(checkpointPath))!;
    const kafka = await committedOffsets();
    const behind = checkpoint.offsets.filter((o) => (kafka.get(String(o.partition)) ?? -1n) < BigInt(o.offset));
    expect(behind.length, 'the checkpoint is ahead of the group commit: the seek must win').toBeGreaterThan(0);

    // 3. Abandon a client mid-stream without committing.
    runs.push(await run({ kind: 'abandon', afterCommits: 2 }));
    expect(runs[2]!.restoredCount).toBe(checkpoint.state.trained.length);

    // 4. The group's offsets moved AHEAD of the checkpoint (an operator reset them, or an old
    //    checkpoint was restored): the checkpoint still wins.
    const before = await checkpointed();
    const admin = env.kafka.admin();
    await admin.connect();
    const ends = await admin.fetchTopicOffsets(env.catalog.accepted);
    await admin.setOffsets({ groupId, topic: env.catalog.accepted, partitions: ends.map((e) => ({ partition: e.partition, offset: e.high })) });
    await admin.disconnect();
    runs.push(await run({ kind: 'before-write', afterCommits: 1 }));
    expect(runs[3]!.restoredCount).toBe(before);
    expect(runs[3]!.trained.length).toBeGreaterThan(0);

    // 5. Run to the end.
    runs.push(await run({ kind: 'none' }));

    const final = (await readCheckpointFile<State>(checkpointPath))!.state.trained;
    expect(final.length).toBe(expected.length);
    expect(new Set(final).size, 'no example trained twice').toBe(expected.length);
    expect([...final].sort()).toEqual([...expected].sort());
    expect(final.some((id) => id.startsWith('aborted-')), 'aborted transactions are never read').toBe(false);
    // Partition order is kept: within a group id (one partition), ids appear in produced order.
    const position = new Map(expected.map((id, i) => [id, i]));
    const byGroup = new Map<string, number[]>();
    for (const id of final) {
      const group = id.replace(/-s\d+$/, '');
      byGroup.set(group, [...(byGroup.get(group) ?? []), position.get(id)!]);
    }
    for (const order of byGroup.values()) expect(order).toEqual([...order].sort((a, b) => a - b));
    const finalOffsets = await committedOffsets();
    const lastCheckpoint = (await readCheckpointFile(checkpointPath))!;
    for (const o of lastCheckpoint.offsets) expect(finalOffsets.get(String(o.partition))).toBe(BigInt(o.offset));
  }, 180_000);
});

describe('trainer client: announcements, staleness, replay, starvation', () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  const registry = registryClient(connections.schemaRegistryUrl);
  beforeAll(async () => {
    env = await setUp('trainer-admit');
  });
  const base = (): TrainerClientOptions => ({
    kafka: env.kafka,
    registry,
    catalog: env.catalog,
    groupId: `trainer-admit-${randomUUID().slice(0, 8)}`,
    trainer: 'admit-test',
    checkpointPath: join(tempDir(), 'ckpt'),
  });

  it('announce publishes a ModelUpdate that decodes, keyed by model name', async () => {
    const client = await TrainerClient.open(base());
    const update: ModelUpdate = { model: 'policy', version: 'p1', artifact: '/models/policy-p1', checksum: 'ab'.repeat(32), metrics: { examples: 10, train_loss: 0.25 }, at: 1_760_000_000_000 };
    try {
      await client.announce(update);
      await client.announce({ ...update, version: 'p2', at: update.at + 1 });
      await client.announce({ ...update, version: 'p3', at: update.at + 2 });
      expect(client.lag('policy', 'p1')).toBeUndefined(); // no staleness admission: versions not followed
    } finally {
      await client.close();
    }
    const serde = await modelUpdateSerde(registry, env.catalog.modelUpdates);
    const messages = await consumeTopic(env.kafka, env.catalog.modelUpdates, (m) => m.length >= 3, { settleMs: 300 });
    expect(messages.map((m) => m.key!.toString())).toEqual(['policy', 'policy', 'policy']);
    const decoded = await Promise.all(messages.map((m) => serde.deserialize(m.value!)));
    expect(decoded[0]).toEqual(update);
    expect(decoded.map((d) => d.version)).toEqual(['p1', 'p2', 'p3']);
  });

  it('admits by staleness per source, replays with limits, and signals starvation on the control topic', async () => {
    // p1, p2, p3 of "policy" were announced by the previous test: p3 is newest (lag 0), p1 lag 2.
    const rollout = (id: string, version: string, source: string): Rollout => ({
      ...syntheticRollouts({ groups: 1, samplesPerGroup: 1, runId: env.prefix, garbage: 0, invalidRate: 0, duplicateRate: 0 }).rollouts[0]!,
      id,
      group_id: `g-${id}`,
      model_name: 'policy',
      model_version: version,
      tags: { source },
    });
    const cases = [
      ['fresh-synth', 'p3', 'synthetic', null],
      ['lag1-synth', 'p2', 'synthetic', 'stale:model_version'],
      ['lag1-human', 'p2', 'human', null],
      ['lag2-human', 'p1', 'human', 'stale:model_version'],
      ['lag2-replay', 'p1', 'replay', null],
      ['unknown-human', 'p9', 'human', 'stale:unknown_version'],
    ] as const;
    await produceDecisions(env.kafka, env.accepted, cases.map(([id, version, source], i) => decisionOf(rollout(id, version, source), env.prefix, i)));

    const options: TrainerClientOptions = {
      ...base(),
      trainer: 'starving-test',
      admission: {
        staleness: { tag: 'source', maxLag: { synthetic: 0, replay: Number.POSITIVE_INFINITY }, defaultMaxLag: 1, onUnknown: 'reject' },
        replay: { perBatch: 4, maxReuse: 1, coolDownMs: 0, capacity: 100, seed: 3 },
        starvation: { idleMs: 800, checkEveryMs: 100, repeatMs: 60_000 },
      },
    };
    const client = await TrainerClient.open(options);
    const admitted: string[] = [];
    const rejected = new Map<string, string>();
    const replayed: string[] = [];
    try {
      expect(client.lag('policy', 'p3')).toBe(0);
      expect(client.lag('policy', 'p1')).toBe(2);
      const iterator = client.batches({ maxRecords: 100, maxWaitMs: 200 })[Symbol.asyncIterator]();
      while (admitted.length + rejected.size < cases.length) {
        const { value: batch } = await iterator.next();
        for (const d of batch!.decisions) admitted.push(d.value.rollout.id);
        for (const r of batch!.rejected) rejected.set(r.record.kind === 'decision' ? r.record.value.rollout.id : '', r.reason);
        for (const r of batch!.replayed) replayed.push(r.record.value.rollout.id);
      }
      expect(admitted.sort()).toEqual(cases.filter((c) => c[3] === null).map((c) => c[0]).sort());
      expect(Object.fromEntries(rejected)).toEqual(Object.fromEntries(cases.filter((c) => c[3] !== null).map((c) => [c[0], c[3]])));

      // Nothing new arrives: the replay buffer serves each admitted example once more (maxReuse 1)…
      while (replayed.length < admitted.length) {
        const { value: batch } = await iterator.next();
        expect(batch!.records).toHaveLength(0);
        for (const r of batch!.replayed) replayed.push(r.record.value.rollout.id);
      }
      expect(replayed.sort()).toEqual([...admitted].sort());
      expect(client.metrics.replayBuffer).toBe(0);

      // …and the trainer starves: the signal goes to the control topic.
      const signals = async () =>
        (await consumeTopic(env.kafka, env.catalog.control, (m) => m.some((x) => x.key?.toString() === 'starvation.starving-test'), { settleMs: 0, timeoutMs: 20_000 }))
          .filter((m) => m.key?.toString() === 'starvation.starving-test')
          .map((m) => JSON.parse(m.value!.toString()) as StarvationSignal);
      const [starving] = await signals();
      expect(starving).toMatchObject({ kind: 'starvation', trainer: 'starving-test', reason: 'idle' });
      expect(starving!.idle_ms).toBeGreaterThan(800);
      expect(starving!.rejected).toMatchObject({ 'stale:model_version': 2, 'stale:unknown_version': 1 });
      expect(client.metrics.starvation?.starving).toBe(true);
      expect(client.metrics.rejected).toEqual({ 'stale:model_version': 2, 'stale:unknown_version': 1 });

      // Fresh admissible data ends the starvation.
      await produceDecisions(env.kafka, env.accepted, [decisionOf(rollout('late-fresh', 'p3', 'human'), env.prefix, 99)]);
      let late: TrainingBatch | undefined;
      while (late === undefined) {
        const { value: batch } = await iterator.next();
        if (batch!.decisions.length > 0) late = batch!;
      }
      expect(late.decisions.map((d) => d.value.rollout.id)).toEqual(['late-fresh']);
      await waitUntil(() => client.metrics.lastStarvationSignal?.kind === 'starvation-cleared', 'the starvation to clear', 10_000);
      const cleared = await consumeTopic(env.kafka, env.catalog.control, (m) => m.some((x) => x.value?.toString().includes('starvation-cleared')), { settleMs: 0, timeoutMs: 10_000 });
      const kinds = cleared.filter((m) => m.key?.toString() === 'starvation.starving-test').map((m) => (JSON.parse(m.value!.toString()) as StarvationSignal).kind);
      // Starving, then cleared by late-fresh. On a loaded machine the trainer may already be idle
      // again for idleMs before this read, and starve anew: signals alternate, one per change.
      expect(kinds.slice(0, 2)).toEqual(['starvation', 'starvation-cleared']);
      expect(kinds).toEqual(kinds.map((_, i) => (i % 2 === 0 ? 'starvation' : 'starvation-cleared')));
      await iterator.return?.();
    } finally {
      await client.close();
    }
  }, 60_000);
});

describe('trainer client: two members in one group (rebalance)', () => {
  it('splits the partitions; each member trains nothing twice, together they train everything', async () => {
    const env = await setUp('trainer-rebalance');
    const data = syntheticRollouts({ groups: 120, runId: env.prefix, garbage: 0, invalidRate: 0 });
    const decisions = data.rollouts.map((r, i) => decisionOf(r, env.prefix, i));
    await produceDecisions(env.kafka, env.accepted, decisions, { perTransaction: 50 });
    const groupId = `trainer-rebalance-${randomUUID().slice(0, 8)}`;
    const registry = registryClient(connections.schemaRegistryUrl);
    const open = (name: string) =>
      TrainerClient.open({ kafka: env.kafka, registry, catalog: env.catalog, groupId, trainer: name, checkpointPath: join(tempDir(), `${name}.ckpt`), sessionTimeout: 6000 });
    const trained = { a: [] as string[], b: [] as string[] };
    const member = async (client: TrainerClient, into: string[], stop: () => boolean, delayMs: number) => {
      for await (const batch of client.batches({ maxRecords: 10, maxWaitMs: 200 })) {
        for (const d of batch.decisions) into.push(d.value.rollout.id);
        await client.commit(batch, (cp) => cp.write({ trained: into }));
        if (stop()) break;
        await new Promise((r) => setTimeout(r, delayMs));
      }
    };
    const union = () => new Set([...trained.a, ...trained.b]);
    const done = () => union().size >= decisions.length;
    const a = await open('a');
    // A is slow enough that, when B joins, every partition still has records to read.
    const runA = member(a, trained.a, done, 100);
    await waitUntil(() => trained.a.length >= 10, 'member a to start');
    const b = await open('b');
    const runB = member(b, trained.b, done, 30);
    await waitUntil(() => b.metrics.assigned.length > 0 && trained.b.length > 0, 'member b to take partitions over', 30_000);
    await waitUntil(done, 'the two members to cover everything', 60_000);
    a.interrupt();
    b.interrupt();
    await Promise.all([runA, runB]);
    const partitions = [a.metrics.assigned, b.metrics.assigned].map((l) => l.map((x) => x.partition).sort());
    expect(a.metrics.assigned.length).toBeGreaterThan(0);
    await Promise.all([a.close(), b.close()]);
    expect(new Set(trained.a).size, 'member a: nothing twice').toBe(trained.a.length);
    expect(new Set(trained.b).size, 'member b: nothing twice').toBe(trained.b.length);
    expect([...union()].sort()).toEqual(decisions.map((d) => d.rollout.id).sort());
    expect([...partitions[0]!, ...partitions[1]!].sort()).toEqual([0, 1, 2]);
    const overlap = trained.a.filter((id) => trained.b.includes(id)).length;
    console.log(`rebalance: a trained ${trained.a.length}, b ${trained.b.length}, ${overlap} by both (read by a after its last commit of a partition that moved)`);
  }, 90_000);
});

import { map } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { progressLines } from '../cli/progress.ts';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { DLQ_HEADERS } from '../contracts/dead-letter.ts';
import { Instrumentation, type FlywheelEvent, type FlywheelEventMap, type FlywheelEventType } from '../contracts/events.ts';
import type { Envelope } from '../lib/envelope.ts';
import { configureLogging, logger, logSettings, type Logger } from '../lib/log.ts';
import { EXAMPLE_CONFIG, loadConfig, withOverrides } from '../pipeline/config.ts';
import { stateless } from '../pipeline/operator.ts';
import { startTopology, type RunningPipeline } from '../pipeline/run.ts';
import { topologyFromConfig } from '../pipeline/topology.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { publishProgress } from '../trainers/progress.ts';
import { expectedOutcome } from './helpers/expected.ts';
import { connections, consumeTopic, testKafka, uniquePrefix, waitUntil } from './helpers/kafka.ts';

const serverUrl = process.env.FLYWHEEL_TEST_CLICKHOUSE_URL;

const ALL_TYPES: FlywheelEventType[] = [
  'batch.start', 'batch.commit', 'batch.abort', 'group.rebalance', 'state.restoring', 'state.restored', 'state.size',
  'consumer.lag', 'operator.timing', 'decisions', 'dead-letter', 'model.swap', 'sink.insert', 'trainer.progress', 'model.loaded', 'listener.error',
];

/**
 * A real run (Kafka, registry, ClickHouse server) with a listener on every event type: the
 * events' figures must be the ones the topics and the store hold.
 */
describe('instrumentation events of a pipeline run', () => {
  const prefix = uniquePrefix('events');
  const data = syntheticRollouts({ groups: 40, runId: prefix, garbage: 3 });
  const expected = expectedOutcome(data);
  const inputs = data.rollouts.length + data.garbage.length;
  // One accepted rollout makes the last step throw: the processor isolates and dead-letters it (stage "process").
  const poison = [...expected.accepted][0]!;
  const kafka = testKafka('events');
  const events = new Instrumentation();
  const seen = new Map<FlywheelEventType, FlywheelEvent[]>(ALL_TYPES.map((t) => [t, []]));
  const of = <K extends FlywheelEventType>(type: K) => seen.get(type)! as FlywheelEvent<K>[];
  const sum = <K extends FlywheelEventType>(type: K, f: (p: FlywheelEventMap[K]) => number) => of(type).reduce((n, e) => n + f(e.payload), 0);
  const database = `events_${prefix.replace(/[^A-Za-z0-9]/g, '_')}`;
  let store: ClickHouseStore;
  let pipeline: RunningPipeline;
  // The CLI's progress lines, fed by the same events.
  const lines: string[] = [];
  const capture: Logger = { debug: () => undefined, info: (m) => void lines.push(m), warn: (m) => void lines.push(`WARN ${m}`), error: (m) => void lines.push(`ERROR ${m}`), enabled: () => true, child: () => capture };
  let detach: (() => void) | undefined;

  beforeAll(async () => {
    if (!serverUrl) throw new Error('FLYWHEEL_TEST_CLICKHOUSE_URL is not set: run the tests with `npm test`, which starts a ClickHouse server');
    for (const type of ALL_TYPES) events.on(type, (e) => void seen.get(type)!.push(e as FlywheelEvent));
    // A listener that throws on every commit: reported once, and the run goes on.
    events.on('batch.commit', () => {
      throw new Error('a broken listener');
    });
    detach = progressLines(events, { name: 'events', everyMs: 100, log: capture });
    store = await openStore({ url: serverUrl, database });
    const config = withOverrides(loadConfig(EXAMPLE_CONFIG), { name: 'events', run: prefix, topics: { prefix, partitions: 3 } });
    const pill = map((e: Envelope) => {
      if (e.kind === 'sample' && e.rollout.id === poison) throw new Error(`poison pill ${poison}`);
      return e;
    });
    pipeline = await startTopology(topologyFromConfig(config).pipe(stateless(pill, 'poison-pill')), connections, { store, events });
    expect(pipeline.events).toBe(events);
    const serde = await rolloutSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.rollouts);
    await produceRollouts(kafka, serde, data.rollouts, { raw: data.garbage });
    await waitUntil(() => sum('batch.commit', (p) => p.records) >= inputs, () => `commits of all ${inputs} inputs (${sum('batch.commit', (p) => p.records)} so far)`);
  }, 180_000);

  afterAll(async () => {
    detach?.();
    await pipeline?.stop();
    await store?.command(`DROP DATABASE IF EXISTS ${database}`);
    await store?.close();
  });

  it('commits every input record once, in batches that started', () => {
    expect(sum('batch.commit', (p) => p.records)).toBe(inputs);
    expect(of('batch.commit').every((e) => e.payload.topic === pipeline.catalog.rollouts && e.payload.durationMs >= e.payload.commitMs)).toBe(true);
    // Each batch is announced before its parts commit; fetched records cover the committed ones.
    expect(sum('batch.start', (p) => p.records)).toBeGreaterThanOrEqual(inputs);
    // The poison record's parts failed by the record's fault: aborted, split, never retried in place.
    const poisoned = of('batch.abort').filter((e) => e.payload.reason === `poison pill ${poison}`);
    expect(poisoned.length).toBeGreaterThan(0);
    expect(poisoned.every((e) => !e.payload.retriable && e.payload.records >= 1)).toBe(true);
    expect(poisoned.at(-1)!.payload.records).toBe(1);
  });

  it('lists the assigned partitions on rebalance, and restores each one', () => {
    const last = of('group.rebalance').at(-1)!.payload;
    expect(last.groupId).toBe(`${prefix}.events`);
    expect(last.partitions).toEqual([0, 1, 2].map((partition) => ({ topic: pipeline.catalog.rollouts, partition })));
    const restored = of('state.restored').map((e) => e.payload);
    expect(restored.map((p) => p.partition).sort()).toEqual([0, 1, 2]);
    expect(restored.every((p) => p.stores === 1 && p.records === 0)).toBe(true);
    expect(of('state.restoring').map((e) => e.payload.partition).sort()).toEqual([0, 1, 2]);
  });

  it('counts decisions by decision and reason as the decisions topic and ClickHouse hold them', async () => {
    const decided = expected.decided - 1;
    const serde = await decisionSerde(registryClient(connections.schemaRegistryUrl), pipeline.catalog.decisions);
    const messages = await consumeTopic(kafka, pipeline.catalog.decisions, (m) => m.length >= decided);
    const fromTopic = new Map<string, number>();
    for (const m of messages) {
      const d = await serde.deserialize(m.value!);
      fromTopic.set(`${d.decision}/${d.reason}`, (fromTopic.get(`${d.decision}/${d.reason}`) ?? 0) + 1);
    }
    const fromEvents = new Map<string, number>();
    for (const e of of('decisions')) for (const c of e.payload.counts) fromEvents.set(`${c.decision}/${c.reason}`, (fromEvents.get(`${c.decision}/${c.reason}`) ?? 0) + c.count);
    expect(messages.length).toBe(decided);
    expect(fromEvents).toEqual(fromTopic);
    expect(fromEvents.get('rejected/duplicate')).toBeGreaterThan(0);

    await waitUntil(async () => (await store.query<{ n: number }>('SELECT count() AS n FROM samples WHERE pipeline_run = {run:String}', { run: prefix }))[0]!.n >= decided, 'the sink to store every decision');
    const rows = await store.query<{ decision: string; reason: string; n: number }>(
      'SELECT decision, reason, count() AS n FROM samples WHERE pipeline_run = {run:String} GROUP BY decision, reason',
      { run: prefix },
    );
    expect(new Map(rows.map((r) => [`${r.decision}/${r.reason}`, Number(r.n)]))).toEqual(fromEvents);
  });

  it('reports each dead letter with its stage, as the dead-letter topic has it', async () => {
    const dead = expected.dead + 1;
    const messages = await consumeTopic(kafka, pipeline.catalog.deadLetter, (m) => m.length >= dead);
    const header = (m: (typeof messages)[number], name: string) => m.headers![name]!.toString();
    const fromTopic = messages.map((m) => `${header(m, DLQ_HEADERS.partition)}@${header(m, DLQ_HEADERS.offset)}:${header(m, DLQ_HEADERS.stage)}`).sort();
    const fromEvents = of('dead-letter').map((e) => `${e.payload.partition}@${e.payload.offset}:${e.payload.stage}`).sort();
    expect(messages.length).toBe(dead);
    expect(fromEvents).toEqual(fromTopic);
    const stages = new Set(of('dead-letter').map((e) => e.payload.stage));
    expect(stages).toEqual(new Set(['decode', 'validate', 'process']));
    expect(of('dead-letter').find((e) => e.payload.stage === 'process')!.payload.reason).toBe(`poison pill ${poison}`);
  });

  it('sums sink.insert rows to the rows stored', async () => {
    const decided = expected.decided - 1;
    const dead = expected.dead + 1;
    const stored = async (table: string) => Number((await store.query<{ n: number }>(`SELECT count() AS n FROM ${table} WHERE pipeline_run = {run:String}`, { run: prefix }))[0]!.n);
    await waitUntil(async () => (await stored('samples')) >= decided && (await stored('dead_letters')) >= dead, 'the sink to store every decision and dead letter');
    const inserted = (table: string) => sum('sink.insert', (p) => (p.ok && p.table === table ? p.rows : 0));
    await waitUntil(() => inserted('samples') >= decided && inserted('dead_letters') >= dead, 'the sink.insert events of the last blocks');
    expect(inserted('samples')).toBe(await stored('samples'));
    expect(inserted('dead_letters')).toBe(await stored('dead_letters'));
  });

  it('reports the dedupe store size, operator timings and a lag of 0 once everything is read', async () => {
    // The last size per partition: exact-dedupe keeps one entry per distinct accepted-or-not content.
    const latest = new Map<number, FlywheelEventMap['state.size']>();
    for (const e of of('state.size')) latest.set(e.payload.partition, e.payload);
    expect([...latest.values()].every((s) => s.store === 'exact-dedupe' && s.entries > 0 && s.bytes > s.entries)).toBe(true);
    expect([...latest.values()].reduce((n, s) => n + s.entries, 0)).toBeGreaterThan(0);

    // Every step reports; the first sees every input envelope at least once (a retried part runs again).
    const operators = new Set(of('operator.timing').map((e) => `${e.payload.index}:${e.payload.operator}`));
    expect(operators).toEqual(new Set(['0:validate', '1:rule-score', '2:exact-dedupe', '3:threshold-filter', '4:poison-pill']));
    expect(sum('operator.timing', (p) => (p.index === 0 ? p.records : 0))).toBeGreaterThanOrEqual(inputs);
    expect(of('operator.timing').every((e) => e.payload.durationMs >= 0)).toBe(true);

    // The curating group's lag on the rollouts (the sink reports its own group's too).
    const lag = new Map<number, number>();
    for (const e of of('consumer.lag')) if (e.payload.groupId === `${prefix}.events`) lag.set(e.payload.partition, e.payload.lag);
    expect(of('consumer.lag').filter((e) => e.payload.groupId === `${prefix}.events`).every((e) => e.payload.topic === pipeline.catalog.rollouts)).toBe(true);
    expect(lag).toEqual(new Map([[0, 0], [1, 0], [2, 0]]));
  });

  it('reports a trainer step as trainer.progress, and its row as a sink.insert into trainer_progress', async () => {
    const producer = kafka.producer();
    await producer.connect();
    try {
      await publishProgress(producer, pipeline.catalog.trainerProgress, {
        trainer: `${prefix}-trainer`, model_version: 'v3', step: 7, examples: 420, loss: 0.25, metric_names: [], metric_values: [],
        committed_topic: pipeline.catalog.decisions, committed_partitions: [0], committed_offsets: [10], at: Date.now(),
      }, events);
    } finally {
      await producer.disconnect();
    }
    expect(of('trainer.progress').map((e) => e.payload)).toEqual([{ trainer: `${prefix}-trainer`, modelVersion: 'v3', step: 7, examples: 420, loss: 0.25 }]);
    await waitUntil(() => sum('sink.insert', (p) => (p.ok && p.table === 'trainer_progress' ? p.rows : 0)) >= 1, 'the sink to store the progress report');
    const [row] = await store.query<{ n: number }>('SELECT count() AS n FROM trainer_progress WHERE trainer = {t:String}', { t: `${prefix}-trainer` });
    expect(Number(row!.n)).toBe(sum('sink.insert', (p) => (p.ok && p.table === 'trainer_progress' ? p.rows : 0)));
  });

  it('gives the CLI its progress lines: the assignment, then the totals', async () => {
    expect(lines).toContain(`events: partitions [0, 1, 2] of ${pipeline.catalog.rollouts}`);
    await waitUntil(() => lines.some((l) => l.startsWith(`processed ${inputs} rollouts · stored ${expected.decided - 1} samples, ${expected.dead + 1} dead letters`)), () => `the totals line (last: ${lines.at(-1)})`);
    expect(lines).toContain('WARN an instrumentation listener of batch.commit failed: a broken listener');
  });

  it('reports a throwing listener once, and the run goes on', () => {
    expect(of('listener.error').map((e) => e.payload)).toEqual([{ type: 'batch.commit', message: 'a broken listener' }]);
    // The listeners after it kept receiving: every commit was counted above.
    expect(of('batch.commit').length).toBeGreaterThan(1);
  });
});

describe('structured logs (lib/log.ts)', () => {
  it('writes text or JSON lines at or above the level, with fields', () => {
    const before = logSettings();
    const out: string[] = [];
    try {
      configureLogging({ level: 'info', format: 'text', write: (l) => void out.push(l) }, { force: true });
      const log = logger({ component: 'flywheel', sink: 'clickhouse' });
      log.debug('not shown');
      log.warn('store unavailable', { attempt: 3, error: new Error('ECONNREFUSED') });
      configureLogging({ level: 'debug', format: 'json' }, { force: true });
      log.debug('shown', { offset: 10n });
      expect(out[0]).toBe('[flywheel] WARN store unavailable sink=clickhouse attempt=3 error="ECONNREFUSED"\n');
      const json = JSON.parse(out[1]!) as Record<string, unknown>;
      expect(json).toMatchObject({ level: 'debug', msg: 'shown', component: 'flywheel', sink: 'clickhouse', offset: '10' });
      expect(Number.isNaN(Date.parse(json.t as string))).toBe(false);
      expect(out).toHaveLength(2);
    } finally {
      configureLogging(before, { force: true });
    }
  });
});

/**
 * The chaos harness: workers of one group on private services that it breaks on purpose —
 * worker SIGKILLs and restarts, a broker kill -9 and restart, a ClickHouse server killed for a
 * while and frozen (SIGSTOP) past the group session — with bad input mixed into the rollouts.
 * Then it audits every output against what the input must give, exactly once:
 *
 *   const report = await runChaos({ groups: 300, workers: 3, workerKills: 3, log: console.error });
 *   // report.failures is empty when nothing was lost, duplicated or left undecided
 *
 * The test suite runs a small one (tests/chaos.e2e.test.ts); `npm run chaos -- --groups 12500`
 * runs a large one (tests/chaos-run.ts). Kafka and ClickHouse are private instances on their own
 * ports and data directories (deploy/kafka.sh, deploy/clickhouse-server.sh), so killing them
 * disturbs nothing else; the schema registry is the shared one (subjects are per run).
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import avro from 'avsc';
import type { Kafka, KafkaMessage } from 'kafkajs';
import { syntheticRollouts, type SyntheticData } from '../../cli/synthetic.ts';
import { EXAMPLE_CONFIG, loadConfig, withOverrides } from '../../pipeline/config.ts';
import { openStore } from '../../sinks/clickhouse/store.ts';
import { DLQ_HEADERS } from '../../contracts/dead-letter.ts';
import { createKafka } from '../../streams/kafka.ts';
import { rolloutSchema, type Decision, type Rollout } from '../../contracts/records.ts';
import { produceRollouts } from '../../streams/rollout-producer.ts';
import { decisionSerde, registryClient, rolloutSerde, type TopicSerde } from '../../streams/serde.ts';
import { catalogTopicConfigs, ensureTopics, topicCatalog } from '../../streams/topics.ts';
import { expectedOutcome } from './expected.ts';
import { connections, waitUntil } from './kafka.ts';
import { exited, startWorker } from './workers.ts';

const run = promisify(execFile);
const REPO = new URL('../..', import.meta.url).pathname;

export interface ChaosOptions {
  /** Prompt groups of 4 synthetic rollouts each (plus evolved-schema copies, see below). */
  groups: number;
  workers: number;
  workerKills: number;
  brokerRestarts: number;
  /** How long ClickHouse stays killed (ms); 0: no outage. */
  clickhouseOutageMs: number;
  /** How long ClickHouse stays frozen (SIGSTOP, ms); past the group session, so sinks lose their partitions. */
  clickhouseFreezeMs: number;
  /** Base port: Kafka on base and base+1, ClickHouse HTTP on base+2, TCP on base+3, its ZooKeeper on base+4. */
  basePort: number;
  log: (line: string) => void;
}

export const chaosDefaults: ChaosOptions = {
  groups: 300,
  workers: 3,
  workerKills: 3,
  brokerRestarts: 1,
  clickhouseOutageMs: 8_000,
  clickhouseFreezeMs: 15_000,
  basePort: 29092,
  log: () => undefined,
};

export interface ChaosReport {
  inputs: { rollouts: number; evolved: number; unresolvable: number; garbage: number };
  decided: number;
  accepted: number;
  deadLettered: number;
  stored: { samples: number; dead_letters: number };
  faults: string[];
  /** Every way the outputs differ from what the inputs must give; empty when exact. */
  failures: string[];
  seconds: number;
}

/** Runs the whole scenario; services and workers it started are stopped, its data removed. */
export async function runChaos(options: Partial<ChaosOptions> = {}): Promise<ChaosReport> {
  const o = { ...chaosDefaults, ...options };
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-chaos-'));
  const services = new PrivateServices(dir, o.basePort, o.log);
  const workers: Array<{ child: ChildProcess; log: string[] }> = [];
  const faults: string[] = [];
  const fault = (what: string) => {
    faults.push(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
    o.log(`[chaos] ${what}`);
  };
  let reader: OutputReader | undefined;
  try {
    await services.start();
    const prefix = `chaos-${Date.now().toString(36)}`;
    const catalog = topicCatalog(prefix);
    const registryUrl = connections.schemaRegistryUrl;
    const env: NodeJS.ProcessEnv = { ...process.env, KAFKA_BROKERS: services.brokers, SCHEMA_REGISTRY_URL: registryUrl, CLICKHOUSE_URL: services.clickhouseUrl };
    const database = prefix.replace(/-/g, '_');
    const kafka = createKafka({ kafkaBrokers: [services.brokers], schemaRegistryUrl: registryUrl, clickhouseUrl: services.clickhouseUrl }, 'flywheel-chaos');
    const config = withOverrides(loadConfig(EXAMPLE_CONFIG), {
      name: 'chaos',
      run: prefix,
      topics: { prefix, partitions: 3 },
      source: { maxBatchBytes: 16_384 },
      clickhouse: { database },
    });
    const configFile = join(dir, 'pipeline.json');
    writeFileSync(configFile, JSON.stringify(config));

    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, catalogTopicConfigs(catalog, 3));
    await admin.disconnect();

    const registry = registryClient(registryUrl);
    const rollouts = await rolloutSerde(registry, catalog.rollouts);
    const decisions = await decisionSerde(registry, catalog.decisions);
    const input = await chaosInput(o.groups, prefix, registry, catalog.rollouts);
    const expected = expectedOutcome(input.data);
    const expectedEvolved = expectedOutcome(input.evolvedData);
    const totalDecided = expected.decided + expectedEvolved.decided;
    const totalDead = expected.dead + expectedEvolved.dead + input.unresolvable.length;

    reader = new OutputReader(kafka, catalog, decisions);
    await reader.start();

    const spawn = (i: number) => {
      const log: string[] = [];
      workers[i] = { child: startWorker(configFile, log, env), log };
    };
    for (let i = 0; i < o.workers; i++) spawn(i);

    // The input goes in four parts, so faults land while records flow.
    const parts = quarter(input.data.rollouts);
    // Sent only while the broker is up; kafkajs's own retries (one idempotent producer) duplicate nothing.
    // `sent` counts the decisions what was sent so far must give: progress waits never ask for more.
    let sent = 0;
    const send = async (records: readonly Rollout[], raw: readonly Buffer[] = [], evolved = 0) => {
      await produceRollouts(kafka, rollouts, records, { raw });
      sent += records.filter((r) => input.data.fates.get(r.id) !== 'invalid').length + evolved;
    };
    await send(parts[0]!, input.data.garbage);
    const waitDecided = (n: number, what: string) => waitUntil(() => reader!.decided.size >= n, () => `${what} (${reader!.decided.size} of ${n} decided)`, 240_000);

    await send(parts[1]!, input.raw, expectedEvolved.decided);
    for (let k = 0; k < o.workerKills; k++) {
      await waitDecided(Math.min(sent, reader.decided.size + Math.ceil(totalDecided / (4 * o.workerKills + 4))), 'progress before a worker kill');
      const i = k % o.workers;
      workers[i]!.child.kill('SIGKILL');
      await exited(workers[i]!.child);
      fault(`worker ${i} SIGKILLed`);
      spawn(i);
    }

    // Records in flight when the broker dies.
    await send(parts[2]!);
    for (let k = 0; k < o.brokerRestarts; k++) {
      await waitDecided(Math.min(sent, reader.decided.size + 50), 'progress before the broker restart');
      await services.killBroker();
      fault('broker kill -9');
      await services.startBroker();
      fault('broker restarted');
    }

    if (o.clickhouseOutageMs > 0) {
      await services.killClickHouse();
      fault('ClickHouse SIGKILLed');
      await new Promise((r) => setTimeout(r, o.clickhouseOutageMs));
      await services.startClickHouse();
      fault('ClickHouse restarted');
    }
    if (o.clickhouseFreezeMs > 0) {
      await waitUntil(async () => (await services.storedSamples(database)) > 0, 'the sinks to store something before the freeze', 240_000);
      services.signalClickHouse('SIGSTOP');
      fault('ClickHouse frozen (SIGSTOP)');
      await send(parts[3]!);
      await new Promise((r) => setTimeout(r, o.clickhouseFreezeMs));
      services.signalClickHouse('SIGCONT');
      fault('ClickHouse resumed (SIGCONT)');
    } else {
      await send(parts[3]!);
    }

    await waitDecided(totalDecided, 'every rollout decided');
    await waitUntil(() => reader!.dead.size >= totalDead, () => `every bad record dead-lettered (${reader!.dead.size} of ${totalDead})`, 240_000);
    await waitUntil(
      async () => (await services.storedSamples(database)) >= totalDecided && (await services.storedDeadLetters(database)) >= totalDead,
      'the sinks to store everything',
      240_000,
    );
    // Room for anything that would arrive twice: a late duplicate must show up before we count.
    await reader.settle(3_000);

    const failures: string[] = [];
    const check = (ok: boolean, what: string) => void (ok || failures.push(what));
    check(reader.duplicates.length === 0, `decisions twice: ${reader.duplicates.slice(0, 5).join(', ')}`);
    check(reader.decided.size === totalDecided, `decided ${reader.decided.size}, expected ${totalDecided}`);
    const acceptedIds = new Set([...reader.decided.values()].filter((d) => d.decision === 'accepted').map((d) => d.rollout.id));
    const expectedAccepted = new Set([...expected.accepted, ...expectedEvolved.accepted]);
    const missing = [...expectedAccepted].filter((id) => !acceptedIds.has(id));
    const extra = [...acceptedIds].filter((id) => !expectedAccepted.has(id));
    check(missing.length === 0 && extra.length === 0, `accepted set differs: missing ${missing.slice(0, 5).join(', ')}, extra ${extra.slice(0, 5).join(', ')}`);
    check(reader.accepted.length === acceptedIds.size && new Set(reader.accepted).size === reader.accepted.length, `accepted topic: ${reader.accepted.length} records for ${acceptedIds.size} accepted`);
    check(reader.deadDuplicates.length === 0, `dead letters twice: ${reader.deadDuplicates.slice(0, 5).join(', ')}`);
    check(reader.dead.size === totalDead, `dead-lettered ${reader.dead.size}, expected ${totalDead}`);
    const unresolved = [...reader.dead.values()].filter((reason) => /resolv/i.test(reason));
    check(unresolved.length === input.unresolvable.length, `unresolvable-schema dead letters ${unresolved.length}, expected ${input.unresolvable.length}: ${[...new Set(reader.dead.values())].slice(0, 8).join(' | ')}`);

    const stored = await services.audit(database);
    check(stored.samples === totalDecided && stored.sampleIds === totalDecided, `ClickHouse samples: ${stored.samples} rows, ${stored.sampleIds} ids, expected ${totalDecided} (no FINAL)`);
    check(stored.dead_letters === totalDead && stored.deadOffsets === totalDead, `ClickHouse dead_letters: ${stored.dead_letters} rows, ${stored.deadOffsets} offsets, expected ${totalDead}`);
    for (const [i, w] of workers.entries()) {
      if (w.child.exitCode !== null) failures.push(`worker ${i} exited by itself (${w.child.exitCode}): ${w.log.join('').slice(-2000)}`);
    }
    return {
      inputs: { rollouts: input.data.rollouts.length, evolved: input.evolvedData.rollouts.length, unresolvable: input.unresolvable.length, garbage: input.data.garbage.length },
      decided: reader.decided.size,
      accepted: acceptedIds.size,
      deadLettered: reader.dead.size,
      stored: { samples: stored.samples, dead_letters: stored.dead_letters },
      faults,
      failures,
      seconds: (Date.now() - started) / 1000,
    };
  } catch (err) {
    for (const [i, w] of workers.entries()) o.log(`--- worker ${i} (last lines) ---\n${w.log.join('').slice(-3000)}`);
    throw err;
  } finally {
    await reader?.stop().catch(() => undefined);
    for (const w of workers) w.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => exited(w.child)));
    await services.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface ChaosInput {
  data: SyntheticData;
  /** Rollouts of their own whose records are written with an evolved schema of the same subject. */
  evolvedData: SyntheticData;
  /** Records written with a schema that cannot be resolved to the Rollout schema. */
  unresolvable: Buffer[];
  /** The evolved and unresolvable records, in the wire format. */
  raw: Buffer[];
}

/**
 * The input: synthetic rollouts with their garbage; rollouts written by a producer on a
 * backward-compatible evolution of the Rollout schema (fields that have defaults dropped, a field
 * added), registered under the same subject; and rollout-like records of another subject whose
 * `tags` are `map<int>` — which must be dead-lettered, not retried.
 */
async function chaosInput(groups: number, prefix: string, registry: ReturnType<typeof registryClient>, topic: string): Promise<ChaosInput> {
  const data = syntheticRollouts({ groups, runId: prefix, garbage: 4, invalidRate: 0.01 });
  const evolvedData = syntheticRollouts({ groups: Math.max(4, Math.round(groups / 20)), runId: `${prefix}-evolved`, seed: 11, garbage: 0, invalidRate: 0 });
  const evolvedSchema = {
    ...rolloutSchema,
    fields: [...rolloutSchema.fields.filter((f) => f.name !== 'tags' && f.name !== 'logprobs'), { name: 'generator_host', type: 'string', default: '' }],
  };
  const foreignSchema = {
    ...rolloutSchema,
    name: 'ForeignRollout',
    fields: rolloutSchema.fields.map((f) => (f.name === 'tags' ? { name: 'tags', type: { type: 'map', values: 'int' }, default: {} } : f)),
  };
  const evolvedId = await registry.register(`${topic}-value`, { schemaType: 'AVRO', schema: JSON.stringify(evolvedSchema) });
  const foreignId = await registry.register(`${prefix}.foreign-value`, { schemaType: 'AVRO', schema: JSON.stringify(foreignSchema) });
  const evolvedType = avro.Type.forSchema(evolvedSchema as avro.Schema);
  const foreignType = avro.Type.forSchema(foreignSchema as avro.Schema);
  const evolved = evolvedData.rollouts.map((r) => wire(evolvedId, evolvedType.toBuffer({ ...r, generator_host: 'gen-7' })));
  const unresolvable = data.rollouts.slice(0, Math.max(3, Math.round(groups / 50))).map((r, i) =>
    wire(foreignId, foreignType.toBuffer({ ...r, id: `${r.id}-foreign-${i}`, tags: { attempt: i } })),
  );
  return { data, evolvedData, unresolvable, raw: [...evolved, ...unresolvable] };
}

function wire(schemaId: number, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(schemaId, 1);
  return Buffer.concat([header, body]);
}

function quarter<T>(items: readonly T[]): T[][] {
  const size = Math.ceil(items.length / 4);
  return [0, 1, 2, 3].map((i) => items.slice(i * size, (i + 1) * size));
}

/** Reads decisions, accepted and dead letters (read_committed) all along, counting repeats. */
class OutputReader {
  readonly decided = new Map<string, Decision>();
  readonly duplicates: string[] = [];
  readonly accepted: string[] = [];
  /** Dead letters by source partition:offset → reason. */
  readonly dead = new Map<string, string>();
  readonly deadDuplicates: string[] = [];
  private readonly consumer;
  private last = Date.now();

  constructor(
    kafka: Kafka,
    private readonly catalog: ReturnType<typeof topicCatalog>,
    private readonly decisions: TopicSerde<Decision>,
  ) {
    this.consumer = kafka.consumer({ groupId: `${catalog.decisions}.chaos-reader-${Date.now()}`, readUncommitted: false, maxWaitTimeInMs: 250 });
  }

  async start(): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: [this.catalog.decisions, this.catalog.accepted, this.catalog.deadLetter], fromBeginning: true });
    await this.consumer.run({ eachMessage: async ({ topic, message }) => this.take(topic, message) });
  }

  private async take(topic: string, message: KafkaMessage): Promise<void> {
    this.last = Date.now();
    if (topic === this.catalog.deadLetter) {
      const header = (name: string) => message.headers?.[name]?.toString() ?? '';
      const at = `${header(DLQ_HEADERS.topic)}:${header(DLQ_HEADERS.partition)}:${header(DLQ_HEADERS.offset)}`;
      if (this.dead.has(at)) this.deadDuplicates.push(at);
      this.dead.set(at, header(DLQ_HEADERS.reason));
      return;
    }
    const decision = await this.decisions.deserialize(message.value!);
    if (topic === this.catalog.accepted) {
      this.accepted.push(decision.rollout.id);
      return;
    }
    if (this.decided.has(decision.rollout.id)) this.duplicates.push(decision.rollout.id);
    this.decided.set(decision.rollout.id, decision);
  }

  /** Waits until nothing new has arrived for `quietMs`. */
  async settle(quietMs: number): Promise<void> {
    this.last = Date.now();
    await waitUntil(() => Date.now() - this.last >= quietMs, 'the outputs to settle', 60_000);
  }

  stop(): Promise<void> {
    return this.consumer.disconnect();
  }
}

/** Kafka and a ClickHouse server of this run's own, so they can be killed. */
class PrivateServices {
  readonly brokers: string;
  readonly clickhouseUrl: string;
  private readonly env: NodeJS.ProcessEnv;

  constructor(
    private readonly dir: string,
    basePort: number,
    private readonly log: (line: string) => void,
  ) {
    this.brokers = `127.0.0.1:${basePort}`;
    this.clickhouseUrl = `http://127.0.0.1:${basePort + 2}`;
    this.env = {
      ...process.env,
      FLYWHEEL_DATA: dir,
      KAFKA_PORT: String(basePort),
      KAFKA_CONTROLLER_PORT: String(basePort + 1),
      CLICKHOUSE_HTTP_PORT: String(basePort + 2),
      CLICKHOUSE_TCP_PORT: String(basePort + 3),
      // deploy/clickhouse-server.sh starts its ZooKeeper (deploy/zookeeper.sh) on this port.
      ZOOKEEPER_PORT: String(basePort + 4),
    };
  }

  private script(name: string, action: string): Promise<unknown> {
    return run('bash', [join(REPO, 'deploy', name), action], { env: this.env, maxBuffer: 16 * 2 ** 20 }).catch((err: Error & { stderr?: string }) => {
      throw new Error(`${name} ${action} failed: ${err.message}\n${err.stderr ?? ''}`);
    });
  }

  async start(): Promise<void> {
    await Promise.all([this.startBroker(), this.startClickHouse()]);
  }

  startBroker = () => this.script('kafka.sh', 'start');
  startClickHouse = () => this.script('clickhouse-server.sh', 'start');

  private pid(file: string): number {
    return Number(readFileSync(join(this.dir, file), 'utf8').trim());
  }

  async killBroker(): Promise<void> {
    const pid = this.pid('kafka/kafka.pid');
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => !alive(pid), 'the broker to die', 30_000);
  }

  async killClickHouse(): Promise<void> {
    const pid = this.pid('clickhouse-server/clickhouse-server.pid');
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => !alive(pid), 'ClickHouse to die', 30_000);
  }

  signalClickHouse(signal: 'SIGSTOP' | 'SIGCONT'): void {
    process.kill(this.pid('clickhouse-server/clickhouse-server.pid'), signal);
  }

  private async count(database: string, sql: string): Promise<number> {
    const store = await openStore({ url: this.clickhouseUrl, database });
    try {
      const [row] = await store.query<{ n: number | string }>(sql);
      return Number(row?.n ?? 0);
    } catch {
      return 0;
    } finally {
      await store.close().catch(() => undefined);
    }
  }

  storedSamples = (database: string) => this.count(database, 'SELECT count() AS n FROM samples');
  storedDeadLetters = (database: string) => this.count(database, 'SELECT count() AS n FROM dead_letters');

  /** Counts as a reader without FINAL sees them: a row inserted twice shows. */
  async audit(database: string) {
    return {
      samples: await this.storedSamples(database),
      sampleIds: await this.count(database, 'SELECT uniqExact(id) AS n FROM samples'),
      dead_letters: await this.storedDeadLetters(database),
      deadOffsets: await this.count(database, 'SELECT uniqExact(sink_partition, sink_offset) AS n FROM dead_letters'),
    };
  }

  async stop(): Promise<void> {
    try {
      this.signalClickHouse('SIGCONT');
    } catch {
      // not running
    }
    await Promise.allSettled([this.script('clickhouse-server.sh', 'stop'), this.script('kafka.sh', 'stop')]).then((results) =>
      results.forEach((r) => r.status === 'rejected' && this.log(`[chaos] ${(r.reason as Error).message}`)),
    );
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}


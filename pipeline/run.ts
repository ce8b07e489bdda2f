import { from, lastValueFrom, toArray } from 'rxjs';
import { ClickHouseSink } from '../sinks/clickhouse-sink.ts';
import { serveStore, type StoreEndpoint } from '../sinks/clickhouse/http-endpoint.ts';
import { migrate } from '../sinks/clickhouse/schema.ts';
import { openStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { encodeOutputs } from '../sinks/kafka-outputs.ts';
import type { Connections } from '../streams/connections.ts';
import { ExactlyOnceProcessor } from '../streams/exactly-once.ts';
import { createKafka } from '../streams/kafka.ts';
import { decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { catalogTopicConfigs, changelogTopic, changelogTopicConfig, ensureTopics, topicCatalog, type TopicCatalog } from '../streams/topics.ts';
import { configHash, type PipelineConfig } from './config.ts';
import type { Envelope } from '../operators/envelope.ts';
import { buildCurators, declaredStores } from './curators.ts';
import { decodeRollout } from './decode.ts';

export interface PipelineProgress {
  processed: number;
  stored: { samples: number; dead_letters: number };
}

export interface RunningPipeline {
  catalog: TopicCatalog;
  store: ClickHouseStore;
  progress: PipelineProgress;
  /** Settles when the pipeline stops; rejects if a part of it fails for good. */
  stopped: Promise<void>;
  stop(): Promise<void>;
  /**
   * Serves an embedded store over ClickHouse's HTTP interface for other processes (chdb locks
   * its directory to this one) and records the address in the data directory; returns the URL,
   * or undefined for a ClickHouse server, which needs no help.
   */
  serve(): Promise<string | undefined>;
}

/**
 * Starts one pipeline worker: the exactly-once curating processor (rollouts → operators →
 * accepted / decisions / dead-letter topics) and the ClickHouse sink (decisions and dead
 * letters → ClickHouse). Topics and tables are created when missing.
 */
export async function startPipeline(config: PipelineConfig, connections: Connections, store?: ClickHouseStore): Promise<RunningPipeline> {
  const catalog = topicCatalog(config.topics.prefix);
  const stores = declaredStores(config.operators).map((s) => s.name);
  const changelog = (name: string) => changelogTopic(config.topics.prefix, config.name, name);
  const kafka = createKafka(connections, `flywheel-${config.name}`);

  const admin = kafka.admin();
  await admin.connect();
  try {
    await ensureTopics(admin, [
      ...catalogTopicConfigs(catalog, config.topics.partitions),
      ...stores.map((s) => changelogTopicConfig(changelog(s), config.topics.partitions)),
    ]);
  } finally {
    await admin.disconnect();
  }

  const registry = registryClient(connections.schemaRegistryUrl);
  const [rollouts, decisions, accepted] = await Promise.all([
    rolloutSerde(registry, catalog.rollouts),
    decisionSerde(registry, catalog.decisions),
    decisionSerde(registry, catalog.accepted),
  ]);
  const clickhouse = store ?? (await openStore({ url: connections.clickhouseUrl ?? config.clickhouse.url, path: config.clickhouse.path, database: config.clickhouse.database }));
  await migrate(clickhouse);

  const context = { configHash: configHash(config), pipelineRun: config.run };
  const progress: PipelineProgress = { processed: 0, stored: { samples: 0, dead_letters: 0 } };
  const processor = new ExactlyOnceProcessor({
    kafka,
    groupId: `${config.topics.prefix}.${config.name}`,
    inputTopics: [catalog.rollouts],
    stores,
    changelogTopic: changelog,
    fromBeginning: config.source.fromBeginning,
    partitionsConsumedConcurrently: config.source.partitionsConsumedConcurrently,
    maxBatchBytes: config.source.maxBatchBytes,
    assign: (_partition, state) => buildCurators(config.operators, state),
    tickMs: config.source.tickMs,
    process: async (input, partition) => {
      const envelopes: Envelope[] =
        input.kind === 'tick'
          ? [{ kind: 'tick', now: input.now }]
          : await Promise.all(input.messages.map((m) => decodeRollout(m, input.topic, partition.partition, rollouts)));
      const curated = await lastValueFrom(from(envelopes).pipe(partition.local, toArray()));
      return encodeOutputs(curated, partition.partition, { decisions, accepted, deadLetter: catalog.deadLetter, side: { control: catalog.control, weaknesses: catalog.weaknesses, preferencePairs: catalog.preferencePairs } }, context);
    },
    onCommit: ({ records }) => (progress.processed += records),
  });
  const sink = new ClickHouseSink({
    kafka,
    store: clickhouse,
    groupId: `${config.topics.prefix}.${config.name}.clickhouse-sink`,
    decisions,
    deadLetterTopic: catalog.deadLetter,
    onInsert: ({ table, rows }) => (progress.stored[table as keyof PipelineProgress['stored']] += rows),
  });

  const running = await processor.start();
  const sinking = await sink.start();
  let endpoint: StoreEndpoint | undefined;
  let failure: unknown;
  let stopping: Promise<void> | undefined;
  let finished!: () => void;
  const done = new Promise<void>((resolve) => (finished = resolve));
  const stop = () =>
    (stopping ??= (async () => {
      await Promise.allSettled([processor.stop(), sink.stop()]);
      await endpoint?.close();
      if (store === undefined) await clickhouse.close();
      finished();
    })());
  // Either part failing for good stops the whole worker, and `stopped` rejects with its error.
  void Promise.race([running.stopped, sinking.stopped]).then(stop, (err: unknown) => {
    failure = err;
    return stop();
  });
  const stopped = done.then(() => {
    if (failure !== undefined) throw failure;
  });
  return {
    catalog,
    store: clickhouse,
    progress,
    stopped,
    stop,
    serve: async () => {
      if (clickhouse.kind !== 'embedded') return undefined;
      endpoint ??= await serveStore(clickhouse, { dataDir: config.clickhouse.path });
      return endpoint.url;
    },
  };
}

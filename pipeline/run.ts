// First: kafkajs must load with the linear producer grouping (see the module).
import '../streams/kafkajs-producer.ts';
import { from, lastValueFrom, toArray } from 'rxjs';
import type { Envelope } from '../lib/envelope.ts';
import { ErrorMemory } from '../lib/error-memory.ts';
import { labelJoinStores } from '../operators/signals/label-join.ts';
import { AnnouncedVersions } from '../operators/filter/staleness-filter.ts';
import { ClickHouseSink } from '../sinks/clickhouse-sink.ts';
import { serveStore, type StoreEndpoint } from '../sinks/clickhouse/http-endpoint.ts';
import { migrate } from '../sinks/clickhouse/schema.ts';
import { lazyStore, LazyStore, type ClickHouseStore } from '../sinks/clickhouse/store.ts';
import { migrateViews, viewOptionsFrom } from '../analytics/views.ts';
import { deadLetterMessage, encodeOutputs } from '../sinks/kafka-outputs.ts';
import { BroadcastReader } from '../streams/broadcast.ts';
import type { Connections } from '../streams/connections.ts';
import { ExactlyOnceProcessor } from '../streams/exactly-once.ts';
import { createKafka } from '../streams/kafka.ts';
import type { ModelUpdate } from '../contracts/records.ts';
import { decisionSerde, labelSerde, modelUpdateSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { catalogTopicConfigs, changelogTopic, changelogTopicConfig, ensureTopics, internalTopic, topicCatalog, type TopicCatalog } from '../streams/topics.ts';
import type { PipelineConfig } from './config.ts';
import { loadOperatorFiles, type OperatorFiles, type OperatorResources } from './curators.ts';
import { Instrumentation } from '../contracts/events.ts';
import { topologyFromConfig, type Topology } from './topology.ts';
import { decodeRollouts } from './decode.ts';
import { errorFeed, labelJoinProcessor, scoredMessages } from './feedback.ts';
import { hotSwap } from './hot-swap.ts';
import { SignatureCache, takeSignatures, type PublishedSignature } from './near-dup-broadcast.ts';
import { seedPartition } from './seed.ts';
import { log } from '../lib/log.ts';

export interface PipelineProgress {
  processed: number;
  stored: { samples: number; dead_letters: number };
}

export interface RunningPipeline {
  catalog: TopicCatalog;
  /** The worker's instrumentation events (`running.events.on('batch.commit', …)`); `options.events` when given. */
  events: Instrumentation;
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
  /** The version an onnx-score operator following `model` scores with now (undefined: none does). */
  scorerVersion(model: string): string | undefined;
}

export interface PipelineOptions {
  /** A store the caller owns (and closes); otherwise the config's store is opened and closed here. */
  store?: ClickHouseStore;
  /** Read rollouts from this topic instead of `<prefix>.rollouts` (a replay reads another run's input). */
  inputTopic?: string;
  /** A bounded run: per partition, the offsets to start at and to stop before. */
  range?: Map<number, { from: bigint; to: bigint }>;
  /** With `range`: every partition has processed its range. */
  onRangeDone?: () => void;
  /** Told each start-up step as it completes (a worker prints them). */
  onStep?: (step: string) => void;
  /** The event bus the worker's parts emit on; a new one when not given (see RunningPipeline.events). */
  events?: Instrumentation;
}

/** Starts one worker of a JSON config: the topology it compiles to (`topologyFromConfig`), started. */
export function startPipeline(config: PipelineConfig, connections: Connections, options: PipelineOptions = {}): Promise<RunningPipeline> {
  return startTopology(topologyFromConfig(config), connections, options);
}

/**
 * Starts one worker of a topology (refused with a TopologyError listing its problems): the
 * exactly-once curating processor (rollouts → operators → accepted / decisions / dead-letter
 * topics) and the ClickHouse sink (decisions and dead letters → ClickHouse). Topics and tables
 * are created when missing.
 */
export async function startTopology(topology: Topology, connections: Connections, options: PipelineOptions = {}): Promise<RunningPipeline> {
  topology.check();
  // The built-in steps as a config's operators: what loads files, follows models, seeds indexes.
  const config = topology.config;
  const { store } = options;
  const events = options.events ?? new Instrumentation();
  const catalog = topicCatalog(config.topics.prefix);
  const inputTopic = options.inputTopic ?? topology.sourceTopic();
  const stores = topology.stores().map((s) => s.name);
  const changelog = (name: string) => changelogTopic(config.topics.prefix, config.name, name);
  const kafka = createKafka(connections, `flywheel-${config.name}`);

  const admin = kafka.admin();
  await admin.connect();
  try {
    const feedback = config.operators.some((o) => o.type === 'error-compensate');
    const shareSignatures = config.operators.some((o) => o.type === 'near-dedupe' && o.scope === 'global');
    await ensureTopics(admin, [
      ...catalogTopicConfigs(catalog, config.topics.partitions),
      ...stores.map((s) => changelogTopicConfig(changelog(s), config.topics.partitions)),
      ...(feedback
        ? [
            { topic: internalTopic(config.topics.prefix, config.name, 'scored-by-id'), numPartitions: config.topics.partitions, replicationFactor: -1 },
            ...Object.values(labelJoinStores).map((s) => changelogTopicConfig(changelog(s.name), config.topics.partitions)),
          ]
        : []),
      ...(shareSignatures ? [{ topic: internalTopic(config.topics.prefix, config.name, 'near-dup-index'), numPartitions: 1, replicationFactor: -1, configEntries: [{ name: 'retention.ms', value: String(24 * 3600 * 1000) }] }] : []),
    ]);
  } finally {
    await admin.disconnect();
  }

  const step = options.onStep ?? (() => undefined);
  step('topics ready');
  const registry = registryClient(connections);
  const [rollouts, decisions, accepted, labels, modelUpdates] = await Promise.all([
    rolloutSerde(registry, inputTopic),
    decisionSerde(registry, catalog.decisions),
    decisionSerde(registry, catalog.accepted),
    labelSerde(registry, catalog.labels),
    modelUpdateSerde(registry, catalog.modelUpdates),
  ]);

  // What operators need from outside their partition: announced model versions, scorer errors,
  // evaluation sets. Read before the first decision, so a restart decides as the last run did.
  const versions = new AnnouncedVersions();
  const errorMemory = new ErrorMemory(config.labels.memoryCapacity);
  const latest = new Map<string, ModelUpdate>();
  let files: OperatorFiles | undefined;
  const announcements = new BroadcastReader(kafka, catalog.modelUpdates, async (m) => {
    let update: ModelUpdate;
    try {
      update = await modelUpdates.deserialize(m.value!);
    } catch (err) {
      log.warn(`skipping a model update that does not decode: ${(err as Error).message}`);
      return;
    }
    versions.announce({ model: update.model, version: update.version, announcedAt: update.at });
    latest.set(update.model, update);
    if (files !== undefined) await hotSwap(update, config, files, errorMemory, { events });
  });
  const errorsFeed = errorFeed(kafka, catalog.scorerErrors, errorMemory);
  const globalNearDedupe = config.operators.find((o) => o.type === 'near-dedupe' && o.scope === 'global');
  const signatureTopic = internalTopic(config.topics.prefix, config.name, 'near-dup-index');
  const signatures = globalNearDedupe?.type === 'near-dedupe' ? new SignatureCache(globalNearDedupe, globalNearDedupe.maxEntries) : undefined;
  const signatureFeed = signatures && new BroadcastReader(kafka, signatureTopic, (m) => signatures.add(JSON.parse(m.value!.toString()) as PublishedSignature));
  const feeds = [announcements, errorsFeed, ...(signatureFeed ? [signatureFeed] : [])];
  await Promise.all(feeds.map((f) => f.start()));
  await Promise.all(feeds.map((f) => f.caughtUp));
  step('schemas registered; model updates and scorer errors read');
  files = await loadOperatorFiles(config.operators, config.features, (model) => latest.get(model));
  // The versions the scorers start with (the metrics' model info; later changes are model.swap).
  for (const [i, holder] of files.models) {
    const op = config.operators[i];
    if (op?.type === 'onnx-score') events.emit('model.loaded', { operator: op.name, version: holder.current().version });
  }
  const resources: OperatorResources = { versions, files, errorMemory, features: config.features, remoteIndex: signatures };
  const compensated = config.operators.find((o) => o.type === 'error-compensate');
  const scoredTopic = internalTopic(config.topics.prefix, config.name, 'scored-by-id');
  // Opened (and migrated) lazily: the Kafka-to-Kafka path runs while ClickHouse is down, and the
  // sink retries until the store answers. A caller's own store is migrated now.
  const migrateAll = async (s: ClickHouseStore) => {
    await migrate(s);
    // The views count the verified reward and pass@k the explore-exploit operator is configured with.
    await migrateViews(s, undefined, viewOptionsFrom(config.operators));
  };
  const clickhouse = store ?? lazyStore({ url: connections.clickhouseUrl ?? config.clickhouse.url, path: config.clickhouse.path, database: config.clickhouse.database, security: connections.clickhouse }, migrateAll);
  if (store !== undefined) await migrateAll(store);
  if (clickhouse instanceof LazyStore) {
    void clickhouse.ready().then(
      () => step(`ClickHouse ready (${clickhouse.kind})`),
      (err: unknown) => log.warn(`ClickHouse at ${clickhouse.location} is not available yet; the sink retries: ${(err as Error).message}`),
    );
  } else {
    step(`ClickHouse ready (${clickhouse.kind})`);
  }

  const context = { configHash: topology.hash(), pipelineRun: config.run };
  const progress: PipelineProgress = { processed: 0, stored: { samples: 0, dead_letters: 0 } };
  const processor = new ExactlyOnceProcessor({
    kafka,
    groupId: `${config.topics.prefix}.${config.name}`,
    inputTopics: [inputTopic],
    range: options.range === undefined ? undefined : new Map([[inputTopic, options.range]]),
    onRangeDone: options.onRangeDone,
    stores,
    changelogTopic: changelog,
    fromBeginning: config.source.fromBeginning,
    partitionsConsumedConcurrently: config.source.partitionsConsumedConcurrently,
    maxBatchBytes: config.source.maxBatchBytes,
    prepare: config.seed === undefined ? undefined : (partition, state) => seedPartition(config, partition, state, clickhouse, resources.files.encoders),
    assign: (partition, state) => topology.chain(partition, state, resources, { events, topic: inputTopic }),
    tickMs: config.source.tickMs,
    process: async (input, partition) => {
      // One registry round trip at most per batch (new writer ids only), then a synchronous decode.
      const envelopes: Envelope[] = input.kind === 'tick' ? [{ kind: 'tick', now: input.now }] : await decodeRollouts(input.messages, input.topic, partition.partition, rollouts);
      const { envelopes: curated, messages: indexed } = takeSignatures(await lastValueFrom(from(envelopes).pipe(partition.local, toArray())));
      const report = { events, topic: input.kind === 'records' ? input.topic : inputTopic, afterCommit: partition.afterCommit };
      const outputs = encodeOutputs(curated, partition.partition, { decisions, accepted, deadLetter: catalog.deadLetter, rolloutFingerprint: rollouts.fingerprint, side: { control: catalog.control, weaknesses: catalog.weaknesses, preferencePairs: catalog.preferencePairs } }, context, report);
      if (compensated !== undefined) outputs.push({ topic: scoredTopic, messages: scoredMessages(curated, compensated.score, config.features) });
      if (signatures !== undefined) outputs.push({ topic: signatureTopic, messages: indexed });
      return outputs.filter((t) => t.messages.length > 0);
    },
    onCommit: ({ records }) => (progress.processed += records),
    // batch.*, group.rebalance (the CLI prints the assignment: cli/progress.ts), consumer.lag, state.*, dead-letter.
    events,
    // A record whose batch fails by itself (not a service's fault) is dead-lettered, not retried.
    deadLetter: (message, topic, partition, error) => ({
      topic: catalog.deadLetter,
      messages: [deadLetterMessage({ kind: 'dead', source: { topic, partition, offset: message.offset }, payload: message.value, key: message.key, stage: 'process', reason: error.message }, config.run, partition)],
    }),
  });
  const sink = new ClickHouseSink({
    kafka,
    store: clickhouse,
    groupId: `${config.topics.prefix}.${config.name}.clickhouse-sink`,
    decisions,
    deadLetterTopic: catalog.deadLetter,
    trainerProgressTopic: catalog.trainerProgress,
    labels,
    events,
    flushIntervalMs: config.clickhouse.flushIntervalMs,
  });
  events.on('sink.insert', ({ payload: { table, rows, ok } }) => {
    if (ok && (table === 'samples' || table === 'dead_letters')) progress.stored[table] += rows;
  });

  const joiner =
    compensated === undefined
      ? undefined
      : labelJoinProcessor({
          kafka,
          groupId: `${config.topics.prefix}.${config.name}.label-join`,
          labels,
          scoredTopic,
          errorsTopic: catalog.scorerErrors,
          deadLetterTopic: catalog.deadLetter,
          changelogTopic: changelog,
          ttlMs: config.labels.joinTtlMs,
          tickMs: config.source.tickMs,
          pipelineRun: config.run,
        });
  const running = await processor.start();
  const joining = await joiner?.start();
  const sinking = await sink.start();
  let endpoint: StoreEndpoint | undefined;
  let failure: unknown;
  let stopping: Promise<void> | undefined;
  let finished!: () => void;
  const done = new Promise<void>((resolve) => (finished = resolve));
  const stop = () =>
    (stopping ??= (async () => {
      await Promise.allSettled([processor.stop(), sink.stop(), joiner?.stop(), ...feeds.map((f) => f.stop())]);
      await endpoint?.close();
      if (store === undefined) await clickhouse.close();
      finished();
    })());
  // Either part failing for good stops the whole worker, and `stopped` rejects with its error.
  void Promise.race([running.stopped, sinking.stopped, ...(joining ? [joining.stopped] : [])]).then(stop, (err: unknown) => {
    failure = err;
    return stop();
  });
  const stopped = done.then(() => {
    if (failure !== undefined) throw failure;
  });
  return {
    catalog,
    events,
    store: clickhouse,
    progress,
    stopped,
    stop,
    scorerVersion: (model) => {
      const i = config.operators.findIndex((op) => op.type === 'onnx-score' && op.model.name === model);
      return i < 0 ? undefined : files.models.get(i)?.current().version;
    },
    serve: async () => {
      if (clickhouse.kind !== 'embedded') return undefined;
      endpoint ??= await serveStore(clickhouse, { dataDir: config.clickhouse.path, ...config.clickhouse.endpoint });
      return endpoint.url;
    },
  };
}

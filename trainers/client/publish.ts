import type { Kafka, Producer } from 'kafkajs';
import type { ModelUpdate } from '../../contracts/records.ts';
import type { Logger } from '../../lib/log.ts';
import type { AnnouncedVersions } from '../../operators/filter/staleness-filter.ts';
import { BroadcastReader } from '../../streams/broadcast.ts';
import type { TopicSerde } from '../../streams/serde.ts';
import type { TopicCatalog } from '../../streams/topics.ts';
import type { StarvationConfig, StarvationMonitor } from '../admission.ts';
import type { Counters } from './metrics.ts';

/**
 * What a trainer publishes: model updates (Avro, registry wire format, keyed by model name) and
 * JSON messages (control, trainer progress). Every send waits for all in-sync replicas
 * (`acks: -1`) on an idempotent producer. An announced update is also recorded in the client's
 * own `versions`, so its staleness admission sees the new version at once.
 *
 * @example
 *   await publisher.announce({ model: 'policy', version: 'v7', at: Date.now(), … });
 *   await publisher.publishControl('starvation.reference', signal);
 */
export class Publisher {
  constructor(
    private readonly producer: Producer,
    private readonly catalog: TopicCatalog,
    private readonly modelUpdates: TopicSerde<ModelUpdate>,
    private readonly versions: AnnouncedVersions | null,
  ) {}

  async announce(update: ModelUpdate): Promise<void> {
    if (update.model === '' || update.version === '') throw new Error('a model update needs a model name and a version');
    const value = await this.modelUpdates.serialize(update);
    await this.producer.send({ topic: this.catalog.modelUpdates, acks: -1, messages: [{ key: update.model, value }] });
    this.versions?.announce({ model: update.model, version: update.version, announcedAt: update.at });
  }

  async publishControl(key: string, value: object): Promise<void> {
    await this.publishJson(this.catalog.control, key, value);
  }

  async publishJson(topic: string, key: string, value: object): Promise<void> {
    await this.producer.send({ topic, acks: -1, messages: [{ key, value: JSON.stringify(value) }] });
  }
}

/**
 * Follows the model-updates topic into `versions`: every announcement, in order, from the
 * beginning; resolves once the updates present at start are read. An update that does not
 * decode is logged and skipped (it says nothing about any version).
 *
 * @example
 *   const reader = await followModelUpdates(kafka, catalog.modelUpdates, serde, versions, log);
 *   await reader.stop();
 */
export async function followModelUpdates(kafka: Kafka, topic: string, serde: TopicSerde<ModelUpdate>, versions: AnnouncedVersions, log: Logger): Promise<BroadcastReader> {
  const reader = new BroadcastReader(kafka, topic, async (message) => {
    try {
      const update = await serde.deserialize(message.value!);
      versions.announce({ model: update.model, version: update.version, announcedAt: update.at });
    } catch (err) {
      log.warn('skipping a model update that does not decode', { topic, offset: message.offset, error: (err as Error).message });
    }
  });
  await reader.start();
  await reader.caughtUp;
  return reader;
}

/**
 * Checks the starvation monitor every `checkEveryMs`; a signal is kept in the counters and,
 * with `publish`, sent on the control topic as `starvation.<trainer>`. A failed send is logged:
 * the next check signals again if the trainer still starves.
 *
 * @example
 *   const watch = new StarvationWatch('reference', monitor, config, publisher, counters, log);
 *   watch.start(); … watch.stop();
 */
export class StarvationWatch {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly trainer: string,
    private readonly monitor: StarvationMonitor,
    private readonly config: StarvationConfig,
    private readonly publisher: Publisher,
    private readonly counters: Counters,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.check(), this.config.checkEveryMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  private async check(): Promise<void> {
    if (this.stopped) return;
    const signal = this.monitor.check(Date.now());
    if (signal === null) return;
    this.counters.lastStarvationSignal = signal;
    if (!this.config.publish) return;
    try {
      await this.publisher.publishControl(`starvation.${this.trainer}`, signal);
    } catch (err) {
      this.log.warn(`could not publish ${signal.kind}`, { error: (err as Error).message });
    }
  }
}

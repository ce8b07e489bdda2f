import type { Admin, ITopicConfig } from 'kafkajs';

/** Every topic a Flywheel deployment uses, under one namespace prefix. */
export interface TopicCatalog {
  rollouts: string;
  /** Verified outcomes that arrive after the decision, keyed by rollout id. */
  labels: string;
  accepted: string;
  decisions: string;
  deadLetter: string;
  modelUpdates: string;
  control: string;
  /** Prompts the model keeps failing: input for problem synthesis. */
  weaknesses: string;
  /** Chosen/rejected pairs within prompt groups, for DPO-style training. */
  preferencePairs: string;
  /** Scorer errors (label − score) that every worker's error memory reads. */
  scorerErrors: string;
  /** Trainers' progress reports (JSON), stored in ClickHouse's trainer_progress. */
  trainerProgress: string;
}

export function topicCatalog(prefix: string): TopicCatalog {
  return {
    rollouts: `${prefix}.rollouts`,
    labels: `${prefix}.labels`,
    accepted: `${prefix}.accepted`,
    decisions: `${prefix}.decisions`,
    deadLetter: `${prefix}.dead-letter`,
    modelUpdates: `${prefix}.model-updates`,
    control: `${prefix}.control`,
    weaknesses: `${prefix}.weaknesses`,
    preferencePairs: `${prefix}.preference-pairs`,
    scorerErrors: `${prefix}.scorer-errors`,
    trainerProgress: `${prefix}.trainer-progress`,
  };
}

/** A topic internal to one application, e.g. a repartitioning of its own output. */
export function internalTopic(prefix: string, application: string, name: string): string {
  return `${prefix}.${application}.${name}`;
}

/** A state store's changelog: compacted, co-partitioned with the input it is derived from. */
export function changelogTopic(prefix: string, application: string, store: string): string {
  return `${prefix}.${application}.${store}-changelog`;
}

const WEEK_MS = String(7 * 24 * 3600 * 1000);
/** Outputs carry the whole rollout plus scores, so they may outgrow a rollout that just fit in 1 MB. */
const MAX_MESSAGE_BYTES = { name: 'max.message.bytes', value: String(8 * 1024 * 1024) };

/**
 * The settings each topic is created with. Data topics share the input's partition count so
 * keys (group ids) keep their partition end to end; the dead-letter topic keeps its records
 * longer because nothing else holds them.
 */
export function catalogTopicConfigs(catalog: TopicCatalog, partitions: number): ITopicConfig[] {
  const data = (topic: string, retentionMs = WEEK_MS): ITopicConfig => ({
    topic,
    numPartitions: partitions,
    replicationFactor: -1,
    configEntries: [{ name: 'retention.ms', value: retentionMs }, MAX_MESSAGE_BYTES],
  });
  return [
    data(catalog.rollouts),
    data(catalog.labels),
    data(catalog.accepted),
    data(catalog.decisions),
    data(catalog.deadLetter, String(30 * 24 * 3600 * 1000)),
    { topic: catalog.modelUpdates, numPartitions: 1, replicationFactor: -1, configEntries: [{ name: 'retention.ms', value: '-1' }] },
    { topic: catalog.control, numPartitions: 1, replicationFactor: -1 },
    data(catalog.weaknesses),
    data(catalog.preferencePairs),
    { topic: catalog.trainerProgress, numPartitions: 1, replicationFactor: -1 },
    { topic: catalog.scorerErrors, numPartitions: 1, replicationFactor: -1, configEntries: [{ name: 'retention.ms', value: String(24 * 3600 * 1000) }] },
  ];
}

export function changelogTopicConfig(topic: string, partitions: number): ITopicConfig {
  return {
    topic,
    numPartitions: partitions,
    replicationFactor: -1,
    configEntries: [
      { name: 'cleanup.policy', value: 'compact' },
      { name: 'min.compaction.lag.ms', value: '0' },
      { name: 'segment.ms', value: String(3600 * 1000) },
      MAX_MESSAGE_BYTES,
    ],
  };
}

/**
 * Creates the topics that do not exist yet; existing topics are left as they are.
 *
 * kafkajs' own leader wait is off: it asks the broker for the new topics' metadata once and gives up
 * on UNKNOWN_TOPIC_OR_PARTITION, which a loaded broker answers until its metadata cache has caught up
 * with the controller. waitForLeaders polls instead.
 */
export async function ensureTopics(admin: Admin, topics: ITopicConfig[]): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((t) => !existing.has(t.topic));
  if (missing.length === 0) return;
  const names = missing.map((t) => t.topic);
  try {
    await admin.createTopics({ topics: missing, waitForLeaders: false });
  } catch (err) {
    // Another worker may have created them in between; only topics that never show up are an error.
    try {
      await waitForLeaders(admin, names, 10_000);
    } catch {
      throw new Error(`could not create topics ${names.join(', ')}: ${(err as Error).message}`);
    }
    return;
  }
  await waitForLeaders(admin, names);
}

/** Until the broker's metadata shows a leader for every partition of `topics` (a consumer joining earlier would see none). */
async function waitForLeaders(admin: Admin, topics: string[], timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const { topics: metadata } = await admin.fetchTopicMetadata({ topics });
      if (metadata.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return;
    } catch {
      // Not known yet: ask again.
    }
    if (Date.now() > deadline) throw new Error(`topics ${topics.join(', ')} have no leaders after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * admin.fetchTopicOffsets, retried while the broker still settles a just-created topic
 * (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE…): kafkajs hands those retriable errors back
 * from the admin API instead of refreshing its metadata and trying again.
 */
export async function topicOffsets(admin: Admin, topic: string, attempts = 10): ReturnType<Admin['fetchTopicOffsets']> {
  return retryRetriable(admin, topic, attempts, () => admin.fetchTopicOffsets(topic));
}

export async function topicOffsetsAt(admin: Admin, topic: string, timestamp: number, attempts = 10): ReturnType<Admin['fetchTopicOffsetsByTimestamp']> {
  return retryRetriable(admin, topic, attempts, () => admin.fetchTopicOffsetsByTimestamp(topic, timestamp));
}

async function retryRetriable<T>(admin: Admin, topic: string, attempts: number, call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (attempt >= attempts || (err as { retriable?: boolean }).retriable !== true) throw err;
      await admin.fetchTopicMetadata({ topics: [topic] }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

import type { Kafka } from 'kafkajs';
import type { SchemaRegistryClient } from '@confluentinc/schemaregistry';
import type { ModelVersions } from '../../operators/filter/staleness-filter.ts';
import type { Decision, Label } from '../../contracts/records.ts';
import type { TopicCatalog } from '../../streams/topics.ts';
import type { LagFunction, ReplayConfig, StalenessConfig, StarvationConfig, StarvationSignal, StarvationStatus } from '../admission.ts';
import type { CheckpointArray, TopicPartitionOffset } from '../checkpoint.ts';

/** The trainer client's public types (re-exported by trainers/client.ts). */

export interface Consumed<T> {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  /** The Kafka record timestamp, epoch ms. */
  timestamp: number;
  value: T;
}

export type TrainerRecord = ({ kind: 'decision' } & Consumed<Decision>) | ({ kind: 'label' } & Consumed<Label>);

export interface RejectedRecord {
  record: TrainerRecord;
  reason: string;
  lag: number | undefined;
}

export interface SkippedRecord {
  topic: string;
  partition: number;
  offset: string;
  reason: string;
}

export interface ReplayedRecord {
  record: Consumed<Decision>;
  /** Replays of this record so far, this one included. */
  uses: number;
  priority: number;
}

/** One training batch. Its records are covered by `offsets` once committed. */
export interface TrainingBatch {
  /** 1, 2, … per client. */
  readonly seq: number;
  /** Fresh admitted records in arrival order (offset order within each partition). */
  readonly records: readonly TrainerRecord[];
  /** The admitted Decision records of `records`. */
  readonly decisions: ReadonlyArray<Consumed<Decision>>;
  /** The Label records of `records` (labels are not subject to admission). */
  readonly labels: ReadonlyArray<Consumed<Label>>;
  /** Records drawn again from the replay buffer (not new input: they move no offset). */
  readonly replayed: readonly ReplayedRecord[];
  /** Consumed but not admitted: covered by the offsets, never trained. */
  readonly rejected: readonly RejectedRecord[];
  /** Not decodable (not in the registry's wire format, or not the expected record). */
  readonly skipped: readonly SkippedRecord[];
  /**
   * Per topic-partition, the next offset after this batch — cumulative over everything the
   * client has handed out (and everything the restored checkpoint covered): what a commit of
   * this batch records.
   */
  readonly offsets: readonly TopicPartitionOffset[];
}

export interface CheckpointWriter {
  /** The offsets this checkpoint covers (those of the batch being committed). */
  readonly offsets: readonly TopicPartitionOffset[];
  readonly batch: number;
  /**
   * Writes the checkpoint file atomically: `state` (JSON) and `arrays` (stored binary, bit
   * exact) with `offsets`. Call it once the model reflects every record up to the batch.
   */
  write(state: unknown, arrays?: Record<string, CheckpointArray>): Promise<void>;
}

export interface CommitResult {
  offsets: readonly TopicPartitionOffset[];
  /** The Kafka commit is best effort after the checkpoint (the checkpoint is authoritative). */
  kafka: 'committed' | 'failed' | 'nothing-assigned';
}

export interface TrainerMetrics {
  trainer: string;
  group: string;
  batches: number;
  /** Records consumed (admitted + rejected + skipped). */
  consumed: number;
  admitted: number;
  rejected: Record<string, number>;
  replayed: number;
  skipped: number;
  checkpoints: number;
  kafkaCommits: number;
  kafkaCommitFailures: number;
  lastKafkaCommitError: string | null;
  /** Records fetched and waiting for the trainer. */
  buffered: number;
  paused: boolean;
  /** The partitions this member holds, with the position it has handed out to (null: nothing read yet). */
  assigned: Array<{ topic: string; partition: number; position: string | null }>;
  replayBuffer: number;
  starvation: StarvationStatus | null;
  /** The last starvation signal (also published on the control topic when configured). */
  lastStarvationSignal: StarvationSignal | null;
}

export interface AdmissionOptions {
  staleness?: Partial<StalenessConfig>;
  replay?: Partial<ReplayConfig>;
  starvation?: Partial<StarvationConfig>;
}

export interface TrainerClientOptions {
  kafka: Kafka;
  registry: SchemaRegistryClient;
  catalog: TopicCatalog;
  /** The consumer group: one per trainer (job), shared only by members training one model. */
  groupId: string;
  /** This trainer's name: in control messages and client ids. */
  trainer: string;
  /** The checkpoint file (its directory must exist). */
  checkpointPath: string;
  /** Which Decision topic to read: the accepted samples (default), every decision, or none. */
  decisions?: 'accepted' | 'decisions' | null;
  /** Also read the labels topic. */
  labels?: boolean;
  /** Without a checkpoint or committed offset: from the beginning (default) or only new records. */
  fromBeginning?: boolean;
  admission?: AdmissionOptions;
  /**
   * Policy versions for the staleness admission. Default: the client follows the
   * model-updates topic (every announcement, in order) when staleness admission is configured.
   */
  versions?: ModelVersions | LagFunction;
  /** Records fetched ahead of the trainer before the consumer pauses (default 5000). */
  bufferRecords?: number;
  sessionTimeout?: number;
  heartbeatInterval?: number;
  maxBytesPerPartition?: number;
  /** How long a fetch waits for data at the broker (default 500): also bounds how long close() waits. */
  maxWaitTimeInMs?: number;
}

export interface BatchOptions {
  /** Largest number of fresh records in one batch (default 256). */
  maxRecords?: number;
  /** A batch is handed out with fewer records once this long passed (default 1000). */
  maxWaitMs?: number;
  /** Hand out empty batches when nothing arrived within maxWaitMs (default false: wait on). */
  emptyBatches?: boolean;
}

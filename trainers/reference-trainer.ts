import { createHash } from 'node:crypto';
import type { Instrumentation } from '../contracts/events.ts';
import { logger } from '../lib/log.ts';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { featureSize, featurize, type FeatureConfig } from '../contracts/features.ts';
import type { ModelUpdate, Rollout } from '../contracts/records.ts';
import { writeFileAtomic } from './checkpoint.ts';
import type { TrainerProgress } from '../contracts/trainer-progress.ts';
import { TrainerClient, type BatchOptions, type TrainerClientOptions, type TrainingBatch } from './client.ts';
import { createLearner, exampleLoss, type IncrementalLearner, type LearnerConfig } from './incremental.ts';
import type { Kafka } from 'kafkajs';
import { BroadcastReader } from '../streams/broadcast.ts';
import type { TopicCatalog } from '../streams/topics.ts';

/**
 * The reference incremental trainer: closes the loop from verified labels back to the
 * pipeline's onnx-score operator, on CPU.
 *
 * Examples are (features, label) pairs. Features are `featurize(decision.rollout, features)` —
 * the scorer's exact input, since a Decision carries the whole rollout. Labels come either
 * from the labels topic (Label records keyed by rollout id), joined with the Decision records
 * by rollout id, or from a reward present on the Decision (`rollout.rewards[name]`).
 *
 * The join is in memory, bounded and TTL'd: a Decision waits for its Label and a Label for its
 * Decision for `ttlMs` of record time (the newest Kafka timestamp seen) and at most
 * `maxPending` entries each (oldest dropped first). The waiting entries are part of the
 * checkpoint, so a restart loses no pending half of a pair and joins nothing twice. A second
 * label for an already joined rollout waits, unmatched, until it expires. The join needs one
 * consumer per group (labels and decisions are keyed differently, so a partition split between
 * members would split pairs).
 *
 * Every `updateEvery` trained examples (checked after each batch) the trainer:
 * 1. exports the model as ONNX (version `<versionPrefix><n>`, n = 1, 2, … persisted in the
 *    checkpoint; with forgetting, the prior restored first: `IncrementalLearner.restorePrior`) to `<artifactDir>/<model>-<version>.onnx` (atomic write) and computes its
 *    sha256;
 * 2. checkpoints (model, join state, version counter, the update to announce) and commits the
 *    offsets (TrainerClient.commit);
 * 3. announces ModelUpdate{model, version, artifact, checksum, metrics, at}.
 * A crash between 2 and 3 re-announces the checkpoint's last update at the next start
 * (announcements are idempotent by version: the scorer ignores a version it already runs). A
 * crash before 2 overwrites the unannounced artifact with the retrained one of the same version.
 * Between exports it checkpoints every `checkpointEvery` batches.
 */

export type LabelSource = { source: 'topic'; ttlMs: number; maxPending: number } | { source: 'reward'; reward: string };

export interface ReferenceTrainerOptions {
  client: Omit<TrainerClientOptions, 'decisions' | 'labels'>;
  /** The model name announced: the onnx-score operator's `model.name`. */
  model: string;
  /** Must equal the pipeline's `features` config. */
  features: FeatureConfig;
  learner: LearnerConfig;
  labels: LabelSource;
  /** Which Decision topic: every decision (default: no selection bias) or the accepted ones. */
  decisionsTopic?: 'decisions' | 'accepted';
  updateEvery: number;
  /** Checkpoint every this many batches between exports (default 20). */
  checkpointEvery?: number;
  artifactDir: string;
  /** Version names are `<prefix><n>` (default "v"); make it unique per training run. */
  versionPrefix?: string;
  batch?: BatchOptions;
  /** Called after each announcement. */
  onUpdate?: (update: ModelUpdate) => void;
  /**
   * Report each checkpoint on `<prefix>.trainer-progress` (trainers/progress.ts; the pipeline's
   * ClickHouse sink stores it). Default: when the topic exists. Reports never block training.
   */
  progress?: boolean;
  /** Instrumentation (contracts/events.ts): a `trainer.progress` event per checkpoint, topic or not. */
  events?: Instrumentation;
  /**
   * Follow `<prefix>.control` for export requests addressed to this trainer (exportRequestKey;
   * `flywheel trainer export` sends one). Default: when the topic exists.
   */
  control?: boolean;
}

/** The control-topic key of an export request for `trainer`. */
export const exportRequestKey = (trainer: string) => `export.${trainer}`;

/** An export request on the control topic (JSON, key exportRequestKey(trainer)). */
export interface ExportRequest {
  command: 'export';
  trainer: string;
  /** Epoch ms when it was asked: a trainer acts only on requests made after it started. */
  at: number;
}

/**
 * Asks the running trainer `trainer` to export now (after its current batch) rather than after
 * `updateEvery` examples: one JSON message on `<prefix>.control`.
 *
 *   await requestExport(kafka, topicCatalog('flywheel'), 'reference')
 */
export async function requestExport(kafka: Kafka, catalog: TopicCatalog, trainer: string, at = Date.now()): Promise<ExportRequest> {
  const request: ExportRequest = { command: 'export', trainer, at };
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    await producer.send({ topic: catalog.control, acks: -1, messages: [{ key: exportRequestKey(trainer), value: JSON.stringify(request) }] });
  } finally {
    await producer.disconnect();
  }
  return request;
}

interface PendingDecision {
  rollout: Rollout;
  t: number;
}

interface PendingLabel {
  value: number;
  t: number;
}

interface TrainerState {
  /** priorWeight and sinceRestore (LinearState) are absent in checkpoints from before the prior was restored. */
  learner: { kind: IncrementalLearner['kind']; dim: number; examples: number; priorWeight?: number; sinceRestore?: number };
  version: number;
  examples: number;
  /** Examples trained since the last exported version. */
  sinceExport: number;
  lossSum: number;
  lossCount: number;
  clock: number;
  pendingDecisions: Array<[string, PendingDecision]>;
  pendingLabels: Array<[string, PendingLabel]>;
  lastUpdate: ModelUpdate | null;
  counters: ReferenceTrainerStats['counters'];
}

export interface ReferenceTrainerStats {
  examples: number;
  version: number;
  pendingDecisions: number;
  pendingLabels: number;
  counters: { expiredDecisions: number; expiredLabels: number; droppedOverflow: number; unlabelled: number; invalid: number };
  lastUpdate: ModelUpdate | null;
}

export class ReferenceTrainer {
  readonly learner: IncrementalLearner;
  /** Updates announced by this run (re-announcements included). */
  readonly announced: ModelUpdate[] = [];
  private readonly pendingDecisions = new Map<string, PendingDecision>();
  private readonly pendingLabels = new Map<string, PendingLabel>();
  private version = 0;
  private examples = 0;
  private lossSum = 0;
  private lossCount = 0;
  private clock = 0;
  private sinceExport = 0;
  private batchesSinceCheckpoint = 0;
  private lastUpdate: ModelUpdate | null = null;
  private counters: ReferenceTrainerStats['counters'] = { expiredDecisions: 0, expiredLabels: 0, droppedOverflow: 0, unlabelled: 0, invalid: 0 };
  private stopping = false;
  private progressTopic: string | null = null;
  private steps = 0;
  private reports: Promise<void> = Promise.resolve();
  private running: Promise<void> | undefined;
  private exportRequested = false;
  private control: BroadcastReader | undefined;
  private readonly startedAt = Date.now();

  private constructor(
    private readonly options: ReferenceTrainerOptions,
    readonly client: TrainerClient,
  ) {
    const dim = featureSize(options.features);
    const restored = client.restored;
    if (restored === undefined) {
      this.learner = createLearner(options.learner, dim);
      return;
    }
    const state = restored.state as TrainerState;
    if (state.learner.kind !== options.learner.kind || state.learner.dim !== dim) {
      throw new Error(`checkpoint holds a ${state.learner.kind} model of dimension ${state.learner.dim}; configured: ${options.learner.kind}, ${dim}`);
    }
    const { P, w } = restored.arrays;
    if (!(P instanceof Float64Array) || !(w instanceof Float64Array)) throw new Error('checkpoint lacks the model arrays P and w');
    const { examples, priorWeight, sinceRestore } = state.learner;
    this.learner = createLearner(options.learner, dim, { P, w, examples, ...(priorWeight === undefined ? {} : { priorWeight, sinceRestore }) });
    this.version = state.version;
    this.examples = state.examples;
    this.sinceExport = state.sinceExport;
    this.lossSum = state.lossSum;
    this.lossCount = state.lossCount;
    this.clock = state.clock;
    for (const [id, d] of state.pendingDecisions) this.pendingDecisions.set(id, d);
    for (const [id, l] of state.pendingLabels) this.pendingLabels.set(id, l);
    this.lastUpdate = state.lastUpdate;
    this.counters = { ...state.counters };
  }

  /** Opens the client (restoring from its checkpoint) and re-announces the last checkpointed update. */
  static async open(options: ReferenceTrainerOptions): Promise<ReferenceTrainer> {
    if (!(options.updateEvery >= 1)) throw new Error('updateEvery must be at least 1');
    await mkdir(options.artifactDir, { recursive: true });
    const client = await TrainerClient.open({
      ...options.client,
      decisions: options.decisionsTopic ?? 'decisions',
      labels: options.labels.source === 'topic',
    });
    let trainer: ReferenceTrainer | undefined;
    try {
      trainer = new ReferenceTrainer(options, client);
      const topic = options.client.catalog.trainerProgress;
      if (options.progress !== false && (await client.topicExists(topic))) trainer.progressTopic = topic;
      if (trainer.lastUpdate !== null) await trainer.announce(trainer.lastUpdate);
      const control = options.client.catalog.control;
      if (options.control ?? (await client.topicExists(control))) await trainer.followControl(control);
    } catch (err) {
      await trainer?.control?.stop();
      await client.close();
      throw err;
    }
    return trainer;
  }

  get stats(): ReferenceTrainerStats {
    return {
      examples: this.examples,
      version: this.version,
      pendingDecisions: this.pendingDecisions.size,
      pendingLabels: this.pendingLabels.size,
      counters: { ...this.counters },
      lastUpdate: this.lastUpdate,
    };
  }

  /**
   * Export (and announce) after the current batch, whatever `updateEvery` says; with nothing
   * trained since the last version, the last version is announced again. What the control
   * topic's export requests call; idempotent until the export happens.
   */
  requestExport(): void {
    this.exportRequested = true;
  }

  /** Export requests made after this trainer started (older ones on the topic were served or are moot). */
  private async followControl(topic: string): Promise<void> {
    const key = exportRequestKey(this.options.client.trainer);
    this.control = new BroadcastReader(this.options.client.kafka, topic, (message) => {
      if (message.key?.toString() !== key) return;
      try {
        const request = JSON.parse(message.value?.toString() ?? '') as Partial<ExportRequest>;
        if (request.command === 'export' && typeof request.at === 'number' && request.at >= this.startedAt) this.requestExport();
      } catch (err) {
        logger({ component: `trainer ${this.options.client.trainer}` }).warn(`skipping a control message that is not JSON: ${(err as Error).message}`);
      }
    });
    await this.control.start();
  }

  /** Trains until `stop()` (resolves) or the client fails (rejects). */
  run(): Promise<void> {
    this.running ??= this.loop();
    return this.running;
  }

  private async loop(): Promise<void> {
    // Empty batches too, every maxWaitMs: an export request must not wait for the next record.
    const batchOptions = { maxRecords: 256, maxWaitMs: 500, ...this.options.batch, emptyBatches: true };
    for await (const batch of this.client.batches(batchOptions)) {
      // Nothing consumed at all (a wait timed out): only an export request makes it a batch.
      const idle = batch.records.length === 0 && batch.rejected.length === 0 && batch.skipped.length === 0;
      if (idle && !this.exportRequested) {
        if (this.stopping) break;
        continue;
      }
      this.trainBatch(batch);
      if (!idle) this.batchesSinceCheckpoint++;
      if (this.exportRequested) {
        this.exportRequested = false;
        if (this.sinceExport > 0) await this.exportAndAnnounce(batch);
        else if (this.lastUpdate !== null) await this.announce(this.lastUpdate);
      } else if (this.sinceExport >= this.options.updateEvery) await this.exportAndAnnounce(batch);
      else if (this.batchesSinceCheckpoint >= (this.options.checkpointEvery ?? 20)) await this.checkpoint(batch);
      if (this.stopping) break;
    }
  }

  /**
   * Stops after the current batch and closes the client. With `publish`, examples trained since
   * the last version are exported, checkpointed and announced first; without, whatever was not
   * checkpointed is redone by the next run.
   */
  async stop(options: { publish?: boolean } = {}): Promise<void> {
    this.stopping = true;
    this.client.interrupt();
    try {
      await this.running?.catch(() => undefined);
      // Everything handed out is trained once the loop is over: the current position is covered.
      if (options.publish && this.sinceExport > 0) await this.exportAndAnnounce(this.client.emptyBatch());
    } finally {
      await this.control?.stop();
      await this.reports;
      await this.client.close();
    }
  }

  private trainBatch(batch: TrainingBatch): void {
    const labelsFromTopic = this.options.labels.source === 'topic';
    for (const record of batch.records) {
      if (record.timestamp > this.clock) this.clock = record.timestamp;
      if (record.kind === 'decision') {
        const rollout = record.value.rollout;
        if (!labelsFromTopic) {
          const name = (this.options.labels as { reward: string }).reward;
          const value = rollout.rewards[name];
          if (value === undefined || !Number.isFinite(value)) this.counters.unlabelled++;
          else this.train(rollout, value);
          continue;
        }
        const label = this.pendingLabels.get(rollout.id);
        if (label !== undefined) {
          this.pendingLabels.delete(rollout.id);
          this.train(rollout, label.value);
        } else {
          this.pendingDecisions.delete(rollout.id);
          this.pendingDecisions.set(rollout.id, { rollout, t: record.timestamp });
        }
      } else {
        const id = record.value.rollout_id;
        const decision = this.pendingDecisions.get(id);
        if (decision !== undefined) {
          this.pendingDecisions.delete(id);
          this.train(decision.rollout, record.value.value);
        } else {
          this.pendingLabels.delete(id);
          this.pendingLabels.set(id, { value: record.value.value, t: record.timestamp });
        }
      }
    }
    if (labelsFromTopic) this.expire();
  }

  /** Drops join entries older than the TTL (by record time) and beyond maxPending (oldest first). */
  private expire(): void {
    const { ttlMs, maxPending } = this.options.labels as { ttlMs: number; maxPending: number };
    const horizon = this.clock - ttlMs;
    const sweep = <T extends { t: number }>(map: Map<string, T>, counter: 'expiredDecisions' | 'expiredLabels') => {
      for (const [id, entry] of map) {
        if (entry.t < horizon) {
          map.delete(id);
          this.counters[counter]++;
        }
      }
      while (map.size > maxPending) {
        map.delete(map.keys().next().value!);
        this.counters.droppedOverflow++;
      }
    };
    sweep(this.pendingDecisions, 'expiredDecisions');
    sweep(this.pendingLabels, 'expiredLabels');
  }

  private train(rollout: Rollout, label: number): void {
    let x: Float32Array;
    try {
      x = featurize(rollout, this.options.features);
    } catch {
      this.counters.invalid++;
      return;
    }
    if (this.learner.kind === 'logistic' && !(label >= 0 && label <= 1)) {
      this.counters.invalid++;
      return;
    }
    const prediction = this.learner.update(x, label);
    this.lossSum += exampleLoss(this.learner.kind, prediction, label);
    this.lossCount++;
    this.examples++;
    this.sinceExport++;
  }

  private state(): TrainerState {
    return {
      learner: { kind: this.learner.kind, dim: this.learner.dim, ...this.learner.state() },
      version: this.version,
      examples: this.examples,
      sinceExport: this.sinceExport,
      lossSum: this.lossSum,
      lossCount: this.lossCount,
      clock: this.clock,
      pendingDecisions: [...this.pendingDecisions],
      pendingLabels: [...this.pendingLabels],
      lastUpdate: this.lastUpdate,
      counters: this.counters,
    };
  }

  private async checkpoint(batch: TrainingBatch): Promise<void> {
    const arrays = this.learner.arrays();
    await this.client.commit(batch, (cp) => cp.write(this.state(), arrays));
    this.batchesSinceCheckpoint = 0;
    this.steps++;
    this.reportProgress(batch);
  }

  /** Fire and forget: a progress report must not hold up training. */
  private reportProgress(batch: TrainingBatch): void {
    const { events } = this.options;
    if (this.progressTopic === null && !events?.has('trainer.progress')) return;
    const topic = this.options.decisionsTopic === 'accepted' ? this.options.client.catalog.accepted : this.options.client.catalog.decisions;
    const offsets = batch.offsets.filter((o) => o.topic === topic);
    const report: TrainerProgress = {
      trainer: this.options.client.trainer,
      model_version: `${this.options.versionPrefix ?? 'v'}${this.version + (this.sinceExport > 0 ? 1 : 0)}`,
      step: this.steps,
      examples: this.examples,
      loss: this.lossCount > 0 ? this.lossSum / this.lossCount : 0,
      metric_names: ['pending_decisions', 'pending_labels', 'version'],
      metric_values: [this.pendingDecisions.size, this.pendingLabels.size, this.version],
      committed_topic: topic,
      committed_partitions: offsets.map((o) => o.partition),
      committed_offsets: offsets.map((o) => Number(o.offset)),
      at: Date.now(),
    };
    events?.emit('trainer.progress', { trainer: report.trainer, modelVersion: report.model_version, step: report.step, examples: report.examples, loss: report.loss });
    if (this.progressTopic === null) return;
    this.reports = this.client.publishJson(this.progressTopic, report.trainer, report).catch((err: unknown) => {
      logger({ component: `trainer ${report.trainer}` }).warn(`progress report failed: ${(err as Error).message}`);
    });
  }

  private async exportAndAnnounce(batch: TrainingBatch): Promise<void> {
    const version = `${this.options.versionPrefix ?? 'v'}${this.version + 1}`;
    // With forgetting, what is published has the whole prior (an exact step on the same objective; no-op otherwise).
    this.learner.restorePrior();
    const bytes = this.learner.toOnnx(version);
    const artifact = resolve(join(this.options.artifactDir, `${this.options.model}-${version}.onnx`));
    await writeFileAtomic(artifact, bytes);
    const update: ModelUpdate = {
      model: this.options.model,
      version,
      artifact,
      checksum: createHash('sha256').update(bytes).digest('hex'),
      metrics: {
        examples: this.examples,
        version_examples: this.sinceExport,
        train_loss: this.lossCount > 0 ? this.lossSum / this.lossCount : 0,
        dim: this.learner.dim,
      },
      at: Date.now(),
    };
    const previous = { version: this.version, lastUpdate: this.lastUpdate, lossSum: this.lossSum, lossCount: this.lossCount, sinceExport: this.sinceExport };
    this.version += 1;
    this.lastUpdate = update;
    // train_loss is the prequential loss since the previous version.
    this.lossSum = 0;
    this.lossCount = 0;
    this.sinceExport = 0;
    try {
      await this.checkpoint(batch);
    } catch (err) {
      Object.assign(this, previous);
      throw err;
    }
    await this.announce(update);
  }

  private async announce(update: ModelUpdate): Promise<void> {
    await this.client.announce(update);
    this.announced.push(update);
    this.options.onUpdate?.(update);
  }
}

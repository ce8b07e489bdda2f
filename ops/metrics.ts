/*
 * The worker's Prometheus metrics, fed only by its instrumentation events (contracts/events.ts):
 * no log parsing, no polling of the pipeline's internals. Every family below says the event it
 * comes from. Labels carry names (topics, groups, operators, stores, tables, decisions, reasons,
 * stages), never messages, URLs or credentials.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FlywheelEventMap, Instrumentation, TopicPartitionRef } from '../contracts/events.ts';

export interface PipelineMetrics {
  readonly registry: Registry;
  /** The Prometheus text exposition of every family. */
  scrape(): Promise<string>;
  /** Stops listening (the families keep their last values). */
  detach(): void;
}

export interface PipelineMetricsOptions {
  /** A label on every series, e.g. `{ pipeline: config.name }` (names only, no secrets). */
  labels?: Record<string, string>;
  /** prom-client's process and Node.js families (event-loop delay, heap, GC, CPU); default true. */
  defaultMetrics?: boolean;
}

/** Seconds buckets for per-operator time of one batch: sub-millisecond up to seconds. */
const OPERATOR_BUCKETS = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** Seconds buckets for transactions and ClickHouse inserts: milliseconds up to tens of seconds. */
const IO_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

const tp = (p: TopicPartitionRef) => ({ topic: p.topic, partition: String(p.partition) });
const key = (...parts: (string | number)[]) => parts.join('\u0000');

/**
 * Registers the metric families on a fresh registry and keeps them up to date from `events`.
 *
 * Counters count what committed (`batch.commit`, `decisions`, `sink.insert` with ok) so that a
 * finished run's counters equal what ClickHouse stores; gauges of partitions this worker lost in a
 * rebalance are removed, not left at their last value.
 *
 * @example
 * const metrics = pipelineMetrics(running.events, { labels: { pipeline: config.name } });
 * res.end(await metrics.scrape()); // flywheel_records_in_total{topic="p.rollouts",partition="0"} 120 …
 */
export function pipelineMetrics(events: Instrumentation, options: PipelineMetricsOptions = {}): PipelineMetrics {
  const registry = new Registry();
  if (options.labels !== undefined) registry.setDefaultLabels(options.labels);
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  // batch.commit
  const recordsIn = new Counter({ name: 'flywheel_records_in_total', help: 'Input records whose transaction committed (batch.commit).', labelNames: ['topic', 'partition'], registers });
  const recordsOut = new Counter({ name: 'flywheel_records_out_total', help: 'Output records written by committed transactions, by input topic and partition (batch.commit).', labelNames: ['topic', 'partition'], registers });
  const commits = new Counter({ name: 'flywheel_transactions_committed_total', help: 'Committed transactions (batch.commit).', labelNames: ['topic', 'partition'], registers });
  const commitSeconds = new Histogram({ name: 'flywheel_transaction_commit_seconds', help: 'Time of the transaction commit itself (batch.commit commitMs).', labelNames: ['topic'], buckets: IO_BUCKETS, registers });
  const batchSeconds = new Histogram({ name: 'flywheel_batch_duration_seconds', help: 'Time of one batch from fetch to commit (batch.commit durationMs).', labelNames: ['topic'], buckets: IO_BUCKETS, registers });
  // batch.abort
  const aborts = new Counter({ name: 'flywheel_transaction_aborts_total', help: 'Aborted transactions, by whether they are retried (batch.abort).', labelNames: ['topic', 'partition', 'retriable'], registers });
  const retries = new Counter({ name: 'flywheel_transaction_retries_total', help: 'Aborted transactions retried in place (batch.abort with retriable).', labelNames: ['topic', 'partition'], registers });
  // batch.start
  const inFlight = new Counter({ name: 'flywheel_batches_started_total', help: 'Batches that entered the pipeline, retries included (batch.start).', labelNames: ['topic', 'partition'], registers });
  // decisions
  const decisions = new Counter({ name: 'flywheel_decisions_total', help: 'Decisions by decision and reason (decisions).', labelNames: ['decision', 'reason'], registers });
  // operator.timing
  const operatorSeconds = new Histogram({ name: 'flywheel_operator_duration_seconds', help: "One operator's time on one batch (operator.timing).", labelNames: ['operator', 'index'], buckets: OPERATOR_BUCKETS, registers });
  const operatorRecords = new Counter({ name: 'flywheel_operator_records_total', help: 'Records an operator was given (operator.timing).', labelNames: ['operator', 'index'], registers });
  // consumer.lag
  const lag = new Gauge({ name: 'kafka_consumergroup_lag', help: 'Consumer lag: high watermark minus the next offset to process (consumer.lag).', labelNames: ['group', 'topic', 'partition'], registers });
  // group.rebalance
  const rebalances = new Counter({ name: 'flywheel_rebalances_total', help: 'Consumer group rebalances this worker took part in (group.rebalance).', labelNames: ['group'], registers });
  const assignedPartitions = new Gauge({ name: 'flywheel_assigned_partitions', help: 'Partitions assigned to this worker (group.rebalance).', labelNames: ['group'], registers });
  // state.restoring / state.restored / state.size
  const restores = new Counter({ name: 'flywheel_state_restores_total', help: 'Partition state restores finished (state.restored).', labelNames: ['topic', 'partition'], registers });
  const restoredRecords = new Counter({ name: 'flywheel_state_restored_records_total', help: 'Changelog records read by restores (state.restored).', labelNames: ['topic', 'partition'], registers });
  const restoreSeconds = new Histogram({ name: 'flywheel_state_restore_seconds', help: "Time of one partition's restore (state.restored).", buckets: IO_BUCKETS, registers });
  const restoring = new Gauge({ name: 'flywheel_state_restoring_partitions', help: 'Partitions restoring their state now (state.restoring, state.restored).', registers });
  const stateEntries = new Gauge({ name: 'flywheel_state_store_entries', help: "Entries of a state store or dedupe index on one partition (state.size).", labelNames: ['store', 'topic', 'partition'], registers });
  const stateBytes = new Gauge({ name: 'flywheel_state_store_bytes', help: 'Approximate bytes of a state store or dedupe index on one partition (state.size).', labelNames: ['store', 'topic', 'partition'], registers });
  // model.swap
  const modelInfo = new Gauge({ name: 'flywheel_model_info', help: 'The model version an operator scores with: 1 on the version in use (model.loaded, model.swap).', labelNames: ['operator', 'version'], registers });
  const swaps = new Counter({ name: 'flywheel_model_swaps_total', help: 'Model swaps, by outcome swapped or refused (model.swap).', labelNames: ['operator', 'outcome'], registers });
  // dead-letter
  const deadLetters = new Counter({ name: 'flywheel_dead_letters_total', help: 'Records sent to the dead-letter topic, by stage (dead-letter).', labelNames: ['stage'], registers });
  // sink.insert
  const sinkRows = new Counter({ name: 'flywheel_clickhouse_sink_rows_total', help: 'Rows the ClickHouse sink inserted (sink.insert with ok).', labelNames: ['table'], registers });
  const sinkInserts = new Counter({ name: 'flywheel_clickhouse_sink_inserts_total', help: 'ClickHouse INSERTs, by outcome ok or failed (sink.insert).', labelNames: ['table', 'outcome'], registers });
  const sinkFailures = new Counter({ name: 'flywheel_clickhouse_sink_failures_total', help: 'ClickHouse INSERTs that failed (sink.insert without ok).', labelNames: ['table'], registers });
  const sinkSeconds = new Histogram({ name: 'flywheel_clickhouse_sink_insert_seconds', help: 'Time of one ClickHouse INSERT (sink.insert).', labelNames: ['table'], buckets: IO_BUCKETS, registers });
  // trainer.progress
  const trainerStep = new Gauge({ name: 'flywheel_trainer_step', help: "A trainer's last reported step (trainer.progress).", labelNames: ['trainer'], registers });
  const trainerExamples = new Gauge({ name: 'flywheel_trainer_examples', help: 'Examples a trainer has seen (trainer.progress).', labelNames: ['trainer'], registers });
  const trainerLoss = new Gauge({ name: 'flywheel_trainer_loss', help: "A trainer's last reported loss (trainer.progress).", labelNames: ['trainer'], registers });
  // listener.error
  const listenerErrors = new Counter({ name: 'flywheel_instrumentation_listener_errors_total', help: 'Instrumentation listeners that threw, by event type (listener.error).', labelNames: ['type'], registers });

  // What a rebalance must clean up: per group the partitions assigned, per partition the
  // store series set, per operator the version series set.
  const assigned = new Map<string, Set<string>>();
  const storeSeries = new Map<string, Map<string, { store: string; topic: string; partition: string }>>();
  const versions = new Map<string, string>();
  const restoringNow = new Set<string>();

  const useVersion = (operator: string, version: string) => {
    const before = versions.get(operator);
    if (before !== undefined && before !== version) modelInfo.remove({ operator, version: before });
    versions.set(operator, version);
    modelInfo.set({ operator, version }, 1);
  };

  const on = <K extends keyof FlywheelEventMap>(type: K, listener: (payload: FlywheelEventMap[K]) => void) => events.on(type, (e) => listener(e.payload));
  const offs = [
    on('batch.start', (p) => inFlight.inc(tp(p))),
    on('batch.commit', (p) => {
      const labels = tp(p);
      recordsIn.inc(labels, p.records);
      recordsOut.inc(labels, p.outputs);
      commits.inc(labels);
      commitSeconds.observe({ topic: p.topic }, p.commitMs / 1000);
      batchSeconds.observe({ topic: p.topic }, p.durationMs / 1000);
    }),
    on('batch.abort', (p) => {
      aborts.inc({ ...tp(p), retriable: String(p.retriable) });
      if (p.retriable) retries.inc(tp(p));
    }),
    on('decisions', (p) => {
      for (const c of p.counts) if (c.count > 0) decisions.inc({ decision: c.decision, reason: c.reason }, c.count);
    }),
    on('operator.timing', (p) => {
      const labels = { operator: p.operator, index: String(p.index) };
      operatorSeconds.observe(labels, p.durationMs / 1000);
      operatorRecords.inc(labels, p.records);
    }),
    on('consumer.lag', (p) => lag.set({ group: p.groupId, ...tp(p) }, p.lag)),
    on('group.rebalance', (p) => {
      rebalances.inc({ group: p.groupId });
      assignedPartitions.set({ group: p.groupId }, p.partitions.length);
      const now = new Set(p.partitions.map((x) => key(x.topic, x.partition)));
      for (const k of assigned.get(p.groupId) ?? []) {
        if (now.has(k)) continue;
        const [topic, partition] = k.split('\u0000') as [string, string];
        lag.remove({ group: p.groupId, topic, partition });
        for (const labels of storeSeries.get(k)?.values() ?? []) {
          stateEntries.remove(labels);
          stateBytes.remove(labels);
        }
        storeSeries.delete(k);
        if (restoringNow.delete(k)) restoring.set(restoringNow.size);
      }
      assigned.set(p.groupId, now);
    }),
    on('state.restoring', (p) => {
      restoringNow.add(key(p.topic, p.partition));
      restoring.set(restoringNow.size);
    }),
    on('state.restored', (p) => {
      restores.inc(tp(p));
      restoredRecords.inc(tp(p), p.records);
      restoreSeconds.observe(p.durationMs / 1000);
      restoringNow.delete(key(p.topic, p.partition));
      restoring.set(restoringNow.size);
    }),
    on('state.size', (p) => {
      const labels = { store: p.store, ...tp(p) };
      const k = key(p.topic, p.partition);
      const series = storeSeries.get(k) ?? new Map();
      series.set(p.store, labels);
      storeSeries.set(k, series);
      stateEntries.set(labels, p.entries);
      stateBytes.set(labels, p.bytes);
    }),
    on('model.loaded', (p) => useVersion(p.operator, p.version)),
    on('model.swap', (p) => {
      if (p.refused !== undefined) {
        swaps.inc({ operator: p.operator, outcome: 'refused' });
        return;
      }
      // A first load reported as a swap from nothing sets the version without counting a swap.
      if (p.from !== null) swaps.inc({ operator: p.operator, outcome: 'swapped' });
      useVersion(p.operator, p.to);
    }),
    on('dead-letter', (p) => deadLetters.inc({ stage: p.stage })),
    on('sink.insert', (p) => {
      sinkInserts.inc({ table: p.table, outcome: p.ok ? 'ok' : 'failed' });
      sinkSeconds.observe({ table: p.table }, p.durationMs / 1000);
      if (p.ok) sinkRows.inc({ table: p.table }, p.rows);
      else sinkFailures.inc({ table: p.table });
    }),
    on('trainer.progress', (p) => {
      trainerStep.set({ trainer: p.trainer }, p.step);
      trainerExamples.set({ trainer: p.trainer }, p.examples);
      trainerLoss.set({ trainer: p.trainer }, p.loss);
    }),
    on('listener.error', (p) => listenerErrors.inc({ type: p.type })),
  ];

  return {
    registry,
    scrape: () => registry.metrics(),
    detach: () => offs.forEach((off) => off()),
  };
}

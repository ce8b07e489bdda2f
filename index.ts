/**
 * Flywheel as a library: build a curating pipeline in code, with your own operators and named
 * state stores, run it exactly once on Kafka, and listen to what it does.
 *
 * This module is the whole public API (`import … from 'flywheel'`); everything else in the
 * package is internal and may move between versions.
 *
 * - Topology: `topology(settings).source('rollouts').pipe(...steps).sink(...)` is a value that
 *   describes, validates and starts a pipeline; steps are the built-in operators, your own
 *   operators (plain RxJS `OperatorFunction<Envelope, Envelope>`s, stateful ones with named
 *   stores) and plain RxJS operators.
 * - Running: `Topology.start` (and `startPipeline`, for a JSON config) returns a
 *   `RunningPipeline` whose `events` (an `Instrumentation`, events listed in `FlywheelEventMap`)
 *   carry batch, rebalance, state, operator, decision, model, dead-letter and sink events.
 * - Edges: `connectionsFromEnv` reads the services' addresses and credentials from the
 *   environment; the registry serdes and `produceRollouts` write rollouts in the pipeline's wire
 *   format; errors are typed (`retriable` says whether a retry can help).
 *
 * @example
 * import { connectionsFromEnv, exactDedupe, topology, validate } from 'flywheel';
 *
 * const running = await topology({ name: 'curate', topics: { prefix: 'demo' } })
 *   .source('rollouts')
 *   .pipe(validate(), exactDedupe())
 *   .start(connectionsFromEnv());
 * running.events.on('decisions', (e) => console.log(e.payload.counts));
 */

// Topology: the builder, the user-operator API and the built-in operators as steps.
export { topology, topologyFromConfig, Topology, TopologyError, type DeclaredStore, type TopologySettings, type TopologySettingsInput } from './pipeline/topology.ts';
export { defineStore, operator, stateless, type OperatorContext, type OperatorSpec, type Step, type StepLike, type StoreCodec, type StoreDefinition, type StoreOptions, type TypedStore, type UserOperator, type BuiltinStep, type StatelessStep } from './pipeline/operator.ts';
export {
  builtin,
  contaminationFilter,
  errorCompensate,
  exactDedupe,
  exploreExploit,
  groupFilter,
  heuristics,
  nearDedupe,
  onnxScore,
  preferencePairs,
  qdArchive,
  quotaBalance,
  rewardCombine,
  ruleFilter,
  ruleScore,
  selfCertainty,
  semanticDedupe,
  stalenessFilter,
  thresholdFilter,
  validate,
  weaknessTracker,
  type BuiltinInput,
} from './pipeline/builtin-steps.ts';
export type { BuiltinConfig, BuiltinType } from './pipeline/builtins.ts';

// What operators see: envelopes (samples, dead letters, ticks, side outputs) and their state.
export type { Curator, DeadLetter, Emit, Envelope, Sample, SideOutput, Tick } from './lib/envelope.ts';
export { deadLetter, deserializeSample, eventTimeOf, isRejected, mapSamples, serializeSample } from './lib/envelope.ts';
export type { KeyValueStore, StoreSpec } from './streams/state-store.ts';

// Running a pipeline.
export { startPipeline, startTopology, type PipelineOptions, type PipelineProgress, type RunningPipeline } from './pipeline/run.ts';
export { ConfigError, loadConfig, parseConfig, type OperatorConfig, type PipelineConfig } from './pipeline/config.ts';
export { describePipeline } from './pipeline/describe.ts';

// Instrumentation events.
export { Instrumentation, type FlywheelEvent, type FlywheelEventMap, type FlywheelEventType, type FlywheelListener, type TopicPartitionRef } from './contracts/events.ts';

// Records and their Avro schemas.
export { decisionSchema, labelSchema, modelUpdateSchema, rolloutSchema } from './contracts/records.ts';
export type { Decision, Label, ModelUpdate, Rollout, SourceRef, TrajectoryStep, Verdict } from './contracts/records.ts';

// Connections to Kafka, the schema registry and ClickHouse.
export { connectionsFromEnv, describeConnections, type Connections } from './streams/connections.ts';
export { createKafka } from './streams/kafka.ts';
export { topicCatalog, type TopicCatalog } from './streams/topics.ts';

// Serdes: the registry's wire format (Confluent framing, Avro), and producing rollouts in it.
export { decisionSerde, labelSerde, modelUpdateSerde, registryClient, rolloutSerde, topicSerde, type TopicSerde } from './streams/serde.ts';
export { produceRollouts } from './streams/rollout-producer.ts';

// Typed errors.
export { FlywheelError, RecordError, UnavailableError, errorKind, retriable, type RecordRef } from './streams/errors.ts';

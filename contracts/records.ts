/**
 * The records Flywheel moves: the rollout that generators produce, and the decision the
 * pipeline makes about it. Their Avro schemas are registered per topic in the schema registry
 * (subject `<topic>-value`); the TypeScript types mirror them field for field.
 */

export interface TrajectoryStep {
  role: string;
  content: string;
}

export interface Rollout {
  /** Idempotency key: a rollout re-sent with the same id is the same rollout. */
  id: string;
  /** The generator's run or experiment. */
  run_id: string;
  prompt_id: string;
  prompt: string;
  /** N samples drawn for one prompt share a group id; topics are keyed by it. */
  group_id: string;
  response: string | null;
  steps: TrajectoryStep[];
  model_name: string;
  model_version: string;
  rewards: Record<string, number>;
  /** Per-token log-probabilities of the response, when the generator kept them. */
  logprobs: number[] | null;
  token_count: number;
  /** Epoch milliseconds at generation. */
  created_at: number;
  tags: Record<string, string>;
}

export interface SourceRef {
  topic: string;
  partition: number;
  offset: string;
}

export type Verdict = 'accepted' | 'rejected';

export interface Decision {
  rollout: Rollout;
  scores: Record<string, number>;
  duplicate_of: string | null;
  dedupe_method: string | null;
  /** Every filter reason that applied, in operator order. */
  reasons: string[];
  decision: Verdict;
  /** The deciding reason: the first of `reasons`, or "accepted". */
  reason: string;
  config_hash: string;
  scorer_version: string | null;
  /** Operator labels for analytics: QD cell, quota bucket, cluster… */
  annotations: Record<string, string>;
  pipeline_run: string;
  source: SourceRef;
}

const trajectoryStep = {
  type: 'record',
  name: 'TrajectoryStep',
  fields: [
    { name: 'role', type: 'string' },
    { name: 'content', type: 'string' },
  ],
};

export const rolloutSchema = {
  type: 'record',
  name: 'Rollout',
  namespace: 'flywheel',
  fields: [
    { name: 'id', type: 'string' },
    // Defaults: a producer whose evolved schema drops these still resolves to this reader.
    { name: 'run_id', type: 'string', default: '' },
    { name: 'prompt_id', type: 'string' },
    { name: 'prompt', type: 'string' },
    { name: 'group_id', type: 'string' },
    { name: 'response', type: ['null', 'string'], default: null },
    { name: 'steps', type: { type: 'array', items: trajectoryStep }, default: [] },
    { name: 'model_name', type: 'string', default: '' },
    { name: 'model_version', type: 'string' },
    { name: 'rewards', type: { type: 'map', values: 'double' }, default: {} },
    { name: 'logprobs', type: ['null', { type: 'array', items: 'float' }], default: null },
    { name: 'token_count', type: 'int', default: 0 },
    { name: 'created_at', type: { type: 'long', logicalType: 'timestamp-millis' } },
    { name: 'tags', type: { type: 'map', values: 'string' }, default: {} },
  ],
} as const;

export const decisionSchema = {
  type: 'record',
  name: 'Decision',
  namespace: 'flywheel',
  fields: [
    { name: 'rollout', type: rolloutSchema },
    { name: 'scores', type: { type: 'map', values: 'double' } },
    { name: 'duplicate_of', type: ['null', 'string'], default: null },
    { name: 'dedupe_method', type: ['null', 'string'], default: null },
    { name: 'reasons', type: { type: 'array', items: 'string' } },
    { name: 'decision', type: { type: 'enum', name: 'Verdict', symbols: ['accepted', 'rejected'] } },
    { name: 'reason', type: 'string' },
    { name: 'config_hash', type: 'string' },
    { name: 'scorer_version', type: ['null', 'string'], default: null },
    { name: 'annotations', type: { type: 'map', values: 'string' }, default: {} },
    { name: 'pipeline_run', type: 'string' },
    {
      name: 'source',
      type: {
        type: 'record',
        name: 'SourceRef',
        fields: [
          { name: 'topic', type: 'string' },
          { name: 'partition', type: 'int' },
          // Kafka offsets are int64; kept as a decimal string so no precision is lost in JS.
          { name: 'offset', type: 'string' },
        ],
      },
    },
  ],
} as const;

/** A verified outcome that arrives after the decision, keyed by rollout id on the labels topic. */
export interface Label {
  rollout_id: string;
  /** The verified outcome: 1/0 for right/wrong, or a graded value. */
  value: number;
  verifier: string;
  /** Epoch milliseconds. */
  at: number;
}

export const labelSchema = {
  type: 'record',
  name: 'Label',
  namespace: 'flywheel',
  fields: [
    { name: 'rollout_id', type: 'string' },
    { name: 'value', type: 'double' },
    { name: 'verifier', type: 'string', default: '' },
    { name: 'at', type: { type: 'long', logicalType: 'timestamp-millis' } },
  ],
} as const;

/** A new model announced on the model-updates topic (keyed by model name). */
export interface ModelUpdate {
  model: string;
  version: string;
  /** Where the artifact is: a file path or URI the scorer can load. */
  artifact: string;
  /** sha256 of the artifact, hex. */
  checksum: string;
  metrics: Record<string, number>;
  /** Epoch milliseconds. */
  at: number;
}

export const modelUpdateSchema = {
  type: 'record',
  name: 'ModelUpdate',
  namespace: 'flywheel',
  fields: [
    { name: 'model', type: 'string' },
    { name: 'version', type: 'string' },
    { name: 'artifact', type: 'string' },
    { name: 'checksum', type: 'string' },
    { name: 'metrics', type: { type: 'map', values: 'double' }, default: {} },
    { name: 'at', type: { type: 'long', logicalType: 'timestamp-millis' } },
  ],
} as const;

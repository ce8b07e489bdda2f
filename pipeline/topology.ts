// First: run.ts, which loads kafkajs with the linear producer grouping (streams/kafkajs-producer.ts)
// before anything else does; index.ts imports this module first.
import { startTopology, type PipelineOptions, type RunningPipeline } from './run.ts';
import { createHash } from 'node:crypto';
import { identity, pipe } from 'rxjs';
import { z } from 'zod';
import type { Instrumentation } from '../contracts/events.ts';
import type { Curator } from '../lib/envelope.ts';
import { labelJoinStores } from '../operators/signals/label-join.ts';
import type { Connections } from '../streams/connections.ts';
import type { PartitionState } from '../streams/state-store.ts';
import { changelogTopic, topicCatalog } from '../streams/topics.ts';
import { buildBuiltin, storeOf } from './builtins.ts';
import { builtinStep } from './builtin-steps.ts';
import { ConfigError, operatorOrderProblems, pipelineConfigSchema, type OperatorConfig, type PipelineConfig } from './config.ts';
import type { OperatorResources } from './curators.ts';
import { describeTopology } from './describe.ts';
import { timed } from './instrument.ts';
import { operatorContext, storeNamesOf, toStep, type Step, type StepLike } from './operator.ts';

/** Everything a pipeline config says besides its operators: name, run, topics, source, features… */
export const topologySettingsSchema = pipelineConfigSchema.omit({ operators: true });
export type TopologySettings = z.output<typeof topologySettingsSchema>;
export type TopologySettingsInput = z.input<typeof topologySettingsSchema>;
type SourceSettings = NonNullable<TopologySettingsInput['source']>;
type ClickHouseSettings = NonNullable<TopologySettingsInput['clickhouse']>;

/** The sources a topology may read, by their name in the topic catalog. */
const SOURCES = ['rollouts'] as const;

/** Store names the pipeline keeps for itself (the label join's, in its own processor). */
const RESERVED_STORES: ReadonlySet<string> = new Set(Object.values(labelJoinStores).map((s) => s.name));

const NAME = /^[A-Za-z0-9._-]+$/;
/** Kafka refuses longer topic names. */
const MAX_TOPIC = 249;

/** A topology that does not hold together; `problems` lists every reason, each naming the step. */
export class TopologyError extends ConfigError {
  constructor(
    readonly topologyName: string,
    readonly problems: readonly string[],
  ) {
    super(`topology ${topologyName} is not valid:\n${problems.map((p) => `  ✖ ${p}`).join('\n')}`);
  }
}

/** A store of the topology and the step that declares it. */
export interface DeclaredStore {
  name: string;
  /** The declaring step's name (a built-in's type, a user operator's name). */
  owner: string;
}

/**
 * A pipeline as a value: what it reads, its steps in order (built-in operators, user operators
 * with their named stores, plain RxJS operators) and where it writes. Every method returns a new
 * Topology; nothing connects until `start`.
 *
 * 1. `topology(settings)` takes what a JSON config takes besides `operators` (validated now,
 *    errors name the field);
 * 2. `.source('rollouts')` reads `<prefix>.rollouts` (the only source so far; a replay passes
 *    `inputTopic`), with optional source settings;
 * 3. `.pipe(...steps)` appends steps; `.sink({ clickhouse })` sets the ClickHouse store (the
 *    accepted / decisions / dead-letter topics are always written);
 * 4. `problems()` lists what is wrong (no source, duplicate names or stores, order); `describe()`
 *    and `start()` refuse a topology with problems (TopologyError).
 *
 * A JSON config compiles to the same value (`topologyFromConfig`), with the same description and
 * the same config hash on every decision.
 *
 * @example
 * const t = topology({ name: 'curate', topics: { prefix: 'flywheel' } })
 *   .source('rollouts')
 *   .pipe(validate(), ruleScore({ rewards: { correct: 1 } }), capPerPrompt, exactDedupe())
 *   .sink({ clickhouse: { url: 'http://127.0.0.1:8123' } });
 * console.log(t.describe());
 * const running = await t.start(connectionsFromEnv());
 */
export class Topology {
  constructor(
    readonly settings: TopologySettings,
    readonly sourceName: string | undefined,
    readonly steps: readonly Step[],
  ) {}

  get name(): string {
    return this.settings.name;
  }

  source(name: string, options: SourceSettings = {}): Topology {
    return new Topology(reparse({ ...this.settings, source: { ...this.settings.source, ...options } }), name, this.steps);
  }

  pipe(...steps: StepLike[]): Topology {
    return new Topology(this.settings, this.sourceName, [...this.steps, ...steps.map(toStep)]);
  }

  sink(options: { clickhouse?: ClickHouseSettings }): Topology {
    return new Topology(reparse({ ...this.settings, ...(options.clickhouse === undefined ? {} : { clickhouse: options.clickhouse }) }), this.sourceName, this.steps);
  }

  /** The topic the source names, under the topology's prefix. */
  sourceTopic(): string {
    return topicCatalog(this.settings.topics.prefix)[this.sourceName as (typeof SOURCES)[number]];
  }

  /** Every store of the topology, in step order, with its owner. */
  stores(): DeclaredStore[] {
    const stores = new Map<string, DeclaredStore>();
    for (const step of this.steps) {
      for (const name of storeNamesOf(step)) if (!stores.has(name)) stores.set(name, { name, owner: step.name });
    }
    return [...stores.values()];
  }

  /** What is wrong with the topology, each naming the step at fault; empty when it can run. */
  problems(): string[] {
    const problems: string[] = [];
    const at = (i: number) => `step ${i + 1} (${this.steps[i]!.name})`;
    if (this.sourceName === undefined) problems.push(`no source: call .source('rollouts')`);
    else if (!(SOURCES as readonly string[]).includes(this.sourceName)) {
      problems.push(`unknown source "${this.sourceName}": a topology reads ${SOURCES.map((s) => `"${s}"`).join(', ')} (the topic ${this.settings.topics.prefix}.rollouts); PipelineOptions.inputTopic reads another topic of rollouts`);
    }
    if (this.steps.length === 0) problems.push('no steps: pipe at least one operator');
    this.steps.forEach((step, i) => {
      if (step.kind === 'builtin') return;
      if (!NAME.test(step.name)) problems.push(`${at(i)}: the name "${step.name}" may use letters, digits, ".", "_" or "-" only`);
      if (step.kind !== 'operator') return;
      const other = this.steps.findIndex((s, j) => j !== i && s.name === step.name && (s.kind !== 'operator' || j < i));
      if (other >= 0) problems.push(`${at(i)}: the name "${step.name}" is taken by step ${other + 1}; operator names must be unique`);
    });
    const owners = new Map<string, number>();
    this.steps.forEach((step, i) => {
      const names = storeNamesOf(step);
      names.forEach((name, k) => {
        if (names.indexOf(name) !== k) return void problems.push(`${at(i)}: declares store "${name}" twice`);
        if (step.kind === 'operator') {
          if (!NAME.test(name)) problems.push(`${at(i)}: store name "${name}" may use letters, digits, ".", "_" or "-" only (it names a topic)`);
          if (RESERVED_STORES.has(name)) problems.push(`${at(i)}: store name "${name}" is the pipeline's own (label join); choose another`);
        }
        const first = owners.get(name);
        // Two built-ins of one type are reported below, as a JSON config reports them.
        if (first !== undefined && !(step.kind === 'builtin' && this.steps[first]!.kind === 'builtin')) {
          problems.push(`${at(i)}: store "${name}" is already declared by ${at(first)}; a store belongs to one operator`);
        }
        if (first === undefined) owners.set(name, i);
      });
    });
    for (const { name, owner } of this.stores()) {
      const topic = changelogTopic(this.settings.topics.prefix, this.name, name);
      if (topic.length > MAX_TOPIC) problems.push(`store "${name}" of ${owner}: its changelog topic ${topic} is longer than Kafka's ${MAX_TOPIC} characters`);
    }
    const steps = this.steps.map((s) => (s.kind === 'builtin' ? { type: s.config.type, mode: 'mode' in s.config ? s.config.mode : undefined } : { type: `${s.kind}:${s.name}` }));
    for (const { index, message } of operatorOrderProblems(steps)) problems.push(`${at(index)}: ${message}`);
    return problems;
  }

  /** Throws a TopologyError listing every problem, or returns the topology. */
  check(): this {
    const problems = this.problems();
    if (problems.length > 0) throw new TopologyError(this.name, problems);
    return this;
  }

  /** The dataflow as text (what `flywheel describe` prints): source, steps with their stores, sinks. */
  describe(): string {
    return describeTopology(this.check());
  }

  /** The built-in steps' configs, in order: what loads files, follows models, seeds indexes. */
  builtinConfigs(): OperatorConfig[] {
    return this.steps.flatMap((s) => (s.kind === 'builtin' ? [s.config] : []));
  }

  /**
   * The settings with the built-in steps as `operators`: the form the pipeline's machinery
   * (file loading, hot swap, seeding, views) reads. Equal to the config for a compiled config.
   */
  get config(): PipelineConfig {
    return { ...this.settings, operators: this.builtinConfigs() };
  }

  /**
   * Identifies what decides: the steps and their settings, in order, recorded on every decision
   * (`config_hash`). A topology of built-ins only hashes as its JSON config does (`configHash`);
   * a user operator counts by name, version and stores.
   */
  hash(): string {
    const identities = this.steps.map((s) =>
      s.kind === 'builtin' ? s.config : s.kind === 'operator' ? { operator: s.name, version: s.version ?? null, stores: s.stores.map((d) => d.name) } : { stateless: s.name },
    );
    return createHash('sha256').update(JSON.stringify(identities)).digest('hex').slice(0, 16);
  }

  /**
   * One partition's chain over that partition's (restored) state, in step order. With
   * `instrument`, each step reports `operator.timing` events (pipeline/instrument.ts `timed`).
   */
  chain(partition: number, state: PartitionState, resources: OperatorResources, instrument?: { events: Instrumentation; topic: string }): Curator {
    let builtinIndex = 0;
    const curators = this.steps.map((step): Curator => {
      switch (step.kind) {
        case 'builtin': {
          const store = storeOf(step.config.type);
          return buildBuiltin(step.config, { store: () => state.store(store!.name), resources, index: builtinIndex++ });
        }
        case 'operator':
          return step.build(operatorContext(step, partition, state));
        case 'stateless':
          return step.operator;
      }
    });
    const steps = instrument === undefined ? curators : curators.map((c, i) => timed(instrument.events, this.steps[i]!.name, i, c, { topic: instrument.topic, partition }));
    return steps.reduce<Curator>((chain, step) => pipe(chain, step), identity);
  }

  /** Starts one worker of this topology (see startTopology in pipeline/run.ts). */
  start(connections: Connections, options: PipelineOptions = {}): Promise<RunningPipeline> {
    return startTopology(this, connections, options);
  }
}

function reparse(settings: TopologySettingsInput): TopologySettings {
  const result = topologySettingsSchema.safeParse(settings);
  if (!result.success) throw new ConfigError(`not valid topology settings:\n${z.prettifyError(result.error)}`);
  return result.data;
}

/**
 * A topology in code, from what a JSON config takes besides `operators`; add `.source()`,
 * `.pipe()`, `.sink()`. Settings are validated now; errors name the field.
 *
 *   topology({ name: 'curate', topics: { prefix: 'flywheel', partitions: 3 } })
 */
export function topology(settings: TopologySettingsInput): Topology {
  return new Topology(reparse(settings), undefined, []);
}

/** The topology a (validated) JSON config makes: source "rollouts", its operators as built-in steps. */
export function topologyFromConfig(config: PipelineConfig): Topology {
  const { operators, ...settings } = config;
  return new Topology(settings, 'rollouts', operators.map((op) => builtinStep(op)));
}

import type { OperatorFunction } from 'rxjs';
import type { Curator, Envelope } from '../lib/envelope.ts';
import type { KeyValueStore, PartitionState } from '../streams/state-store.ts';
import { storeOf, type BuiltinConfig, type BuiltinType } from './builtins.ts';
import type { OperatorResources } from './curators.ts';

/** How a store's values are kept as strings on the changelog; JSON unless told otherwise. */
export interface StoreCodec<V> {
  encode(value: V): string;
  decode(text: string): V;
}

/**
 * A named state store, Kafka Streams style: declared next to the operator that uses it, one per
 * pipeline. Its name names its changelog topic, `<prefix>.<pipeline>.<name>-changelog`.
 */
export interface StoreDefinition<V> {
  readonly name: string;
  readonly codec: StoreCodec<V>;
}

export interface StoreOptions<V> {
  /** How values become changelog strings; default JSON (`JSON.stringify` / `JSON.parse`). */
  codec?: StoreCodec<V>;
}

const json: StoreCodec<never> = { encode: (v) => JSON.stringify(v), decode: (t) => JSON.parse(t) as never };

/**
 * Declares a named store of values of type `V`, for `operator({ stores: [...] })`.
 *
 *   const counts = defineStore<number>('prompt-counts');
 *   // in the operator: ctx.store(counts).put(promptId, (ctx.store(counts).get(promptId) ?? 0) + 1)
 */
export function defineStore<V>(name: string, options: StoreOptions<V> = {}): StoreDefinition<V> {
  return { name, codec: (options.codec ?? json) as StoreCodec<V> };
}

/**
 * One partition's typed view of a store. Semantics are those of the built-in operators' state
 * (streams/state-store.ts): a write is seen at once by later reads, reaches the changelog with
 * the batch's Kafka transaction, and is forgotten if that transaction aborts (the batch is then
 * retried on the state it saw the first time); a partition taken over by another worker, or
 * after a crash, starts from its changelog.
 */
export interface TypedStore<V> {
  get(key: string): V | undefined;
  put(key: string, value: V): void;
  delete(key: string): void;
  /** Committed entries (staged writes not counted). */
  readonly size: number;
}

/** What a user operator is given when one of its partitions is assigned. */
export interface OperatorContext {
  /** The input partition this instance serves; each partition gets its own instance and state. */
  readonly partition: number;
  /** This partition's view of one of the stores the operator declared. */
  store<V>(definition: StoreDefinition<V>): TypedStore<V>;
}

/** Everything a step is built from on one partition (internal to the pipeline). */
export interface StepContext {
  partition: number;
  state: PartitionState;
  resources: OperatorResources;
  /** Position among the pipeline's built-in steps (what was loaded for them is keyed by it). */
  builtinIndex: number;
}

/** A step of a topology: a built-in operator, a user operator, or a stateless RxJS operator. */
export type Step = BuiltinStep | UserOperator | StatelessStep;

export interface BuiltinStep<T extends BuiltinType = BuiltinType> {
  readonly kind: 'builtin';
  /** The operator type, e.g. "exact-dedupe". */
  readonly name: T;
  /** Its validated settings, exactly as a JSON config's `operators` entry parses. */
  readonly config: BuiltinConfig<T>;
}

export interface UserOperator {
  readonly kind: 'operator';
  readonly name: string;
  /** Bump it when the operator decides differently: it is part of the config hash on every decision. */
  readonly version: string | undefined;
  readonly stores: readonly StoreDefinition<unknown>[];
  readonly build: (ctx: OperatorContext) => Curator;
}

export interface StatelessStep {
  readonly kind: 'stateless';
  readonly name: string;
  readonly operator: OperatorFunction<Envelope, Envelope>;
}

export interface OperatorSpec {
  /** Unique in the topology (letters, digits, ".", "_", "-"): describe lists it, the config hash records it. */
  name: string;
  /** The stores it keeps; each is declared by one operator only. */
  // any: a store's value type is invariant (its codec reads and writes it), and each may differ.
  stores?: readonly StoreDefinition<any>[];
  /** Recorded in the config hash: change it when the operator's decisions change. */
  version?: string;
}

/**
 * A user-written operator. `build` runs whenever one of the worker's partitions is assigned (and
 * again after a failed batch dropped what it staged), after that partition's stores are restored
 * from their changelogs; it returns the partition's curator, an `OperatorFunction<Envelope,
 * Envelope>`. Stores get the built-in operators' guarantees: partition-scoped, changelog-backed,
 * written in the batch's transaction, restored on rebalance and restart. Keep state in stores,
 * not in closures: a closure's state is lost on restart and diverges from a replay.
 *
 *   const seen = defineStore<number>('seen-per-prompt');
 *   const capPrompts = operator({ name: 'cap-prompts', stores: [seen] }, (ctx) =>
 *     mapSamples('cap-prompts', (s) => {
 *       const n = (ctx.store(seen).get(s.rollout.prompt_id) ?? 0) + 1;
 *       ctx.store(seen).put(s.rollout.prompt_id, n);
 *       return n > 3 ? { ...s, reasons: [...s.reasons, 'over-cap'] } : s;
 *     }));
 */
export function operator(spec: OperatorSpec, build: (ctx: OperatorContext) => Curator): UserOperator {
  return { kind: 'operator', name: spec.name, version: spec.version, stores: [...(spec.stores ?? [])], build };
}

/** A plain RxJS operator as a step, named for describe (default: the function's name). */
export function stateless(operatorFn: OperatorFunction<Envelope, Envelope>, name?: string): StatelessStep {
  return { kind: 'stateless', name: name ?? (operatorFn.name || 'stateless'), operator: operatorFn };
}

/** What `pipe(...)` accepts: a step, or a plain operator function (taken as a stateless step). */
export type StepLike = Step | OperatorFunction<Envelope, Envelope>;

export function toStep(step: StepLike): Step {
  return typeof step === 'function' ? stateless(step) : step;
}

/** The user operator's context over one partition's state: only its own stores, typed. */
export function operatorContext(op: UserOperator, partition: number, state: PartitionState): OperatorContext {
  const views = new Map<string, TypedStore<unknown>>();
  return {
    partition,
    store: <V>(definition: StoreDefinition<V>): TypedStore<V> => {
      if (!op.stores.some((s) => s.name === definition.name)) {
        throw new Error(`operator "${op.name}" uses store "${definition.name}" without declaring it: operator({ name: '${op.name}', stores: [${definition.name}Store] }, …)`);
      }
      let view = views.get(definition.name);
      if (view === undefined) {
        view = typedStore(state.store(definition.name), definition as StoreDefinition<unknown>);
        views.set(definition.name, view);
      }
      return view as TypedStore<V>;
    },
  };
}

function typedStore<V>(kv: KeyValueStore, definition: StoreDefinition<V>): TypedStore<V> {
  const { codec } = definition;
  return {
    get: (key) => {
      const text = kv.get(key);
      return text === undefined ? undefined : codec.decode(text);
    },
    put: (key, value) => kv.put(key, codec.encode(value)),
    delete: (key) => kv.delete(key),
    get size() {
      return kv.size;
    },
  };
}

/** The names of the stores a step keeps: a user operator's declared ones, a stateful built-in's own. */
export function storeNamesOf(step: Step): string[] {
  if (step.kind === 'operator') return step.stores.map((s) => s.name);
  if (step.kind === 'builtin') {
    const store = storeOf(step.config.type);
    return store === undefined ? [] : [store.name];
  }
  return [];
}

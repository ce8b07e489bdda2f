import { changelogTopic, internalTopic, topicCatalog } from '../streams/topics.ts';
import type { PipelineConfig } from './config.ts';
import { storeNamesOf, type Step } from './operator.ts';
import { topologyFromConfig, type Topology } from './topology.ts';

/**
 * The dataflow a topology makes, as text: what it reads, each step in order with the state
 * stores (and changelogs) it keeps, and what it writes — so a user sees the topology without
 * reading code. `flywheel describe` prints it for a config, through the topology the config
 * compiles to, which is the one `flywheel run` starts.
 *
 *   describeTopology(topologyFromConfig(config))
 *   //  pipeline curate (run "live", consumer group flywheel.curate, 3 partitions, exactly once)
 *   //    source  flywheel.rollouts  (Avro Rollout, key = group id)
 *   //     1. validate
 *   //     3. exact-dedupe  store exact-dedupe → flywheel.curate.exact-dedupe-changelog …
 */
export function describeTopology(topology: Topology): string {
  const { settings } = topology;
  const { prefix } = settings.topics;
  const catalog = topicCatalog(prefix);
  const group = `${prefix}.${settings.name}`;
  const operators = topology.builtinConfigs();
  const lines: string[] = [];
  const feedback = operators.some((o) => o.type === 'error-compensate');
  const signatures = operators.some((o) => o.type === 'near-dedupe' && o.scope === 'global');
  const changelog = (store: string) => changelogTopic(prefix, settings.name, store);
  lines.push(`pipeline ${settings.name} (run "${settings.run}", consumer group ${group}, ${settings.topics.partitions} partitions, exactly once)`);
  lines.push(`  source  ${topology.sourceTopic()}  (Avro Rollout, key = group id)`);
  lines.push(`  reads   ${catalog.modelUpdates} (broadcast)${feedback ? `, ${catalog.scorerErrors} (broadcast)` : ''}${signatures ? `, ${internalTopic(prefix, settings.name, 'near-dup-index')} (broadcast)` : ''}`);
  topology.steps.forEach((step, i) => {
    const stores = storeNamesOf(step).map((s) => `  store ${s} → ${changelog(s)}`).join('');
    lines.push(`  ${String(i + 1).padStart(2)}. ${labelOf(step)}${stores}`);
  });
  lines.push(`  sinks   ${catalog.accepted} (accepted Decisions), ${catalog.decisions} (every Decision), ${catalog.deadLetter} (bad input + reason)`);
  lines.push(`          ${catalog.control}, ${catalog.weaknesses}, ${catalog.preferencePairs} (side outputs)`);
  if (feedback) {
    lines.push(`  label join (${group}.label-join): ${catalog.labels} ⋈ ${internalTopic(prefix, settings.name, 'scored-by-id')} → ${catalog.scorerErrors}`);
  }
  lines.push(`  ClickHouse sink (${group}.clickhouse-sink): decisions → samples, dead letters → dead_letters, ${catalog.labels} → labels, ${catalog.trainerProgress} → trainer_progress`);
  lines.push(`  stores: ${topology.stores().map((s) => s.name).join(', ') || 'none'}`);
  return lines.join('\n');
}

/** The dataflow a config makes (the topology it compiles to, described). */
export function describePipeline(config: PipelineConfig): string {
  return topologyFromConfig(config).describe();
}

function labelOf(step: Step): string {
  if (step.kind === 'builtin') return step.config.type;
  if (step.kind === 'operator') return `${step.name} (operator${step.version === undefined ? '' : ` ${step.version}`})`;
  return `${step.name} (stateless)`;
}

import { changelogTopic, internalTopic, topicCatalog } from '../streams/topics.ts';
import type { PipelineConfig } from './config.ts';
import { declaredStores, storeOf } from './curators.ts';

/**
 * The dataflow a config makes, as text: what it reads, each operator in order with the state
 * store (and changelog) it keeps, and what it writes — so a user sees the topology without
 * reading code.
 */
export function describePipeline(config: PipelineConfig): string {
  const catalog = topicCatalog(config.topics.prefix);
  const group = `${config.topics.prefix}.${config.name}`;
  const lines: string[] = [];
  const feedback = config.operators.some((o) => o.type === 'error-compensate');
  const signatures = config.operators.some((o) => o.type === 'near-dedupe' && o.scope === 'global');
  lines.push(`pipeline ${config.name} (run "${config.run}", consumer group ${group}, ${config.topics.partitions} partitions, exactly once)`);
  lines.push(`  source  ${catalog.rollouts}  (Avro Rollout, key = group id)`);
  lines.push(`  reads   ${catalog.modelUpdates} (broadcast)${feedback ? `, ${catalog.scorerErrors} (broadcast)` : ''}${signatures ? `, ${internalTopic(config.topics.prefix, config.name, 'near-dup-index')} (broadcast)` : ''}`);
  config.operators.forEach((op, i) => {
    const store = storeOf(op.type);
    const state = store === undefined ? '' : `  store ${store.name} → ${changelogTopic(config.topics.prefix, config.name, store.name)}`;
    lines.push(`  ${String(i + 1).padStart(2)}. ${op.type}${state}`);
  });
  lines.push(`  sinks   ${catalog.accepted} (accepted Decisions), ${catalog.decisions} (every Decision), ${catalog.deadLetter} (bad input + reason)`);
  lines.push(`          ${catalog.control}, ${catalog.weaknesses}, ${catalog.preferencePairs} (side outputs)`);
  if (feedback) {
    lines.push(`  label join (${group}.label-join): ${catalog.labels} ⋈ ${internalTopic(config.topics.prefix, config.name, 'scored-by-id')} → ${catalog.scorerErrors}`);
  }
  lines.push(`  ClickHouse sink (${group}.clickhouse-sink): decisions → samples, dead letters → dead_letters, ${catalog.trainerProgress} → trainer_progress`);
  lines.push(`  stores: ${declaredStores(config.operators).map((s) => s.name).join(', ') || 'none'}`);
  return lines.join('\n');
}

// First: kafkajs must load with the linear producer grouping (see the module).
import './kafkajs-producer.ts';
import { Kafka, logLevel, type logCreator } from 'kafkajs';
import type { Connections } from './connections.ts';

/**
 * kafkajs logs at ERROR the broker answers it then retries by itself (a coordinator still
 * loading, a transaction still completing); those are noise, not failures. What it gives up on
 * reaches the caller as an exception anyway.
 */
const RETRIED = /concurrent operation on the same transaction|coordinator is (loading|not available)|not the correct coordinator|leadership election|There is no leader/i;

const LEVEL_NAMES: Record<number, string> = { [logLevel.ERROR]: 'error', [logLevel.WARN]: 'warn', [logLevel.INFO]: 'info', [logLevel.DEBUG]: 'debug' };

const quietLog: logCreator =
  () =>
  ({ level, log }) => {
    if (level > logLevel.WARN && process.env.KAFKAJS_LOG === undefined) return;
    const error = typeof log.error === 'string' ? log.error : '';
    if (level === logLevel.ERROR && (RETRIED.test(log.message) || RETRIED.test(error))) return;
    // Said of every idempotent producer once retries are bounded (below). Flywheel's transactional
    // producers abort on a send that runs out of retries, and the processor retries the batch.
    if (level === logLevel.WARN && log.message.startsWith('Limiting retries for the idempotent producer')) return;
    const name = LEVEL_NAMES[level] ?? String(level);
    process.stderr.write(`[kafkajs ${name}] ${log.message}${error ? `: ${error}` : ''}\n`);
  };

/** One kafkajs client per process. KAFKAJS_LOG=debug|info shows kafkajs's own logs. */
export function createKafka(connections: Connections, clientId: string): Kafka {
  // Flywheel always sets partitions or keys explicitly; kafkajs's v2 partitioner notice is moot.
  process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';
  const level = process.env.KAFKAJS_LOG === 'debug' ? logLevel.DEBUG : process.env.KAFKAJS_LOG === 'info' ? logLevel.INFO : logLevel.WARN;
  return new Kafka({
    clientId,
    brokers: connections.kafkaBrokers,
    logLevel: level,
    logCreator: quietLog,
    // kafkajs's default (5 retries, ≈ 20 s in all) turns a broker restart that takes longer into a
    // worker that exits; an always-on worker waits out a few minutes of broker outage instead.
    retry: { initialRetryTime: 300, maxRetryTime: 10_000, retries: 30 },
  });
}

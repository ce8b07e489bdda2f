import { Kafka, logLevel } from 'kafkajs';
import type { Connections } from './connections.ts';

/** One kafkajs client per process; its logs go through at WARN unless KAFKAJS_LOG says otherwise. */
export function createKafka(connections: Connections, clientId: string): Kafka {
  const level = process.env.KAFKAJS_LOG === 'debug' ? logLevel.DEBUG : process.env.KAFKAJS_LOG === 'info' ? logLevel.INFO : logLevel.ERROR;
  return new Kafka({
    clientId,
    brokers: connections.kafkaBrokers,
    logLevel: level,
    retry: { retries: 8, initialRetryTime: 200 },
  });
}

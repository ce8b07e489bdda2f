/**
 * Where the real services are. Each is read from the environment once, with the local
 * defaults that `deploy/services.sh up` starts.
 */
export interface Connections {
  kafkaBrokers: string[];
  schemaRegistryUrl: string;
  /** Unset: the embedded ClickHouse (chdb). Set: a ClickHouse server's HTTP URL. */
  clickhouseUrl: string | undefined;
}

export const LOCAL_KAFKA = '127.0.0.1:19092';
export const LOCAL_REGISTRY = 'http://127.0.0.1:18081/apis/ccompat/v7';

export function connectionsFromEnv(env: NodeJS.ProcessEnv = process.env): Connections {
  const brokers = (env.KAFKA_BROKERS ?? LOCAL_KAFKA)
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b.length > 0);
  if (brokers.length === 0) throw new Error('KAFKA_BROKERS is set but names no broker (expected host:port[,host:port])');
  return {
    kafkaBrokers: brokers,
    schemaRegistryUrl: env.SCHEMA_REGISTRY_URL ?? LOCAL_REGISTRY,
    clickhouseUrl: env.CLICKHOUSE_URL || undefined,
  };
}

import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { runTrainerProcess, type TrainerProcessConfig } from '../trainers/main.ts';
import { ConfigError, loadConfig } from '../pipeline/config.ts';
import { describePipeline } from '../pipeline/describe.ts';
import { connectionsFromEnv, describeConnections } from '../streams/connections.ts';
import { KafkaSecurityError } from '../streams/kafka.ts';
import { ConnectionConfigError } from '../streams/secrets.ts';
import { demo } from './demo.ts';
import { produceFile } from './produce.ts';
import { runCommand } from './run.ts';
import { services } from './services.ts';
import { openQueryStore, sqlCommand } from './sql.ts';
import { labelCommand, readLabelInput } from './label.ts';
import { requestExport } from '../trainers/reference-trainer.ts';
import { createKafka } from '../streams/kafka.ts';
import { topicCatalog } from '../streams/topics.ts';
import { compareCommand } from './compare.ts';
import { formatReplay, replay } from './replay.ts';

const USAGE = `flywheel — the data plane between rollout generators and trainers

  flywheel up | down | status          start / stop / show the local Kafka and schema registry
  flywheel run --config <file>         run a pipeline worker (Ctrl-C stops it cleanly)
  flywheel describe --config <file>    the dataflow the config makes: topics, operators, stores, sinks
  flywheel produce --topic <t> --file <jsonl>
                                       encode JSON lines as rollouts and send them
  flywheel sql "<query>" [--config <file> | --path <dir>] [--format <f>]
                                       query the pipeline's ClickHouse store; --format: a ClickHouse output
                                       format (PrettyCompact default, JSONEachRow, CSV, TabSeparated, …)
  flywheel label (--config <file> | --topic <t>) [--file <jsonl>]
                                       send verified outcomes (JSON lines {"rollout_id","value","verifier","at"},
                                       stdin without --file) as Avro labels; bad lines are reported, exit 1
  flywheel trainer export --config <trainer.json>
                                       ask the running reference trainer to export and announce a model now
  flywheel replay --config <file> --run <name> [--from <pos>] [--to <pos>] [--source-prefix <p>]
                                       rerun a range of a rollouts topic through a config as a named run;
                                       <pos>: earliest | latest | an offset | p:offset,… | an ISO time
  flywheel train --config <file>       run the reference incremental trainer (deploy/trainer.json): labels →
                                       model → ONNX → announced on model-updates; resumes from its checkpoint
  flywheel compare <runA> <runB> [--config <file> | --path <dir>]
                                       two runs side by side: overlap, reasons, scores, precision
  flywheel demo [--rounds R] [--groups N]
                                       start the services, run R rounds of the flywheel (generate → curate →
                                       label → train → new scorer) on synthetic rollouts, print a table per round

Environment: KAFKA_BROKERS, SCHEMA_REGISTRY_URL, CLICKHOUSE_URL select running services
instead of the local ones; KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*, SCHEMA_REGISTRY_USERNAME,
CLICKHOUSE_USER, *_PASSWORD / *_PASSWORD_FILE and *_CA_FILE secure them (README: Security).`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      config: { type: 'string' },
      topic: { type: 'string' },
      file: { type: 'string' },
      path: { type: 'string' },
      groups: { type: 'string' },
      rounds: { type: 'string' },
      run: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      'source-prefix': { type: 'string' },
      format: { type: 'string' },
    },
  });
  const need = (name: keyof typeof values): string => {
    const value = values[name];
    if (typeof value !== 'string' || value === '') throw new UsageError(`${command} needs --${name}`);
    return value;
  };
  switch (command) {
    case 'up':
    case 'down':
    case 'status':
      return services(command);
    case 'run':
      await runCommand(loadConfig(need('config')), connectionsFromEnv());
      return 0;
    case 'produce': {
      const { sent, errors } = await produceFile(connectionsFromEnv(), need('topic'), need('file'));
      console.log(`sent ${sent} rollouts${errors.length > 0 ? `; ${errors.length} lines rejected (see above)` : ''}`);
      return errors.length > 0 ? 1 : 0;
    }
    case 'sql': {
      const query = positionals.join(' ').trim();
      if (query === '') throw new UsageError('sql needs a query, e.g. flywheel sql "SELECT count() FROM samples"');
      const path = values.path ?? (values.config === undefined ? undefined : loadConfig(values.config).clickhouse.path);
      process.stdout.write(await sqlCommand(query, connectionsFromEnv(), path, values.format));
      return 0;
    }
    case 'label': {
      const topic = values.topic ?? (values.config === undefined ? undefined : topicCatalog(loadConfig(values.config).topics.prefix).labels);
      if (topic === undefined) throw new UsageError('label needs --config <pipeline.json> or --topic <prefix>.labels');
      const { text, source } = readLabelInput(values.file);
      const { sent, errors } = await labelCommand(connectionsFromEnv(), topic, text, source);
      console.log(`sent ${sent} labels to ${topic}${errors.length > 0 ? `; ${errors.length} lines rejected (see above)` : ''}`);
      return errors.length > 0 ? 1 : 0;
    }
    case 'trainer': {
      if (positionals[0] !== 'export') throw new UsageError('trainer takes a subcommand: flywheel trainer export --config <trainer.json>');
      const file = need('config');
      const config = readTrainerConfig(file);
      if (typeof config.prefix !== 'string' || typeof config.name !== 'string') throw new ConfigError(`trainer config ${file}: "prefix" and "name" are required`);
      await requestExport(createKafka(connectionsFromEnv(), 'flywheel-trainer-export'), topicCatalog(config.prefix), config.name);
      console.log(`asked trainer ${config.name} (${config.prefix}.control) to export now`);
      return 0;
    }
    case 'replay': {
      const config = loadConfig(need('config'));
      const store = await openQueryStore(connectionsFromEnv(), config.clickhouse.path);
      try {
        const result = await replay(config, connectionsFromEnv(), {
          run: need('run'),
          sourcePrefix: values['source-prefix'],
          from: values.from ?? 'earliest',
          to: values.to ?? 'latest',
          store,
          onProgress: (done, total) => process.stderr.write(`\r[flywheel] replayed ${done}/${total}`),
        });
        process.stderr.write('\n');
        console.log(formatReplay(result));
      } finally {
        await store.close();
      }
      return 0;
    }
    case 'describe':
      // The connections too (addresses, protocols, users — never a password): what this
      // environment would run the pipeline against.
      console.log(`${describePipeline(loadConfig(need('config')))}\n${describeConnections(connectionsFromEnv())}`);
      return 0;
    case 'train': {
      const file = need('config');
      const config = readTrainerConfig(file);
      mkdirSync(dirname(config.checkpoint ?? '.'), { recursive: true });
      await runTrainerProcess(config);
      return 0;
    }
    case 'compare': {
      const [runA, runB] = positionals;
      if (runA === undefined || runB === undefined) throw new UsageError('compare needs two run names');
      const path = values.path ?? (values.config === undefined ? undefined : loadConfig(values.config).clickhouse.path);
      const store = await openQueryStore(connectionsFromEnv(), path);
      try {
        console.log(await compareCommand(runA, runB, store));
      } finally {
        await store.close();
      }
      return 0;
    }
    case 'demo': {
      const connections = connectionsFromEnv();
      if ((process.env.KAFKA_BROKERS === undefined || process.env.SCHEMA_REGISTRY_URL === undefined) && services('up') !== 0) {
        throw new Error('the local services did not start (see above)');
      }
      const groups = Number(values.groups ?? 250);
      const rounds = Number(values.rounds ?? 4);
      if (!Number.isInteger(groups) || groups < 1) throw new UsageError('--groups takes a positive whole number');
      if (!Number.isInteger(rounds) || rounds < 1) throw new UsageError('--rounds takes a positive whole number');
      await demo(connections, { rounds, groups, dataDir: '.flywheel/demo' });
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
      console.log(USAGE);
      return 0;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

class UsageError extends Error {}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) console.error(`flywheel: ${err.message}\n\n${USAGE}`);
    else if (err instanceof ConfigError) console.error(err.message);
    // Configuration, not a bug: the message says what to fix; a stack trace would bury it.
    else if (err instanceof ConnectionConfigError || err instanceof KafkaSecurityError) console.error(`flywheel: ${err.message}`);
    else console.error(`flywheel: ${(err as Error).stack ?? String(err)}`);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);

/** A trainer config file as JSON; a file that cannot be read or parsed is a ConfigError naming it. */
function readTrainerConfig(file: string): TrainerProcessConfig {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as TrainerProcessConfig;
  } catch (err) {
    throw new ConfigError(`trainer config ${file}: ${(err as Error).message}`);
  }
}

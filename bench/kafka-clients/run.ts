/**
 * The Kafka client benchmark on its own, under the project's Node (20):
 *
 *   node --import tsx bench/kafka-clients/run.ts                 # 100,000 records, 3 passes
 *   FLYWHEEL_BENCH_KAFKA_RECORDS=20000 FLYWHEEL_BENCH_KAFKA_PASSES=1 node --import tsx bench/kafka-clients/run.ts
 *
 * Prints the rows `npm run bench` gets from benchKafkaClients(), with their ratios.
 */
import { formatTable } from '../../lib/table.ts';
import { ratio } from '../row.ts';
import { benchKafkaClients } from './index.ts';

const rows = await benchKafkaClients();
console.log(formatTable(rows.map((row) => ({ figure: row.figure, unit: row.unit, candidate: row.flywheel, anchor: row.anchor, 'anchor value': row.anchorValue ?? '', ratio: Number((ratio(row) ?? 0).toFixed(2)), target: row.target ?? '' }))));
for (const row of rows) if (row.note) console.log(`- ${row.figure}: ${row.note}`);

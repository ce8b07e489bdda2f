/**
 * `npm run chaos [-- --groups N --workers W --kills K --broker-restarts B --outage-ms MS --freeze-ms MS]`:
 * the chaos harness (tests/helpers/chaos.ts) at any size, e.g. `--groups 12500` for 50,000
 * rollouts. Prints the report; exits 1 when any output differs from what the input must give.
 */
import { parseArgs } from 'node:util';
import { runChaos } from './helpers/chaos.ts';

const { values } = parseArgs({
  options: {
    groups: { type: 'string', default: '2500' },
    workers: { type: 'string', default: '3' },
    kills: { type: 'string', default: '12' },
    'broker-restarts': { type: 'string', default: '2' },
    'outage-ms': { type: 'string', default: '30000' },
    'freeze-ms': { type: 'string', default: '45000' },
  },
});
const report = await runChaos({
  groups: Number(values.groups),
  workers: Number(values.workers),
  workerKills: Number(values.kills),
  brokerRestarts: Number(values['broker-restarts']),
  clickhouseOutageMs: Number(values['outage-ms']),
  clickhouseFreezeMs: Number(values['freeze-ms']),
  log: (line) => console.error(line),
});
console.log(JSON.stringify(report, null, 2));
process.exit(report.failures.length === 0 ? 0 : 1);

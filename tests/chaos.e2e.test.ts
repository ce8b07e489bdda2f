import { describe, expect, it } from 'vitest';
import { runChaos } from './helpers/chaos.ts';

// The suite's own chaos run, at a size CI affords: 3 workers on a private broker and ClickHouse
// server, worker SIGKILLs, a broker kill -9, a ClickHouse outage and a freeze past the group
// session, with garbage, evolved-schema and unresolvable records mixed in. `npm run chaos` runs
// a larger one (tests/chaos-run.ts).
describe('chaos: kills, restarts, outages and bad input', () => {
  it('decides, dead-letters and stores every record exactly once', async () => {
    const log: string[] = [];
    const report = await runChaos({ groups: 250, workers: 3, workerKills: 3, brokerRestarts: 1, log: (line) => log.push(line) }).catch((err: unknown) => {
      console.error(log.join('\n'));
      throw err;
    });
    if (report.failures.length > 0) console.error(log.join('\n'));
    console.error(`chaos report: ${JSON.stringify(report, null, 2)}`);
    expect(report.failures).toEqual([]);
    expect(report.faults.length).toBeGreaterThanOrEqual(3 + 2 + 4);
    expect(report.inputs.evolved).toBeGreaterThan(0);
    expect(report.inputs.unresolvable).toBeGreaterThan(0);
  }, 600_000);
});

import { spawn, type ChildProcess } from 'node:child_process';

/**
 * A pipeline worker as users run it: `flywheel run --config <file>` in its own process. Its ops
 * HTTP server takes a free port (FLYWHEEL_HTTP_PORT=0) unless `env` says otherwise: several
 * workers, and other engineers' tests, share this machine.
 */
export function startWorker(configFile: string, log: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const child = spawn(process.execPath, ['bin/flywheel.js', 'run', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { FLYWHEEL_HTTP_PORT: '0', ...env } });
  child.stdout!.on('data', (d: Buffer) => log.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => log.push(d.toString()));
  return child;
}

export function exited(child: ChildProcess): Promise<number | null> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve(child.exitCode) : new Promise((r) => child.once('exit', (code) => r(code)));
}

/**
 * How often a worker's curating processor was handed its partitions (it logs one line per group
 * join): a consumer that crashes and rejoins in a loop shows many.
 */
export function groupJoins(log: string[], pipelineName: string): number {
  return log
    .join('')
    .split('\n')
    .filter((line) => line.startsWith(`[flywheel] ${pipelineName}: partitions [`)).length;
}

/** The ops HTTP server's URL a worker printed at start-up (cli/run.ts), if it has yet. */
export function opsUrl(log: string[], pipelineName: string): string | undefined {
  const match = new RegExp(`\\[flywheel\\] ${pipelineName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ops HTTP server at (\\S+)`).exec(log.join(''));
  return match?.[1];
}

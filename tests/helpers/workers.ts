import { spawn, type ChildProcess } from 'node:child_process';

/** A pipeline worker as users run it: `flywheel run --config <file>` in its own process. */
export function startWorker(configFile: string, log: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const child = spawn(process.execPath, ['bin/flywheel.js', 'run', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'], env });
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

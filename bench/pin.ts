/**
 * CPU pinning for a fair split on a 2-core machine: the bench process (and so every worker it
 * spawns, which inherits the mask) on core 1, the broker's and the registry's JVMs on core 0.
 * The services' original masks are put back by `restore()` (call it on exit and on signals).
 *
 * The services are found by their pid files (deploy/kafka.sh, deploy/registry.sh, under
 * $FLYWHEEL_DATA or <repo>/.flywheel) when those name a live java process, else by the process
 * listening on the service's port (/proc/net/tcp → socket inode → /proc/<pid>/fd), which also
 * finds services deploy/test-env.sh started in a temporary data dir.
 *
 *   const pins = await pinForBench({ kafkaPort: 19092, registryPort: 18081 });
 *   console.log(pins.summary);  …  await pins.restore();
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO } from './kafka.ts';

const run = promisify(execFile);

export interface Pinning {
  summary: string;
  pinned: boolean;
  restore(): Promise<void>;
}

interface Service {
  name: string;
  pid: number;
  mask: string;
}

async function hasTaskset(): Promise<boolean> {
  try {
    await run('taskset', ['-V']);
    return true;
  } catch {
    return false;
  }
}

/** The current affinity mask of pid, as `taskset -p` prints it (hex). */
async function maskOf(pid: number): Promise<string> {
  const { stdout } = await run('taskset', ['-p', String(pid)]);
  return stdout.trim().split(':').pop()!.trim();
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

function fromPidFile(file: string, match: string): number | undefined {
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 && cmdline(pid).includes(match) ? pid : undefined;
}

/** The pid of the process listening on 127.0.0.1/0.0.0.0:`port`, if this user can see it. */
function listenerOf(port: number): number | undefined {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(table)) continue;
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A') continue; // 0A = LISTEN
      if (parseInt(f[1]!.split(':')[1]!, 16) === port) inodes.add(f[9]!);
    }
  }
  if (inodes.size === 0) return undefined;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${entry}/fd/${fd}`));
        if (m && inodes.has(m[1]!)) return Number(entry);
      } catch {
        // fd closed meanwhile
      }
    }
  }
  return undefined;
}

export async function pinForBench(options: { kafkaPort: number; registryPort: number; enabled: boolean }): Promise<Pinning> {
  const none = (summary: string): Pinning => ({ summary, pinned: false, restore: async () => undefined });
  if (!options.enabled) return none('not pinned (--no-pin)');
  if (!(await hasTaskset())) return none('not pinned: taskset is not installed');
  const data = process.env.FLYWHEEL_DATA ?? join(REPO, '.flywheel');
  const candidates = [
    { name: 'broker', pid: fromPidFile(join(data, 'kafka/kafka.pid'), 'kafka.Kafka') ?? listenerOf(options.kafkaPort) },
    { name: 'registry', pid: fromPidFile(join(data, 'registry/registry.pid'), 'java') ?? listenerOf(options.registryPort) },
  ];
  const services: Service[] = [];
  const notes: string[] = [];
  for (const c of candidates) {
    if (c.pid === undefined) {
      notes.push(`${c.name}: process not found, not pinned`);
      continue;
    }
    try {
      const mask = await maskOf(c.pid);
      // -a: every thread of the JVM, not only its main thread.
      await run('taskset', ['-a', '-pc', '0', String(c.pid)]);
      services.push({ name: c.name, pid: c.pid, mask });
      notes.push(`${c.name} (pid ${c.pid}) → core 0`);
    } catch (err) {
      notes.push(`${c.name} (pid ${c.pid}): ${(err as Error).message.split('\n')[0]}`);
    }
  }
  try {
    await run('taskset', ['-a', '-pc', '1', String(process.pid)]);
    notes.push(`bench (pid ${process.pid}) and its workers → core 1`);
  } catch (err) {
    notes.push(`bench not pinned: ${(err as Error).message.split('\n')[0]}`);
  }
  let restored = false;
  return {
    pinned: services.length > 0,
    summary: notes.join('; '),
    restore: async () => {
      if (restored) return;
      restored = true;
      for (const s of services) await run('taskset', ['-a', '-p', s.mask, String(s.pid)]).catch(() => undefined);
    },
  };
}

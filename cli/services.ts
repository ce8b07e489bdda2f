import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('../deploy/services.sh', import.meta.url));

/** Runs `deploy/services.sh <command>` (up / down / status), its output shown as it comes. */
export function services(command: 'up' | 'down' | 'status'): number {
  const result = spawnSync('bash', [script, command], { stdio: 'inherit' });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

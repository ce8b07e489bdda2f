import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { connections } from './helpers/kafka.ts';

/**
 * The Python trainer SDK's own suite (python/tests, pytest) inside `npm test`, against the same
 * services: makes or reuses the venv (python/setup-venv.sh: .cache/python-venv, rebuilt only when
 * python/requirements.txt or pyproject.toml change — PyTorch from PyPI is GBs), then runs pytest.
 * Fails when pytest fails, and when it ran nothing (its exit 5).
 */

const REPO = new URL('..', import.meta.url).pathname;

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => void (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, out, stdout }));
  });
}

describe('Python trainer SDK (pytest)', () => {
  it('passes its pytest suite on the real services', async () => {
    const env = { ...process.env, KAFKA_BROKERS: connections.kafkaBrokers.join(','), SCHEMA_REGISTRY_URL: connections.schemaRegistryUrl };
    const setup = await run('bash', ['python/setup-venv.sh'], env);
    expect(setup.code, `python/setup-venv.sh failed:\n${setup.out}`).toBe(0);
    // Its last line of stdout is the venv's python.
    const python = setup.stdout.trim().split('\n').at(-1)!;
    const pytest = await run(python, ['-m', 'pytest', 'python/tests', '-p', 'no:cacheprovider', '-q', '-rfE'], { ...env, PYTHONDONTWRITEBYTECODE: '1' });
    process.stdout.write(pytest.out);
    // Exit 5 is pytest's "no tests collected": a suite that ran nothing has not passed.
    expect(pytest.code, pytest.code === 5 ? `pytest collected no tests:\n${pytest.out}` : `pytest failed:\n${pytest.out}`).toBe(0);
    expect(pytest.out).toMatch(/\d+ passed/);
  }, 60 * 60_000);
});

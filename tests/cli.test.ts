import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = (...args: string[]) =>
  promisify(execFile)(process.execPath, ['bin/flywheel.js', ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );

describe('the flywheel command', () => {
  it('loads every module and prints its usage', async () => {
    const { code, stdout } = await run('help');
    expect(code).toBe(0);
    for (const command of ['run', 'produce', 'sql', 'replay', 'compare', 'train', 'describe', 'demo']) expect(stdout).toContain(`flywheel ${command}`);
  });

  it('describes the example pipeline', async () => {
    const { code, stdout } = await run('describe', '--config', 'deploy/pipeline.json');
    expect(code).toBe(0);
    expect(stdout).toContain('source  flywheel.rollouts');
  });

  it('refuses a bad config with the field named, and an unknown command with the usage', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'flywheel-cli-')), 'bad.json');
    writeFileSync(file, JSON.stringify({ name: 'x', operators: [{ type: 'threshold-filter', min: { rule: 'high' } }] }));
    const bad = await run('run', '--config', file);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/is not a valid pipeline config[\s\S]*operators\[0\]\.min\.rule/);
    const unknown = await run('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
  });
});

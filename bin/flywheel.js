#!/usr/bin/env node
// The flywheel command. In a checkout it runs the TypeScript sources through tsx's loader: no
// build step between a clone and a run, and never a stale dist/ left by an earlier build. An
// installed package (under node_modules, where tsx is no dependency) runs the compiled dist/.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('../', import.meta.url);
const checkout = !fileURLToPath(root).split(/[\\/]/).includes('node_modules') && existsSync(new URL('cli/main.ts', root));
const tsx = checkout ? await import('tsx/esm/api').catch(() => undefined) : undefined;

if (tsx !== undefined) {
  tsx.register();
  await import('../cli/main.ts');
} else if (existsSync(new URL('dist/cli/main.js', root))) {
  await import('../dist/cli/main.js');
} else {
  process.stderr.write('flywheel: neither tsx (npm install) nor a build (npm run build) is here to run the CLI with\n');
  process.exit(1);
}

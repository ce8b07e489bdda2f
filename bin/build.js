#!/usr/bin/env node
// `npm run build`: dist/ from scratch (a module deleted from the sources must not linger in the
// package), compiled by tsc with tsconfig.build.json, then every file that is not TypeScript in
// the compiled folders (a page's static assets, say) copied next to the compiled modules, which
// find such files relative to their own import.meta.url.
import { execFileSync } from 'node:child_process';
import { cpSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const ts = require('typescript');
const configFile = join(root, 'tsconfig.build.json');
const { config, error } = ts.parseConfigFileTextToJson(configFile, readFileSync(configFile, 'utf8'));
if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, '\n'));
const outDir = join(root, config.compilerOptions.outDir);

rmSync(outDir, { recursive: true, force: true });
try {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', configFile], { cwd: root, stdio: 'inherit' });
} catch {
  // tsc has printed the errors; what it emitted anyway is not a build.
  rmSync(outDir, { recursive: true, force: true });
  process.exit(1);
}

const assets = (dir) =>
  readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : assets(path);
    return e.name.endsWith('.ts') ? [] : [path];
  });
const folders = config.include.filter((p) => statSync(join(root, p), { throwIfNoEntry: false })?.isDirectory());
for (const file of folders.flatMap(assets)) cpSync(join(root, file), join(outDir, file));

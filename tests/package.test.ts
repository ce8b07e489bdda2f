/**
 * The package as another project gets it: `npm run build`, `npm pack`, the tarball installed
 * with npm into a scratch project, which type-checks the example (examples/capped-prompts plus
 * tests/package-smoke.ts) against the shipped declarations with its own tsc and runs it with
 * plain node — no tsx, no sources — on the real services.
 *
 * Installing from nothing is slow: chdb and onnxruntime-node make most of a 1.1 GB node_modules
 * (about 3.5 min with npm's cache warm, 4.5 min cold, on a busy 2-core machine). So the scratch
 * project starts from a hard-linked copy of this repo's node_modules (seconds): `npm install`
 * there then installs the tarball, keeps the dependencies it declares (same versions as this
 * repo's) and removes every other package (vitest, tsx, …), as for a project that already had
 * them — a dependency the package uses but does not declare is removed, and fails the run.
 */
import { execFile, type ExecFileOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync, type Dirent } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../pipeline/config.ts';
import { describePipeline } from '../pipeline/describe.ts';
import { connectionsFromEnv, describeConnections } from '../streams/connections.ts';
import { uniquePrefix } from './helpers/kafka.ts';

const execFileAsync = promisify(execFile);
/** execFile, failing with what the command printed. */
async function run(cmd: string, args: string[], options: ExecFileOptions = {}): Promise<{ stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(cmd, args, { maxBuffer: 64 << 20, ...options, encoding: 'utf8' });
    return { stdout, stderr };
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}
const REPO = new URL('..', import.meta.url).pathname;
const EXAMPLE = 'examples/capped-prompts';
const repoPackage = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
const examplePackage = JSON.parse(readFileSync(join(REPO, EXAMPLE, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };

/** npm in the scratch project, with none of the npm_* settings of an enclosing `npm test`. */
const npmEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
const npm = (args: string[], cwd: string) => run('npm', [...args, '--no-audit', '--no-fund'], { cwd, env: npmEnv });

/** The scratch project's package.json: the example's dependencies, with flywheel from the tarball; its compiler; no tsx. */
function scratchPackage() {
  const { typescript, '@types/node': nodeTypes } = repoPackage.devDependencies;
  return {
    name: 'flywheel-package-test',
    private: true,
    type: 'module',
    dependencies: { ...examplePackage.dependencies, flywheel: 'file:flywheel.tgz' },
    devDependencies: { typescript, '@types/node': nodeTypes },
  };
}

/** SHA-256 over a directory's files, by path and content. */
function treeHash(dir: string): string {
  const hash = createHash('sha256');
  for (const file of (readdirSync(dir, { recursive: true, withFileTypes: true }) as Dirent[]).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort()) {
    hash.update(`${file.slice(dir.length)}\0`).update(readFileSync(file));
  }
  return hash.digest('hex');
}

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    // As most consumers (and this repo) compile: third-party declarations are not checked (some
    // of the dependencies' own do not compile, e.g. they name optional packages). What ours
    // import is checked below instead.
    skipLibCheck: true,
    allowImportingTsExtensions: true,
    rewriteRelativeImportExtensions: true,
    rootDir: '.',
    outDir: 'build',
    types: ['node'],
  },
  include: ['examples', 'tests'],
};

describe('the packed package, installed in another project', () => {
  // Outside the repo: Node and tsc must not find the repo's node_modules above the project.
  const work = mkdtempSync(join(tmpdir(), 'flywheel-package-'));
  const app = join(work, 'app');
  let packed: string[] = [];

  beforeAll(async () => {
    await run('npm', ['run', 'build'], { cwd: REPO });
    const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: REPO });
    const [info] = JSON.parse(stdout) as [{ filename: string; files: { path: string }[] }];
    packed = info.files.map((f) => f.path);
    const tarball = join(work, info.filename);

    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify(scratchPackage(), null, 2));
    // onnxruntime-node's postinstall would fetch GPU libraries from NuGet (see the repo's .npmrc).
    copyFileSync(join(REPO, '.npmrc'), join(app, '.npmrc'));
    copyFileSync(tarball, join(app, 'flywheel.tgz'));
    // Hard links, not copies: npm replaces the packages it changes and writes new files, never
    // into old ones. The exception, npm's record of the tree, is left out: npm reads the tree.
    // Another file system (no hard links): a plain install.
    await run('cp', ['-al', realpathSync(join(REPO, 'node_modules')), join(app, 'node_modules')]).then(
      () => rmSync(join(app, 'node_modules', '.package-lock.json'), { force: true }),
      () => rmSync(join(app, 'node_modules'), { recursive: true, force: true }),
    );
    await npm(['install', '--prefer-offline'], app);
    mkdirSync(join(app, EXAMPLE), { recursive: true });
    mkdirSync(join(app, 'tests'));
    for (const file of ['cap-per-prompt.ts', 'topology.ts', 'main.ts']) copyFileSync(join(REPO, EXAMPLE, file), join(app, EXAMPLE, file));
    copyFileSync(join(REPO, 'tests', 'package-smoke.ts'), join(app, 'tests', 'package-smoke.ts'));
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(TSCONFIG, null, 2));
  }, 900_000);

  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('ships the compiled modules, their declarations and the sources the maps point at; no tests, benches or examples', () => {
    for (const file of ['package.json', 'README.md', 'bin/flywheel.js', 'index.ts', 'dist/index.js', 'dist/index.d.ts', 'dist/index.d.ts.map', 'dist/cli/main.js', 'dist/pipeline/topology.d.ts', 'pipeline/topology.ts']) {
      expect(packed).toContain(file);
    }
    expect(packed.filter((f) => /^(tests|bench|examples|deploy|python|node_modules)\//.test(f) || f.startsWith('dist/tests/'))).toEqual([]);
    // Every compiled module (a .js with its .ts; other files are copied assets) has its declaration.
    const modules = packed.filter((f) => f.startsWith('dist/') && f.endsWith('.js') && packed.includes(f.slice('dist/'.length).replace(/\.js$/, '.ts')));
    expect(modules.length).toBeGreaterThan(50);
    expect(modules.filter((f) => !packed.includes(f.replace(/\.js$/, '.d.ts')))).toEqual([]);
  });

  it('has declarations that import only its own files, Node built-ins and its dependencies', () => {
    const root = join(app, 'node_modules', 'flywheel');
    const installed = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; peerDependencies?: Record<string, string> };
    const allowed = new Set([...Object.keys(installed.dependencies), ...Object.keys(installed.peerDependencies ?? {})]);
    const foreign = packed
      .filter((f) => f.endsWith('.d.ts'))
      .flatMap((f) => [...readFileSync(join(root, f), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').matchAll(/(?:from\s+|import\()['"]([^'"]+)['"]/g)].map((m) => ({ file: f, specifier: m[1]! })))
      .filter(({ specifier }) => !specifier.startsWith('.') && !specifier.startsWith('node:'))
      .filter(({ specifier }) => !allowed.has(specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!));
    expect(foreign).toEqual([]);
  });

  it('installs without tsx, and its flywheel command runs from dist/', async () => {
    expect(existsSync(join(app, 'node_modules', 'tsx'))).toBe(false);
    // This run's build, as packed.
    expect(treeHash(join(app, 'node_modules', 'flywheel', 'dist'))).toBe(treeHash(join(REPO, 'dist')));
    const config = join(REPO, 'deploy', 'pipeline.json');
    const { stdout } = await run(join(app, 'node_modules', '.bin', 'flywheel'), ['describe', '--config', config], { cwd: app });
    expect(stdout).toBe(`${describePipeline(loadConfig(config))}\n${describeConnections(connectionsFromEnv())}\n`);
  });

  it('type-checks the example against the shipped declarations and runs it with plain node on the real services', async () => {
    // The project's own compiler, its own settings: the example must compile against dist/*.d.ts.
    await run(process.execPath, [join(app, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], { cwd: app });
    const prefix = uniquePrefix('package');
    const env = { ...process.env, SMOKE_PREFIX: prefix, SMOKE_CLICKHOUSE_PATH: join(work, 'clickhouse'), SMOKE_PROMPTS: '3', SMOKE_SAMPLES: '4', SMOKE_K: '2' };
    const { stdout } = await run(process.execPath, [join(app, 'build', 'tests', 'package-smoke.js')], { cwd: app, env });
    const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as { committed: number; decisions: { id: string; prompt: string; decision: string; reason: string }[] };

    // Every rollout decided exactly once, in committed batches.
    const ids = result.decisions.map((d) => d.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBe(12);
    expect(result.committed).toBeGreaterThanOrEqual(12);
    // The example's own stateful operator: per prompt, the first k=2 candidates accepted, the rest capped.
    for (const prompt of ['p0', 'p1', 'p2']) {
      const mine = result.decisions.filter((d) => d.prompt === prompt);
      expect(mine.map((d) => d.decision).sort()).toEqual(['accepted', 'accepted', 'rejected', 'rejected']);
      expect(mine.filter((d) => d.decision === 'rejected').map((d) => d.reason)).toEqual(['cap:per-prompt', 'cap:per-prompt']);
    }
  }, 240_000);
});

import { defineConfig } from 'vitest/config';

export default defineConfig({
  // `import … from 'flywheel'` (the examples, the tests) resolves to the TypeScript sources through
  // package.json's "flywheel-source" export condition, so the tests need no build. Vitest runs test
  // files in Vite's ssr environment and merges this with its own conditions (node, development).
  environments: { ssr: { resolve: { conditions: ['flywheel-source'] } } },
  test: {
    include: ['tests/**/*.test.ts'],
    // chdb is a native addon holding a process-wide engine: forks, not threads.
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 120_000,
    hookTimeout: 180_000,
  },
});

// Builds dist/: per entry an ES module (.js), a CommonJS module (.cjs) and types for
// both (.d.ts, .d.cts). The bindings import the core from ./index.js / ./index.cjs
// rather than bundling a copy, so an app has one shared client whatever it imports.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

export const ENTRIES = ['index', 'react', 'vue', 'axios'];

rmSync('dist', { recursive: true, force: true });
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], {
  stdio: 'inherit',
});

for (const [format, ext] of [['esm', '.js'], ['cjs', '.cjs']]) {
  await build({
    entryPoints: ENTRIES.map((e) => `src/${e}.ts`),
    outdir: 'dist',
    outExtension: { '.js': ext },
    bundle: true,
    format,
    platform: 'neutral',
    target: 'es2020',
    external: ['react', 'vue', 'axios'],
    logLevel: 'warning',
    plugins: [
      {
        name: 'core-external',
        setup(b) {
          // The bindings' `./index.js` stays an import of the built core.
          b.onResolve({ filter: /^\.\/index(\.js)?$/ }, (args) =>
            args.importer.endsWith('index.ts') ? undefined : { path: `./index${ext}`, external: true },
          );
        },
      },
    ],
  });
}

// .d.cts: the same declarations, pointing at each other's .cjs twins, so TypeScript
// under `moduleResolution: node16` types a `require` as CommonJS.
for (const file of readdirSync('dist').filter((f) => f.endsWith('.d.ts'))) {
  const text = readFileSync(`dist/${file}`, 'utf8').replace(/(from '\.\/[\w-]+)\.js'/g, "$1.cjs'");
  writeFileSync(`dist/${file.replace(/\.d\.ts$/, '.d.cts')}`, text);
}

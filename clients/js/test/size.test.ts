// The size budget of the issue: < 3 KiB minified + gzipped, no runtime dependencies.
import { buildSync } from 'esbuild';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { expect, it } from 'vitest';

it('stays under 3 KiB min+gzip', () => {
  const out = buildSync({
    entryPoints: ['src/index.ts'],
    bundle: true,
    minify: true,
    format: 'esm',
    write: false,
  });
  expect(out.outputFiles[0].contents.length).toBeGreaterThan(500);
  expect(gzipSync(out.outputFiles[0].contents, { level: 9 }).length).toBeLessThan(3 * 1024);
});

it('has no runtime dependencies', () => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
  expect(pkg.dependencies ?? {}).toEqual({});
});

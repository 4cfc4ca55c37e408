// Sizes minified + gzipped, per entry of the package. The core is the whole of
// `portcullis-client` (nothing tree-shaken); a binding is what it adds on top (the core,
// React, Vue and axios are imports, not counted). `node scripts/size.mjs` prints them
// and fails above a budget; the test suite checks the same budgets.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { pathToFileURL } from 'node:url';

export const BUDGETS = { index: 2048, react: 1024, vue: 1024, axios: 1024 };

export function sizes() {
  return Promise.all(Object.keys(BUDGETS).map(async (entry) => {
    const out = await build({
      entryPoints: [`src/${entry}.ts`],
      bundle: true,
      minify: true,
      format: 'esm',
      write: false,
      external: ['react', 'vue', 'axios'],
      plugins: [
        {
          name: 'core-external',
          setup(b) {
            b.onResolve({ filter: /^\.\/index(\.js)?$/ }, (args) =>
              args.importer.endsWith('index.ts') ? undefined : { path: './index.js', external: true },
            );
          },
        },
      ],
    });
    const min = out.outputFiles[0].contents;
    return { entry, min: min.length, gzip: gzipSync(min, { level: 9 }).length, budget: BUDGETS[entry] };
  }));
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  let over = false;
  for (const s of await sizes()) {
    const name = s.entry === 'index' ? 'portcullis-client' : `portcullis-client/${s.entry}`;
    console.log(`${name}: ${s.min} B minified, ${s.gzip} B min+gzip (budget ${s.budget} B)`);
    over ||= s.gzip > s.budget;
  }
  if (over) {
    console.error('size: over budget');
    process.exit(1);
  }
}

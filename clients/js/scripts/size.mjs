// Prints the client's size minified + gzipped and fails above the 3 KiB budget.
import { buildSync } from 'esbuild';
import { gzipSync } from 'node:zlib';

const LIMIT = 3 * 1024;
const out = buildSync({
  entryPoints: ['src/index.ts'],
  bundle: true,
  minify: true,
  format: 'esm',
  write: false,
});
const min = out.outputFiles[0].contents;
const gz = gzipSync(min, { level: 9 }).length;
console.log(`portcullis-client: ${min.length} B minified, ${gz} B min+gzip (limit ${LIMIT} B)`);
if (gz > LIMIT) {
  console.error('size: over budget');
  process.exit(1);
}

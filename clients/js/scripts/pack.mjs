// `npm pack` (whose prepack builds dist/) into pack/portcullis-client.tgz, then checks
// the tarball as a user would get it: every file `exports` names is inside, and each
// entry loads in Node both as `require` (CJS) and as `import` (ESM), from a scratch
// node_modules. The examples install this tarball (see test.sh).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const here = resolve('.');
const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
rmSync('pack', { recursive: true, force: true });
mkdirSync('pack');
const [info] = JSON.parse(
  execFileSync('npm', ['pack', '--json', '--pack-destination', 'pack', '--loglevel=error'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }),
);
const tgz = join(here, 'pack', 'portcullis-client.tgz');
renameSync(join('pack', info.filename), tgz);

const problems = [];
const files = new Set(info.files.map((f) => f.path));
const targets = [];
for (const [sub, conditions] of Object.entries(pkg.exports)) {
  if (typeof conditions === 'string') continue;
  for (const [cond, t] of Object.entries(conditions)) {
    for (const [kind, path] of Object.entries(t)) targets.push([sub, cond, kind, path]);
  }
}
for (const [sub, cond, kind, path] of targets) {
  if (!files.has(path.replace(/^\.\//, ''))) problems.push(`${sub} ${cond}.${kind}: ${path} not in the tarball`);
}
for (const f of files) {
  if (!/^(dist\/[\w.-]+|package\.json|README\.md|LICENSE)$/.test(f)) problems.push(`unexpected file in the tarball: ${f}`);
}

// A scratch app with the tarball unpacked as node_modules/portcullis-client and the
// optional peers borrowed from our node_modules.
const app = mkdtempSync(join(tmpdir(), 'portcullis-client-pack-'));
try {
  mkdirSync(join(app, 'node_modules', 'portcullis-client'), { recursive: true });
  execFileSync('tar', ['-xzf', tgz, '-C', join(app, 'node_modules', 'portcullis-client'), '--strip-components=1']);
  for (const peer of ['react', 'vue', 'axios', '@vue']) {
    symlinkSync(join(here, 'node_modules', peer), join(app, 'node_modules', peer), 'dir');
  }
  const expected = {
    'portcullis-client': ['apiFetch', 'configure', 'createClient', 'defaultClient', 'getUser', 'login', 'logout'],
    'portcullis-client/react': ['useSession', 'useSessionExpiring'],
    'portcullis-client/vue': ['useSession', 'useSessionExpiring'],
    'portcullis-client/axios': ['attachPortcullis'],
  };
  // The bindings must share the core's module (one default client), in both formats.
  const probe = `
    const expected = ${JSON.stringify(expected)};
    const out = [];
    for (const [name, keys] of Object.entries(expected)) {
      const m = LOAD(name);
      for (const k of keys) if (typeof m[k] !== 'function') out.push(FORMAT + ' ' + name + ': no ' + k);
    }
    const core = LOAD('portcullis-client');
    const c = core.configure({ channel: false });
    if (core.defaultClient() !== c) out.push(FORMAT + ': defaultClient is not the configured one');
    console.log(JSON.stringify(out));`;
  writeFileSync(join(app, 'probe.cjs'), probe.replace(/LOAD\(/g, 'require(').replace(/FORMAT/g, "'require'"));
  writeFileSync(
    join(app, 'probe.mjs'),
    probe.replace(/LOAD\(/g, 'await import(').replace(/FORMAT/g, "'import'"),
  );
  for (const file of ['probe.cjs', 'probe.mjs']) {
    try {
      const out = execFileSync(process.execPath, [file], { cwd: app, encoding: 'utf8' });
      problems.push(...JSON.parse(out.trim().split('\n').pop()));
    } catch (err) {
      problems.push(`${file}: ${err.stderr || err.message}`);
    }
  }
} finally {
  rmSync(app, { recursive: true, force: true });
}

console.log(`pack: ${tgz} (${info.files.length} files, ${info.size} B)`);
for (const p of problems) console.error(`pack: ${p}`);
console.log(`pack: ${targets.length} export targets checked, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);

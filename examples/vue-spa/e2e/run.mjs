// End-to-end test of the built example (dist/) against the real `portcullis demo`,
// driven in Debian's Chromium through playwright-core (no browser download).
//
//   node e2e/run.mjs            (after `npm run build` and `cargo build -p portcullis-cli`)
//
// Env: PORTCULLIS_BIN (default <repo>/target/debug/portcullis),
//      CHROMIUM (default /usr/bin/chromium).
// Prints one line per test and `e2e: N passed, N failed`; exits 1 on any failure.
// examples/react-spa/e2e/run.mjs is the same file: both apps have the same features and
// test ids. Each example keeps its own copy so that it stands alone.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const dist = resolve(here, '../dist');
const artifacts = join(here, 'artifacts');
const bin = process.env.PORTCULLIS_BIN ?? join(repo, 'target/debug/portcullis');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TIMEOUT = 30_000;
// The gateway's default CSP plus `frame-src` for the IdP (the demo's, on a random
// loopback port): the silent login's hidden iframe is redirected there, and
// `default-src 'self'` alone would block it (see docs/frontend.md).
const SILENT_LOGIN_CSP =
  "default-src 'self'; frame-src 'self' http://127.0.0.1:*; frame-ancestors 'none'; object-src 'none'; base-uri 'self'";

function fail(message) {
  throw new Error(message);
}

/**
 * Starts `portcullis demo` on free ports with `args`; `ready` resolves with the
 * banner's `open` URL and, with `--public-url`, the gateway's own address.
 */
function startDemo(args, env = {}) {
  const data = mkdtempSync(join(tmpdir(), 'portcullis-e2e-'));
  const child = spawn(
    bin,
    ['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--store', 'memory',
      '--data-dir', data, ...args],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn', ...env } },
  );
  const stop = () => {
    child.kill('SIGTERM');
    rmSync(data, { recursive: true, force: true });
  };
  const ready = new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error('demo did not start within 60 s')), 60_000);
    const lines = createInterface({ input: child.stdout });
    const found = {};
    lines.on('line', (line) => {
      const m = line.trim().match(/^(open|gateway|IdP)\s+(\S+)/);
      if (m) found[m[1]] = m[2].replace(/\/$/, '');
      // The IdP line comes after open/gateway: the banner is complete enough.
      if (m && m[1] === 'IdP') {
        clearTimeout(timer);
        resolveReady({ base: found.open, gateway: found.gateway ?? found.open });
      }
    });
    child.on('exit', (code) => reject(new Error(`demo exited with ${code} before starting`)));
  });
  return { ready, stop };
}

/** A free loopback port (for the Vite dev server, which wants a fixed one). */
function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/** Starts `vite` (the dev server) proxying /auth and /api to `gateway`. */
async function startVite(port, gateway) {
  const child = spawn(
    process.execPath,
    [join(here, '../node_modules/vite/bin/vite.js'), '--host', 'localhost', '--port', String(port),
      '--strictPort', '--clearScreen', 'false'],
    { cwd: resolve(here, '..'), stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, PORTCULLIS_URL: gateway } },
  );
  // localhost, as docs/frontend.md recommends (one cookie host for app and login).
  const url = `http://localhost:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) fail(`vite exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/`)).ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) fail('vite dev server did not start within 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, stop: () => child.kill('SIGTERM') };
}

/** Waits until the element with `testid` has text that `match` accepts. */
async function waitText(page, testid, match, what = match) {
  const test =
    typeof match === 'string' ? (t) => t.includes(match) : typeof match === 'function' ? match : (t) => match.test(t);
  const deadline = Date.now() + TIMEOUT;
  let last = '<missing>';
  while (Date.now() < deadline) {
    const el = page.getByTestId(testid);
    if ((await el.count()) > 0) {
      last = (await el.first().textContent()) ?? '';
      if (test(last)) return last;
    }
    await page.waitForTimeout(50);
  }
  fail(`${testid}: expected ${what}, got ${JSON.stringify(last)}`);
}

/** The whole login in the browser: app button or guard → IdP form → back on the app. */
async function signIn(page, user, app = base) {
  await page.waitForURL((url) => !url.href.startsWith(app), { timeout: TIMEOUT });
  await page.locator('input[name=username]').fill(user);
  await page.locator('input[name=password]').fill(user);
  await Promise.all([
    page.waitForURL((url) => url.href.startsWith(app), { timeout: TIMEOUT }),
    page.locator('button[type=submit], input[type=submit], form button').first().click(),
  ]);
}

async function loginFromHome(page, user) {
  await page.goto(`${base}/`);
  await page.getByTestId('login').click();
  await signIn(page, user);
  await waitText(page, 'username', user);
}

let base;
const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('alice signs in, sees her roles, and calls the admin API, echo and the stream', async (ctx) => {
  const page = await ctx.newPage();
  await loginFromHome(page, 'alice');
  await waitText(page, 'roles', /admin.*hr/s, 'admin and hr');
  await page.getByTestId('nav-admin').waitFor();

  await page.getByTestId('nav-console').click();
  await page.getByTestId('call-admin').click();
  await waitText(page, 'result-status', '200');
  await waitText(page, 'result-body', '"pong": "admin"');

  await page.getByTestId('echo-input').fill('from the e2e test');
  await page.getByTestId('call-echo').click();
  await waitText(page, 'result-body', 'from the e2e test');
  await waitText(page, 'result-status', '200');

  await page.getByTestId('call-stream').click();
  await waitText(page, 'stream-count', /^10$/, '10 events');
  await waitText(page, 'stream-events', '{"n":10}');

  await page.getByTestId('nav-admin').click();
  await waitText(page, 'admin-status', '200');
});

test('carol has no admin view, is turned away from /admin, and gets 403 from the API', async (ctx) => {
  const page = await ctx.newPage();
  await loginFromHome(page, 'carol');
  await waitText(page, 'roles', 'none');
  if ((await page.getByTestId('nav-admin').count()) !== 0) fail('admin link shown to carol');

  await page.goto(`${base}/admin`);
  await waitText(page, 'denied', '/admin');
  if ((await page.getByTestId('admin-view').count()) !== 0) fail('admin view shown to carol');

  await page.getByTestId('nav-console').click();
  await page.getByTestId('call-admin').click();
  await waitText(page, 'result-status', '403');
  await waitText(page, 'result-body', '"error": "forbidden"');
  await page.getByTestId('call-hr').click();
  await waitText(page, 'result', '/api/hr/ping');
  await waitText(page, 'result-status', '403');
  await page.getByTestId('call-whoami').click();
  await waitText(page, 'result-status', '200');
});

test('an anonymous deep link goes through login and back to the page', async (ctx) => {
  const page = await ctx.newPage();
  await page.goto(`${base}/console`);
  await signIn(page, 'bob');
  await page.waitForURL(`${base}/console`, { timeout: TIMEOUT });
  await page.getByTestId('call-hr').click();
  await waitText(page, 'result-status', '200');
});

test('an API call without a session tries a silent login in an iframe, then login and back', async (ctx) => {
  const page = await ctx.newPage();
  await loginFromHome(page, 'bob');
  await page.getByTestId('nav-console').click();
  await page.waitForURL(`${base}/console`);
  // The hidden frame's answer from the gateway's callback: the page that posts the
  // result (its body is gone once the client removes the frame, so only the status).
  const silent = [];
  page.on('response', (r) => {
    if (r.frame() !== page.mainFrame() && new URL(r.url()).pathname === '/auth/callback') {
      silent.push(`${r.status()} ${r.headers()['content-type']}`);
    }
  });
  const asked = page.waitForRequest((r) => r.url().includes('/auth/login?prompt=none'));
  // The session cookie is gone (as after a logout elsewhere): the API answers 401.
  await ctx.clearCookies({ name: 'portcullis' });
  const clicked = Date.now();
  await page.getByTestId('call-whoami').click();
  const req = await asked;
  if (req.frame() === page.mainFrame()) fail('the silent login ran in the main frame');
  // The full login follows the frame's answer, not the client's 10 s timeout.
  await page.waitForURL((url) => !url.href.startsWith(base), { timeout: TIMEOUT });
  if (Date.now() - clicked > 8_000) fail('the fallback waited for the timeout: no answer from the frame');
  // The demo IdP keeps no login session: prompt=none answers login_required, and the
  // client falls back to the full login.
  await signIn(page, 'bob');
  if (!silent.some((a) => a.startsWith('200 text/html'))) fail(`silent login answers: ${JSON.stringify(silent)}`);
  await page.waitForURL(`${base}/console`, { timeout: TIMEOUT });
  await page.getByTestId('call-whoami').click();
  await waitText(page, 'result-status', '200');
});

test('a logout in one tab is seen by the second tab', async (ctx) => {
  const first = await ctx.newPage();
  await loginFromHome(first, 'alice');
  const second = await ctx.newPage();
  await second.goto(`${base}/console`);
  await waitText(second, 'whoami', 'alice');

  await first.getByTestId('logout').click();
  await first.waitForURL((url) => url.href.startsWith(`${base}/`) && !url.pathname.startsWith('/auth'), {
    timeout: TIMEOUT,
  });
  await first.getByTestId('anonymous').waitFor({ timeout: TIMEOUT });

  // No reload in the second tab: the client's BroadcastChannel message did it.
  await waitText(second, 'notice', 'another tab');
  await second.getByTestId('anonymous').waitFor({ timeout: TIMEOUT });
  if ((await second.getByTestId('whoami').count()) !== 0) fail('second tab still shows the user');
  const status = await second.evaluate(async () => (await fetch('/auth/me')).status);
  if (status !== 401) fail(`/auth/me after logout: ${status}`);
});

test('a banner two minutes before the idle deadline; "I am still here" extends it; after the end, a popup silent login', async (ctx) => {
  // A gateway whose sessions idle out after 130 s: the banner (2 minutes ahead) comes
  // 10 s after the last request, past the gateway's touch interval (1/20 of 130 s).
  const demo = startDemo(['--spa', dist], { PORTCULLIS__SESSION__IDLE_TIMEOUT: '130s' });
  try {
    const { base: short } = await demo.ready;
    const page = await ctx.newPage();
    await page.goto(`${short}/`);
    await page.getByTestId('login').click();
    await signIn(page, 'alice', short);
    await waitText(page, 'username', 'alice');
    const before = await page.getByTestId('idle-expires-at').textContent();
    await page.getByTestId('expiring').waitFor({ timeout: 40_000 });
    await waitText(page, 'expiring', /ends in [12]:\d\d/, 'a countdown');
    await page.getByTestId('still-here').click();
    await page.getByTestId('expiring').waitFor({ state: 'detached' });
    const after = await waitText(page, 'idle-expires-at', (t) => t !== before, 'a later idle deadline');
    if (!(Date.parse(after) > Date.parse(before))) fail(`idle deadline ${before} → ${after}`);

    // The session ends (its cookie gone, as on the gateway after the idle timeout): the
    // next "I'm still here" finds it over, and "Continue session" tries a silent login in
    // a popup. The demo IdP keeps no login session: the popup's callback page answers
    // login_required and closes itself, and the app falls back to the full login.
    await ctx.clearCookies({ name: 'portcullis' });
    await page.getByTestId('still-here').waitFor({ timeout: 40_000 });
    await page.getByTestId('still-here').click();
    await waitText(page, 'notice', 'ended');
    if ((await page.getByTestId('expiring').count()) !== 0) fail('expiry banner after the end');
    const opened = page.waitForEvent('popup');
    await page.getByTestId('continue').click();
    const popup = await opened;
    // It may have closed already (a fast IdP answer): then no 'close' event comes.
    if (!popup.isClosed()) await popup.waitForEvent('close', { timeout: TIMEOUT });
    // The full login follows the popup's answer, not the client's 10 s timeout.
    const closed = Date.now();
    await page.waitForURL((url) => !url.href.startsWith(short), { timeout: TIMEOUT });
    if (Date.now() - closed > 5_000) fail('the fallback waited for the timeout: no answer from the popup');
    await signIn(page, 'alice', short);
    await waitText(page, 'username', 'alice');
  } finally {
    demo.stop();
  }
});

test('the Vite dev server proxies /auth and /api to the gateway on one origin', async (ctx) => {
  const port = await freePort();
  const demo = startDemo(['--public-url', `http://localhost:${port}`]);
  let vite;
  try {
    const { gateway } = await demo.ready;
    vite = await startVite(port, gateway);
    const page = await ctx.newPage();
    await page.goto(`${vite.url}/`);
    await page.getByTestId('login').click();
    await signIn(page, 'alice', vite.url);
    await waitText(page, 'username', 'alice');
    await page.getByTestId('nav-console').click();
    await page.getByTestId('echo-input').fill('via vite');
    await page.getByTestId('call-echo').click();
    await waitText(page, 'result-body', 'via vite');
    await waitText(page, 'result-status', '200');
    await page.getByTestId('logout').click();
    await page.waitForURL((url) => url.href.startsWith(`${vite.url}/`) && !url.pathname.startsWith('/auth'));
    await page.getByTestId('anonymous').waitFor();
  } finally {
    vite?.stop();
    demo.stop();
  }
});

async function main() {
  for (const [what, path] of [['portcullis binary', bin], ['built example', join(dist, 'index.html')], ['Chromium', chromiumPath]]) {
    if (!existsSync(path)) {
      console.error(`e2e: ${what} not found at ${path}`);
      console.log(`e2e: 0 passed, ${tests.length} failed`);
      process.exit(1);
    }
  }
  const demo = startDemo(['--spa', dist], { PORTCULLIS__SERVER__CSP: SILENT_LOGIN_CSP });
  let browser;
  let passed = 0;
  let failed = 0;
  try {
    ({ base } = await demo.ready);
    browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    for (const { name, fn } of tests) {
      const ctx = await browser.newContext();
      ctx.setDefaultTimeout(TIMEOUT);
      // Script errors and CSP violations fail the test: the gateway's CSP has no
      // 'unsafe-inline', and the built app must live with it.
      const problems = [];
      ctx.on('page', (page) => {
        page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
        page.on('console', (msg) => {
          if (/Content.Security.Policy/i.test(msg.text())) problems.push(`CSP: ${msg.text()}`);
        });
      });
      const started = Date.now();
      try {
        await fn(ctx);
        if (problems.length) fail(problems.join('\n'));
        passed += 1;
        console.log(`ok   ${name} (${Date.now() - started} ms)`);
      } catch (err) {
        failed += 1;
        console.log(`FAIL ${name}\n     ${err && err.stack ? err.stack : err}`);
        mkdirSync(artifacts, { recursive: true });
        for (const [i, page] of ctx.pages().entries()) {
          const file = join(artifacts, `${name.replace(/\W+/g, '-').slice(0, 60)}-${i}.png`);
          await page.screenshot({ path: file }).catch(() => {});
          console.log(`     page ${i}: ${page.url()} (screenshot ${file})`);
        }
      } finally {
        await ctx.close();
      }
    }
  } catch (err) {
    console.error(`e2e: ${err && err.stack ? err.stack : err}`);
    failed = tests.length - passed;
  } finally {
    await browser?.close();
    demo.stop();
  }
  console.log(`e2e: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

await main();

// Real-browser end-to-end tests of portcullis: headless Debian chromium driven by
// playwright-core (no browser download, ever), in two setups:
//   demo           `portcullis demo` (its development IdP, sample API and SPA);
//   oidc-provider  `portcullis serve` against the npm oidc-provider of
//                  tests/oidc-provider, a small upstream and the demo SPA as [static].
//
//   node run.mjs            (from tests/e2e; needs target/debug/portcullis built)
//
// Env: PORTCULLIS_BIN (default ../../target/debug/portcullis),
//      CHROMIUM (default /usr/bin/chromium),
//      E2E_SUITE=demo|teach|oidc-provider (default: all).
// Screenshots of the key steps go to tests/e2e/artifacts/. Prints
// "N passed, N failed" at the end and exits 1 on any failure.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const BIN = process.env.PORTCULLIS_BIN || join(root, 'target/debug/portcullis');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = join(here, 'artifacts');
const TIMEOUT = 30_000;

const cleanups = [];
let passed = 0;
let failed = 0;

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

async function test(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   - ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL - ${name}\n       ${String(err && err.stack ? err.stack : err).split('\n').join('\n       ')}`);
  }
}

/** `portcullis demo` on free ports; resolves with the URL of its `open` line. */
function startDemo(extraArgs = []) {
  const dataDir = mkdtempSync(join(tmpdir(), 'portcullis-e2e-'));
  const child = spawn(
    BIN,
    ['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--data-dir', dataDir, '--store', 'memory', ...extraArgs],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } },
  );
  cleanups.push(() => {
    child.kill('SIGTERM');
    rmSync(dataDir, { recursive: true, force: true });
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo did not print its URL within 60 s\n${stderr}`)), 60_000);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/open\s+(http:\/\/\S+?)\/?\s*$/m);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`demo exited with ${code}\n${stderr}`));
    });
  });
}

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** Starts a child and resolves with the first stdout match of `pattern`. */
function startChild(cmd, args, options, pattern, what) {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options });
  cleanups.push(() => child.kill('SIGTERM'));
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${what} did not start within 60 s\n${stderr}`)), 60_000);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(pattern);
      if (m) {
        clearTimeout(timer);
        ok(m);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`${what} exited with ${code}\n${stderr}`));
    });
  });
}

/** An upstream API that answers every path with what it saw (never the token itself). */
function startUpstream() {
  const server = createServer((req, res) => {
    const auth = req.headers.authorization || '';
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ method: req.method, path: req.url, bearer: auth.startsWith('Bearer ') }));
  });
  cleanups.push(() => server.close());
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(`127.0.0.1:${server.address().port}`)));
}

/** `portcullis serve` against the npm oidc-provider; resolves with the gateway URL. */
async function startGatewayWithOidcProvider() {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-e2e-op-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const secret = 'e2e-client-secret-0123456789';
  writeFileSync(join(dir, 'op.json'), JSON.stringify({
    clients: [{
      client_id: 'portal',
      client_secret: secret,
      redirect_uris: [`${base}/auth/callback`],
      post_logout_redirect_uris: [`${base}/`],
    }],
  }));
  const opDir = join(root, 'tests/oidc-provider');
  assert(existsSync(join(opDir, 'node_modules/oidc-provider')), 'run npm ci in tests/oidc-provider');
  const [, opPort] = await startChild(
    process.execPath, ['server.mjs', join(dir, 'op.json')],
    { cwd: opDir, env: { ...process.env, OP_EXIT_ON_STDIN_EOF: '1' } },
    /LISTENING (\d+)/, 'oidc-provider',
  );
  const upstream = await startUpstream();
  writeFileSync(join(dir, 'portcullis.toml'), `
[server]
listen = "127.0.0.1:${port}"
public_url = "${base}"
profile = "dev"
[admin]
listen = ""
[oidc]
issuer = "http://127.0.0.1:${opPort}"
client_id = "portal"
client_secret = "${secret}"
scopes = ["openid", "profile", "email", "roles", "offline_access"]
roles_claim = "roles"
[session]
store = "memory"
[[routes]]
prefix = "/api/"
upstream = "http://${upstream}"
[static]
dir = "${join(root, 'crates/portcullis-demo/src/spa')}"
`);
  const child = spawn(BIN, ['serve', '--config', join(dir, 'portcullis.toml')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  // Logs go to stdout or stderr depending on the subscriber; keep both.
  let stderr = '';
  child.stdout.on('data', (d) => { stderr += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  cleanups.push(() => child.kill('SIGTERM'));
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const r = await fetch(`${base}/auth/me`);
      if (r.status === 401) break;
    } catch (_) { /* not listening yet */ }
    if (child.exitCode !== null) throw new Error(`portcullis serve exited\n${stderr}`);
    if (Date.now() > deadline) throw new Error(`portcullis serve did not answer\n${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { base, stderr: () => stderr };
}

/** A page on another origin (another port) that tries to change state on the gateway. */
function startAttacker(target) {
  const page = `<!doctype html><html><head><meta charset="utf-8"><title>attacker</title></head><body>
<h1>cross-origin attacker</h1>
<form id="echo" method="post" action="${target}/api/echo" enctype="text/plain">
  <input name='{"x":"' value='"}'>
</form>
<form id="logout" method="post" action="${target}/auth/logout"></form>
<script>
window.attack = async () => {
  const results = {};
  // Cookies are scoped by host, not port: this page can read the gateway's
  // XSRF-TOKEN. It must not help: the preflight for the header fails and the
  // gateway refuses the foreign Origin anyway.
  const token = decodeURIComponent((document.cookie.match(/(?:^|;\\s*)XSRF-TOKEN=([^;]*)/) || [])[1] || 'guess');
  results.tokenVisible = token !== 'guess';
  // A CORS request the gateway never allows: the browser must block it.
  try {
    const r = await fetch(${JSON.stringify(target)} + '/api/echo', {
      method: 'POST', credentials: 'include', mode: 'cors',
      headers: { 'Content-Type': 'application/json', 'X-XSRF-TOKEN': token },
      body: '{"hello":"attacker"}',
    });
    results.cors = 'status ' + r.status;
  } catch (e) { results.cors = 'blocked: ' + e.name; }
  // A "simple" request needs no preflight; it is sent with the cookie (same site),
  // and the gateway must refuse it (no CSRF header, foreign Origin).
  try {
    await fetch(${JSON.stringify(target)} + '/api/echo', {
      method: 'POST', credentials: 'include', mode: 'no-cors',
      headers: { 'Content-Type': 'text/plain' }, body: 'x',
    });
    results.noCors = 'sent (opaque)';
  } catch (e) { results.noCors = 'blocked: ' + e.name; }
  return results;
};
</script></body></html>`;
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page);
  });
  cleanups.push(() => server.close());
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(`http://127.0.0.1:${server.address().port}`)));
}

// Screenshots are artifacts for people, not assertions: one the browser
// cannot render in time (a starved machine) is reported, not a failure.
async function shot(page, name) {
  try {
    await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  } catch (e) {
    console.log(`#   screenshot ${name} skipped: ${e.message.split('\n')[0]}`);
  }
}

/** Everything script on the page can read: cookies, both storages, the DOM. */
async function jsVisibleState(page) {
  return page.evaluate(() => ({
    cookie: document.cookie,
    local: JSON.stringify(Object.entries(localStorage)),
    session: JSON.stringify(Object.entries(sessionStorage)),
    html: document.documentElement.outerHTML,
  }));
}

async function fetchIn(page, method, path, withToken) {
  return page.evaluate(async ({ method, path, withToken }) => {
    const token = (document.cookie.match(/(?:^|;\s*)XSRF-TOKEN=([^;]*)/) || [])[1] || '';
    const headers = { Accept: 'application/json', 'Content-Type': 'application/json' };
    if (withToken) headers['X-XSRF-TOKEN'] = decodeURIComponent(token);
    const r = await fetch(path, { method, headers, credentials: 'same-origin', body: method === 'GET' ? undefined : '{}' });
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    return { status: r.status, body };
  }, { method, path, withToken });
}

/** The IdP's login form: the demo IdP's and oidc-provider's both have username/password. */
async function login(page, base, user, tag) {
  await page.goto(`${base}/`);
  await page.click('#login');
  await page.waitForSelector('input[name=username]', { timeout: TIMEOUT });
  await shot(page, `${tag}-02-idp-login-form`);
  await page.fill('input[name=username]', user);
  await page.fill('input[name=password]', user);
  await Promise.all([
    page.waitForURL(`${base}/`, { timeout: TIMEOUT }),
    page.press('input[name=password]', 'Enter'),
  ]);
  await page.waitForSelector('#user.logged-in', { timeout: TIMEOUT });
}

/**
 * The browser-security checks against one running gateway at `base` serving the
 * demo SPA. `confirmLogout(page)` handles an IdP logout confirmation, if any.
 */
async function suite(tag, base, sessionCookie, confirmLogout) {
  const attacker = await startAttacker(base);
  const profileDir = mkdtempSync(join(tmpdir(), 'portcullis-chromium-'));
  cleanups.push(() => rmSync(profileDir, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  cleanups.unshift(() => context.close());
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  console.log(`# ${tag}: gateway at ${base}, attacker page at ${attacker}`);
  const t = (name, fn) => test(`[${tag}] ${name}`, fn);
  let firstToken = null;

  await t('start page is served with security headers and shows "not logged in"', async () => {
    const resp = await page.goto(`${base}/`);
    assert(resp.status() === 200, `status ${resp.status()}`);
    const h = resp.headers();
    assert((h['content-security-policy'] || '').includes("frame-ancestors 'none'"), `CSP ${h['content-security-policy']}`);
    assert(h['x-content-type-options'] === 'nosniff', 'nosniff');
    assert(h['referrer-policy'] === 'no-referrer', 'referrer-policy');
    await page.waitForFunction(() => document.getElementById('user').textContent.includes('not logged in'));
    await shot(page, `${tag}-01-start-page`);
    const me = await fetchIn(page, 'GET', '/auth/me', false);
    assert(me.status === 401 && me.body.authenticated === false, `me ${JSON.stringify(me)}`);
  });

  await t('login through the IdP form; the SPA shows the user', async () => {
    await login(page, base, 'alice', tag);
    const text = await page.textContent('#user');
    assert(/alice/i.test(text) && text.includes('admin'), `user line: ${text}`);
    await shot(page, `${tag}-03-logged-in`);
  });

  await t('no session cookie and no token in JS-visible storage', async () => {
    const state = await jsVisibleState(page);
    assert(state.cookie.includes('XSRF-TOKEN='), `XSRF-TOKEN readable: ${state.cookie}`);
    const names = state.cookie.split(';').map((c) => c.trim().split('=')[0]).filter(Boolean);
    assert(names.every((n) => n === 'XSRF-TOKEN'), `only XSRF-TOKEN visible, got ${names}`);
    const all = await context.cookies(base);
    const session = all.find((c) => c.name === sessionCookie);
    assert(session && session.httpOnly && session.sameSite === 'Lax', `session cookie ${JSON.stringify(session)}`);
    const xsrf = all.find((c) => c.name === 'XSRF-TOKEN');
    assert(xsrf && !xsrf.httpOnly && xsrf.sameSite === 'Lax', `XSRF-TOKEN readable, SameSite=Lax: ${JSON.stringify(xsrf)}`);
    firstToken = xsrf.value;
    for (const [where, text] of Object.entries(state)) {
      // JWTs (id/access tokens) start with base64url of '{"': eyJ.
      assert(!/eyJ[A-Za-z0-9_-]{10,}\./.test(text), `token-like string in ${where}`);
      assert(!text.includes(session.value), `session id visible in ${where}`);
    }
    assert(state.local === '[]' && state.session === '[]', 'web storage is empty');
  });

  await t('API GET and POST with the CSRF header succeed', async () => {
    await page.click('#whoami');
    await page.waitForFunction(() => document.getElementById('output').textContent.startsWith('GET /api/whoami -> 200'));
    await shot(page, `${tag}-04-api-get`);
    await page.click('#echo');
    await page.waitForFunction(() => document.getElementById('output').textContent.startsWith('POST /api/echo -> 200'));
    await shot(page, `${tag}-05-api-post`);
    const output = await page.textContent('#output');
    assert(!/eyJ[A-Za-z0-9_-]{10,}\./.test(output), 'no token in what the API showed the SPA');
  });

  await t('POST without or with a wrong CSRF header is refused with 403 csrf', async () => {
    const without = await fetchIn(page, 'POST', '/api/echo', false);
    assert(without.status === 403 && without.body.error === 'csrf', `without: ${JSON.stringify(without)}`);
    const wrong = await page.evaluate(async () => {
      const r = await fetch('/api/echo', { method: 'POST', headers: { 'X-XSRF-TOKEN': 'wrong', 'Content-Type': 'application/json' }, body: '{}' });
      return { status: r.status, body: await r.json() };
    });
    assert(wrong.status === 403 && wrong.body.error === 'csrf', `wrong: ${JSON.stringify(wrong)}`);
  });

  await t('the CSRF token is stable across tabs and requests', async () => {
    const before = (await jsVisibleState(page)).cookie;
    const tab = await context.newPage();
    await tab.goto(`${base}/`);
    await tab.waitForSelector('#user.logged-in');
    const inTab = await fetchIn(tab, 'POST', '/api/echo', true);
    assert(inTab.status === 200, `second tab POST ${inTab.status}`);
    const again = await fetchIn(page, 'POST', '/api/echo', true);
    assert(again.status === 200, `first tab POST after the second ${again.status}`);
    assert((await jsVisibleState(page)).cookie === before, 'XSRF-TOKEN unchanged');
    await tab.close();
  });

  await t('a cross-origin page on another port cannot change state', async () => {
    const evil = await context.newPage();
    await evil.goto(`${attacker}/`);
    const results = await evil.evaluate(() => window.attack());
    assert(results.cors.startsWith('blocked'), `CORS request must be blocked: ${results.cors}`);
    console.log(`#   attacker could read XSRF-TOKEN (same host, other port): ${results.tokenVisible}`);
    // Form POSTs navigate; the gateway answers 403 csrf to both.
    const [echoResp] = await Promise.all([
      evil.waitForNavigation(),
      evil.evaluate(() => document.getElementById('echo').submit()),
    ]);
    assert(echoResp.status() === 403, `cross-origin form POST /api/echo: ${echoResp.status()}`);
    await shot(evil, `${tag}-06-cross-origin-post-refused`);
    await evil.goto(`${attacker}/`);
    const [logoutResp] = await Promise.all([
      evil.waitForNavigation(),
      evil.evaluate(() => document.getElementById('logout').submit()),
    ]);
    assert(logoutResp.status() === 403, `cross-origin logout: ${logoutResp.status()}`);
    await evil.close();
    const me = await fetchIn(page, 'GET', '/auth/me', false);
    assert(me.status === 200 && me.body.authenticated === true, 'still logged in after the attacks');
  });

  await t('logout returns to the start page and /auth/me is 401', async () => {
    await page.click('#logout');
    await confirmLogout(page);
    await page.waitForURL((u) => u.toString().startsWith(`${base}/`) && !u.toString().includes('/auth/'), { timeout: TIMEOUT });
    await page.waitForFunction(() => document.getElementById('user').textContent.includes('not logged in'));
    await shot(page, `${tag}-07-logged-out`);
    const me = await fetchIn(page, 'GET', '/auth/me', false);
    assert(me.status === 401 && me.body.authenticated === false, `me after logout ${JSON.stringify(me)}`);
    const names = (await context.cookies(base)).map((c) => c.name);
    assert(!names.includes(sessionCookie), `session cookie cleared: ${names}`);
  });

  await t('a new login issues a new CSRF token; the old one is refused', async () => {
    await login(page, base, 'alice', `${tag}-relogin`);
    const xsrf = (await context.cookies(base)).find((c) => c.name === 'XSRF-TOKEN');
    assert(firstToken && xsrf && xsrf.value !== firstToken, 'XSRF-TOKEN changed at login');
    const old = await page.evaluate(async (token) => {
      const r = await fetch('/api/echo', { method: 'POST', headers: { 'X-XSRF-TOKEN': token, 'Content-Type': 'application/json' }, body: '{}' });
      return r.status;
    }, decodeURIComponent(firstToken));
    assert(old === 403, `old token refused: ${old}`);
    const fresh = await fetchIn(page, 'POST', '/api/echo', true);
    assert(fresh.status === 200, `new token accepted: ${fresh.status}`);
  });

  await t('no script errors on the SPA', async () => {
    assert(consoleErrors.length === 0, consoleErrors.join('\n'));
  });
}


/**
 * The demo page that teaches (issue 20): timeline, who holds what, refresh countdown,
 * log out at the IdP; at 1280x800 and at a phone size. Access tokens live 63 s, so the
 * gateway's proactive refresh (60 s before expiry) is due 3 s after login.
 */
async function teachingSuite(base, viewport, tag) {
  const profileDir = mkdtempSync(join(tmpdir(), 'portcullis-chromium-'));
  cleanups.push(() => rmSync(profileDir, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  cleanups.unshift(() => context.close());
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const t = (name, fn) => test(`[${tag}] ${name}`, fn);
  const noOverflow = async () => {
    const o = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
    assert(o.scroll <= o.client, `horizontal overflow: ${o.scroll} > ${o.client}`);
  };
  const timelineHas = (kind) => page.waitForSelector(`#timeline li.${kind}`, { timeout: TIMEOUT });
  const noTokenText = async () => {
    const html = await page.evaluate(() => document.documentElement.outerHTML);
    assert(!/eyJ[A-Za-z0-9_-]{10,}\./.test(html), 'no token-like string on the page');
  };

  await t('signed out: user table, empty panels', async () => {
    await page.goto(`${base}/`);
    await page.waitForFunction(() => document.getElementById('user').textContent.includes('not logged in'));
    const users = await page.textContent('#users');
    for (const u of ['alice', 'bob', 'carol', 'admin/ping']) assert(users.includes(u), `user table lacks ${u}`);
    assert((await page.textContent('#gateway-holds')).includes('none'), 'gateway holds no session');
    await noOverflow();
    await shot(page, `${tag}-01-signed-out`);
  });

  await t('signed in: the timeline shows redirect, code exchange, session created', async () => {
    await login(page, base, 'bob', tag);
    await timelineHas('login_redirect');
    await timelineHas('code_exchanged');
    await timelineHas('session_created');
    await page.waitForFunction(() => document.getElementById('gateway-holds').textContent.includes('refresh token'));
    const holds = await page.textContent('#gateway-holds');
    assert(holds.includes('hr') && holds.includes('held'), `gateway panel: ${holds}`);
    assert((await page.textContent('#browser-cookies')).includes('XSRF-TOKEN'), 'browser panel lists XSRF-TOKEN');
    await noTokenText();
    await noOverflow();
    await shot(page, `${tag}-02-signed-in-timeline`);
  });

  await t('after an API call: token attached; bob is refused the admin call', async () => {
    await page.uncheck('#auto-refresh');
    await page.click('#hr');
    await page.waitForFunction(() => document.getElementById('output').textContent.startsWith('GET /api/hr/ping -> 200'));
    await timelineHas('token_attached');
    await page.click('#admin');
    await page.waitForFunction(() => document.getElementById('output').textContent.startsWith('GET /api/admin/ping -> 403'));
    await noTokenText();
    await noOverflow();
    await shot(page, `${tag}-03-after-api-call`);
  });

  await t('after a refresh: the countdown runs out, the next call refreshes first', async () => {
    await page.waitForFunction(() => document.getElementById('countdown').textContent.includes('due now'), null, { timeout: TIMEOUT });
    await page.check('#auto-refresh');
    await timelineHas('refreshed');
    await page.waitForFunction(() => /refreshes\s*[1-9]/.test(document.getElementById('gateway-holds').textContent));
    await noTokenText();
    await noOverflow();
    await shot(page, `${tag}-04-after-refresh`);
  });

  await t('log out at the IdP: back-channel logout ends the session, live', async () => {
    await page.uncheck('#auto-refresh');
    const href = await page.getAttribute('#idp-logout', 'href');
    assert(href && href.includes('/logout?sid='), `IdP logout link: ${href}`);
    const [idp] = await Promise.all([context.waitForEvent('page'), page.click('#idp-logout')]);
    await idp.waitForSelector('#sign-out');
    await shot(idp, `${tag}-05a-idp-sign-out`);
    await Promise.all([idp.waitForSelector('#signed-out'), idp.click('#sign-out')]);
    await idp.close();
    await timelineHas('session_ended');
    const ended = await page.textContent('#timeline li.session_ended');
    assert(ended.includes('back-channel'), `ended by back-channel logout: ${ended}`);
    await page.waitForFunction(() => document.getElementById('user').textContent.includes('not logged in'));
    const me = await fetchIn(page, 'GET', '/auth/me', false);
    assert(me.status === 401, `session gone: ${me.status}`);
    await noOverflow();
    await shot(page, `${tag}-05-after-idp-logout`);
  });

  await t('no script errors on the teaching page', async () => {
    assert(errors.length === 0, errors.join('\n'));
  });
  await context.close();
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  assert(existsSync(BIN), `${BIN} missing: run cargo build -p portcullis-cli first`);
  assert(existsSync(CHROMIUM), `${CHROMIUM} missing: apt-get install -y chromium`);

  const only = process.env.E2E_SUITE;
  if (!only || only === 'demo') {
    const base = await startDemo();
    // The demo IdP redirects straight back after logout.
    await suite('demo', base, 'portcullis', async () => {});
  }
  if (!only || only === 'demo' || only === 'teach') {
    const base = await startDemo(['--access-token-ttl', '63s']);
    await teachingSuite(base, { width: 1280, height: 800 }, 'teach-desktop');
    await teachingSuite(base, { width: 390, height: 844 }, 'teach-phone');
  }
  if (!only || only === 'oidc-provider') {
    const { base, stderr } = await startGatewayWithOidcProvider();
    await test('[oidc-provider] `portcullis serve` in the dev profile warns and lists how it differs from prod', async () => {
      const log = stderr();
      for (const part of ['dev profile', 'plain http', '__Host-', 'Secure', 'Strict-Transport-Security']) {
        assert(log.includes(part), `startup warning mentions ${part}:\n${log}`);
      }
    });
    // oidc-provider may ask "Do you want to sign-out?" first; confirm if it does.
    await suite('oidc-provider', base, 'portcullis', async (page) => {
      const yes = page.locator('button[name=logout][value=yes]');
      const backHome = (u) => u.toString().startsWith(`${base}/`) && !u.toString().includes('/auth/');
      const first = await Promise.race([
        yes.waitFor({ timeout: TIMEOUT }).then(() => 'confirm'),
        page.waitForURL(backHome, { timeout: TIMEOUT }).then(() => 'home'),
      ]);
      if (first === 'confirm') {
        await shot(page, 'oidc-provider-07a-idp-logout-confirm');
        await yes.click();
      }
    });
  }
}

try {
  await main();
} catch (err) {
  failed += 1;
  console.log(`FAIL - setup\n       ${err && err.stack ? err.stack : err}`);
} finally {
  for (const c of cleanups) {
    try { await c(); } catch (_) { /* best effort */ }
  }
}
console.log(`\ne2e: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

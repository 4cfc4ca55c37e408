// Chaos soak driver for bench/soak.sh (see docs/resilience.md).
//
// One process runs the whole rig on loopback: Redis (child), the npm
// oidc-provider (child, tests/oidc-provider/server.mjs) behind a TCP proxy that
// can cut it off, N gateway replicas (children) behind a small HTTP load
// balancer, a small upstream API, and USERS simulated browsers. During the run
// it restarts Redis, kills (SIGKILL) and restarts one replica, stops (SIGTERM,
// the gateway drains) and restarts it again, makes the IdP answer 5xx and then
// makes it unreachable; at the end it prints the tables.
//
// Env: BIN (portcullis binary, required), DURATION (s, 600), USERS (100),
// FAULT_SECS (30), DOWN_SECS (Redis / replica down time, 5), ACCESS_TTL (s, 10),
// REPLICAS (2), SOAK_OUT (also write the report there), KEEP_WORK=1.
// Only node builtins: no npm install needed.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const BIN = process.env.BIN;
const DURATION = Number(process.env.DURATION ?? 600) * 1000;
const USERS = Number(process.env.USERS ?? 100);
const FAULT = Number(process.env.FAULT_SECS ?? 30) * 1000;
const DOWN = Number(process.env.DOWN_SECS ?? 5) * 1000;
const ACCESS_TTL = Number(process.env.ACCESS_TTL ?? 10);
const REPLICAS = Number(process.env.REPLICAS ?? 2);
const RECOVERY_WINDOW = 20_000; // after a fault: the "recovery" phase
// A replica stopped with SIGTERM must exit within server.drain_timeout (30 s,
// the default: the replicas' config does not set it); a little more, then it
// is killed and the report says so.
const DRAIN_LIMIT = 35_000;
const KEY = 'cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=';
if (!BIN) throw new Error('BIN (path of the portcullis binary) is required');

const WORK = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-soak-'));
const children = new Set();
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
const rand = (lo, hi) => lo + Math.random() * (hi - lo);
const T0 = Date.now();
const log = (...a) => console.error(`[${((Date.now() - T0) / 1000).toFixed(1).padStart(6)}s]`, ...a);

// ------------------------------------------------------------------ processes

function start(name, cmd, args, opts = {}) {
  const out = fs.openSync(path.join(WORK, `${name}.log`), 'a');
  const child = spawn(cmd, args, { stdio: [opts.stdin ?? 'ignore', opts.stdout ?? out, out], ...opts.spawn });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

function cleanup() {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
  children.clear();
  if (process.env.KEEP_WORK !== '1') fs.rmSync(WORK, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => process.exit(130));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function until(what, fn, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try { if (await fn()) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (logs in ${WORK})`);
    await sleep(50);
  }
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => child.once('exit', r));
}

function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch { return null; }
}

// ------------------------------------------------------------------ Redis

const redis = { port: await freePort(), child: null };
redis.dir = path.join(WORK, 'redis');
fs.mkdirSync(redis.dir);

function redisPing() {
  return new Promise((resolve) => {
    const s = net.connect(redis.port, '127.0.0.1');
    s.setTimeout(1000);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { s.destroy(); resolve(d.toString().startsWith('+PONG')); });
    s.on('error', () => resolve(false));
    s.on('timeout', () => { s.destroy(); resolve(false); });
  });
}

async function startRedis() {
  // AOF: a restart keeps the sessions, as a production Redis with persistence does.
  redis.child = start('redis', 'redis-server', [
    '--port', String(redis.port), '--bind', '127.0.0.1', '--dir', redis.dir,
    '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--daemonize', 'no',
  ]);
  await until('redis', redisPing);
}

// ------------------------------------------------------------------ IdP + cut-off proxy

const lb = { server: http.createServer(), port: 0 };
await new Promise((r) => lb.server.listen(0, '127.0.0.1', r));
lb.port = lb.server.address().port;
const PUBLIC = `http://127.0.0.1:${lb.port}`;

const idp = { proxyPort: await freePort(), port: 0, up: true, sockets: new Set() };
const ISSUER = `http://127.0.0.1:${idp.proxyPort}`;

function startIdpProxy() {
  idp.proxy = net.createServer((client) => {
    const upstream = net.connect(idp.port, '127.0.0.1');
    idp.sockets.add(client); idp.sockets.add(upstream);
    const drop = () => { client.destroy(); upstream.destroy(); idp.sockets.delete(client); idp.sockets.delete(upstream); };
    client.on('error', drop); upstream.on('error', drop);
    client.on('close', drop); upstream.on('close', drop);
    client.pipe(upstream); upstream.pipe(client);
  });
  return new Promise((r) => idp.proxy.listen(idp.proxyPort, '127.0.0.1', r));
}

async function cutIdp() { // connection refused for new connections, open ones reset
  idp.up = false;
  await new Promise((r) => { idp.proxy.close(() => r()); for (const s of idp.sockets) s.destroy(); idp.sockets.clear(); });
}

async function startIdp() {
  const users = Array.from({ length: USERS }, (_, i) => ({ sub: `u${i}`, password: `p${i}`, claims: { name: `User ${i}`, roles: ['user'] } }));
  const config = {
    issuer: ISSUER,
    clients: [{
      client_id: 'portal', client_secret: 'portal-secret',
      redirect_uris: [`${PUBLIC}/auth/callback`], post_logout_redirect_uris: [`${PUBLIC}/`],
    }],
    access_token_ttl: ACCESS_TTL,
    id_token_ttl: 3600,
    rotate_refresh_token: true,
    users,
  };
  const file = path.join(WORK, 'op.json');
  fs.writeFileSync(file, JSON.stringify(config));
  const child = start('idp', 'node', ['server.mjs', file], {
    stdin: 'pipe', stdout: 'pipe',
    spawn: { cwd: path.join(ROOT, 'tests/oidc-provider'), env: { ...process.env, OP_EXIT_ON_STDIN_EOF: '1' } },
  });
  idp.child = child;
  idp.port = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const m = /LISTENING (\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', () => reject(new Error(`IdP exited (see ${WORK}/idp.log)`)));
  });
  await startIdpProxy();
}

async function idpTest(method, p, body) {
  const r = await fetch(`http://127.0.0.1:${idp.port}${p}`, {
    method, headers: { 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined,
  });
  return r.json();
}
// The paths the gateway and the browsers use; interaction pages keep working.
const IDP_PATHS = ['/token', '/auth', '/jwks', '/me', '/token/revocation', '/session/end', '/.well-known/openid-configuration'];

// ------------------------------------------------------------------ upstream API

const upstream = { server: http.createServer((req, res) => {
  const auth = req.headers.authorization ?? '';
  req.resume();
  req.on('end', () => {
    const ok = /^Bearer \S+$/.test(auth);
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
    res.end(JSON.stringify(ok ? { items: [1, 2, 3], method: req.method } : { error: 'no_token' }));
  });
}) };
await new Promise((r) => upstream.server.listen(0, '127.0.0.1', r));
upstream.port = upstream.server.address().port;

// ------------------------------------------------------------------ replicas + load balancer

const replicas = [];

async function startReplica(i) {
  const r = replicas[i] ?? { i, port: await freePort(), admin: await freePort(), rss: {} };
  replicas[i] = r;
  const toml = `
[server]
listen = "127.0.0.1:${r.port}"
public_url = "${PUBLIC}"
profile = "dev"
log_format = "text"
log_level = "warn"
max_connections_per_ip = 100000
[admin]
listen = "127.0.0.1:${r.admin}"
[oidc]
issuer = "${ISSUER}"
client_id = "portal"
client_secret = "portal-secret"
scopes = ["openid", "profile", "email", "offline_access"]
http_timeout = "3s"
breaker_backoff = "250ms"
breaker_max_backoff = "1s"
[session]
store = "redis://127.0.0.1:${redis.port}"
encryption_keys = ["${KEY}"]
refresh_before = "${Math.max(1, Math.floor(ACCESS_TTL / 3))}s"
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:${upstream.port}"
`;
  const file = path.join(WORK, `replica${i}.toml`);
  fs.writeFileSync(file, toml);
  r.child = start(`replica${i}`, BIN, ['serve', '-c', file]);
  r.starts = (r.starts ?? 0) + 1;
  await until(`replica ${i} ready`, async () => (await fetch(`http://127.0.0.1:${r.admin}/readyz`)).status === 200);
  r.up = true;
  return r;
}

// Round-robin; a request that got no response (connection refused or reset)
// is retried on the next replica, as a load balancer with retries does.
let rr = 0;
let lbRetries = 0;
const lbRetriesBy = {}; // phase -> retries
const lbAgent = new http.Agent({ keepAlive: true, maxSockets: 256 });
lb.server.on('request', (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const tried = new Set();
    const attempt = () => {
      // Passive health check: a replica that refused is skipped for 1 s, and
      // never tried twice for one request.
      const now = Date.now();
      const live = replicas.filter((r) => r.up && !tried.has(r) && !(r.downUntil > now));
      if (live.length === 0) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        return res.end('no replica');
      }
      const r = live[rr++ % live.length];
      const up = http.request({
        host: '127.0.0.1', port: r.port, method: req.method, path: req.url, headers: req.headers, agent: lbAgent,
      }, (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
      });
      tried.add(r);
      up.on('error', () => {
        if (res.headersSent) return res.destroy();
        r.downUntil = Date.now() + 1000;
        lbRetries += 1;
        const phase = phaseOf(Date.now());
        lbRetriesBy[phase] = (lbRetriesBy[phase] ?? 0) + 1;
        attempt();
      });
      up.end(body);
    };
    attempt();
  });
});

// ------------------------------------------------------------------ measurements

const faults = []; // { name, start, end }
const drain = { secs: null, exit: null }; // the graceful restart: SIGTERM to exit
const phaseOf = (t) => {
  for (const f of faults) {
    if (t >= f.start && (f.end === undefined || t < f.end)) return f.name;
  }
  for (const f of faults) {
    if (f.end !== undefined && t >= f.end && t < f.end + RECOVERY_WINDOW) return `after ${f.name}`;
  }
  return 'normal';
};
const byPhase = new Map(); // phase -> Map(status -> count)
const samples = []; // API/me results: { start, end, status }
const counters = {
  logins: 0, loginFailIdp: 0, loginFailGateway: 0, logouts: 0, idpLogoutFailed: 0,
  forcedLogouts: 0, sessionsLost: 0, lostBy: {}, unexpected: [], loginFailures: {},
};

function count(kind, start, status) {
  const phase = phaseOf(start);
  if (!byPhase.has(phase)) byPhase.set(phase, new Map());
  const m = byPhase.get(phase);
  const key = String(status);
  m.set(key, (m.get(key) ?? 0) + 1);
  if (kind === 'api' || kind === 'me') samples.push({ start, end: Date.now(), status });
}

// ------------------------------------------------------------------ browsers

class Browser {
  constructor() { this.jar = new Map(); } // "name path" -> { name, value, path }

  cookieHeader(url) {
    const p = new URL(url).pathname;
    return [...this.jar.values()]
      .filter((c) => p === c.path || (p.startsWith(c.path) && (c.path.endsWith('/') || p[c.path.length] === '/')))
      .map((c) => `${c.name}=${c.value}`).join('; ');
  }

  store(headers) {
    for (const line of headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let cpath = '/';
      let gone = value === '';
      for (const a of attrs) {
        const [k, v] = a.split('=');
        if (/^path$/i.test(k)) cpath = v;
        if (/^max-age$/i.test(k) && Number(v) <= 0) gone = true;
        if (/^expires$/i.test(k) && Date.parse(a.slice(a.indexOf('=') + 1)) < Date.now()) gone = true;
      }
      const key = `${name} ${cpath}`;
      if (gone) this.jar.delete(key); else this.jar.set(key, { name, value, path: cpath });
    }
  }

  get(name) { return [...this.jar.values()].find((c) => c.name === name)?.value; }

  forgetIdp() { // the user closes the IdP's tab: its cookies are per port in our jar name space
    for (const [k, c] of this.jar) if (c.name.startsWith('_')) this.jar.delete(k);
  }

  async request(method, url, { body, headers = {}, kind } = {}) {
    const start = Date.now();
    const h = { ...headers };
    const cookie = this.cookieHeader(url);
    if (cookie) h.cookie = cookie;
    if (body) h['content-type'] = 'application/x-www-form-urlencoded';
    const resp = await fetch(url, { method, headers: h, body, redirect: 'manual', signal: AbortSignal.timeout(30_000) });
    this.store(resp.headers);
    const text = await resp.text();
    if (kind && url.startsWith(PUBLIC)) count(kind, start, resp.status);
    return { status: resp.status, location: resp.headers.get('location'), text, url };
  }

  // Follows redirects; stops (returns the redirect) when `stop(url)` says so.
  async follow(first, stop) {
    let r = first;
    for (let hops = 0; hops < 10 && r.status >= 300 && r.status < 400 && r.location; hops++) {
      const next = new URL(r.location, r.url).href;
      if (stop(next)) return { ...r, stoppedAt: next };
      r = await this.request('GET', next, { kind: next.startsWith(PUBLIC) ? 'login' : undefined });
    }
    return r;
  }
}

const formAction = (html) => {
  const m = /<form[^>]*action="([^"]+)"/.exec(html);
  return m && m[1].replace(/&amp;/g, '&');
};
const inputs = (html) => [...html.matchAll(/<input[^>]*>/g)].flatMap(([tag]) => {
  const name = / name="([^"]+)"/.exec(tag);
  const value = / value="([^"]*)"/.exec(tag);
  return name ? [[name[1], value ? value[1] : '']] : [];
});

let running = true;

async function login(b, user) {
  const atGateway = (u) => u.startsWith(PUBLIC) && !new URL(u).pathname.startsWith('/auth/');
  let r;
  try {
    r = await b.follow(await b.request('GET', `${PUBLIC}/auth/login?return_to=/`, { kind: 'login' }), atGateway);
    if (!r.stoppedAt) {
      if (!new URL(r.url).pathname.startsWith('/interaction/')) throw new Error(`no login form: ${r.status} ${r.url}`);
      const action = new URL(formAction(r.text), r.url).href;
      const form = new URLSearchParams({ username: user.sub, password: user.password }).toString();
      r = await b.follow(await b.request('POST', action, { body: form }), atGateway);
    }
  } catch (e) {
    r = { status: 0, url: String(e.cause?.code ?? e.message) };
  }
  if (r.stoppedAt) { counters.logins += 1; return true; }
  // Who failed: a gateway answer (callback) or the IdP (its pages, or unreachable).
  if (r.url.startsWith(PUBLIC)) counters.loginFailGateway += 1; else counters.loginFailIdp += 1;
  const where = `${r.url.startsWith(PUBLIC) ? 'gateway' : 'IdP'} ${r.status} in ${phaseOf(Date.now())}`;
  counters.loginFailures[where] = (counters.loginFailures[where] ?? 0) + 1;
  b.forgetIdp();
  return false;
}

async function logout(b) {
  try {
    const r = await b.request('POST', `${PUBLIC}/auth/logout`, {
      kind: 'logout',
      headers: { accept: 'application/json', 'x-xsrf-token': b.get('XSRF-TOKEN') ?? '', origin: PUBLIC },
    });
    counters.logouts += 1;
    if (r.status !== 200) return;
    const logoutUrl = new URL(JSON.parse(r.text).logout_url, PUBLIC).href;
    if (logoutUrl.startsWith(PUBLIC)) return; // no end_session at hand: nothing more to do
    // End the IdP session too, so the next login goes through the form again.
    const page = await b.follow(await b.request('GET', logoutUrl), (u) => u.startsWith(PUBLIC));
    if (page.stoppedAt) return;
    const action = formAction(page.text);
    if (page.status !== 200 || !action) throw new Error(`IdP logout page ${page.status}`);
    const fields = new URLSearchParams(inputs(page.text));
    if (!fields.has('logout')) fields.set('logout', 'yes');
    const done = await b.follow(await b.request('POST', new URL(action, page.url).href, { body: fields.toString() }), (u) => u.startsWith(PUBLIC));
    if (!done.stoppedAt) throw new Error(`IdP logout ended at ${done.status}`);
  } catch {
    counters.idpLogoutFailed += 1;
    b.forgetIdp();
  }
}

async function userLoop(i) {
  const user = { sub: `u${i}`, password: `p${i}` };
  await sleep(rand(0, 5000)); // staggered arrival
  while (running) {
    const b = new Browser();
    if (!await login(b, user)) { await sleep(rand(1000, 3000)); continue; }
    const sessionEnd = Date.now() + rand(30_000, 120_000);
    let lastOk = Date.now();
    let ended = false;
    while (running && Date.now() < sessionEnd) {
      const dice = Math.random();
      const [method, p, kind] = dice < 0.8 ? ['GET', '/api/items', 'api'] : dice < 0.9 ? ['POST', '/api/items', 'api'] : ['GET', '/auth/me', 'me'];
      const start = Date.now();
      let status;
      try {
        const headers = method === 'POST' ? { 'x-xsrf-token': b.get('XSRF-TOKEN') ?? '', origin: PUBLIC } : {};
        status = (await b.request(method, `${PUBLIC}${p}`, { kind, headers, body: method === 'POST' ? 'x=1' : undefined })).status;
      } catch (e) {
        status = `error:${e.cause?.code ?? e.name}`;
        count(kind, start, status);
      }
      if (status === 200) lastOk = Date.now();
      else if (status === 401) {
        counters.forcedLogouts += 1;
        // Lost across a fault: it worked before a fault began and is gone
        // after it. Charged to the last fault that began in between.
        const across = faults.filter((f) => f.start >= lastOk && f.start <= start).at(-1);
        if (across) {
          counters.sessionsLost += 1;
          counters.lostBy[across.name] = (counters.lostBy[across.name] ?? 0) + 1;
        }
        counters.unexpected.push({
          at: start - T0, user: user.sub, status, phase: phaseOf(start), lastOk: lastOk - T0, fault: across?.name,
        });
        ended = true;
        break;
      }
      await sleep(rand(300, 1200));
    }
    if (running && !ended) await logout(b);
    await sleep(rand(200, 1000));
  }
}

// ------------------------------------------------------------------ faults

async function fault(name, action) {
  const f = { name, start: Date.now() };
  faults.push(f);
  log(`fault ${name}: begin`);
  await action();
  f.end = Date.now();
  log(`fault ${name}: end (${((f.end - f.start) / 1000).toFixed(1)} s)`);
}

const schedule = [
  [0.15, 'redis restart', async () => {
    redis.child.kill('SIGTERM'); // graceful: AOF flushed
    await exited(redis.child);
    await sleep(DOWN);
    await startRedis();
  }],
  [0.3, 'replica kill', async () => {
    const r = replicas[REPLICAS - 1];
    r.rss.killed = rssKiB(r.child.pid);
    // No warning to the load balancer: it finds out from refused connections.
    r.child.kill('SIGKILL');
    await exited(r.child);
    await sleep(DOWN);
    await startReplica(r.i);
    r.rss.restarted = rssKiB(r.child.pid);
  }],
  // What an operator's restart (or a rolling deploy) does. The same replica
  // as the kill, so replica 0 runs the whole soak without a restart (its RSS
  // at the end says whether memory stays flat) and the two faults differ only
  // in the signal. As for the kill, the load balancer is not told: it finds
  // out from refused (or closed) connections.
  [0.4, 'replica restart', async () => {
    const r = replicas[REPLICAS - 1];
    r.rss.stopped = rssKiB(r.child.pid);
    const sent = Date.now();
    r.child.kill('SIGTERM');
    const drained = await Promise.race([exited(r.child).then(() => true), sleep(DRAIN_LIMIT).then(() => false)]);
    if (!drained) {
      r.child.kill('SIGKILL');
      await exited(r.child);
    }
    drain.secs = (Date.now() - sent) / 1000;
    drain.exit = drained ? (r.child.exitCode ?? r.child.signalCode) : `killed after ${DRAIN_LIMIT / 1000} s`;
    log(`replica ${r.i}: SIGTERM to exit ${drain.secs.toFixed(2)} s, exit ${drain.exit}`);
    await sleep(DOWN);
    await startReplica(r.i);
    r.rss.restartedAfterTerm = rssKiB(r.child.pid);
  }],
  [0.5, 'IdP 5xx', async () => {
    for (const p of IDP_PATHS) await idpTest('POST', '/__test/fault', { path: p, status: 503, body: '{"error":"server_error"}' });
    await sleep(FAULT);
    await idpTest('POST', '/__test/fault', { clear: true });
  }],
  [0.7, 'IdP unreachable', async () => {
    await cutIdp();
    await sleep(FAULT);
    await startIdpProxy();
    idp.up = true;
  }],
];

// ------------------------------------------------------------------ run

log(`work dir ${WORK}; ${USERS} users, ${REPLICAS} replicas, ${DURATION / 1000} s, faults ${FAULT / 1000} s, access tokens ${ACCESS_TTL} s`);
await startRedis();
await startIdp();
for (let i = 0; i < REPLICAS; i++) await startReplica(i);
log(`redis :${redis.port}, IdP :${idp.port} (proxy :${idp.proxyPort}), replicas ${replicas.map((r) => `:${r.port}`).join(' ')}, LB ${PUBLIC}`);
for (const r of replicas) r.rss.boot = rssKiB(r.child.pid);

const T_START = Date.now();
const users = Array.from({ length: USERS }, (_, i) => userLoop(i));
const warm = sleep(Math.min(30_000, DURATION * 0.1)).then(() => {
  for (const r of replicas) r.rss.warm = rssKiB(r.child.pid);
});
for (const [at, name, action] of schedule) {
  const wait = T_START + at * DURATION - Date.now();
  if (wait > 0) await sleep(wait);
  await fault(name, action);
}
await warm;
await sleep(Math.max(0, T_START + DURATION - Date.now()));
for (const r of replicas) r.rss.end = rssKiB(r.child.pid);
running = false;
log('stopping users');
await Promise.race([Promise.all(users), sleep(35_000)]);

// ------------------------------------------------------------------ report

const events = await idpTest('GET', '/__test/events');
const reuse = events.filter((e) => e.type === 'grant.error' && /already used/.test(e.error_detail ?? '')).length;
const refreshes = events.filter((e) => e.type === 'grant.success' && e.grant_type === 'refresh_token').length;
const refreshErrors = {};
for (const e of events.filter((x) => x.type === 'grant.error')) {
  const k = `${e.grant_type}:${e.error}${e.error_detail ? ` (${e.error_detail})` : ''}`;
  refreshErrors[k] = (refreshErrors[k] ?? 0) + 1;
}

const lines = [];
const out = (s = '') => lines.push(s);
const phases = ['normal', ...schedule.flatMap(([, n]) => [n, `after ${n}`])];
const statuses = [...new Set([...byPhase.values()].flatMap((m) => [...m.keys()]))].sort();
out('Requests through the gateway by phase (when the request started) and status:');
out();
out(`| phase | ${statuses.join(' | ')} | total |`);
out(`|---|${statuses.map(() => '---:').join('|')}|---:|`);
for (const p of phases) {
  const m = byPhase.get(p) ?? new Map();
  const total = [...m.values()].reduce((a, b) => a + b, 0);
  out(`| ${p} | ${statuses.map((s) => m.get(s) ?? 0).join(' | ')} | ${total} |`);
}
out();

// Recovery: from the end of a fault to the end of the last failed API call
// (5xx, 401 or transport error) that started after it, within the recovery window.
out('| fault | window (s) | API/me calls in window: 2xx / 503 / other | recovery after it (s) | failed calls after it | sessions lost | LB retries (window + after) |');
out('|---|---:|---|---:|---:|---:|---:|');
const recovery = {};
for (const [k, f] of faults.entries()) {
  const stop = Math.min(f.end + RECOVERY_WINDOW, faults[k + 1]?.start ?? Infinity);
  const inside = samples.filter((s) => s.start >= f.start && s.start < f.end);
  const ok = inside.filter((s) => s.status >= 200 && s.status < 300).length;
  const s503 = inside.filter((s) => s.status === 503).length;
  const after = samples.filter((s) => s.start >= f.end && s.start < stop && !(s.status >= 200 && s.status < 300));
  const last = after.reduce((m, s) => Math.max(m, s.end), f.end);
  recovery[f.name] = (last - f.end) / 1000;
  const retries = (lbRetriesBy[f.name] ?? 0) + (lbRetriesBy[`after ${f.name}`] ?? 0);
  out(`| ${f.name} | ${((f.end - f.start) / 1000).toFixed(1)} | ${ok} / ${s503} / ${inside.length - ok - s503} | ${recovery[f.name].toFixed(1)} | ${after.length} | ${counters.lostBy[f.name] ?? 0} | ${retries} |`);
}
out();

const outsideNon503 = [...byPhase.entries()].flatMap(([p, m]) => [...m.entries()]
  .filter(([s]) => !/^[23]\d\d$/.test(s) && !(s === '503' && !p.startsWith('normal')))
  .map(([s, n]) => ({ p, s, n })));
const mb = (k) => (k == null ? '-' : `${(k / 1024).toFixed(1)}`);
out('| replica | RSS boot (MiB) | after warm-up | before kill | restarted | before SIGTERM | restarted | end | starts |');
out('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of replicas) {
  out(`| ${r.i} | ${mb(r.rss.boot)} | ${mb(r.rss.warm)} | ${mb(r.rss.killed)} | ${mb(r.rss.restarted)} | ${mb(r.rss.stopped)} | ${mb(r.rss.restartedAfterTerm)} | ${mb(r.rss.end)} | ${r.starts} |`);
}
out();
const errors5xxOutside = [...byPhase.entries()].filter(([p]) => p === 'normal')
  .flatMap(([, m]) => [...m.entries()].filter(([s]) => !/^[23]\d\d$/.test(s))).reduce((a, [, n]) => a + n, 0);
const maxRecovery = Math.max(0, ...Object.values(recovery));
out('| figure | value | goal |');
out('|---|---:|---|');
out(`| sessions lost (worked before a fault, 401 after it) | ${counters.sessionsLost} | 0 |`);
for (const f of faults) out(`| … after ${f.name} | ${counters.lostBy[f.name] ?? 0} | 0 |`);
out(`| forced logouts (401 on a session the user did not end) | ${counters.forcedLogouts} | 0 |`);
out(`| refresh-token reuse seen by the IdP | ${reuse} | 0 |`);
out(`| non-2xx/3xx answers in normal phases | ${errors5xxOutside} | 0 |`);
out(`| answers other than 2xx/3xx/503 in any phase | ${outsideNon503.filter((x) => x.s !== '503').reduce((a, x) => a + x.n, 0)} | 0 |`);
out(`| slowest recovery after a fault (s) | ${maxRecovery.toFixed(1)} | ≤ 5 |`);
if (drain.secs !== null) out(`| replica restart: SIGTERM to exit (s), exit status | ${drain.secs.toFixed(2)}, ${drain.exit} | ≤ 30 (drain_timeout), 0 |`);
out(`| logins / logouts | ${counters.logins} / ${counters.logouts} | |`);
out(`| failed logins: at the IdP / at the gateway | ${counters.loginFailIdp} / ${counters.loginFailGateway} | (IdP ones expected in IdP windows) |`);
out(`| IdP logouts that failed (user closed the tab) | ${counters.idpLogoutFailed} | |`);
out(`| refreshes at the IdP | ${refreshes} | |`);
out(`| load balancer retries (no answer from a replica) | ${lbRetries} | |`);
out();
if (Object.keys(refreshErrors).length) {
  out(`IdP token errors: ${Object.entries(refreshErrors).map(([k, n]) => `${k} ×${n}`).join(', ')}`);
  out();
}
if (Object.keys(counters.loginFailures).length) {
  out(`Failed logins (who answered, status, phase): ${Object.entries(counters.loginFailures).map(([k, n]) => `${k} ×${n}`).join(', ')}`);
  out();
}
if (counters.unexpected.length) {
  out(`401s (first 20): ${counters.unexpected.slice(0, 20).map((u) => `${u.user}@${(u.at / 1000).toFixed(1)}s [${u.phase}, last ok ${(u.lastOk / 1000).toFixed(1)}s${u.fault ? `, lost across ${u.fault}` : ''}]`).join('; ')}`);
  out();
}
out(`Faults at (s from start): ${faults.map((f) => `${f.name} ${((f.start - T0) / 1000).toFixed(0)}–${((f.end - T0) / 1000).toFixed(0)}`).join(', ')}`);
const report = lines.join('\n');
console.log(report);
if (process.env.SOAK_OUT) fs.writeFileSync(process.env.SOAK_OUT, `${report}\n`);
if (process.env.KEEP_WORK === '1') log(`logs kept in ${WORK}`);
process.exit(0);

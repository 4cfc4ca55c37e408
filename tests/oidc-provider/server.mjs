// OpenID Provider for portcullis integration tests, built on the certified
// `oidc-provider` package (version pinned in package-lock.json).
//
//   node server.mjs [config.json]        (or env OP_CONFIG=config.json)
//
// Listens on 127.0.0.1 (port 0 = ephemeral unless `port` / env OP_PORT is set)
// and prints exactly one line `LISTENING <port>` to stdout once it accepts
// connections. Everything else goes to stderr.
//
// Config file (all fields optional):
//   issuer_host            "127.0.0.1"; issuer is http://<issuer_host>:<port>
//   issuer                 full issuer URL, overrides the above (e.g. a proxy in
//                          front of the OP, as bench/soak uses to cut it off)
//   port                   0
//   clients                [oidc-provider client metadata]; grant_types and
//                          response_types default to code + refresh_token
//   access_token_ttl       300 (seconds)
//   id_token_ttl           300
//   refresh_token_ttl      86400
//   rotate_refresh_token   true  (false: the same refresh token is reused)
//   users                  [{ sub, password, claims: {...} }]; default alice/bob/carol
//
// Scopes: openid profile email roles offline_access. `roles` is a custom scope
// carrying the `roles` claim (array of strings). Scope claims are also put in
// the ID token (conformIdTokenClaims: false). Refresh tokens are issued to
// every client allowed the refresh_token grant, with or without offline_access.
// PKCE (S256 only) is required for every client. `sid` is in the ID token only
// for clients registered with a backchannel_logout_uri (session required).
// Clients with a backchannel_logout_uri default to
// backchannel_logout_session_required: true. Loopback http redirect URIs work
// for ordinary web clients (exact match, port included).
//
// Env: OP_EXIT_ON_STDIN_EOF=1 makes the server exit when its stdin closes.
// Node.js 20.19+ works (oidc-provider prints an "Unsupported runtime" warning
// below Node 22; harmless for tests).
//
// Interactions: GET /interaction/:uid shows a login form (fields username,
// password) posting to /interaction/:uid/login; the consent prompt is granted
// automatically (GET /interaction/:uid answers 303 straight back to the OP).
// GET /interaction/:uid/abort ends the interaction with access_denied.
//
// Test-only endpoints:
//   GET  /__test/revocations          revocation endpoint calls seen
//   GET  /__test/events               provider events (refresh rotation, reuse, grant revocation, errors...)
//   GET  /__test/sessions             logins seen: [{ client_id, sub, sid }]
//   POST /__test/backchannel-logout   JSON { sub, sid?, client_id? }: send logout tokens to the
//                                     clients' backchannel_logout_uri; answers the outcome per client
//   POST /__test/revoke-grants        JSON { sub?, client_id? }: kills the matching grants (and their
//                                     access/refresh tokens) as if revoked at the OP; answers { revoked: [ids] }
//   POST /__test/fault                JSON { path, status?, delay_ms?, body?, content_type?, times? }:
//                                     the next `times` (default unlimited) requests to `path` (e.g. "/token")
//                                     are delayed by delay_ms and, if status is given, answered with
//                                     status/body instead of reaching oidc-provider. { path } alone or
//                                     { clear: true } removes faults.
//   POST /__test/reset                clears the recorded revocations/events and faults

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

// stdout carries only the LISTENING line.
console.log = console.error;
console.info = console.error;

const configPath = process.argv[2] || process.env.OP_CONFIG;
const cfg = configPath ? JSON.parse(fs.readFileSync(configPath, 'utf8')) : {};

const issuerHost = cfg.issuer_host ?? '127.0.0.1';
const listenPort = Number(cfg.port ?? process.env.OP_PORT ?? 0);
const accessTokenTtl = Number(cfg.access_token_ttl ?? 300);
const idTokenTtl = Number(cfg.id_token_ttl ?? 300);
const refreshTokenTtl = Number(cfg.refresh_token_ttl ?? 24 * 60 * 60);
const rotateRefreshToken = cfg.rotate_refresh_token ?? true;

const defaultUsers = [
  { sub: 'alice', name: 'Alice Anderson', roles: ['admin', 'hr'] },
  { sub: 'bob', name: 'Bob Brown', roles: ['hr'] },
  { sub: 'carol', name: 'Carol Clark', roles: [] },
].map(({ sub, name, roles }) => ({
  sub,
  password: sub,
  claims: {
    name,
    email: `${sub}@example.com`,
    email_verified: true,
    preferred_username: sub,
    roles,
  },
}));

const users = new Map((cfg.users ?? defaultUsers).map((u) => [u.sub, u]));

const clients = (cfg.clients ?? []).map((c) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  ...(c.backchannel_logout_uri && c.backchannel_logout_session_required === undefined
    ? { backchannel_logout_session_required: true }
    : {}),
  ...c,
}));

// ---------------------------------------------------------------- recording

let seq = 0;
const events = [];
const revocations = [];
const sessions = [];
const grants = new Map(); // grant id -> { sub, client_id }
const faults = new Map(); // path -> { status, delay_ms, body, content_type, times }

function record(list, entry) {
  seq += 1;
  const item = { seq, at: new Date().toISOString(), ...entry };
  list.push(item);
  return item;
}

function errInfo(err) {
  if (!err) return {};
  return {
    error: err.error ?? err.name,
    error_description: err.error_description ?? err.message,
    // e.g. "refresh token already used" (reuse of a rotated refresh token)
    error_detail: err.error_detail,
  };
}

function tokenInfo(token) {
  return {
    // Opaque tokens: the jti is the token value itself (test-only endpoint).
    jti: token.jti,
    grant_id: token.grantId,
    client_id: token.clientId,
    sub: token.accountId,
    rotations: token.rotations,
  };
}

// ---------------------------------------------------------------- keys

function jwk(kty, opts, alg, kid) {
  // Not `privateKey.export({ format: 'jwk' })` on the generated KeyObject:
  // in Node 20 a GC during that export can run the key generation job's
  // destructor, which takes the mutex the export holds (self-deadlock, seen
  // as a hang at startup). Encode to PEM inside the job, re-import, export.
  const { privateKey } = crypto.generateKeyPairSync(kty, {
    ...opts,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { ...crypto.createPrivateKey(privateKey).export({ format: 'jwk' }), alg, use: 'sig', kid };
}

const jwks = {
  keys: [
    jwk('rsa', { modulusLength: 2048 }, 'RS256', `rs256-${crypto.randomBytes(6).toString('hex')}`),
    jwk('ec', { namedCurve: 'P-256' }, 'ES256', `es256-${crypto.randomBytes(6).toString('hex')}`),
  ],
};

// ---------------------------------------------------------------- provider

function findUser(sub) {
  return users.get(sub);
}

const configuration = {
  clients,
  jwks,
  cookies: {
    keys: [crypto.randomBytes(32).toString('base64url')],
    long: { signed: true },
    short: { signed: true },
  },
  claims: {
    acr: null,
    auth_time: null,
    iss: null,
    sid: null,
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    roles: ['roles'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'roles'],
  responseTypes: ['code'],
  // Claims of granted scopes also land in the ID token (roles in particular).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // Own pages: the defaults pull a web font from the internet.
      async logoutSource(ctx, form) {
        ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign-out</title></head><body>
<h1>Do you want to sign-out from ${escapeHtml(ctx.host)}?</h1>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>
</body></html>`;
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Signed out</title></head><body><h1 id="signed-out">Sign-out Success</h1></body></html>';
      },
    },
    backchannelLogout: { enabled: true },
    userinfo: { enabled: true },
    introspection: { enabled: true },
  },
  // Refresh tokens for every client allowed the grant, offline_access or not
  // (by default oidc-provider wants offline_access, which it silently drops
  // when `prompt` is sent without `consent`).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: Boolean(rotateRefreshToken),
  ttl: {
    AccessToken: accessTokenTtl,
    AuthorizationCode: 60,
    IdToken: idTokenTtl,
    RefreshToken: refreshTokenTtl,
    Interaction: 600,
    Session: 24 * 60 * 60,
    Grant: 24 * 60 * 60,
  },
  interactions: {
    url: async (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  async findAccount(ctx, sub) {
    const user = findUser(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...(user.claims ?? {}) };
      },
    };
  },
  // Back-channel logout POSTs go to 127.0.0.1, which oidc-provider's
  // SSRF protection (a dispatcher refusing special-use IPs) would block.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><head><title>oops</title></head><body><h1>oops! something went wrong</h1><pre>${escapeHtml(JSON.stringify(out, null, 2))}</pre></body></html>`;
  },
};

// ---------------------------------------------------------------- interactions

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function loginPage(uid, clientId, error) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign-in</title></head>
<body>
<h1>Sign-in</h1>
<p>Client: ${escapeHtml(clientId)}</p>
${error ? `<p class="error" id="error">${escapeHtml(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label>Username <input type="text" name="username" required autofocus></label>
  <label>Password <input type="password" name="password" required></label>
  <button type="submit">Sign-in</button>
</form>
<a href="/interaction/${escapeHtml(uid)}/abort">Cancel</a>
</body></html>`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, 'application/json', JSON.stringify(value));
}

async function autoConsent(provider, req, res, details) {
  const { prompt, grantId, session, params } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const d = prompt.details ?? {};
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  if (d.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const savedGrantId = await grant.save();
  const consent = grantId ? {} : { grantId: savedGrantId };
  await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

async function handleInteraction(provider, req, res, uid, action) {
  const method = req.method;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, 'text/html; charset=utf-8', `<h1>interaction error</h1><p>${escapeHtml(err.message)}</p>`);
  }
  if (details.uid !== uid) {
    return send(res, 400, 'text/html; charset=utf-8', '<h1>interaction mismatch</h1>');
  }

  if (action === 'abort' && method === 'GET') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  if (action === '' && method === 'GET') {
    switch (details.prompt.name) {
      case 'login':
        return send(res, 200, 'text/html; charset=utf-8', loginPage(uid, details.params.client_id));
      case 'consent':
        return autoConsent(provider, req, res, details);
      default:
        return send(res, 501, 'text/plain', `prompt ${details.prompt.name} not implemented`);
    }
  }

  if (action === 'login' && method === 'POST') {
    if (details.prompt.name !== 'login') {
      return send(res, 400, 'text/plain', `expected login prompt, got ${details.prompt.name}`);
    }
    const form = await readForm(req);
    const username = form.get('username') ?? '';
    const password = form.get('password') ?? '';
    const user = findUser(username);
    if (!user || user.password !== password) {
      record(events, { type: 'login.failed', username });
      return send(res, 200, 'text/html; charset=utf-8', loginPage(uid, details.params.client_id, 'Invalid username or password.'));
    }
    record(events, { type: 'login.success', sub: user.sub, client_id: details.params.client_id });
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
  }

  return send(res, 405, 'text/plain', 'method not allowed');
}

// ---------------------------------------------------------------- test endpoints

async function handleTest(provider, req, res, path) {
  if (req.method === 'GET' && path === '/__test/revocations') return sendJson(res, 200, revocations);
  if (req.method === 'GET' && path === '/__test/events') return sendJson(res, 200, events);
  if (req.method === 'GET' && path === '/__test/sessions') return sendJson(res, 200, sessions);
  if (req.method === 'POST' && path === '/__test/reset') {
    events.length = 0;
    revocations.length = 0;
    faults.clear();
    return sendJson(res, 200, { ok: true });
  }
  if (req.method === 'POST' && path === '/__test/revoke-grants') {
    const body = await readJson(req);
    const revoked = [];
    for (const [grantId, g] of grants) {
      if ((body.sub && g.sub !== body.sub) || (body.client_id && g.client_id !== body.client_id)) continue;
      await Promise.all([
        provider.AccessToken.revokeByGrantId(grantId),
        provider.RefreshToken.revokeByGrantId(grantId),
        provider.AuthorizationCode.revokeByGrantId(grantId),
        provider.Grant.adapter.destroy(grantId),
      ]);
      grants.delete(grantId);
      revoked.push(grantId);
      record(events, { type: 'test.grant_revoked', grant_id: grantId, ...g });
    }
    return sendJson(res, 200, { revoked });
  }
  if (req.method === 'POST' && path === '/__test/fault') {
    const body = await readJson(req);
    if (body.clear) faults.clear();
    else if (!body.path) return sendJson(res, 400, { error: 'path required' });
    else if (body.status === undefined && body.delay_ms === undefined) faults.delete(body.path);
    else faults.set(body.path, { ...body });
    return sendJson(res, 200, Object.fromEntries(faults));
  }
  if (req.method === 'POST' && path === '/__test/backchannel-logout') {
    const body = await readJson(req);
    if (!body.sub) return sendJson(res, 400, { error: 'sub required' });
    const targets = clients.filter((c) => c.backchannel_logout_uri
      && (!body.client_id || c.client_id === body.client_id));
    const results = [];
    for (const meta of targets) {
      const client = await provider.Client.find(meta.client_id);
      const sid = body.sid ?? [...sessions].reverse()
        .find((s) => s.client_id === meta.client_id && s.sub === body.sub)?.sid;
      try {
        await client.backchannelLogout(body.sub, sid);
        record(events, { type: 'backchannel.success', client_id: meta.client_id, sub: body.sub, sid });
        results.push({ client_id: meta.client_id, sub: body.sub, sid, ok: true });
      } catch (err) {
        record(events, { type: 'backchannel.error', client_id: meta.client_id, sub: body.sub, sid, error: err.message });
        results.push({ client_id: meta.client_id, sub: body.sub, sid, ok: false, error: err.message });
      }
    }
    return sendJson(res, 200, results);
  }
  return sendJson(res, 404, { error: 'not_found' });
}

// ---------------------------------------------------------------- events

function hookEvents(provider) {
  for (const kind of ['refresh_token', 'access_token', 'authorization_code']) {
    for (const what of ['saved', 'consumed', 'destroyed']) {
      provider.on(`${kind}.${what}`, (token) => record(events, { type: `${kind}.${what}`, ...tokenInfo(token) }));
    }
  }
  provider.on('grant.saved', (grant) => {
    grants.set(grant.jti, { sub: grant.accountId, client_id: grant.clientId });
  });
  provider.on('grant.destroyed', (grant) => grants.delete(grant.jti));
  provider.on('grant.revoked', (ctx, grantId) => record(events, {
    type: 'grant.revoked', grant_id: grantId, route: ctx?.oidc?.route, client_id: ctx?.oidc?.client?.clientId,
  }));
  provider.on('grant.success', (ctx) => record(events, {
    type: 'grant.success', grant_type: ctx.oidc.params?.grant_type, client_id: ctx.oidc.client?.clientId,
  }));
  provider.on('grant.error', (ctx, err) => record(events, {
    type: 'grant.error', grant_type: ctx.oidc?.params?.grant_type, client_id: ctx.oidc?.client?.clientId, ...errInfo(err),
  }));
  provider.on('revocation.error', (ctx, err) => record(events, {
    type: 'revocation.error', client_id: ctx.oidc?.client?.clientId, ...errInfo(err),
  }));
  provider.on('userinfo.error', (ctx, err) => record(events, { type: 'userinfo.error', ...errInfo(err) }));
  provider.on('authorization.error', (ctx, err) => record(events, {
    type: 'authorization.error', client_id: ctx.oidc?.client?.clientId, ...errInfo(err),
  }));
  provider.on('authorization.success', (ctx) => {
    const clientId = ctx.oidc.client?.clientId;
    const sub = ctx.oidc.session?.accountId;
    const sid = clientId ? ctx.oidc.session?.sidFor(clientId) : undefined;
    record(events, { type: 'authorization.success', client_id: clientId, sub, sid });
    if (clientId && sub) record(sessions, { client_id: clientId, sub, sid });
  });
  provider.on('end_session.success', (ctx) => record(events, { type: 'end_session.success', client_id: ctx.oidc?.client?.clientId }));
  provider.on('backchannel.success', (ctx, client, accountId, sid) => record(events, {
    type: 'backchannel.success', client_id: client.clientId, sub: accountId, sid,
  }));
  provider.on('backchannel.error', (ctx, err, client, accountId, sid) => record(events, {
    type: 'backchannel.error', client_id: client.clientId, sub: accountId, sid, error: err.message,
  }));
  provider.on('server_error', (ctx, err) => {
    console.error('server_error', err);
    record(events, { type: 'server_error', path: ctx?.path, error: String(err?.message ?? err) });
  });

  // Revocation calls: the endpoint always answers 200, so record what it saw.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === 'revocation') {
      const token = ctx.oidc.entities?.RefreshToken ?? ctx.oidc.entities?.AccessToken
        ?? ctx.oidc.entities?.ClientCredentials;
      record(revocations, {
        status: ctx.status,
        client_id: ctx.oidc.client?.clientId,
        token_type_hint: ctx.oidc.params?.token_type_hint,
        token: ctx.oidc.params?.token,
        found: Boolean(token),
        kind: token?.kind,
        grant_id: token?.grantId,
        sub: token?.accountId,
      });
    }
  });
}

// ---------------------------------------------------------------- server

const server = http.createServer();

server.listen(listenPort, '127.0.0.1', async () => {
  const { port } = server.address();
  const issuer = cfg.issuer ?? `http://${issuerHost}:${port}`;
  const provider = new Provider(issuer, configuration);
  hookEvents(provider);

  // Static clients are validated lazily; fail now rather than at /auth.
  for (const c of clients) {
    try {
      if (!await provider.Client.find(c.client_id)) throw new Error('not found');
    } catch (err) {
      console.error(`invalid client ${c.client_id}: ${err.error_description ?? err.message}`);
      process.exit(1);
    }
  }

  const callback = provider.callback();

  server.on('request', async (req, res) => {
    try {
      const path = new URL(req.url, issuer).pathname;
      const fault = faults.get(path);
      if (fault) {
        if (fault.times !== undefined && --fault.times <= 0) faults.delete(path);
        record(events, { type: 'test.fault', path, status: fault.status, delay_ms: fault.delay_ms });
        if (fault.delay_ms) await new Promise((r) => { setTimeout(r, fault.delay_ms); });
        if (fault.status !== undefined) {
          req.resume();
          return send(res, fault.status, fault.content_type ?? 'application/json', fault.body ?? '');
        }
      }
      const m = /^\/interaction\/([^/]+)(?:\/(login|abort))?\/?$/.exec(path);
      if (m) {
        await handleInteraction(provider, req, res, m[1], m[2] ?? '');
      } else if (path.startsWith('/__test/')) {
        await handleTest(provider, req, res, path);
      } else {
        callback(req, res);
      }
    } catch (err) {
      console.error('request failed', err);
      record(events, { type: 'server_error', path: req.url, error: String(err?.message ?? err) });
      if (!res.headersSent) send(res, 500, 'text/plain', 'internal error');
      else res.end();
    }
  });

  console.error(`oidc-provider ${issuer} (clients: ${clients.map((c) => c.client_id).join(', ') || 'none'})`);
  process.stdout.write(`LISTENING ${port}\n`);
});

// The Rust harness sets OP_EXIT_ON_STDIN_EOF=1 and keeps stdin open: if the
// test process dies without killing us, stdin closes and we exit.
if (process.env.OP_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

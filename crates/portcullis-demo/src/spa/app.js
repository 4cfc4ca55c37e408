// portcullis demo SPA: talks to the gateway on its own origin with cookies only.
'use strict';

const output = document.getElementById('output');
const userStatus = document.getElementById('user');
let events = null;

function show(text) {
  output.textContent = text;
}

function append(line) {
  output.textContent += line + '\n';
}

// The gateway's CSRF token, readable by script by design (double-submit cookie).
function xsrfToken() {
  for (const part of document.cookie.split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === 'XSRF-TOKEN') {
      return decodeURIComponent(rest.join('='));
    }
  }
  return '';
}

async function request(method, path, body) {
  const init = {
    method,
    credentials: 'same-origin',
    headers: { Accept: 'application/json' },
  };
  if (method !== 'GET') {
    init.headers['X-XSRF-TOKEN'] = xsrfToken();
  }
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    // Not JSON: show it as text.
  }
  return { status: response.status, data };
}

async function call(method, path, body) {
  try {
    const { status, data } = await request(method, path, body);
    const shown = typeof data === 'string' ? data : JSON.stringify(data, null, 2);
    show(`${method} ${path} -> ${status}\n${shown}`);
    loadSession();
    return { status, data };
  } catch (err) {
    show(`${method} ${path} failed: ${err}`);
    return { status: 0, data: null };
  }
}

async function refreshUser() {
  try {
    const { status, data } = await request('GET', '/auth/me');
    if (status === 200 && data && data.authenticated) {
      const user = data.user || {};
      const name = user.name || user.preferred_username || user.sub;
      const roles = (data.roles || []).join(', ') || 'no roles';
      userStatus.textContent = `${name} (${roles})`;
      userStatus.classList.add('logged-in');
      return;
    }
  } catch (_) {
    // Fall through: treat as logged out.
  }
  userStatus.textContent = 'not logged in';
  userStatus.classList.remove('logged-in');
}

function stream() {
  if (events) {
    events.close();
  }
  show('GET /api/stream\n');
  events = new EventSource('/api/stream');
  events.onmessage = (event) => append(event.data);
  // The server ends the stream after ten events; close instead of letting the browser
  // reconnect forever.
  events.onerror = () => {
    append('(stream closed)');
    events.close();
    events = null;
  };
}

async function logout() {
  const { status, data } = await call('POST', '/auth/logout');
  if (status === 200 && data && data.logout_url) {
    window.location.assign(data.logout_url);
  } else {
    refreshUser();
  }
}

// ---------------------------------------------------------------------------
// The teaching panels: fed by `portcullis demo`'s /demo/session and /demo/events
// (absent under `portcullis serve`, where they stay quiet).

const timeline = document.getElementById('timeline');
const timelineStatus = document.getElementById('timeline-status');
const countdown = document.getElementById('countdown');
const gatewayHolds = document.getElementById('gateway-holds');
const idpLogout = document.getElementById('idp-logout');
const idpLogoutNote = document.getElementById('idp-logout-note');
let demoAvailable = true;
let held = null; // the last /demo/session answer
let skewMs = 0; // gateway clock minus browser clock
let timelineEvents = null;
let lastSeq = 0;
let timelineOpened = false;
let timelineEnded = false;
let autoCalledFor = null;

function gatewayNow() {
  return (Date.now() + skewMs) / 1000;
}

function clockTime(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
}

function inSeconds(at, from) {
  return at == null ? 'no expiry given' : `${Math.round(at - from)} s`;
}

function token(info, from) {
  if (!info) return 'none';
  return `#${info.fingerprint} (expires in ${inSeconds(info.expires_at, from)})`;
}

const REFRESH_REASONS = {
  proactive: 'proactive: the token was about to expire',
  expired: '/auth/me found the token expired',
  upstream_rejected: 'the API answered 401',
};

const END_REASONS = {
  logout: 'you logged out (POST /auth/logout)',
  backchannel_logout: 'back-channel logout: the IdP told the gateway, server to server, that this IdP session ended',
  expired: 'idle or absolute timeout',
  refresh_refused: 'the IdP refused the refresh token',
};

/** [title, detail] of one gateway event; never shows token text (the stream has none). */
function describe(e) {
  switch (e.kind) {
    case 'login_redirect':
      return ['Redirect to the IdP', '/auth/login sent the browser to the IdP with PKCE (S256); state, nonce and verifier wait in a sealed, short-lived cookie.'];
    case 'code_exchanged':
      return ['Code exchange', `The gateway swapped the one-time code for tokens at the IdP, server to server. Access token ${token(e.access_token, e.at)}; refresh token ${e.refresh_token ? 'held' : 'none'}; ID token ${e.id_token ? 'validated' : 'none'}.`];
    case 'session_created':
      return ['Session created', `${e.sub} (roles: ${e.roles.join(', ') || 'none'}). The browser got an HttpOnly session cookie and XSRF-TOKEN; the tokens stay in the gateway. Idle expiry ${clockTime(e.idle_expires_at)}.`];
    case 'token_attached':
      return ['Token attached', `${e.method} ${e.path}: the gateway added Authorization: Bearer with access token ${token(e.access_token, e.at)}.`];
    case 'upstream_rejected':
      return ['API said 401', `${e.method} ${e.path}: the gateway refreshes once and retries.`];
    case 'refreshed':
      return [`Refresh #${e.refresh_count}`, `${REFRESH_REASONS[e.reason] || e.reason}. New access token ${token(e.access_token, e.at)}${e.refresh_token_rotated ? '; the refresh token rotated' : ''}.`];
    case 'session_ended':
      return ['Session ended', END_REASONS[e.reason] || e.reason];
    default:
      return [e.kind, ''];
  }
}

function addEvent(e) {
  if (e.seq <= lastSeq) return; // seen already (a reconnect replays the history)
  lastSeq = e.seq;
  const [title, detail] = describe(e);
  const li = document.createElement('li');
  li.className = `event ${e.kind}`;
  const time = document.createElement('time');
  time.textContent = clockTime(e.at);
  const strong = document.createElement('strong');
  strong.textContent = title;
  const p = document.createElement('span');
  p.textContent = detail;
  li.append(time, strong, p);
  timeline.append(li);
  if (e.kind === 'session_ended') {
    timelineEnded = true;
    closeTimeline('The session has ended.');
    refreshUser();
  }
  loadSession();
}

function closeTimeline(message) {
  if (timelineEvents) {
    timelineEvents.close();
    timelineEvents = null;
  }
  if (message) timelineStatus.textContent = message;
}

function openTimeline() {
  if (timelineEvents || timelineEnded || !demoAvailable) return;
  timelineOpened = true;
  timelineEvents = new EventSource('/demo/events');
  timelineEvents.onmessage = (msg) => {
    try {
      addEvent(JSON.parse(msg.data));
    } catch (_) {
      // Not an event of ours.
    }
  };
  timelineEvents.onerror = () => {
    // Closed for good (no session cookie: 204; no demo: not an event stream) or
    // reconnecting by itself; either way there is nothing to do here.
    if (timelineEvents && timelineEvents.readyState === EventSource.CLOSED) {
      timelineEvents = null;
    }
  };
}

function row(list, name, value) {
  const dt = document.createElement('dt');
  dt.textContent = name;
  const dd = document.createElement('dd');
  dd.textContent = value;
  list.append(dt, dd);
}

function showBrowserHolds() {
  const list = document.getElementById('browser-cookies');
  list.replaceChildren();
  const cookies = document.cookie.split(';').map((c) => c.trim()).filter(Boolean);
  for (const cookie of cookies) {
    const li = document.createElement('li');
    const [name, ...rest] = cookie.split('=');
    const value = rest.join('=');
    li.textContent = `${name} = ${value.length > 12 ? value.slice(0, 12) + '…' : value}`;
    list.append(li);
  }
  if (cookies.length === 0) {
    const li = document.createElement('li');
    li.textContent = '(none)';
    list.append(li);
  }
  const name = held && held.session_cookie_name;
  document.getElementById('browser-httponly').textContent = name
    ? `Also the session cookie "${name}": HttpOnly, so script cannot read it; the browser only sends it. It is a random id, not a token.`
    : '';
}

function showGatewayHolds() {
  gatewayHolds.replaceChildren();
  if (!demoAvailable) {
    row(gatewayHolds, 'session', 'not shown: the gateway is not running as `portcullis demo`');
    return;
  }
  if (!held || !held.authenticated) {
    row(gatewayHolds, 'session', 'none');
    return;
  }
  const now = gatewayNow();
  const at = held.access_token;
  row(gatewayHolds, 'user', `${held.sub} (roles: ${held.roles.join(', ') || 'none'})`);
  row(gatewayHolds, 'access token', `#${at.fingerprint}, expires ${at.expires_at ? clockTime(at.expires_at) + ` (in ${inSeconds(at.expires_at, now)})` : 'unknown'}`);
  row(gatewayHolds, 'refresh token', held.refresh_token_held ? 'held' : 'none');
  row(gatewayHolds, 'ID token', held.id_token_held ? 'held' : 'none');
  row(gatewayHolds, 'refreshes', String(held.refresh_count));
  row(gatewayHolds, 'idle expiry', `${clockTime(held.session.idle_expires_at)} (in ${inSeconds(held.session.idle_expires_at, now)})`);
  row(gatewayHolds, 'absolute expiry', clockTime(held.session.expires_at));
  row(gatewayHolds, 'token text', 'never leaves the gateway');
}

function showCountdown() {
  if (!held || !held.authenticated) {
    countdown.textContent = demoAvailable ? 'Log in to see the access token\u2019s clock.' : 'Only in `portcullis demo`.';
    return;
  }
  const due = held.access_token.refresh_due_at;
  if (due == null) {
    countdown.textContent = 'The IdP gave no expiry: no proactive refresh.';
    return;
  }
  const left = Math.ceil(due - gatewayNow());
  if (left > 0) {
    countdown.textContent = `Proactive refresh due in ${left} s: from then on, the next API call makes the gateway refresh the token first (${held.refresh_before_secs} s before it expires).`;
    return;
  }
  countdown.textContent = 'Refresh due now: the next API call refreshes the token first.';
  const auto = document.getElementById('auto-refresh');
  if (auto.checked && autoCalledFor !== due) {
    autoCalledFor = due;
    request('GET', '/api/whoami').then(loadSession, () => {});
  }
}

function tick() {
  showCountdown();
  showGatewayHolds();
  showBrowserHolds();
}

async function loadSession() {
  if (!demoAvailable) return;
  let status = 0;
  let data = null;
  try {
    ({ status, data } = await request('GET', '/demo/session'));
  } catch (_) {
    return;
  }
  if (status === 200 && data && typeof data === 'object') {
    held = data;
    skewMs = data.now * 1000 - Date.now();
    if (data.idp_logout_url) {
      idpLogout.href = data.idp_logout_url;
      idpLogout.hidden = false;
      idpLogoutNote.hidden = false;
    }
    openTimeline();
  } else if (status === 401) {
    held = data;
    idpLogout.hidden = true;
    idpLogoutNote.hidden = true;
    // The stream outlives the session: once, it tells why the session ended.
    if (!timelineOpened) openTimeline();
  } else {
    demoAvailable = false;
    held = null;
    timelineStatus.textContent = 'No timeline: the gateway is not running as `portcullis demo`.';
  }
  tick();
}

function on(id, handler) {
  document.getElementById(id).addEventListener('click', handler);
}

on('login', () => window.location.assign('/auth/login?return_to=/'));
on('me', async () => {
  await call('GET', '/auth/me');
  refreshUser();
});
on('whoami', () => call('GET', '/api/whoami'));
on('admin', () => call('GET', '/api/admin/ping'));
on('hr', () => call('GET', '/api/hr/ping'));
on('echo', () => call('POST', '/api/echo', { hello: 'world' }));
on('stream', stream);
on('logout', logout);

refreshUser();
loadSession();
setInterval(tick, 1000);

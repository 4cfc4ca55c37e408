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

// Unit tests of portcullis-client against a fake gateway (`fetch` stub),
// a fake `document.cookie` and `location`, and Node's real BroadcastChannel.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createClient, readCookie, type PortcullisClient, type SessionChange } from '../src/index';

const ME = {
  authenticated: true,
  user: { sub: 'u-alice', name: 'Alice', preferred_username: 'alice' },
  roles: ['admin', 'hr'],
  session: { expires_at: '2030-01-01T00:00:00Z', idle_expires_at: '2030-01-01T00:00:00Z' },
};

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

type Call = { url: string; init: RequestInit & { headers: Headers } };

function fakeGateway(answer: (url: string, init: RequestInit) => Response) {
  const calls: Call[] = [];
  const fetch = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = input instanceof Request ? input.url : String(input);
    calls.push({ url, init: { ...init, headers: new Headers(init.headers) } });
    return answer(url, init);
  });
  return { fetch: fetch as unknown as typeof globalThis.fetch, calls };
}

let assign: ReturnType<typeof vi.fn>;
const clients: PortcullisClient[] = [];
function client(...args: Parameters<typeof createClient>) {
  const c = createClient(...args);
  clients.push(c);
  return c;
}

beforeEach(() => {
  assign = vi.fn();
  vi.stubGlobal('location', { pathname: '/orders/7', search: '?tab=items', assign });
  vi.stubGlobal('document', { cookie: 'other=1; XSRF-TOKEN=tok%2Fen; portcullis-x=y' });
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  vi.unstubAllGlobals();
});

describe('readCookie', () => {
  it('finds and decodes one cookie by exact name', () => {
    expect(readCookie('XSRF-TOKEN', 'a=1; XSRF-TOKEN=ab%3Dc; XSRF-TOKEN2=no')).toBe('ab=c');
    expect(readCookie('XSRF', 'XSRF-TOKEN=1')).toBe('');
    expect(readCookie('x', 'x=%E0%A4%A')).toBe('%E0%A4%A');
  });
});

describe('getUser', () => {
  it('returns the session and roles on 200, with the cookie and Accept json', async () => {
    const gw = fakeGateway(() => json(200, ME));
    const c = client({ fetch: gw.fetch });
    const me = await c.getUser();
    expect(me?.user.preferred_username).toBe('alice');
    expect(me?.roles).toEqual(['admin', 'hr']);
    expect(gw.calls[0].url).toBe('/auth/me');
    expect(gw.calls[0].init.credentials).toBe('same-origin');
    expect(gw.calls[0].init.headers.get('accept')).toBe('application/json');
    expect(c.current).toEqual(me);
  });

  it('returns null on 401', async () => {
    const gw = fakeGateway(() => json(401, { authenticated: false }));
    expect(await client({ fetch: gw.fetch }).getUser()).toBeNull();
  });

  it('throws on a gateway error such as 503 store_unavailable', async () => {
    const gw = fakeGateway(() => json(503, { error: 'store_unavailable' }));
    await expect(client({ fetch: gw.fetch }).getUser()).rejects.toThrow(/503/);
  });

  it('uses a custom auth prefix', async () => {
    const gw = fakeGateway(() => json(200, ME));
    await client({ fetch: gw.fetch, authPrefix: '/bff/auth/' }).getUser();
    expect(gw.calls[0].url).toBe('/bff/auth/me');
  });
});

describe('hasRole', () => {
  it('answers from the last known user', async () => {
    const gw = fakeGateway(() => json(200, ME));
    const c = client({ fetch: gw.fetch });
    expect(c.hasRole('admin')).toBe(false);
    await c.getUser();
    expect(c.hasRole('admin')).toBe(true);
    expect(c.hasRole('hr')).toBe(true);
    expect(c.hasRole('root')).toBe(false);
  });
});

describe('login', () => {
  it('navigates to /auth/login with the current path and query by default', () => {
    client().login();
    expect(assign).toHaveBeenCalledWith('/auth/login?return_to=%2Forders%2F7%3Ftab%3Ditems');
  });

  it('takes an explicit return path', () => {
    client({ authPrefix: '/bff/auth' }).login('/admin');
    expect(assign).toHaveBeenCalledWith('/bff/auth/login?return_to=%2Fadmin');
  });
});

describe('logout', () => {
  it('posts with the CSRF header and Accept json, then goes to logout_url', async () => {
    const gw = fakeGateway(() => json(200, { logout_url: 'http://idp/end_session?state=s' }));
    await client({ fetch: gw.fetch }).logout();
    const { url, init } = gw.calls[0];
    expect(url).toBe('/auth/logout');
    expect(init.method).toBe('POST');
    expect(init.credentials).toBe('same-origin');
    expect(init.headers.get('x-xsrf-token')).toBe('tok/en');
    expect(init.headers.get('accept')).toBe('application/json');
    expect(assign).toHaveBeenCalledWith('http://idp/end_session?state=s');
  });

  it('uses the configured CSRF cookie and header names', async () => {
    vi.stubGlobal('document', { cookie: 'MY-CSRF=abc' });
    const gw = fakeGateway(() => json(200, { logout_url: '/' }));
    await client({ fetch: gw.fetch, csrfCookie: 'MY-CSRF', csrfHeader: 'X-My-Csrf' }).logout();
    expect(gw.calls[0].init.headers.get('x-my-csrf')).toBe('abc');
  });

  it('goes home when the gateway refuses', async () => {
    const gw = fakeGateway(() => json(403, { error: 'csrf' }));
    await client({ fetch: gw.fetch }).logout();
    expect(assign).toHaveBeenCalledWith('/');
  });

  it('tells other tabs, which drop their user', async () => {
    const gw = fakeGateway(() => json(200, ME));
    const other = client({ fetch: gw.fetch, channel: 'test-logout' });
    await other.getUser();
    const seen: SessionChange[] = [];
    const got = new Promise<void>((resolve) =>
      other.onSessionChange((c) => {
        seen.push(c);
        resolve();
      }),
    );
    const gw2 = fakeGateway(() => json(200, { logout_url: '/' }));
    await client({ fetch: gw2.fetch, channel: 'test-logout' }).logout();
    await got;
    expect(seen).toEqual([{ type: 'logout', remote: true }]);
    expect(other.current).toBeNull();
    expect(other.hasRole('admin')).toBe(false);
  });

  it('does not broadcast with channel: false', async () => {
    const listener = client({ channel: 'portcullis' });
    const seen = vi.fn();
    listener.onSessionChange(seen);
    const gw = fakeGateway(() => json(200, { logout_url: '/' }));
    await client({ fetch: gw.fetch, channel: false }).logout();
    // A message posted on the channel would arrive before this one.
    const probe = new BroadcastChannel('portcullis');
    const arrived = new Promise((r) => listener.onSessionChange(r));
    probe.postMessage({ type: 'logout', remote: true });
    await arrived;
    probe.close();
    expect(seen).toHaveBeenCalledTimes(1);
  });
});

describe('apiFetch', () => {
  it('sends the session cookie and no CSRF header on GET', async () => {
    const gw = fakeGateway(() => json(200, {}));
    await client({ fetch: gw.fetch }).apiFetch('/api/whoami');
    expect(gw.calls[0].init.credentials).toBe('same-origin');
    expect(gw.calls[0].init.method).toBe('GET');
    expect(gw.calls[0].init.headers.has('x-xsrf-token')).toBe(false);
  });

  it.each(['POST', 'put', 'PATCH', 'DELETE'])('adds the CSRF header on %s', async (method) => {
    const gw = fakeGateway(() => json(200, {}));
    await client({ fetch: gw.fetch }).apiFetch('/api/echo', {
      method,
      headers: { 'Content-Type': 'application/json' },
      body: '{}',
    });
    const { init } = gw.calls[0];
    expect(init.headers.get('x-xsrf-token')).toBe('tok/en');
    expect(init.headers.get('content-type')).toBe('application/json');
    expect(init.body).toBe('{}');
  });

  it('takes the method and headers of a Request', async () => {
    const gw = fakeGateway(() => json(200, {}));
    const req = new Request('http://app.test/api/echo', {
      method: 'POST',
      headers: { 'X-Trace': '1' },
    });
    await client({ fetch: gw.fetch }).apiFetch(req);
    expect(gw.calls[0].init.headers.get('x-xsrf-token')).toBe('tok/en');
    expect(gw.calls[0].init.headers.get('x-trace')).toBe('1');
  });

  it('keeps an explicit credentials mode and CSRF header', async () => {
    const gw = fakeGateway(() => json(200, {}));
    await client({ fetch: gw.fetch }).apiFetch('/api/x', {
      method: 'POST',
      credentials: 'include',
      headers: { 'X-XSRF-TOKEN': 'mine' },
    });
    expect(gw.calls[0].init.credentials).toBe('include');
    expect(gw.calls[0].init.headers.get('x-xsrf-token')).toBe('mine');
  });

  it.each(['session_expired', 'unauthorized'])(
    'calls onSessionExpired on 401 %s and returns the response',
    async (code) => {
      const gw = fakeGateway(() => json(401, { error: code, message: 'm' }));
      const onSessionExpired = vi.fn();
      const c = client({ fetch: gw.fetch, onSessionExpired });
      const changes = vi.fn();
      c.onSessionChange(changes);
      const resp = await c.apiFetch('/api/whoami');
      expect(resp.status).toBe(401);
      expect(await resp.json()).toEqual({ error: code, message: 'm' });
      expect(onSessionExpired).toHaveBeenCalledTimes(1);
      expect(onSessionExpired.mock.calls[0][0]).toEqual({ error: code, message: 'm' });
      expect(changes).toHaveBeenCalledWith({
        type: 'expired',
        error: { error: code, message: 'm' },
        remote: false,
      });
    },
  );

  it('by default sends the user to login, back to the current page', async () => {
    const gw = fakeGateway(() => json(401, { error: 'session_expired' }));
    await client({ fetch: gw.fetch }).apiFetch('/api/whoami');
    expect(assign).toHaveBeenCalledWith('/auth/login?return_to=%2Forders%2F7%3Ftab%3Ditems');
  });

  it('leaves other 401s and 403 forbidden/csrf to the caller', async () => {
    for (const [status, body] of [
      [401, { error: 'invalid_token_from_upstream' }],
      [401, 'not json'],
      [403, { error: 'forbidden' }],
      [403, { error: 'csrf' }],
    ] as const) {
      const gw = fakeGateway(() =>
        typeof body === 'string' ? new Response(body, { status }) : json(status, body),
      );
      const onSessionExpired = vi.fn();
      const resp = await client({ fetch: gw.fetch, onSessionExpired }).apiFetch('/api/x');
      expect(resp.status).toBe(status);
      expect(onSessionExpired).not.toHaveBeenCalled();
    }
    expect(assign).not.toHaveBeenCalled();
  });
});

describe('another origin (CORS dev setup)', () => {
  it('uses the full auth URL and credentials: include everywhere', async () => {
    const gw = fakeGateway((url) =>
      url.endsWith('/me') ? json(200, ME) : json(200, { logout_url: '/' }),
    );
    const c = client({
      fetch: gw.fetch,
      authPrefix: 'http://localhost:8080/auth',
      credentials: 'include',
    });
    await c.getUser();
    await c.apiFetch('http://localhost:8080/api/echo', { method: 'POST' });
    await c.logout();
    expect(gw.calls.map((call) => [call.url, call.init.credentials])).toEqual([
      ['http://localhost:8080/auth/me', 'include'],
      ['http://localhost:8080/api/echo', 'include'],
      ['http://localhost:8080/auth/logout', 'include'],
    ]);
    c.login('/x');
    expect(assign).toHaveBeenCalledWith('http://localhost:8080/auth/login?return_to=%2Fx');
  });
});

describe('onSessionChange', () => {
  it('reports a login once per user and can be unsubscribed', async () => {
    const gw = fakeGateway(() => json(200, ME));
    const c = client({ fetch: gw.fetch });
    const seen = vi.fn();
    const off = c.onSessionChange(seen);
    await c.getUser();
    await c.getUser();
    expect(seen).toHaveBeenCalledTimes(1);
    expect(seen.mock.calls[0][0].type).toBe('login');
    off();
    await c.getUser();
    expect(seen).toHaveBeenCalledTimes(1);
  });

  it('reports an expiry when /auth/me turns 401', async () => {
    let status = 200;
    const gw = fakeGateway(() => (status === 200 ? json(200, ME) : json(401, { authenticated: false })));
    const c = client({ fetch: gw.fetch });
    await c.getUser();
    const seen = vi.fn();
    c.onSessionChange(seen);
    status = 401;
    expect(await c.getUser()).toBeNull();
    expect(seen).toHaveBeenCalledWith({ type: 'expired', error: null, remote: false });
  });
});

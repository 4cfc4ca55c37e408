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

  it('rejects and keeps the session when the gateway refuses or is unreachable', async () => {
    for (const answer of [
      () => json(403, { error: 'csrf' }),
      () => json(503, { error: 'store_unavailable' }),
      () => {
        throw new TypeError('network down');
      },
    ]) {
      let me = true;
      const gw = fakeGateway((url) => (me ? json(200, ME) : answer()));
      const c = client({ fetch: gw.fetch, channel: 'test-refused' });
      const other = client({ channel: 'test-refused' });
      const heard = vi.fn();
      other.onSessionChange(heard);
      const changes = vi.fn();
      c.onSessionChange(changes);
      await c.getUser();
      changes.mockClear();
      me = false;
      await expect(c.logout()).rejects.toThrow();
      expect(c.current?.user.sub).toBe('u-alice');
      expect(changes).not.toHaveBeenCalled();
      expect(assign).not.toHaveBeenCalled();
      // Nothing reaches the other tab: a probe sent after it arrives first.
      const probe = new BroadcastChannel('test-refused');
      const arrived = new Promise((r) => other.onSessionChange(r));
      probe.postMessage({ type: 'expired', remote: true });
      await arrived;
      probe.close();
      expect(heard).toHaveBeenCalledTimes(1);
      expect(heard.mock.calls[0][0].type).toBe('expired');
    }
  });

  it('treats 401 (session already gone) as logged out: tells the tabs, goes home', async () => {
    const gw = fakeGateway(() => json(401, { error: 'unauthorized' }));
    const changes = vi.fn();
    const c = client({ fetch: gw.fetch });
    c.onSessionChange(changes);
    await c.logout();
    expect(changes).toHaveBeenCalledWith({ type: 'logout', remote: false });
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

describe('csrf_token from /auth/me (csrf.token_in_me)', () => {
  it('is used instead of the cookie, for API calls and logout', async () => {
    // An SPA on another host of the site cannot read the gateway's cookie.
    vi.stubGlobal('document', { cookie: '' });
    const gw = fakeGateway((url) =>
      url.endsWith('/me')
        ? json(200, { ...ME, csrf_token: 'from-me' })
        : json(200, { logout_url: '/' }),
    );
    const c = client({ fetch: gw.fetch });
    expect(c.csrfToken()).toBe('');
    await c.getUser();
    expect(c.csrfToken()).toBe('from-me');
    await c.apiFetch('/api/echo', { method: 'POST' });
    await c.logout();
    expect(gw.calls[1].init.headers.get('x-xsrf-token')).toBe('from-me');
    expect(gw.calls[2].init.headers.get('x-xsrf-token')).toBe('from-me');
  });

  it('without it, the cookie is read', async () => {
    const gw = fakeGateway(() => json(200, ME));
    const c = client({ fetch: gw.fetch });
    await c.getUser();
    expect(c.csrfToken()).toBe('tok/en');
  });
});

describe('session lifetime', () => {
  const T0 = Date.parse('2030-01-01T10:00:00Z');
  // The gateway's answer: deadlines in `idle` and `abs` ms, its clock `skew` ms off ours.
  function meAnswer(idle: number, abs: number, skew = 0) {
    return (url: string) => {
      const serverNow = Date.now() + skew;
      if (!url.endsWith('/me')) return json(200, {});
      const at = (ms: number) => new Date(serverNow + ms).toISOString();
      const r = json(200, { ...ME, session: { idle_expires_at: at(idle), expires_at: at(abs) } });
      r.headers.set('Date', new Date(serverNow).toUTCString());
      return r;
    };
  }

  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    vi.setSystemTime(T0);
  });
  afterEach(() => vi.useRealTimers());

  it('exposes both deadlines, on this clock', async () => {
    const gw = fakeGateway(meAnswer(30 * 60_000, 8 * 3600_000));
    const c = client({ fetch: gw.fetch });
    expect(c.expiry()).toBeNull();
    await c.getUser();
    expect(c.expiry()).toEqual({ idle: T0 + 30 * 60_000, absolute: T0 + 8 * 3600_000 });
  });

  it('corrects for clock skew with the Date header', async () => {
    // The browser's clock is 5 minutes ahead of the gateway's.
    const gw = fakeGateway(meAnswer(30 * 60_000, 8 * 3600_000, -5 * 60_000));
    const c = client({ fetch: gw.fetch });
    await c.getUser();
    expect(c.expiry()?.idle).toBe(T0 + 30 * 60_000);
  });

  it('warns `before` ms ahead of the idle deadline, once, and again after it moved', async () => {
    const gw = fakeGateway(meAnswer(10 * 60_000, 8 * 3600_000));
    const c = client({ fetch: gw.fetch });
    await c.getUser();
    const warned = vi.fn();
    c.onSessionExpiring(warned, { before: 120_000 });
    vi.advanceTimersByTime(8 * 60_000 - 1);
    expect(warned).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(warned).toHaveBeenCalledWith({ kind: 'idle', at: T0 + 10 * 60_000 });
    vi.advanceTimersByTime(60_000);
    expect(warned).toHaveBeenCalledTimes(1);

    // "I'm still here": /auth/me extends the idle window by another 10 minutes.
    await c.keepAlive();
    expect(gw.calls.at(-1)?.url).toBe('/auth/me');
    expect(c.expiry()?.idle).toBe(T0 + 19 * 60_000);
    vi.advanceTimersByTime(8 * 60_000 - 1);
    expect(warned).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(1);
    expect(warned).toHaveBeenCalledTimes(2);
    expect(warned).toHaveBeenLastCalledWith({ kind: 'idle', at: T0 + 19 * 60_000 });
  });

  it('warns for the absolute deadline when it comes first, and at once when already near', async () => {
    const gw = fakeGateway(meAnswer(60_000, 60_000));
    const c = client({ fetch: gw.fetch });
    await c.getUser();
    const warned = vi.fn();
    c.onSessionExpiring(warned); // default: 2 minutes before
    expect(warned).toHaveBeenCalledWith({ kind: 'absolute', at: T0 + 60_000 });
  });

  it('waits out deadlines beyond setTimeout range', async () => {
    const days = 40 * 86_400_000;
    const gw = fakeGateway(meAnswer(days, days));
    const c = client({ fetch: gw.fetch });
    await c.getUser();
    const warned = vi.fn();
    c.onSessionExpiring(warned, { before: 60_000 });
    vi.advanceTimersByTime(days - 60_001);
    expect(warned).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(warned).toHaveBeenCalledTimes(1);
  });

  it('moves the idle deadline when API calls succeed (the gateway touched the session)', async () => {
    const gw = fakeGateway(meAnswer(10 * 60_000, 8 * 3600_000));
    const c = client({ fetch: gw.fetch });
    await c.getUser();
    const warned = vi.fn();
    c.onSessionExpiring(warned, { before: 120_000 });
    vi.advanceTimersByTime(5 * 60_000);
    await c.apiFetch('/api/whoami');
    // Conservatively: the gateway touches at most every twentieth of the window.
    expect(c.expiry()?.idle).toBe(T0 + 5 * 60_000 + 9.5 * 60_000);
    vi.advanceTimersByTime(5 * 60_000);
    expect(warned).not.toHaveBeenCalled();
    vi.advanceTimersByTime(2.5 * 60_000);
    expect(warned).toHaveBeenCalledTimes(1);
  });

  it('stops on unsubscribe, on logout and on close', async () => {
    const gw = fakeGateway(meAnswer(10 * 60_000, 8 * 3600_000));
    const c = client({ fetch: gw.fetch });
    await c.getUser();
    const a = vi.fn();
    const b = vi.fn();
    const off = c.onSessionExpiring(a);
    c.onSessionExpiring(b);
    off();
    await c.logout();
    vi.advanceTimersByTime(3600_000);
    expect(a).not.toHaveBeenCalled();
    expect(b).not.toHaveBeenCalled();
    expect(c.expiry()).toBeNull();

    const d = client({ fetch: gw.fetch });
    await d.getUser();
    d.onSessionExpiring(b);
    d.close();
    vi.advanceTimersByTime(3600_000);
    expect(b).not.toHaveBeenCalled();
  });

  it('subscribe hears every change of the session, and deadline moves', async () => {
    const gw = fakeGateway(meAnswer(10 * 60_000, 8 * 3600_000));
    const c = client({ fetch: gw.fetch });
    const heard = vi.fn();
    c.subscribe(heard);
    await c.getUser();
    expect(heard).toHaveBeenCalledTimes(1);
    await c.getUser();
    expect(heard).toHaveBeenCalledTimes(2);
    await c.logout();
    expect(heard).toHaveBeenCalledTimes(3);
    expect(c.current).toBeNull();
  });
});

describe('silentLogin', () => {
  // A fake window: message events, an iframe element and window.open.
  let win: EventTarget;
  let frames: { src?: string; hidden?: boolean; contentWindow: object; remove: ReturnType<typeof vi.fn> }[];
  let popup: { close: ReturnType<typeof vi.fn> } | null;
  let opened: unknown[][];

  beforeEach(() => {
    win = new EventTarget();
    frames = [];
    opened = [];
    popup = { close: vi.fn() };
    vi.stubGlobal('addEventListener', win.addEventListener.bind(win));
    vi.stubGlobal('removeEventListener', win.removeEventListener.bind(win));
    vi.stubGlobal('open', (...args: unknown[]) => {
      opened.push(args);
      return popup;
    });
    vi.stubGlobal('location', {
      origin: 'https://app.test',
      pathname: '/orders/7',
      search: '',
      assign,
    });
    vi.stubGlobal('document', {
      cookie: 'XSRF-TOKEN=tok',
      createElement: (tag: string) => {
        expect(tag).toBe('iframe');
        const frame = { contentWindow: { close: vi.fn() }, remove: vi.fn() };
        frames.push(frame);
        return frame;
      },
      body: { appendChild: (x: unknown) => x },
    });
  });

  function post(data: unknown, source: unknown, origin = 'https://app.test') {
    win.dispatchEvent(Object.assign(new Event('message'), { data, source, origin }));
  }
  const msg = (result: string) => ({ source: 'portcullis', type: 'silent-login', result });
  const tick = () => new Promise((r) => setTimeout(r, 0));

  it('opens a hidden iframe on /auth/login?prompt=none and resolves with its answer', async () => {
    for (const result of ['login_required', 'consent_required', 'interaction_required', 'error']) {
      frames = [];
      const c = client({ fetch: fakeGateway(() => json(200, ME)).fetch });
      const p = c.silentLogin();
      expect(frames).toHaveLength(1);
      expect(frames[0].src).toBe('/auth/login?prompt=none&return_to=/');
      expect(frames[0].hidden).toBe(true);
      post(msg(result), frames[0].contentWindow);
      expect(await p).toBe(result);
      expect(frames[0].remove).toHaveBeenCalled();
      expect(c.current).toBeNull();
    }
  });

  it('ignores messages from other origins, other windows and other shapes', async () => {
    const c = client({ fetch: fakeGateway(() => json(200, ME)).fetch, authPrefix: '/bff/auth' });
    const p = c.silentLogin({ timeoutMs: 50 });
    const source = frames[0].contentWindow;
    expect(frames[0].src).toBe('/bff/auth/login?prompt=none&return_to=/');
    post(msg('success'), source, 'https://evil.test');
    post(msg('success'), {}, 'https://app.test');
    post({ type: 'silent-login', result: 'success' }, source);
    post('success', source);
    expect(await p).toBe('error'); // the timeout
    expect(frames[0].remove).toHaveBeenCalled();
  });

  it('on success fetches the user again and tells listeners (a login, even for the same user)', async () => {
    const gw = fakeGateway(() => json(200, ME));
    const c = client({ fetch: gw.fetch });
    await c.getUser();
    const changes = vi.fn();
    c.onSessionChange(changes);
    const p = c.silentLogin();
    post(msg('success'), frames[0].contentWindow);
    expect(await p).toBe('success');
    expect(gw.calls.map((x) => x.url)).toEqual(['/auth/me', '/auth/me']);
    expect(changes).toHaveBeenCalledTimes(1);
    expect(changes.mock.calls[0][0].type).toBe('login');
    expect(c.current?.user.sub).toBe('u-alice');
  });

  it('shares one attempt between concurrent callers', async () => {
    const c = client({ fetch: fakeGateway(() => json(200, ME)).fetch });
    const p1 = c.silentLogin();
    const p2 = c.silentLogin();
    expect(frames).toHaveLength(1);
    post(msg('login_required'), frames[0].contentWindow);
    expect(await Promise.all([p1, p2])).toEqual(['login_required', 'login_required']);
    const p3 = c.silentLogin();
    expect(frames).toHaveLength(2);
    post(msg('login_required'), frames[1].contentWindow);
    await p3;
  });

  it('popup mode: window.open, its answer, closed on timeout; a blocked popup is an error', async () => {
    const c = client({ fetch: fakeGateway(() => json(200, ME)).fetch });
    let p = c.silentLogin({ mode: 'popup' });
    expect(opened[0][0]).toBe('/auth/login?prompt=none&return_to=/');
    expect(frames).toHaveLength(0);
    post(msg('login_required'), popup);
    expect(await p).toBe('login_required');

    p = c.silentLogin({ mode: 'popup', timeoutMs: 20 });
    expect(await p).toBe('error');
    expect(popup!.close).toHaveBeenCalled();

    popup = null;
    expect(await c.silentLogin({ mode: 'popup' })).toBe('error');
  });

  it('apiFetch with silentLogin: re-login in the frame, then the call once more', async () => {
    let session = false;
    const gw = fakeGateway((url, init) => {
      if (url.endsWith('/me')) return json(200, { ...ME, csrf_token: 'new-token' });
      return session ? json(200, { ok: true }) : json(401, { error: 'session_expired' });
    });
    const onSessionExpired = vi.fn();
    const c = client({ fetch: gw.fetch, silentLogin: true, onSessionExpired });
    const changes = vi.fn();
    c.onSessionChange(changes);
    const p = c.apiFetch('/api/echo', { method: 'POST', body: '{}' });
    await tick();
    expect(frames).toHaveLength(1);
    session = true;
    post(msg('success'), frames[0].contentWindow);
    const resp = await p;
    expect(resp.status).toBe(200);
    expect(gw.calls.map((x) => x.url)).toEqual(['/api/echo', '/auth/me', '/api/echo']);
    // The retry carries the new session's CSRF token.
    expect(gw.calls[2].init.headers.get('x-xsrf-token')).toBe('new-token');
    expect(onSessionExpired).not.toHaveBeenCalled();
    expect(changes.mock.calls.map((x) => x[0].type)).toEqual(['login']);
  });

  it('apiFetch with silentLogin: login_required falls back to onSessionExpired', async () => {
    const gw = fakeGateway(() => json(401, { error: 'unauthorized' }));
    const c = client({ fetch: gw.fetch, silentLogin: { mode: 'iframe', timeoutMs: 5000 } });
    const changes = vi.fn();
    c.onSessionChange(changes);
    const p = c.apiFetch('/api/whoami');
    await tick();
    post(msg('login_required'), frames[0].contentWindow);
    expect((await p).status).toBe(401);
    expect(assign).toHaveBeenCalledWith('/auth/login?return_to=%2Forders%2F7');
    expect(changes).toHaveBeenCalledWith({ type: 'expired', error: { error: 'unauthorized' }, remote: false });
  });

  it('apiFetch retries only once', async () => {
    const gw = fakeGateway((url) =>
      url.endsWith('/me') ? json(200, ME) : json(401, { error: 'session_expired' }),
    );
    const c = client({ fetch: gw.fetch, silentLogin: true, onSessionExpired: vi.fn() });
    const p = c.apiFetch('/api/whoami');
    await tick();
    post(msg('success'), frames[0].contentWindow);
    expect((await p).status).toBe(401);
    expect(frames).toHaveLength(1);
    expect(gw.calls.map((x) => x.url)).toEqual(['/api/whoami', '/auth/me', '/api/whoami']);
  });
});

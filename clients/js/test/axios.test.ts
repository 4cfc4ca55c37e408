// The axios interceptors against a fake adapter (no network).
import axios, { AxiosError, type AxiosAdapter, type InternalAxiosRequestConfig } from 'axios';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createClient, type PortcullisClient } from '../src/index';
import { attachPortcullis } from '../src/axios';

type Seen = { method: string; url: string; csrf: string | undefined };

function fakeAdapter(answer: (config: InternalAxiosRequestConfig) => [number, unknown]) {
  const seen: Seen[] = [];
  const adapter: AxiosAdapter = async (config) => {
    seen.push({
      method: config.method!.toUpperCase(),
      url: config.url!,
      csrf: config.headers.get('X-XSRF-TOKEN') as string | undefined,
    });
    const [status, data] = answer(config);
    const response = { status, statusText: '', data, headers: {}, config };
    if (status >= 400) {
      throw new AxiosError(`status ${status}`, 'ERR_BAD_REQUEST', config, null, response);
    }
    return response;
  };
  return { adapter, seen };
}

const ME = {
  authenticated: true,
  user: { sub: 'u-alice' },
  roles: [],
  session: { expires_at: '2030-01-01T08:00:00Z', idle_expires_at: '2030-01-01T00:10:00Z' },
};
const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

let assign: ReturnType<typeof vi.fn>;
let clients: PortcullisClient[] = [];
beforeEach(() => {
  assign = vi.fn();
  vi.stubGlobal('location', { origin: 'https://app.test', pathname: '/orders', search: '?x=1', assign });
  vi.stubGlobal('document', { cookie: 'XSRF-TOKEN=cookie-token' });
});
afterEach(() => {
  vi.unstubAllGlobals();
  clients.forEach((c) => c.close());
  clients = [];
});
function client(options: Parameters<typeof createClient>[0] = {}) {
  const c = createClient({ channel: false, ...options });
  clients.push(c);
  return c;
}

describe('attachPortcullis', () => {
  it('adds the CSRF header on unsafe methods only', async () => {
    const { adapter, seen } = fakeAdapter(() => [200, {}]);
    const api = axios.create({ adapter, xsrfCookieName: '' });
    attachPortcullis(api, { client: client() });
    await api.get('/api/a');
    await api.post('/api/b', {});
    await api.delete('/api/c');
    await api.head('/api/d');
    expect(seen.map((s) => [s.method, s.csrf])).toEqual([
      ['GET', undefined],
      ['POST', 'cookie-token'],
      ['DELETE', 'cookie-token'],
      ['HEAD', undefined],
    ]);
  });

  it("uses /auth/me's csrf_token and a custom header name", async () => {
    vi.stubGlobal('document', { cookie: '' });
    const c = client({ fetch: (async () => json(200, { ...ME, csrf_token: 'me-token' })) as typeof fetch });
    await c.getUser();
    const { adapter } = fakeAdapter(() => [200, {}]);
    let header: unknown;
    const api = axios.create({
      adapter: async (config) => {
        header = config.headers.get('X-Csrf');
        return adapter(config);
      },
    });
    attachPortcullis(api, { client: c, csrfHeader: 'X-Csrf' });
    await api.put('/api/x', {});
    expect(header).toBe('me-token');
  });

  it('on 401 session_expired without silent login: expiry event, login redirect, rejects', async () => {
    const { adapter } = fakeAdapter(() => [401, { error: 'session_expired' }]);
    const api = axios.create({ adapter });
    const c = client();
    const changes = vi.fn();
    c.onSessionChange(changes);
    attachPortcullis(api, { client: c });
    await expect(api.get('/api/x')).rejects.toMatchObject({ response: { status: 401 } });
    expect(assign).toHaveBeenCalledWith('/auth/login?return_to=%2Forders%3Fx%3D1');
    expect(changes).toHaveBeenCalledWith({ type: 'expired', error: { error: 'session_expired' }, remote: false });
  });

  it('leaves other errors alone', async () => {
    for (const [status, data] of [
      [401, { error: 'invalid_token_from_upstream' }],
      [403, { error: 'forbidden' }],
      [500, 'boom'],
    ] as const) {
      const { adapter } = fakeAdapter(() => [status, data]);
      const api = axios.create({ adapter });
      attachPortcullis(api, { client: client() });
      await expect(api.get('/api/x')).rejects.toMatchObject({ response: { status } });
    }
    expect(assign).not.toHaveBeenCalled();
  });

  it('with silent login: retries once with the new session, no redirect', async () => {
    let session = false;
    const { adapter, seen } = fakeAdapter(() => (session ? [200, { ok: 1 }] : [401, { error: 'unauthorized' }]));
    const c = client({
      silentLogin: true,
      fetch: (async () => json(200, { ...ME, csrf_token: 'new-token' })) as typeof fetch,
    });
    c.silentLogin = vi.fn(async () => {
      session = true;
      await c.getUser();
      return 'success' as const;
    });
    const api = axios.create({ adapter });
    attachPortcullis(api, { client: c });
    const r = await api.post('/api/x', { a: 1 });
    expect(r.data).toEqual({ ok: 1 });
    expect(seen.map((s) => s.csrf)).toEqual(['cookie-token', 'new-token']);
    expect(assign).not.toHaveBeenCalled();
  });

  it('with silent login: a second 401 is not retried again', async () => {
    const { adapter, seen } = fakeAdapter(() => [401, { error: 'session_expired' }]);
    const c = client({ silentLogin: true });
    c.silentLogin = vi.fn(async () => 'success' as const);
    const api = axios.create({ adapter });
    attachPortcullis(api, { client: c });
    await expect(api.get('/api/x')).rejects.toMatchObject({ response: { status: 401 } });
    expect(seen).toHaveLength(2);
    expect(c.silentLogin).toHaveBeenCalledTimes(1);
  });

  it('moves the idle deadline on success, and detaches', async () => {
    const { adapter, seen } = fakeAdapter(() => [200, {}]);
    const api = axios.create({ adapter, xsrfCookieName: '' });
    const c = client();
    const touched = vi.spyOn(c, 'touched');
    const detach = attachPortcullis(api, { client: c });
    await api.get('/api/x');
    expect(touched).toHaveBeenCalledTimes(1);
    detach();
    await api.post('/api/x');
    expect(touched).toHaveBeenCalledTimes(1);
    expect(seen[1].csrf).toBeUndefined();
  });
});

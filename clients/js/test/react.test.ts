// @vitest-environment happy-dom
// The React hooks, rendered with react-dom in happy-dom against a fake gateway.
import { act, createElement, type ReactNode } from 'react';
import { createRoot, type Root } from 'react-dom/client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createClient, type PortcullisClient } from '../src/index';
import { useSession, useSessionExpiring } from '../src/react';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const ME = {
  authenticated: true,
  user: { sub: 'u-alice', preferred_username: 'alice' },
  roles: ['admin'],
  session: { expires_at: '2030-01-01T08:00:00Z', idle_expires_at: '2030-01-01T00:10:00Z' },
};
const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

let root: Root;
let host: HTMLElement;
let clients: PortcullisClient[] = [];
beforeEach(() => {
  host = document.createElement('div');
  document.body.appendChild(host);
  root = createRoot(host);
});
afterEach(() => {
  act(() => root.unmount());
  host.remove();
  clients.forEach((c) => c.close());
  clients = [];
});

function gateway(answer: () => Response) {
  const fetch = vi.fn(async () => answer());
  const c = createClient({
    fetch: fetch as unknown as typeof globalThis.fetch,
    channel: false,
    onSessionExpired: vi.fn(), // no navigation in happy-dom
  });
  clients.push(c);
  return { c, fetch };
}

const flush = () => act(async () => {});

describe('useSession', () => {
  it('loads /auth/me once for all components and re-renders on changes', async () => {
    let signedIn = true;
    const { c, fetch } = gateway(() => (signedIn ? json(200, ME) : json(401, { authenticated: false })));
    const renders: string[] = [];
    function Who({ id }: { id: string }): ReactNode {
      const s = useSession(c);
      renders.push(`${id}:${s.loaded}:${s.me?.user.preferred_username ?? '-'}`);
      return createElement('span', { 'data-id': id }, s.me ? s.me.user.preferred_username : s.loaded ? 'anonymous' : '…');
    }
    await act(async () => root.render([createElement(Who, { id: 'a', key: 'a' }), createElement(Who, { id: 'b', key: 'b' })]));
    await flush();
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(host.textContent).toBe('alicealice');

    // Another tab logged out / the session expired: /auth/me says 401.
    signedIn = false;
    await act(async () => {
      await c.getUser();
    });
    expect(host.textContent).toBe('anonymousanonymous');
  });

  it('reports a failed load as loaded with an error, signed out', async () => {
    const { c } = gateway(() => json(503, { error: 'store_unavailable' }));
    let seen: ReturnType<typeof useSession> | null = null;
    function Probe() {
      seen = useSession(c);
      return null;
    }
    await act(async () => root.render(createElement(Probe)));
    await flush();
    expect(seen!.loaded).toBe(true);
    expect(seen!.me).toBeNull();
    expect(String(seen!.error)).toMatch(/503/);
  });

  it('gives the last change event (a logout elsewhere)', async () => {
    const { c } = gateway(() => json(200, ME));
    let seen: ReturnType<typeof useSession> | null = null;
    function Probe() {
      seen = useSession(c);
      return null;
    }
    await act(async () => root.render(createElement(Probe)));
    await flush();
    expect(seen!.change?.type).toBe('login');
    await act(async () => {
      await c.recover({ error: 'session_expired' });
    });
    expect(seen!.me).toBeNull();
    expect(seen!.change).toEqual({ type: 'expired', error: { error: 'session_expired' }, remote: false });
  });
});

describe('useSessionExpiring', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    vi.setSystemTime(Date.parse('2030-01-01T00:00:00Z'));
  });
  afterEach(() => vi.useRealTimers());

  it('turns on before the deadline and off after keepAlive', async () => {
    let idle = '2030-01-01T00:10:00Z';
    const { c } = gateway(() => json(200, { ...ME, session: { ...ME.session, idle_expires_at: idle } }));
    function Banner() {
      const w = useSessionExpiring(120_000, c);
      return w ? `ends ${new Date(w.at).toISOString()}` : 'ok';
    }
    await act(async () => {
      await c.getUser();
    });
    await act(async () => root.render(createElement(Banner)));
    expect(host.textContent).toBe('ok');
    await act(async () => vi.advanceTimersByTime(8 * 60_000));
    expect(host.textContent).toBe('ends 2030-01-01T00:10:00.000Z');
    idle = '2030-01-01T00:18:00Z';
    await act(async () => {
      await c.keepAlive();
    });
    expect(host.textContent).toBe('ok');
  });
});

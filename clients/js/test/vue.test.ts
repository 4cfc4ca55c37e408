// @vitest-environment happy-dom
// The Vue composables: one reactive session per client, in and out of components.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createApp, defineComponent, effectScope, h, nextTick, watchEffect } from 'vue';
import { createClient, type PortcullisClient } from '../src/index';
import { useSession, useSessionExpiring } from '../src/vue';

const ME = {
  authenticated: true,
  user: { sub: 'u-alice', preferred_username: 'alice' },
  roles: ['admin'],
  session: { expires_at: '2030-01-01T08:00:00Z', idle_expires_at: '2030-01-01T00:10:00Z' },
};
const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

let clients: PortcullisClient[] = [];
afterEach(() => {
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

describe('useSession', () => {
  it('is one reactive session per client, loaded once, usable outside components', async () => {
    let signedIn = true;
    const { c, fetch } = gateway(() => (signedIn ? json(200, ME) : json(401, { authenticated: false })));
    const a = useSession(c);
    const b = useSession(c);
    expect(a).toBe(b);
    expect(a.session.loaded).toBe(false);
    expect(await a.ready).toMatchObject({ user: { sub: 'u-alice' } });
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(a.session.loaded).toBe(true);
    expect(a.hasRole('admin')).toBe(true);

    const seen: string[] = [];
    const scope = effectScope();
    scope.run(() => watchEffect(() => seen.push(a.session.me?.user.sub ?? '-')));
    signedIn = false;
    await a.load();
    await nextTick();
    expect(seen).toEqual(['u-alice', '-']);
    expect(a.hasRole('admin')).toBe(false);
    expect(a.session.change?.type).toBe('expired');
    scope.stop();
  });

  it('renders in a component', async () => {
    const { c } = gateway(() => json(200, ME));
    const host = document.createElement('div');
    const app = createApp(
      defineComponent({
        setup() {
          const { session, hasRole } = useSession(c);
          return () =>
            h('p', session.me ? `${session.me.user.preferred_username}${hasRole('admin') ? ' (admin)' : ''}` : 'anonymous');
        },
      }),
    );
    app.mount(host);
    await useSession(c).ready;
    await nextTick();
    expect(host.textContent).toBe('alice (admin)');
    app.unmount();
  });

  it('keeps a failed load as loaded with an error', async () => {
    const { c } = gateway(() => json(503, { error: 'store_unavailable' }));
    const s = useSession(c);
    expect(await s.ready).toBeNull();
    expect(s.session.loaded).toBe(true);
    expect(String(s.session.error)).toMatch(/503/);
  });
});

describe('useSessionExpiring', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    vi.setSystemTime(Date.parse('2030-01-01T00:00:00Z'));
  });
  afterEach(() => vi.useRealTimers());

  it('is set before the deadline, cleared by keepAlive, and stops with its scope', async () => {
    let idle = '2030-01-01T00:10:00Z';
    const { c } = gateway(() => json(200, { ...ME, session: { ...ME.session, idle_expires_at: idle } }));
    await c.getUser();
    const scope = effectScope();
    const warning = scope.run(() => useSessionExpiring(120_000, c))!;
    expect(warning.value).toBeNull();
    vi.advanceTimersByTime(8 * 60_000);
    expect(warning.value).toEqual({ kind: 'idle', at: Date.parse(idle) });
    idle = '2030-01-01T00:18:00Z';
    await c.keepAlive();
    expect(warning.value).toBeNull();
    scope.stop();
    vi.advanceTimersByTime(60 * 60_000);
    expect(warning.value).toBeNull();
  });
});

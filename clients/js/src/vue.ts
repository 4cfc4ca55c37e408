// Vue 3 bindings: `useSession()` returns one reactive session per client, usable in
// components, router guards and plain modules alike.
import { getCurrentScope, onScopeDispose, shallowReactive, shallowReadonly, shallowRef, type Ref } from 'vue';
import { defaultClient, type Me, type PortcullisClient, type SessionExpiring } from './index.js';
import { storeOf, type SessionState } from './store.js';

export type { SessionState } from './store.js';

export interface VueSession {
  /** Reactive and read-only: `session.me`, `session.loaded`, `session.error`, `session.change`. */
  session: Readonly<SessionState>;
  /** `GET /auth/me` again; never rejects (an error lands in `session.error`). */
  load(): Promise<Me | null>;
  /** The first `load()`, shared by every caller (router guards await it). */
  ready: Promise<Me | null>;
  /** Whether the signed-in user has `role` (reactive: use it in templates). */
  hasRole(role: string): boolean;
  client: PortcullisClient;
}

const sessions = new WeakMap<PortcullisClient, VueSession>();

/** The session of `client` (default: the shared one of `configure`). Asks `/auth/me` on first use. */
export function useSession(client: PortcullisClient = defaultClient()): VueSession {
  let vs = sessions.get(client);
  if (vs) return vs;
  const store = storeOf(client);
  const state = shallowReactive({ ...store.get() });
  store.subscribe(() => Object.assign(state, store.get()));
  vs = {
    session: shallowReadonly(state),
    load: store.load,
    ready: store.ensureLoaded(),
    hasRole: (role) => !!state.me?.roles.includes(role),
    client,
  };
  sessions.set(client, vs);
  return vs;
}

/**
 * A ref: `null`, or which deadline comes within `before` ms (default 120 000); back to
 * `null` when the deadline moves (e.g. after `client.keepAlive()`) or the session ends.
 * Stops with the component (or effect scope) that called it.
 */
export function useSessionExpiring(
  before = 120_000,
  client: PortcullisClient = defaultClient(),
): Readonly<Ref<SessionExpiring | null>> {
  const warning = shallowRef<SessionExpiring | null>(null);
  const off = client.onSessionExpiring((w) => (warning.value = w), { before });
  const offMoved = client.subscribe(() => {
    const e = client.expiry();
    const w = warning.value;
    if (w && (!e || Math.min(e.idle, e.absolute) !== w.at)) warning.value = null;
  });
  if (getCurrentScope()) {
    onScopeDispose(() => {
      off();
      offMoved();
    });
  }
  return warning;
}

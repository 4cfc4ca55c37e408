// React bindings: `useSession()` on `useSyncExternalStore`, so every component reads
// one session and re-renders when it changes (login, logout in another tab, expiry).
import { useEffect, useState, useSyncExternalStore } from 'react';
import { defaultClient, type PortcullisClient, type SessionExpiring } from './index.js';
import { storeOf, type SessionState } from './store.js';

export type { SessionState } from './store.js';

/**
 * The session of `client` (default: the shared one of `configure`). Asks `/auth/me` on
 * first use; `loaded` turns true when it has answered.
 */
export function useSession(client: PortcullisClient = defaultClient()): SessionState {
  const store = storeOf(client);
  const state = useSyncExternalStore(store.subscribe, store.get, store.get);
  useEffect(() => {
    void store.ensureLoaded();
  }, [store]);
  return state;
}

/**
 * `null`, or which deadline comes within `before` ms (default 120 000); back to `null`
 * when the deadline moves (e.g. after `client.keepAlive()`) or the session ends.
 */
export function useSessionExpiring(
  before = 120_000,
  client: PortcullisClient = defaultClient(),
): SessionExpiring | null {
  const [warning, setWarning] = useState<SessionExpiring | null>(null);
  useEffect(() => {
    const off = client.onSessionExpiring(setWarning, { before });
    const offMoved = client.subscribe(() => {
      const e = client.expiry();
      setWarning((w) => (w && (!e || Math.min(e.idle, e.absolute) !== w.at) ? null : w));
    });
    return () => {
      off();
      offMoved();
      setWarning(null);
    };
  }, [client, before]);
  return warning;
}

// The session as a store (snapshot + subscribe + load), shared by the React and Vue
// bindings: one per client, so every component sees the same state and the first
// `/auth/me` is asked once.
import type { Me, PortcullisClient, SessionChange } from './index.js';

/** What the bindings give components. */
export interface SessionState {
  /** The signed-in session (`user`, `roles`, `session` times), or `null`. */
  me: Me | null;
  /** Whether the first `GET /auth/me` has answered (or failed): show no login button before. */
  loaded: boolean;
  /** The error of the last load (gateway or store down), or `null`. Treat as signed out. */
  error: unknown;
  /** The last change event, e.g. to say "you logged out in another tab". */
  change: SessionChange | null;
}

export interface SessionStore {
  /** The current snapshot; a new object after every change, the same one otherwise. */
  get(): SessionState;
  subscribe(listener: () => void): () => void;
  /** `GET /auth/me` (again); resolves to the session or `null`, never rejects. */
  load(): Promise<Me | null>;
  /** `load()` unless it has run already. */
  ensureLoaded(): Promise<Me | null>;
}

const stores = new WeakMap<PortcullisClient, SessionStore>();

export function storeOf(client: PortcullisClient): SessionStore {
  let store = stores.get(client);
  if (store) return store;
  let state: SessionState = { me: client.current, loaded: false, error: null, change: null };
  let first: Promise<Me | null> | null = null;
  const listeners = new Set<() => void>();
  const update = (patch: Partial<SessionState>) => {
    state = { ...state, ...patch };
    listeners.forEach((f) => f());
  };
  // Called also when only the deadlines move: no new snapshot then.
  client.subscribe(() => {
    if (client.current !== state.me) update({ me: client.current });
  });
  client.onSessionChange((change) => update({ change }));
  store = {
    get: () => state,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    load: () =>
      client.getUser().then(
        (me) => {
          update({ me, loaded: true, error: null });
          return me;
        },
        (error) => {
          update({ loaded: true, error });
          return null;
        },
      ),
    ensureLoaded: () => (first ??= store!.load()),
  };
  stores.set(client, store);
  return store;
}

// portcullis-client: the browser side of the portcullis BFF gateway.
//
// The SPA never sees a token. It has an HttpOnly session cookie it cannot read,
// and an `XSRF-TOKEN` cookie whose value it echoes in the `X-XSRF-TOKEN` header
// on unsafe requests (double-submit CSRF). This module wraps exactly that:
// who am I (`/auth/me`), login and logout navigation, a CSRF-aware `fetch`,
// and a cross-tab notice when the session changes.

/** Claims of the signed-in user as `/auth/me` returns them. */
export interface User {
  sub: string;
  name?: string;
  email?: string;
  preferred_username?: string;
  [claim: string]: unknown;
}

/** The `session` object of `/auth/me`: RFC 3339 times. */
export interface SessionTimes {
  expires_at?: string;
  idle_expires_at?: string;
}

/** A signed-in session, from `GET /auth/me`. */
export interface Me {
  user: User;
  roles: string[];
  session: SessionTimes;
}

/** The gateway's error body: `{"error": "<code>", "message": "<text>"}`. */
export interface GatewayError {
  error: string;
  message?: string;
}

/** What changed, passed to `onSessionChange` listeners. */
export type SessionChange =
  | { type: 'login'; me: Me }
  | { type: 'logout'; remote: boolean }
  | { type: 'expired'; error: GatewayError | null; remote: boolean };

export interface PortcullisOptions {
  /**
   * Where the gateway's auth endpoints live; default `/auth` (`server.auth_prefix`).
   * A full URL (`http://localhost:8080/auth`) for a gateway on another origin.
   */
  authPrefix?: string;
  /** CSRF cookie name; default `XSRF-TOKEN` (`csrf.cookie`). */
  csrfCookie?: string;
  /** CSRF header name; default `X-XSRF-TOKEN` (`csrf.header`). */
  csrfHeader?: string;
  /**
   * Called when an `apiFetch` answer is 401 `session_expired` or `unauthorized`.
   * Default: `login()` back to the current page.
   */
  onSessionExpired?: (error: GatewayError | null, response: Response) => void;
  /** `BroadcastChannel` name used to tell other tabs; `false` turns it off. Default `portcullis`. */
  channel?: string | false;
  /**
   * Credentials mode of the client's requests; default `same-origin`. Only a SPA on
   * another origin than the gateway (CORS dev setup) needs `include`.
   */
  credentials?: RequestCredentials;
  /** The `fetch` to use; default the global one. */
  fetch?: typeof fetch;
}

export interface PortcullisClient {
  /** `GET /auth/me`: the session, or `null` when signed out. Throws on other answers (e.g. 503). */
  getUser(): Promise<Me | null>;
  /** The last `getUser()` result, without a request. */
  readonly current: Me | null;
  /** Whether the last known user has `role`. */
  hasRole(role: string): boolean;
  /** Navigates to the gateway's login; `returnTo` defaults to the current path and query. */
  login(returnTo?: string): void;
  /** `POST /auth/logout` with the CSRF header, tells other tabs, then navigates to the IdP's logout URL. */
  logout(): Promise<void>;
  /** `fetch` with the session cookie, the CSRF header on unsafe methods, and the expiry hook. */
  apiFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** Listens for session changes in this tab and others; returns the unsubscribe function. */
  onSessionChange(listener: (change: SessionChange) => void): () => void;
  /** The CSRF cookie's value, or `''`. */
  csrfToken(): string;
  /** Closes the cross-tab channel. */
  close(): void;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);
const EXPIRED_CODES = new Set(['session_expired', 'unauthorized']);

/** Reads one cookie from `document.cookie`. */
export function readCookie(name: string, cookies?: string): string {
  const all = cookies ?? (typeof document === 'undefined' ? '' : document.cookie);
  for (const part of all.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      const raw = part.slice(eq + 1).trim();
      try {
        return decodeURIComponent(raw);
      } catch {
        return raw;
      }
    }
  }
  return '';
}

/** A same-origin path for `return_to`: the current path and query. */
function currentPath(): string {
  return location.pathname + location.search;
}

async function errorBody(response: Response): Promise<GatewayError | null> {
  try {
    const body = await response.clone().json();
    return body && typeof body.error === 'string' ? body : null;
  } catch {
    return null;
  }
}

export function createClient(options: PortcullisOptions = {}): PortcullisClient {
  const prefix = (options.authPrefix ?? '/auth').replace(/\/+$/, '');
  const credentials = options.credentials ?? 'same-origin';
  const cookieName = options.csrfCookie ?? 'XSRF-TOKEN';
  const headerName = options.csrfHeader ?? 'X-XSRF-TOKEN';
  const doFetch = (input: RequestInfo | URL, init?: RequestInit) =>
    (options.fetch ?? fetch)(input, init);
  const listeners = new Set<(change: SessionChange) => void>();
  const channelName = options.channel ?? 'portcullis';
  const channel =
    channelName !== false && typeof BroadcastChannel !== 'undefined'
      ? new BroadcastChannel(channelName)
      : null;
  let current: Me | null = null;

  const emit = (change: SessionChange, broadcast: boolean) => {
    current = change.type === 'login' ? change.me : null;
    if (broadcast && channel && change.type !== 'login') {
      // Other tabs learn only that the session ended; they ask /auth/me themselves.
      channel.postMessage({ ...change, remote: true });
    }
    for (const listener of listeners) listener(change);
  };

  if (channel) {
    channel.onmessage = (event: MessageEvent) => {
      const change = event.data as SessionChange;
      if (change && (change.type === 'logout' || change.type === 'expired')) {
        emit(change, false);
      }
    };
  }

  const csrfToken = () => readCookie(cookieName);

  const client: PortcullisClient = {
    get current() {
      return current;
    },

    async getUser() {
      const response = await doFetch(`${prefix}/me`, {
        credentials,
        headers: { Accept: 'application/json' },
      });
      if (response.status === 401) {
        if (current) emit({ type: 'expired', error: null, remote: false }, false);
        return null;
      }
      if (!response.ok) {
        throw new Error(`${prefix}/me answered ${response.status}`);
      }
      const body = await response.json();
      if (!body || body.authenticated !== true) {
        if (current) emit({ type: 'expired', error: null, remote: false }, false);
        return null;
      }
      const me: Me = { user: body.user ?? {}, roles: body.roles ?? [], session: body.session ?? {} };
      if (!current || current.user.sub !== me.user.sub) {
        emit({ type: 'login', me }, false);
      }
      current = me;
      return me;
    },

    hasRole(role) {
      return !!current && current.roles.includes(role);
    },

    login(returnTo) {
      const target = returnTo ?? currentPath();
      location.assign(`${prefix}/login?return_to=${encodeURIComponent(target)}`);
    },

    async logout() {
      const response = await doFetch(`${prefix}/logout`, {
        method: 'POST',
        credentials,
        headers: { Accept: 'application/json', [headerName]: csrfToken() },
      });
      let next = '/';
      if (response.ok) {
        try {
          const body = await response.json();
          if (body && typeof body.logout_url === 'string') next = body.logout_url;
        } catch {
          // No JSON: the session is gone all the same; go home.
        }
      }
      emit({ type: 'logout', remote: false }, true);
      location.assign(next);
    },

    async apiFetch(input, init = {}) {
      const method = (
        init.method ?? (input instanceof Request ? input.method : 'GET')
      ).toUpperCase();
      const headers = new Headers(input instanceof Request ? input.headers : undefined);
      new Headers(init.headers).forEach((value, key) => headers.set(key, value));
      if (!SAFE_METHODS.has(method) && !headers.has(headerName)) {
        const token = csrfToken();
        if (token) headers.set(headerName, token);
      }
      const response = await doFetch(input, {
        ...init,
        method,
        headers,
        credentials: init.credentials ?? credentials,
      });
      if (response.status === 401) {
        const error = await errorBody(response);
        // Only the gateway's own codes: an upstream's 401 body is the app's business.
        if (error && EXPIRED_CODES.has(error.error)) {
          emit({ type: 'expired', error, remote: false }, true);
          (options.onSessionExpired ?? (() => client.login()))(error, response);
        }
      }
      return response;
    },

    onSessionChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    csrfToken,

    close() {
      channel?.close();
      listeners.clear();
    },
  };
  return client;
}

let shared: PortcullisClient | null = null;

/** Sets the options of the shared client the functions below use; call once at start-up. */
export function configure(options: PortcullisOptions): PortcullisClient {
  shared?.close();
  shared = createClient(options);
  return shared;
}

function client(): PortcullisClient {
  return (shared ??= createClient());
}

export const getUser = () => client().getUser();
export const hasRole = (role: string) => client().hasRole(role);
export const login = (returnTo?: string) => client().login(returnTo);
export const logout = () => client().logout();
export const apiFetch = (input: RequestInfo | URL, init?: RequestInit) =>
  client().apiFetch(input, init);
export const onSessionChange = (listener: (change: SessionChange) => void) =>
  client().onSessionChange(listener);

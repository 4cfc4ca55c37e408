// portcullis-client: the browser side of the portcullis BFF gateway.
//
// The SPA never sees a token. It has an HttpOnly session cookie it cannot read,
// and an `XSRF-TOKEN` cookie whose value it echoes in the `X-XSRF-TOKEN` header
// on unsafe requests (double-submit CSRF). This module wraps exactly that:
// who am I (`/auth/me`), login and logout navigation, a CSRF-aware `fetch`,
// a cross-tab notice when the session changes, the session's deadlines, and a
// silent re-login that keeps the page. The core stays within 2 KiB min+gzip
// (test/size.test.ts): hence some terse code below.

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

/** What a silent login (`prompt=none`) reports; see `silentLogin`. */
export type SilentLoginResult =
  | 'success'
  | 'login_required'
  | 'consent_required'
  | 'interaction_required'
  | 'error';

export interface SilentLoginOptions {
  /**
   * `iframe` (default): a hidden frame, no user gesture needed; needs the IdP to allow
   * being framed and its cookies in a frame. `popup`: a small window; call it from a
   * click, or the browser blocks it.
   */
  mode?: 'iframe' | 'popup';
  /** Gives up with `'error'` after this long; default 10 000 ms. */
  timeoutMs?: number;
}

/** When the session ends: epoch milliseconds on the browser's clock (corrected for skew). */
export interface SessionExpiry {
  /** The idle deadline: moves forward with every request that carries the session. */
  idle: number;
  /** The absolute deadline: fixed at login. */
  absolute: number;
}

/** Passed to `onSessionExpiring` listeners. */
export interface SessionExpiring {
  /** Which deadline comes first. */
  kind: 'idle' | 'absolute';
  /** When, in epoch milliseconds on the browser's clock (`at - Date.now()` is the time left). */
  at: number;
}

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
   * Called when a request answers 401 `session_expired` or `unauthorized` (and a silent
   * login, if enabled, did not bring the session back). Default: `login()` back to the
   * current page.
   */
  onSessionExpired?: (error: GatewayError | null, response?: Response) => void;
  /**
   * Try `silentLogin` before `onSessionExpired` when an API call finds the session gone;
   * on success the call is sent again. `true` means `{ mode: 'iframe' }`. Default off.
   */
  silentLogin?: boolean | SilentLoginOptions;
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
  /**
   * `GET /auth/me`: the session, or `null` when signed out. Throws on other answers
   * (e.g. 503). The request counts as activity: it extends the idle window.
   */
  getUser(): Promise<Me | null>;
  /** The last `getUser()` result, without a request. */
  readonly current: Me | null;
  /** Whether the last known user has `role`. */
  hasRole(role: string): boolean;
  /** Navigates to the gateway's login; `returnTo` defaults to the current path and query. */
  login(returnTo?: string): void;
  /**
   * `POST /auth/logout` with the CSRF header; then tells other tabs and navigates to the
   * IdP's logout URL. Rejects (and keeps the session state) when the POST fails; a 401
   * (session already gone) counts as logged out.
   */
  logout(): Promise<void>;
  /** `fetch` with the session cookie, the CSRF header on unsafe methods, and the expiry hook. */
  apiFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** Listens for session changes in this tab and others; returns the unsubscribe function. */
  onSessionChange(listener: (change: SessionChange) => void): () => void;
  /**
   * Called whenever `current` changes (login, logout, expiry, new session times) or the
   * deadlines move: the store interface the React and Vue bindings use. Compare `current`
   * to see whether the session itself changed. Returns the unsubscribe function.
   */
  subscribe(listener: () => void): () => void;
  /** Both deadlines of the current session, or `null` when signed out. */
  expiry(): SessionExpiry | null;
  /**
   * Calls `listener` `before` ms (default 120 000) before the first of the two deadlines,
   * once per deadline; re-armed when the deadlines move. Returns the unsubscribe function.
   */
  onSessionExpiring(listener: (e: SessionExpiring) => void, options?: { before?: number }): () => void;
  /** `GET /auth/me`, which extends the idle window; the "I'm still here" button. */
  keepAlive(): Promise<Me | null>;
  /**
   * Logs in again without leaving the page, if the IdP session is still alive
   * (`/auth/login?prompt=none` in a hidden frame or popup). On `'success'` the user is
   * fetched again and listeners hear a `login`. Concurrent calls share one attempt.
   */
  silentLogin(options?: SilentLoginOptions): Promise<SilentLoginResult>;
  /**
   * What `apiFetch` does on 401 `session_expired`/`unauthorized`, for other HTTP clients
   * (the axios binding): a silent login if enabled, else the expiry event and
   * `onSessionExpired`. Resolves to `true` when the session is back (send the request again).
   */
  recover(error: GatewayError | null, response?: Response): Promise<boolean>;
  /** The CSRF token: `csrf_token` of `/auth/me` when the gateway sends it, else the cookie's value, or `''`. */
  csrfToken(): string;
  /** Tells the client a request with the session succeeded (it moves its idle deadline). */
  touched(): void;
  /** Closes the cross-tab channel and drops all listeners and timers. */
  close(): void;
}

const SAFE_METHODS = /^(GET|HEAD|OPTIONS|TRACE)$/;
const EXPIRED_CODES = /^(session_expired|unauthorized)$/;

/** Reads one cookie from `document.cookie`. */
export function readCookie(name: string, cookies?: string): string {
  const all = cookies ?? globalThis.document?.cookie ?? '';
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

const errorBody = (response: Response): Promise<GatewayError | null> =>
  response
    .clone()
    .json()
    .then(
      (body) => (typeof body?.error === 'string' ? body : null),
      () => null,
    );

export function createClient(options: PortcullisOptions = {}): PortcullisClient {
  const prefix = (options.authPrefix ?? '/auth').replace(/\/+$/, '');
  const credentials = options.credentials ?? 'same-origin';
  const cookieName = options.csrfCookie ?? 'XSRF-TOKEN';
  const headerName = options.csrfHeader ?? 'X-XSRF-TOKEN';
  const silent = options.silentLogin;
  const doFetch = (input: RequestInfo | URL, init?: RequestInit) =>
    (options.fetch ?? fetch)(input, init);
  const listeners = new Set<(change: SessionChange) => void>();
  // Store subscribers and expiry checks: called whenever the session or its deadlines change.
  const watchers = new Set<() => void>();
  const channelName = options.channel ?? 'portcullis';
  const channel =
    channelName !== false && globalThis.BroadcastChannel ? new BroadcastChannel(channelName) : null;
  let current: Me | null = null;
  // The CSRF token of /auth/me (`csrf.token_in_me`), for an SPA that cannot read the cookie.
  // A stale one after a logout does no harm: it goes with no session.
  let meToken = '';
  // Deadlines on this clock (ms), and the idle window's length, learnt from /auth/me.
  let idleAt = 0;
  let absAt = 0;
  let idleLen = 0;
  let pending: Promise<SilentLoginResult> | null = null;

  const arm = () => watchers.forEach((f) => f());
  const set = (me: Me | null) => {
    current = me;
    arm();
  };

  const emit = (change: SessionChange, broadcast: boolean) => {
    set(change.type === 'login' ? change.me : null);
    if (broadcast) {
      // Only a logout or expiry is broadcast: other tabs learn that the session ended
      // (no user data); they ask /auth/me themselves.
      channel?.postMessage({ ...change, remote: true });
    }
    listeners.forEach((f) => f(change));
  };

  if (channel) {
    channel.onmessage = (event: MessageEvent) => {
      const change = event.data as SessionChange;
      if (/^(logout|expired)$/.test(change?.type)) {
        emit(change, false);
      }
    };
  }

  const csrfToken = () => meToken || readCookie(cookieName);
  // An auth endpoint; 401 is an answer (signed out), any other failure throws.
  const call = async (path: string, init: RequestInit) => {
    const response = await doFetch(`${prefix}/${path}`, init);
    if (!response.ok && response.status !== 401) {
      throw Error(`${prefix}/${path} answered ${response.status}`);
    }
    return response;
  };

  type Send = (input: RequestInfo | URL, init?: RequestInit, again?: boolean) => Promise<Response>;
  const client: PortcullisClient = {
    get current() {
      return current;
    },

    async getUser() {
      const response = await call('me', { credentials, headers: { Accept: 'application/json' } });
      const body = response.ok && (await response.json());
      if (!body?.authenticated) {
        if (current) emit({ type: 'expired', error: null, remote: false }, false);
        return null;
      }
      const session: SessionTimes = body.session;
      const me: Me = { user: body.user, roles: body.roles ?? [], session };
      meToken = body.csrf_token ?? '';
      // The gateway's times, moved onto this clock by the answer's Date header (clock skew).
      const skew = Date.now() - Date.parse(response.headers.get('date')!) || 0;
      absAt = Date.parse(session.expires_at!) + skew;
      idleAt = Date.parse(session.idle_expires_at!) + skew;
      idleLen = idleAt - Date.now();
      if (current?.user.sub !== me.user.sub) emit({ type: 'login', me }, false);
      else set(me);
      return me;
    },

    hasRole: (role) => !!current?.roles.includes(role),

    login(returnTo) {
      location.assign(
        `${prefix}/login?return_to=${encodeURIComponent(returnTo ?? location.pathname + location.search)}`,
      );
    },

    async logout() {
      // A 401 (the session was already gone) is what logout wants; other failures reject.
      const response = await call('logout', {
        method: 'POST',
        credentials,
        headers: { Accept: 'application/json', [headerName]: csrfToken() },
      });
      // No JSON: the session is gone all the same; go home.
      const body = response.ok && (await response.json().catch(() => 0));
      emit({ type: 'logout', remote: false }, true);
      location.assign(body?.logout_url ?? '/');
    },

    // `again`: the one retry after a silent login; no second one.
    async apiFetch(input, init = {}, again?: boolean) {
      // A string or URL has neither `method` nor `headers`; a Request has both.
      const req = input as Request;
      const method = (init.method ?? req.method ?? 'GET').toUpperCase();
      const headers = new Headers(req.headers);
      new Headers(init.headers).forEach((value, key) => headers.set(key, value));
      if (!SAFE_METHODS.test(method) && !headers.has(headerName)) {
        const token = csrfToken();
        if (token) headers.set(headerName, token);
      }
      const response = await doFetch(input, {
        ...init,
        method,
        headers,
        credentials: init.credentials ?? credentials,
      });
      if (response.status !== 401) {
        client.touched();
        return response;
      }
      const error = await errorBody(response);
      // Only the gateway's own codes: an upstream's 401 body is the app's business.
      // After a silent login, the request goes once more, with the new CSRF token.
      return !again && error && EXPIRED_CODES.test(error.error) && (await client.recover(error, response))
        ? (client.apiFetch as Send)(input, init, true)
        : response;
    },

    onSessionChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    subscribe(listener) {
      watchers.add(listener);
      return () => watchers.delete(listener);
    },

    expiry() {
      return current && { idle: idleAt, absolute: absAt };
    },

    onSessionExpiring(listener, { before = 120_000 } = {}) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let told = 0;
      const check = () => {
        clearTimeout(timer);
        // The gateway caps the idle deadline at the absolute one.
        const kind = absAt <= idleAt ? 'absolute' : 'idle';
        const at = Math.min(absAt, idleAt);
        if (!current || !at) return;
        const wait = at - before - Date.now();
        if (wait > 0) {
          // setTimeout overflows past 2^31 ms (24.8 days): wake up earlier and look again.
          timer = setTimeout(check, Math.min(wait, 1e9));
        } else if (told !== at) {
          told = at;
          listener({ kind, at });
        }
      };
      watchers.add(check);
      check();
      return () => {
        clearTimeout(timer);
        watchers.delete(check);
      };
    },

    keepAlive: () => client.getUser(),

    silentLogin({ mode = 'iframe', timeoutMs = 10_000 } = {}) {
      return (pending ??= (async () => {
        const result = await new Promise<SilentLoginResult>((resolve) => {
          const url = `${prefix}/login?prompt=none&return_to=/`;
          const frame =
            mode === 'popup'
              ? null
              : document.body.appendChild(
                  Object.assign(document.createElement('iframe'), { hidden: true, src: url }),
                );
          const target = frame ? frame.contentWindow : open(url, '', 'popup');
          // Called again by the timeout after an answer: all of it is then a no-op.
          const done = (result: SilentLoginResult) => {
            removeEventListener('message', onMessage);
            // The page closes a popup itself on success; on a timeout we do.
            frame ? frame.remove() : target?.close();
            resolve(result);
          };
          // Only the page we opened, on our own origin, may answer.
          const onMessage = (event: MessageEvent) => {
            const data = event.data;
            if (
              event.origin === location.origin &&
              event.source === target &&
              data?.source === 'portcullis' &&
              data.type === 'silent-login'
            ) {
              done(data.result);
            }
          };
          addEventListener('message', onMessage);
          // A blocked popup (no window) fails at once.
          setTimeout(done, target ? timeoutMs : 0, 'error');
        });
        pending = null;
        if (result === 'success') {
          // A new session: a login for the listeners, even when the user is the same.
          current = null;
          await client.getUser();
        }
        return result;
      })());
    },

    async recover(error, response) {
      // `true` destructures like `{}`: the defaults.
      if (silent && (await client.silentLogin(silent as SilentLoginOptions)) === 'success') {
        return true;
      }
      emit({ type: 'expired', error, remote: false }, true);
      (options.onSessionExpired ?? (() => client.login()))(error, response);
      return false;
    },

    csrfToken,

    touched() {
      // The gateway moves the idle deadline on each request, give or take its touch
      // interval (a twentieth of the window): assume the worst.
      if (current) {
        idleAt = Math.min(Date.now() + idleLen * 0.95, absAt);
        arm();
      }
    },

    close() {
      channel?.close();
      listeners.clear();
      // Signed out, each expiry check clears its timer.
      current = null;
      arm();
      watchers.clear();
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

/** The shared client (`configure`'s, or one with the defaults); the bindings' default. */
export function defaultClient(): PortcullisClient {
  return (shared ??= createClient());
}

export const getUser = () => defaultClient().getUser();
export const hasRole = (role: string) => defaultClient().hasRole(role);
export const login = (returnTo?: string) => defaultClient().login(returnTo);
export const logout = () => defaultClient().logout();
export const apiFetch = (input: RequestInfo | URL, init?: RequestInit) =>
  defaultClient().apiFetch(input, init);
export const onSessionChange = (listener: (change: SessionChange) => void) =>
  defaultClient().onSessionChange(listener);

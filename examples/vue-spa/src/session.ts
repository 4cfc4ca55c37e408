// The app's view of the portcullis session: one reactive object, kept current
// by the client's change events (incl. a logout in another tab).
import { configure, type Me } from 'portcullis-client';
import { reactive } from 'vue';

export const auth = configure({
  // Default: an expired session on an API call sends the user to log in again.
  // Spelled out here to show the hook.
  onSessionExpired: () => auth.login(),
});

export const session = reactive({
  me: null as Me | null,
  loaded: false,
  /** Set when another tab logged out or the session expired. */
  notice: '',
});

auth.onSessionChange((change) => {
  session.me = change.type === 'login' ? change.me : null;
  if (change.type === 'logout' && change.remote) session.notice = 'You logged out in another tab.';
  if (change.type === 'expired') session.notice = 'Your session has ended.';
});

export async function loadSession(): Promise<Me | null> {
  session.me = await auth.getUser();
  session.loaded = true;
  return session.me;
}

export function hasRole(role: string): boolean {
  return !!session.me && session.me.roles.includes(role);
}

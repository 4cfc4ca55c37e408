// The app's session: portcullis-client's shared client and its Vue binding. One
// reactive session for every component and the router guard, kept current by the
// client's change events (incl. a logout in another tab).
import { configure } from 'portcullis-client';
import { useSession } from 'portcullis-client/vue';
import { computed } from 'vue';

export const auth = configure({
  // An API call that finds the session gone first tries a silent re-login in a
  // hidden iframe (the page keeps its state); if the IdP wants the user, the default
  // `onSessionExpired` sends them to log in, back to this page.
  silentLogin: true,
});

export const { session, hasRole, ready } = useSession(auth);

/** Set when another tab logged out or the session expired. */
export const notice = computed(() => {
  const change = session.change;
  if (change?.type === 'logout' && change.remote) return 'You logged out in another tab.';
  if (change?.type === 'expired') return 'Your session has ended.';
  return '';
});

/**
 * After the session ended: log in again in a popup without leaving the page if the IdP
 * still knows the user (a popup needs this click; it has none of an iframe's limits),
 * else the full login.
 */
export async function continueSession(): Promise<void> {
  if ((await auth.silentLogin({ mode: 'popup' })) !== 'success') auth.login();
}

// The app's session: portcullis-client's shared client; components read it with
// `useSession()` from portcullis-client/react.
import { configure } from 'portcullis-client';
import type { SessionState } from 'portcullis-client/react';

export const auth = configure({
  // An API call that finds the session gone first tries a silent re-login in a
  // hidden iframe (the page keeps its state); if the IdP wants the user, the default
  // `onSessionExpired` sends them to log in, back to this page.
  silentLogin: true,
});

/** What to tell the user about the last change: another tab logged out, or the session ended. */
export function noticeOf(change: SessionState['change']): string {
  if (change?.type === 'logout' && change.remote) return 'You logged out in another tab.';
  if (change?.type === 'expired') return 'Your session has ended.';
  return '';
}

export const hasRole = (me: SessionState['me'], role: string) => !!me?.roles.includes(role);

/**
 * After the session ended: log in again in a popup without leaving the page if the IdP
 * still knows the user (a popup needs this click; it has none of an iframe's limits),
 * else the full login.
 */
export async function continueSession(): Promise<void> {
  if ((await auth.silentLogin({ mode: 'popup' })) !== 'success') auth.login();
}

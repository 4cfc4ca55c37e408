// Layout and the guard: anonymous users go to the gateway's login (and come back to
// the page they asked for); views that need a role are refused without it.
import { useSession } from 'portcullis-client/react';
import { type ReactNode, useEffect } from 'react';
import { Navigate, NavLink, Outlet, useLocation } from 'react-router-dom';
import { ExpiryBanner } from './ExpiryBanner';
import { auth, continueSession, hasRole, noticeOf } from './session';

export function App() {
  const { me, loaded, change } = useSession(auth);
  const notice = noticeOf(change);
  return (
    <>
      <header>
        <strong className="brand">portcullis · React</strong>
        <nav>
          <NavLink to="/" end>Home</NavLink>
          {me && <NavLink to="/console" data-testid="nav-console">API console</NavLink>}
          {hasRole(me, 'admin') && <NavLink to="/admin" data-testid="nav-admin">Admin</NavLink>}
        </nav>
        <span className="spacer" />
        {me ? (
          <>
            <span data-testid="whoami">{me.user.preferred_username ?? me.user.sub}</span>
            <button data-testid="logout" onClick={() => void auth.logout()}>Log out</button>
          </>
        ) : (
          loaded && <button data-testid="login" onClick={() => auth.login('/')}>Log in</button>
        )}
      </header>
      {notice && (
        <p className="notice" data-testid="notice">
          {notice}{' '}
          {change?.type === 'expired' && (
            <button data-testid="continue" onClick={() => void continueSession()}>Continue session</button>
          )}
        </p>
      )}
      <ExpiryBanner />
      <main>
        <Outlet />
      </main>
    </>
  );
}

/** Renders `children` only for a signed-in user (with `role`, if given). */
export function RequireAuth({ role, children }: { role?: string; children: ReactNode }) {
  const { me, loaded, change } = useSession(auth);
  const location = useLocation();
  // The session ended while here (another tab logged out): go home and say so.
  const ended = !!change && change.type !== 'login';
  const path = location.pathname + location.search;
  const mustLogIn = loaded && !me && !ended;
  useEffect(() => {
    if (mustLogIn) auth.login(path);
  }, [mustLogIn, path]);
  if (!loaded || mustLogIn) return null;
  if (!me) return <Navigate to="/" replace />;
  if (role && !hasRole(me, role)) {
    return <Navigate to={`/?denied=${encodeURIComponent(location.pathname)}`} replace />;
  }
  return children;
}

import { useSession } from 'portcullis-client/react';
import { useSearchParams } from 'react-router-dom';
import { auth } from '../session';

export function Home() {
  const { me, loaded } = useSession(auth);
  const [params] = useSearchParams();
  const denied = params.get('denied');
  return (
    <>
      {denied && (
        <p className="error" data-testid="denied">
          You lack the role for {denied}.
        </p>
      )}
      {me ? (
        <section className="card" data-testid="user-card">
          <h2>{String(me.user.name ?? me.user.preferred_username)}</h2>
          <dl>
            <dt>username</dt>
            <dd data-testid="username">{me.user.preferred_username}</dd>
            <dt>email</dt>
            <dd>{me.user.email ?? '—'}</dd>
            <dt>subject</dt>
            <dd><code>{me.user.sub}</code></dd>
            <dt>roles</dt>
            <dd data-testid="roles">
              {me.roles.map((role) => (
                <span key={role} className="role">{role}</span>
              ))}
              {me.roles.length === 0 && <em>none</em>}
            </dd>
            <dt>session ends</dt>
            <dd data-testid="expires-at">{me.session.expires_at}</dd>
            <dt>idle until</dt>
            <dd data-testid="idle-expires-at">{me.session.idle_expires_at}</dd>
          </dl>
        </section>
      ) : (
        loaded && (
          <section className="card" data-testid="anonymous">
            <h2>Not signed in</h2>
            <p>The gateway keeps your tokens; this page only has a session cookie it cannot read.</p>
            <button onClick={() => auth.login('/')}>Log in</button>
          </section>
        )
      )}
    </>
  );
}

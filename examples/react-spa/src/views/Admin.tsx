import { useEffect, useState } from 'react';
import { auth } from '../session';

export function Admin() {
  const [answer, setAnswer] = useState<{ status: number; body: string } | null>(null);
  useEffect(() => {
    let live = true;
    void (async () => {
      const response = await auth.apiFetch('/api/admin/ping');
      const body = await response.text();
      if (live) setAnswer({ status: response.status, body });
    })();
    return () => {
      live = false;
    };
  }, []);
  return (
    <section className="card" data-testid="admin-view">
      <h2>Admin</h2>
      <p>
        Only users with the <code>admin</code> role see this view; the gateway enforces the same rule
        on <code>/api/admin/</code>.
      </p>
      {answer && (
        <p>
          GET /api/admin/ping → <span data-testid="admin-status">{answer.status}</span>{' '}
          <code>{answer.body}</code>
        </p>
      )}
    </section>
  );
}

// "Your session ends in 1:54 — I'm still here": shown from two minutes before the
// first of the session's deadlines; the button calls /auth/me, which extends the
// idle window. At zero the app asks /auth/me, which reports the end.
import { useSessionExpiring } from 'portcullis-client/react';
import { useEffect, useState } from 'react';
import { auth } from './session';

const mmss = (s: number) => `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;

export function ExpiryBanner() {
  const warning = useSessionExpiring(120_000, auth);
  const [left, setLeft] = useState(0);
  useEffect(() => {
    if (!warning) return;
    const tick = () => {
      const s = Math.max(0, Math.round((warning.at - Date.now()) / 1000));
      setLeft(s);
      if (s === 0) {
        clearInterval(timer);
        void auth.getUser();
      }
    };
    const timer = setInterval(tick, 1000);
    tick();
    return () => clearInterval(timer);
  }, [warning]);
  if (!warning) return null;
  return (
    <p className="notice" data-testid="expiring" role="alert">
      {warning.kind === 'idle'
        ? `Your session ends in ${mmss(left)} unless you are still here. `
        : `Your session ends in ${mmss(left)}; then you log in again. `}
      {warning.kind === 'idle' && (
        <button data-testid="still-here" onClick={() => void auth.keepAlive()}>I'm still here</button>
      )}
    </p>
  );
}

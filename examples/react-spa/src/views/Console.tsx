import { useState } from 'react';
import { auth } from '../session';

type Result = { label: string; status: number; body: string };

export function Console() {
  const [result, setResult] = useState<Result | null>(null);
  const [message, setMessage] = useState('hello');
  const [events, setEvents] = useState<string[]>([]);
  const [streaming, setStreaming] = useState(false);

  async function call(method: string, path: string, body?: unknown) {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.headers = { 'Content-Type': 'application/json' };
      init.body = JSON.stringify(body);
    }
    const response = await auth.apiFetch(path, init);
    const text = await response.text();
    let shown = text;
    try {
      shown = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      // Not JSON: show the text.
    }
    setResult({ label: `${method} ${path}`, status: response.status, body: shown });
  }

  // Reads the server-sent events of /api/stream through apiFetch, as they arrive.
  async function stream() {
    setEvents([]);
    setStreaming(true);
    try {
      const response = await auth.apiFetch('/api/stream', { headers: { Accept: 'text/event-stream' } });
      if (!response.ok || !response.body) {
        setEvents([`error ${response.status}`]);
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event
            .split('\n')
            .filter((line) => line.startsWith('data:'))
            .map((line) => line.slice(5).trim());
          setEvents((all) => [...all, ...data]);
        }
      }
    } finally {
      setStreaming(false);
    }
  }

  return (
    <>
      <section className="card">
        <h2>API console</h2>
        <div className="buttons">
          <button data-testid="call-whoami" onClick={() => void call('GET', '/api/whoami')}>GET /api/whoami</button>
          <button data-testid="call-admin" onClick={() => void call('GET', '/api/admin/ping')}>GET /api/admin/ping</button>
          <button data-testid="call-hr" onClick={() => void call('GET', '/api/hr/ping')}>GET /api/hr/ping</button>
          <span className="echo">
            <input value={message} onChange={(e) => setMessage(e.target.value)} data-testid="echo-input" aria-label="message" />
            <button data-testid="call-echo" onClick={() => void call('POST', '/api/echo', { message })}>POST /api/echo</button>
          </span>
          <button data-testid="call-stream" disabled={streaming} onClick={() => void stream()}>GET /api/stream</button>
        </div>
        {result && (
          <div className="result" data-testid="result">
            <div>
              {result.label} →{' '}
              <span data-testid="result-status" className={result.status < 400 ? 'ok' : 'error'}>{result.status}</span>
            </div>
            <pre data-testid="result-body">{result.body}</pre>
          </div>
        )}
      </section>
      <section className="card">
        <h2>Live stream</h2>
        <p>
          <span data-testid="stream-count">{events.length}</span> events {streaming && <em>(streaming…)</em>}
        </p>
        <ol data-testid="stream-events">
          {events.map((e, i) => (
            <li key={i}><code>{e}</code></li>
          ))}
        </ol>
      </section>
    </>
  );
}

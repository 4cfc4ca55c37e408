//! WebSocket tunnelling: the upgrade request goes to the upstream with the
//! user's token (like any proxied request), and once both sides have switched
//! protocols the two connections are spliced byte for byte.
//!
//! `Upgrade` and `Connection: upgrade` are hop-by-hop and stripped from every
//! other request; only a WebSocket handshake gets them back.
//!
//! A tunnel never outlives its session: it is cut when the session ends in
//! this process (logout, back-channel logout, admin revoke, a refused
//! refresh: [`TunnelEnds::notify`]), and every `server.websocket_session_check`
//! it re-reads the session in the store, which catches expiry, ends on
//! other replicas and roles that changed (a refresh that dropped the one the
//! route's `require_roles` asks for). Traffic through a tunnel is the user's
//! activity: that check also touches a busy tunnel's session, so its idle
//! timeout does not end the session of a user who only uses the WebSocket.
//! A tunnel is also cut after `server.websocket_idle_timeout` without a byte
//! either way. The per-frame cost is one relaxed atomic store.
//! A cut closes both TCP connections (the browser sees close code 1006): the
//! gateway splices bytes and cannot inject a close frame mid-stream.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, response::Response};
use http::{HeaderValue, Method, StatusCode, header, request::Parts};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::broadcast,
    time::{Instant, MissedTickBehavior},
};

use super::{client::UpstreamClient, finish, headers, timed_send};
use crate::{
    api_error::ApiError,
    routes::Route,
    session::{SessionHash, SessionRecord, SessionStore},
    state::Shared,
    time::Clock,
    tunnel_ends::SessionEnd,
};

/// A `GET` with `Upgrade: websocket` and `Connection: upgrade`.
pub(super) fn is_upgrade(parts: &Parts) -> bool {
    parts.method == Method::GET
        && header_has_token(parts, header::UPGRADE, "websocket")
        && header_has_token(parts, header::CONNECTION, "upgrade")
}

fn header_has_token(parts: &Parts, name: header::HeaderName, token: &str) -> bool {
    parts
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Forward the handshake (already rewritten by `headers::rewrite_request`)
/// and, on `101`, splice the browser's connection to the upstream's for as
/// long as `session` (if the route has one) lives.
pub(super) async fn tunnel(
    shared: &Shared,
    route: &Route,
    client: &UpstreamClient,
    mut parts: Parts,
    session: Option<&SessionRecord>,
) -> Result<Response, ApiError> {
    let browser_side = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or_else(|| ApiError::BadRequest("this connection cannot be upgraded".into()))?;
    restore_upgrade_headers(&mut parts.headers);
    // Subscribed before the handshake: an end during it is not missed.
    let watch = session.map(|r| SessionWatch {
        id: r.id.clone(),
        sub: r.sub.clone(),
        sid: r.sid.clone(),
        roles: r.roles.clone(),
        require_roles: route.require_roles.clone(),
        store: shared.store.clone(),
        clock: shared.clock.clone(),
        ends: shared.tunnel_ends.tx.subscribe(),
        every: shared.config.server.websocket_session_check,
        idle_timeout: shared.config.session.idle_timeout.as_secs() as i64,
        touch_after: crate::session_lookup::touch_interval(shared),
    });
    let mut resp = timed_send(
        shared,
        route,
        client,
        axum::extract::Request::from_parts(parts, Body::empty()),
        None,
    )
    .await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream refused the upgrade: its answer is an ordinary response.
        return Ok(finish(shared, route, resp));
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    let idle = shared.config.server.websocket_idle_timeout;
    tokio::spawn(async move {
        let (browser, upstream) = match tokio::try_join!(browser_side, upstream_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade did not complete");
                return;
            }
        };
        let closed = splice(TokioIo::new(browser), TokioIo::new(upstream), idle, watch).await;
        match closed {
            Closed::Done(Ok(_)) => {}
            Closed::Done(Err(e)) => {
                tracing::debug!(error = %e, "websocket tunnel closed with an error")
            }
            Closed::Idle => tracing::debug!("websocket tunnel idle; closed"),
            Closed::SessionEnded => tracing::info!("session ended; websocket tunnel closed"),
        }
    });
    let (mut head, _) = resp.into_parts();
    headers::rewrite_response(&mut head.headers, &shared.routes.owned_cookies);
    restore_upgrade_headers(&mut head.headers);
    Ok(Response::from_parts(head, Body::empty()))
}

fn restore_upgrade_headers(h: &mut http::HeaderMap) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Why a tunnel ended.
#[derive(Debug)]
enum Closed {
    /// One side closed (or failed); the byte counts of `copy_bidirectional`.
    Done(io::Result<(u64, u64)>),
    /// No byte either way for the idle timeout.
    Idle,
    /// The session ended, expired, could no longer be found or lost the
    /// route's role.
    SessionEnded,
}

/// Copy both ways until a side closes, the tunnel idles out or the session
/// ends. Returning drops both connections, which closes them.
async fn splice<B, U>(
    browser: B,
    upstream: U,
    idle: Duration,
    watch: Option<SessionWatch>,
) -> Closed
where
    B: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let active = Arc::new(AtomicU8::new(0));
    let mut browser = Tracked {
        io: browser,
        active: active.clone(),
    };
    let mut upstream = Tracked {
        io: upstream,
        active: active.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut browser, &mut upstream);
    tokio::pin!(copy);
    let seen = active.clone();
    let session_ended = async move {
        match watch {
            Some(w) => w.until_ended(seen).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(session_ended);
    // Activity is sampled four times per idle period: a tunnel closes
    // between `idle` and `1.25 * idle` after its last byte.
    let step = (idle / 4).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(Instant::now() + step, step);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_active = Instant::now();
    loop {
        tokio::select! {
            done = &mut copy => return Closed::Done(done),
            () = &mut session_ended => return Closed::SessionEnded,
            now = tick.tick() => {
                if active.fetch_and(!SEEN_BY_IDLE_TIMER, Ordering::Relaxed) & SEEN_BY_IDLE_TIMER != 0 {
                    last_active = now;
                } else if now.duration_since(last_active) >= idle {
                    return Closed::Idle;
                }
            }
        }
    }
}

/// Bits of a tunnel's activity flag, each cleared by its reader: bytes moved
/// since the idle timer's last sample, since the session check's last look.
const SEEN_BY_IDLE_TIMER: u8 = 1;
const SEEN_BY_SESSION_CHECK: u8 = 2;

/// An I/O half that flags every successful read with data (one relaxed
/// store: the only per-frame cost of the idle timeout and the session touch).
struct Tracked<T> {
    io: T,
    active: Arc<AtomicU8>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.active.store(
                SEEN_BY_IDLE_TIMER | SEEN_BY_SESSION_CHECK,
                Ordering::Relaxed,
            );
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// What a tunnel needs to notice its session's end.
struct SessionWatch {
    id: SessionHash,
    sub: String,
    sid: Option<String>,
    /// The session's roles when last read; a change re-checks `require_roles`.
    roles: Vec<String>,
    /// The route's `require_roles` (any one of them).
    require_roles: Vec<String>,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    ends: broadcast::Receiver<SessionEnd>,
    every: Duration,
    /// `session.idle_timeout` in seconds, for the touch.
    idle_timeout: i64,
    /// A session seen less than this many seconds ago is not touched again
    /// (as on the request path).
    touch_after: i64,
}

impl SessionWatch {
    /// Resolves once the session has ended: told so in this process, or
    /// found gone, expired or without the route's role in the store. `seen`
    /// is the tunnel's activity flag.
    async fn until_ended(mut self, seen: Arc<AtomicU8>) {
        let mut check = tokio::time::interval_at(Instant::now() + self.every, self.every);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut listening = true;
        loop {
            tokio::select! {
                msg = self.ends.recv(), if listening => match msg {
                    Ok(end) if self.is_ours(&end) => return,
                    Ok(_) => {}
                    // Notices were dropped: one of them may have been ours.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if !self.alive(&seen).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => listening = false,
                },
                _ = check.tick() => {
                    if !self.alive(&seen).await {
                        return;
                    }
                }
            }
        }
    }

    fn is_ours(&self, end: &SessionEnd) -> bool {
        match end {
            SessionEnd::Session(id) => *id == self.id,
            SessionEnd::Subject(sub) => *sub == self.sub,
            SessionEnd::IdpSession(sid) => self.sid.as_deref() == Some(sid.as_str()),
        }
    }

    /// Whether the session is still in the store, not expired and (when its
    /// roles changed) still has the route's role; touched when the tunnel
    /// moved bytes since the last check. A store that cannot answer keeps
    /// the tunnel until the next check (as an outage must not cut every
    /// WebSocket at once); it is logged.
    async fn alive(&mut self, seen: &AtomicU8) -> bool {
        let record = match self.store.load_shared(&self.id).await {
            Ok(Some(record)) => record,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(session = self.id.short(), error = %e, "websocket session check failed");
                return true;
            }
        };
        let now = self.clock.now();
        if record.is_expired(now) {
            return false;
        }
        if record.roles != self.roles {
            if !self.require_roles.is_empty()
                && !self.require_roles.iter().any(|r| record.roles.contains(r))
            {
                tracing::info!(
                    session = self.id.short(),
                    "session lost the route's role; closing its websocket tunnel"
                );
                return false;
            }
            self.roles.clone_from(&record.roles);
        }
        let busy =
            seen.fetch_and(!SEEN_BY_SESSION_CHECK, Ordering::Relaxed) & SEEN_BY_SESSION_CHECK != 0;
        if busy && now - record.last_seen_at >= self.touch_after {
            let idle_expires_at = (now + self.idle_timeout).min(record.expires_at);
            if let Err(e) = self.store.touch(&self.id, now, idle_expires_at).await {
                tracing::warn!(session = self.id.short(), error = %e, "websocket session touch failed");
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// Bytes keep an idle tunnel open; silence closes it.
    #[tokio::test(start_paused = true)]
    async fn silence_closes_and_traffic_keeps_a_tunnel() {
        let (browser, mut browser_peer) = duplex(64);
        let (upstream, mut upstream_peer) = duplex(64);
        let idle = Duration::from_secs(60);
        let task = tokio::spawn(splice(browser, upstream, idle, None));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            browser_peer.write_all(b"x").await.expect("write");
            let mut b = [0u8; 1];
            upstream_peer.read_exact(&mut b).await.expect("read");
        }
        assert!(!task.is_finished(), "200 s of traffic: still open");
        let closed = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("closed within 1.25 idle")
            .expect("join");
        assert!(matches!(closed, Closed::Idle), "{closed:?}");
    }
}

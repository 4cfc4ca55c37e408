//! Ended sessions told to this process's open WebSocket tunnels (logout,
//! back-channel logout, admin revoke, a refresh the IdP refused), so they
//! close at once rather than at their next store check. Its own module: the
//! modules that end sessions and the proxy that owns the tunnels both use it.

use tokio::sync::broadcast;

use crate::session::SessionHash;

/// A session (or sessions) that just ended in this process.
#[derive(Debug, Clone)]
pub(crate) enum SessionEnd {
    Session(SessionHash),
    /// Every session of this subject.
    Subject(String),
    /// Every session of this IdP session id.
    IdpSession(String),
}

/// In-process notice of ended sessions to open tunnels, so they close at
/// once rather than at their next store check. Bounded: a tunnel that lags
/// behind re-checks the store instead.
pub(crate) struct TunnelEnds {
    pub(crate) tx: broadcast::Sender<SessionEnd>,
}

impl Default for TunnelEnds {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(256).0,
        }
    }
}

impl TunnelEnds {
    /// Tell every open tunnel that `end` happened; a no-op without tunnels.
    pub(crate) fn notify(&self, end: SessionEnd) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(end);
        }
    }
}

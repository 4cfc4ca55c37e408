//! What every request shares: config, store, OIDC client, route table,
//! policies and the per-process coordination (refresh locks, tunnel ends).
//! Below every request-handling module and above the pieces it holds, so
//! that `gateway` builds it and `http`, `proxy` and `refresh` read it
//! without importing each other through it.

use std::sync::Arc;

use crate::{
    config::Config, csrf::CsrfPolicy, oidc::OidcClient, routes::RouteTable, session::SessionStore,
    time::Clock,
};

/// Files compiled into the binary: `(path, content type, bytes)`.
pub type EmbeddedFiles = &'static [(&'static str, &'static str, &'static [u8])];

/// State shared by every request.
pub(crate) struct Shared {
    pub config: Config,
    pub store: Arc<dyn SessionStore>,
    pub oidc: OidcClient,
    pub clock: Arc<dyn Clock>,
    pub routes: RouteTable,
    pub csrf: CsrfPolicy,
    /// `None` when CORS is off (no `cors.allowed_origins`).
    pub cors: Option<crate::cors::CorsPolicy>,
    pub embedded: Option<EmbeddedFiles>,
    pub refresh_locks: crate::refresh_locks::RefreshLocks,
    /// Tells open WebSocket tunnels that their session ended here.
    pub tunnel_ends: crate::tunnel_ends::TunnelEnds,
    pub metrics: crate::metrics::RequestMetrics,
    /// Seals the login-in-flight cookie; no login state lives in the store.
    pub login_cookies: crate::login_cookie::LoginCookies,
    /// `portcullis demo`'s event stream; `None` everywhere else (no config
    /// key sets it). Every emitting site costs one `Option` check without it.
    pub demo: Option<Arc<crate::demo_events::DemoEvents>>,
}

impl Shared {
    /// Report to the demo's event stream. Without one (always, outside
    /// `portcullis demo`) this is one `Option` check: `kind` is not built.
    #[inline]
    pub(crate) fn demo_event(
        &self,
        session: &crate::session::SessionHash,
        kind: impl FnOnce(&crate::demo_events::DemoEvents) -> crate::demo_events::EventKind,
    ) {
        if let Some(demo) = &self.demo {
            demo.emit(session, self.clock.now(), kind(demo));
        }
    }
}

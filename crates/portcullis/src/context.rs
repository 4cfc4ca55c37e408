//! The per-request context: what the pipeline learns about a request once
//! and hands to the stage that answers it (the proxy, the auth endpoints).

use std::net::SocketAddr;

use http::HeaderValue;

use crate::session::SessionHash;

/// What the pipeline knows about a request, built once in `http::pipeline::observe`. (The
/// route is not in it: the dispatch stage hands the proxy its `Route`.)
pub(crate) struct RequestContext {
    /// The request's id, also in its `X-Request-ID` header (kept from the
    /// client when sane, else new; passed on to upstreams, echoed back).
    pub request_id: HeaderValue,
    /// The hash of a well-formed session cookie; the cookie itself never
    /// leaves the headers.
    pub session: Option<SessionHash>,
    /// The connection's peer, for `X-Forwarded-For`.
    pub peer: Option<SocketAddr>,
}

//! Who failed. Every module's error says which party caused it, and that
//! decides three things in one place (`http::error`): the answer's status
//! class, whether a session may end, and how loudly it is logged.
//!
//! The rule the gateway lives by: only a refusal ends a session — the IdP
//! saying no (`invalid_grant`, an identity change). A party that failed to
//! answer (the IdP or the store down, slow or garbled) is transient: the
//! answer is `503` with `Retry-After`, and the session is kept.

/// The party an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request itself is wrong or not allowed (4xx).
    Client,
    /// The IdP answered and said no: a decision that stands.
    IdpRefused,
    /// The IdP did not answer usefully: down, slow, 5xx, 429, garbled.
    IdpUnavailable,
    /// The session store did not answer.
    Store,
    /// The upstream API failed.
    Upstream,
    /// A bug or a misconfiguration of the gateway itself.
    Internal,
}

impl Fault {
    /// The label used in logs (`source=`) and in docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::IdpRefused => "idp_refused",
            Fault::IdpUnavailable => "idp_unavailable",
            Fault::Store => "store",
            Fault::Upstream => "upstream",
            Fault::Internal => "internal",
        }
    }

    /// A failure that may pass by itself: retrying later can succeed, and
    /// no session may end because of it.
    pub fn is_transient(self) -> bool {
        matches!(self, Fault::IdpUnavailable | Fault::Store | Fault::Upstream)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

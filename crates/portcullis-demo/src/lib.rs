//! Development OIDC provider, sample API and SPA for `portcullis demo`.
//!
//! Everything `portcullis demo` runs besides the gateway itself, with no config and no
//! external services:
//!
//! - [`DevIdp`]: a small but honest OpenID Connect provider (code flow, PKCE S256,
//!   ES256-signed tokens, rotating refresh tokens with reuse detection, revocation,
//!   end-session). It serves on loopback only.
//! - [`SampleApi`]: an upstream API that validates the IdP's access tokens against its
//!   JWKS, to be mounted behind the gateway's `/api/` route.
//! - [`spa::files`]: a static single-page app (HTML, JS, CSS; no inline script or style)
//!   for the gateway to serve.
//!
//! This crate deliberately does not depend on the `portcullis` library: it plays the
//! parts of the outside world the gateway talks to.
#![forbid(unsafe_code)]

pub mod api;
mod error;
pub mod idp;
mod net;
mod random;
pub mod spa;

pub use api::SampleApi;
pub use error::DemoError;
pub use idp::{DEMO_USERS, DemoUser, DevIdp, DevIdpConfig};

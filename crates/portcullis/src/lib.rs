//! portcullis: a Backend-for-Frontend authentication gateway.
//!
//! It runs the OpenID Connect login as a confidential client, keeps tokens in
//! a server-side [`session::SessionStore`], gives the browser an opaque
//! HttpOnly cookie, and proxies API routes with the user's access token.
//!
//! Build a [`Gateway`] from a [`config::Config`], then mount
//! [`Gateway::router`] or call [`serve`].
#![forbid(unsafe_code)]

mod api_error;
pub mod config;
mod context;
mod cookies;
pub(crate) mod cors;
pub(crate) mod csrf;
mod deadlines;
pub mod demo_events;
pub mod fault;
pub mod gateway;
pub mod http;
mod login_cookie;
pub mod metrics;
pub mod oidc;
mod path;
pub(crate) mod proxy;
pub(crate) mod refresh;
mod refresh_locks;
mod routes;
mod secret;
mod security_headers;
pub mod session;
mod session_lookup;
mod state;
mod store_url;
pub mod time;
pub mod tls;
mod tunnel_ends;
mod worker_index;
mod workers;

pub use gateway::{Gateway, GatewayError, serve, serve_public};

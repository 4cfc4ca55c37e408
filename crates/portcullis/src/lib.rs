//! portcullis: a Backend-for-Frontend authentication gateway.
//!
//! It runs the OpenID Connect login as a confidential client, keeps tokens in
//! a server-side [`session::SessionStore`], gives the browser an opaque
//! HttpOnly cookie, and proxies API routes with the user's access token.
//!
//! Build a [`Gateway`] from a [`config::Config`], then mount
//! [`Gateway::router`] or call [`serve`].
#![forbid(unsafe_code)]

pub mod config;
pub(crate) mod cors;
pub(crate) mod csrf;
pub mod demo_events;
pub mod fault;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod oidc;
pub(crate) mod proxy;
pub(crate) mod refresh;
mod secret;
pub mod session;
mod store_url;
pub mod time;
pub mod tls;
mod worker_index;
mod workers;

pub use gateway::{Gateway, GatewayError, serve, serve_public};

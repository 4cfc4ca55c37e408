//! The portcullis integration tests, one binary (one link of the crate):
//! each module is one topic. Two suites stay in binaries of their own because
//! they need the process to themselves: `log_capture.rs` installs a global
//! tracing subscriber, and `operations.rs` asserts exact metric deltas on
//! the process-global recorder.

mod browser_fixture;
#[path = "../common/mod.rs"]
mod common;

mod admin_sessions;
mod browser_security;
mod browser_static;
mod conn_limits;
mod demo_events;
mod django_idp_flow;
mod example_configs;
mod header_hygiene;
mod idp_outage;
mod login_security;
mod logout_backchannel;
mod logout_demo_idp;
mod logout_oidc_provider;
mod oidc_flow;
mod oidc_provider_smoke;
mod path_security;
mod private_pki;
mod proxy_lifecycle;
mod raw_http_fuzz;
mod replicas_shared_store;
mod session_lifetime;
mod shutdown;
mod store_encryption;
mod store_outage;
mod upstream_timeout;

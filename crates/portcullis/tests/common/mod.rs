//! Helpers shared by the portcullis integration tests.

pub mod oidc_provider;

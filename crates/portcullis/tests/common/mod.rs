//! Helpers shared by the portcullis integration tests.

pub mod browser;
pub mod crafted_idp;
pub mod django_idp;
pub mod flaky_store;
pub mod gateway;
pub mod harness;
pub mod oidc_provider;
pub mod own_postgres;
pub mod pki;
pub mod serving;

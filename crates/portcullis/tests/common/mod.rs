//! Helpers shared by the portcullis integration tests.

pub mod crafted_idp;
pub mod gateway;
pub mod oidc_provider;
pub mod serving;

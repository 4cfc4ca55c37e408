//! The dev IdP's and sample API's integration tests, one module per topic in
//! one test binary.

mod common;
mod idp_flow;
mod idp_lifecycle;
mod sample_api;

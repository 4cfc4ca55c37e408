//! The CLI's integration tests, one module per topic in one test binary (one
//! link instead of seven). Each runs the built `portcullis` binary.

mod check;
#[cfg(feature = "demo")]
mod demo;
#[cfg(feature = "demo")]
mod demo_spa;
mod env_config;
mod health;
mod operations;
mod store_migrate_gc;

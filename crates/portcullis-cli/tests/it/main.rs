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

/// Run the built binary with `args` and `--config` pointing at `config`
/// written to a temporary file (the environment's `PORTCULLIS_CONFIG` unset).
fn portcullis(args: &[&str], config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config).expect("write config");
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("run portcullis")
}

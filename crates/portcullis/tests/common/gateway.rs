//! Starting a gateway for a test: config text in, a gateway served on the
//! production path out (`portcullis::serve_public`: the serving workers and
//! their hand-written connection handling, as `portcullis serve` runs them).

#![allow(dead_code)]

use std::sync::Arc;

use portcullis::{Gateway, config::Config, session::SessionStore, time::Clock};
use tokio::{net::TcpListener, task::JoinHandle};

/// Build a gateway from `toml` with `store` (so the test can inspect it) and
/// serve it on `listener` in a task (aborting the task stops the workers).
/// Panics on a bad config.
pub async fn serve(
    listener: TcpListener,
    toml: &str,
    store: Arc<dyn SessionStore>,
) -> (Gateway, JoinHandle<()>) {
    serve_with_clock(listener, toml, store, None).await
}

/// [`serve`] with the gateway reading time from `clock` (the system clock if `None`).
pub async fn serve_with_clock(
    listener: TcpListener,
    toml: &str,
    store: Arc<dyn SessionStore>,
    clock: Option<Arc<dyn Clock>>,
) -> (Gateway, JoinHandle<()>) {
    let config = Config::from_toml_str(toml, Vec::<(String, String)>::new())
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let mut builder = Gateway::builder(config).store(store);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    let gateway = builder.build().await.expect("build the gateway");
    let served = gateway.clone();
    let server = tokio::spawn(async move {
        let _ = portcullis::serve_public(&served, listener, std::future::pending()).await;
    });
    (gateway, server)
}

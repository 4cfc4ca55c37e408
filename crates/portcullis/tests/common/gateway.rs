//! Starting a gateway for a test: config text in, a served router out.

#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc};

use portcullis::{Gateway, config::Config, session::SessionStore, time::Clock};
use tokio::{net::TcpListener, task::JoinHandle};

/// Build a gateway from `toml` with `store` (so the test can inspect it) and
/// serve its public router on `listener` in a task. Panics on a bad config.
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
    let app = gateway
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (gateway, server)
}

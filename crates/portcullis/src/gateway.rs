//! The assembled gateway: config, store, OIDC client and proxy behind one
//! shared handle, plus [`serve`], which runs the public and admin listeners
//! until shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;

use crate::{
    config::{Config, Profile},
    csrf::CsrfPolicy,
    oidc::{OidcClient, OidcError},
    routes::RouteTable,
    session::{SessionStore, StoreError, StoreOptions, cache::CacheOptions, seal::Keyring},
    state::Shared,
    time::{Clock, SystemClock},
};

/// Files compiled into the binary: `(path, content type, bytes)`.
pub use crate::state::EmbeddedFiles;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error("invalid header name in config: {0}")]
    Header(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("login cookie keys: {0}")]
    Seal(#[from] crate::session::seal::SealError),
}

/// Store options from `[session]`. A persistent store without
/// `encryption_keys` is refused in prod; in dev a key is generated into
/// `portcullis-session.key` beside the SQLite file (or in the working
/// directory) and reused on the next start, with a warning. Here rather
/// than in `session`, so that the stores never read the `Config`.
fn store_options(config: &Config) -> Result<StoreOptions, StoreError> {
    let session = &config.session;
    let keyring = if session.encryption_keys.is_empty() {
        if !crate::session::is_persistent(&session.store) {
            None
        } else if config.server.profile == Profile::Dev {
            Some(Arc::new(crate::session::store_options::dev_keyring(
                &session.store,
            )?))
        } else {
            return Err(StoreError::BadUrl(
                "session.encryption_keys is required for a persistent session store \
                 in the prod profile (generate one with `portcullis keygen`)"
                    .into(),
            ));
        }
    } else {
        Some(Arc::new(
            Keyring::from_secrets(&session.encryption_keys)
                .map_err(|e| StoreError::BadUrl(format!("session.encryption_keys: {e}")))?,
        ))
    };
    Ok(StoreOptions {
        keyring,
        key_prefix: session.key_prefix.clone(),
        timeout: session.store_timeout,
        cache: session.cache.then_some(CacheOptions {
            ttl: session.cache_ttl,
            capacity: session.cache_size,
        }),
        claim_sqlite_file: true,
        migrate: session.migrate,
        pg_schema: None,
    })
}

/// A built gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) shared: Arc<Shared>,
    /// The routes' upstream clients, handed to the public service.
    upstreams: Arc<crate::proxy::Upstreams>,
}

/// Builds a [`Gateway`], optionally with a given store, clock or embedded SPA.
pub struct GatewayBuilder {
    config: Config,
    store: Option<Arc<dyn SessionStore>>,
    clock: Arc<dyn Clock>,
    embedded: Option<EmbeddedFiles>,
    demo: Option<Arc<crate::demo_events::DemoEvents>>,
}

impl GatewayBuilder {
    pub fn store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Serve these files at `/` when no `[static]` dir is configured (the demo SPA).
    pub fn embedded_static(mut self, files: EmbeddedFiles) -> Self {
        self.embedded = Some(files);
        self
    }
    /// Report what the gateway does per session to `events` and serve it at
    /// `/demo/events` and `/demo/session`. For `portcullis demo` only.
    pub fn demo_events(mut self, events: Arc<crate::demo_events::DemoEvents>) -> Self {
        self.demo = Some(events);
        self
    }

    pub async fn build(self) -> Result<Gateway, GatewayError> {
        // Once per process; later gateways share the recorder.
        crate::metrics::install();
        let config = self.config;
        let store = match self.store {
            Some(s) => s,
            None => {
                let options = store_options(&config)?;
                crate::session::open_store_with(&config.session.store, &options).await?
            }
        };
        let oidc = OidcClient::new(&config, self.clock.clone())?;
        let csrf = CsrfPolicy {
            header: http::HeaderName::try_from(config.csrf.header.as_str())
                .map_err(|_| GatewayError::Header(config.csrf.header.clone()))?,
            public_origin: config.public_origin(),
            allowed_origins: config.cors.allowed_origins.clone(),
        };
        let routes = RouteTable::new(&config);
        let upstreams = Arc::new(crate::proxy::Upstreams::new(
            &routes,
            config.server.workers,
        )?);
        let metrics =
            crate::metrics::RequestMetrics::new(&config.server.auth_prefix, routes.prefixes());
        let cors = crate::cors::CorsPolicy::from_config(&config);
        let login_cookies = crate::login_cookie::LoginCookies::new(&config)?;
        let shared_store = ["redis", "postgres"]
            .iter()
            .any(|scheme| config.session.store.starts_with(scheme));
        if shared_store && config.session.encryption_keys.is_empty() {
            // Only possible outside the prod profile, which requires keys here.
            tracing::warn!(
                "no session.encryption_keys: login cookies are sealed with a key of this \
                 process, so a login must finish on the replica that started it"
            );
        }
        let gateway = Gateway {
            shared: Arc::new(Shared {
                config,
                store,
                oidc,
                clock: self.clock,
                routes,
                csrf,
                cors,
                embedded: self.embedded,
                refresh_locks: Default::default(),
                tunnel_ends: Default::default(),
                metrics,
                login_cookies,
                demo: self.demo,
            }),
            upstreams,
        };
        // The IdP may be down at start; login then fails with 503 and readiness says so.
        if let Err(e) = gateway.shared.oidc.warm_up().await {
            tracing::warn!(error = %e, "identity provider metadata not loaded yet");
        }
        Ok(gateway)
    }
}

impl Gateway {
    pub fn builder(config: Config) -> GatewayBuilder {
        GatewayBuilder {
            config,
            store: None,
            clock: Arc::new(SystemClock),
            embedded: None,
            demo: None,
        }
    }

    /// Build with the store the config names and the system clock.
    pub async fn new(config: Config) -> Result<Self, GatewayError> {
        Self::builder(config).build().await
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.shared.store
    }

    /// The public router: auth endpoints, proxied routes, static files.
    pub fn router(&self) -> axum::Router {
        axum::Router::new().fallback_service(self.service())
    }

    /// The public service itself, as [`serve`] runs it (without the
    /// `Router` that [`Gateway::router`] wraps it in).
    pub(crate) fn service(&self) -> crate::http::PublicService {
        crate::http::PublicService::new(self.shared.clone(), self.upstreams.clone())
    }

    /// The admin router: `/healthz`, `/readyz`.
    pub fn admin_router(&self) -> axum::Router {
        crate::http::admin_router(self.shared.clone())
    }

    /// Keep the IdP metadata and keys fresh in the background (and load them
    /// once the IdP comes back if it was down at start) until the returned
    /// task is aborted.
    pub fn spawn_idp_refresh(&self) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move { shared.oidc.reload_forever().await })
    }

    /// Delete expired sessions every `every` until the returned task is aborted.
    pub fn spawn_gc(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match shared.store.gc(shared.clock.now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deleted = n, "expired sessions removed"),
                    Err(e) => tracing::warn!(error = %e, "session GC failed"),
                }
                // A store-wide count, so every replica reports the same figure.
                if let Ok(Some(n)) = shared.store.count().await {
                    metrics::gauge!(crate::metrics::SESSIONS_ACTIVE).set(n as f64);
                }
            }
        })
    }
}

/// The public listener alone, on the same serving workers as [`serve`], but
/// without the background tasks `serve` starts (IdP metadata refresh, store
/// GC, metrics upkeep) and without the admin listener: for embedders and
/// tests that drive those themselves. Returns once `shutdown` has resolved,
/// the connections have drained and what a store outage left unsaved has
/// been saved (as [`serve`] does).
pub async fn serve_public(
    gateway: &Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let served = crate::workers::serve(
        gateway.service(),
        listener,
        gateway.config().server.workers,
        gateway.config().server.limits,
        rx,
        gateway.config().server.drain_timeout,
    );
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
        // Held until the serving ends: a dropped sender would cut the workers.
        tx.closed().await;
    });
    let served = served.await;
    crate::refresh::save_unsaved(&gateway.shared).await;
    served.map_err(GatewayError::Io)
}

/// Serve the gateway on `listener` with `server.workers` threads (and the
/// admin router on `admin`, if any, on the caller's runtime) until
/// `shutdown` resolves. Then the listeners close at once (new
/// connections are refused) while in-flight requests and open streams (SSE)
/// may finish for up to `server.drain_timeout`; whatever still runs after
/// that is cut. Then refreshed tokens that a store outage left in this
/// process only are saved. Returns `Ok` after a drain, timed out or not.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let drain_timeout = gateway.config().server.drain_timeout;
    let idp_refresh = gateway.spawn_idp_refresh();
    let gc = gateway.spawn_gc(Duration::from_secs(60));
    let upkeep = crate::metrics::spawn_upkeep();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let admin_task = admin.map(|l| {
        let router = gateway.admin_router();
        let limits = gateway.config().server.limits;
        tokio::spawn(crate::workers::serve_admin(router, l, limits, rx.clone()))
    });
    let served = crate::workers::serve(
        gateway.service(),
        listener,
        gateway.config().server.workers,
        gateway.config().server.limits,
        rx.clone(),
        drain_timeout,
    );
    let signal = async move {
        shutdown.await;
        tracing::info!(?drain_timeout, "shutdown: draining connections");
        let _ = tx.send(true);
        // Stay pending: `served` ends once the workers have drained.
        std::future::pending::<()>().await;
    };
    let result = tokio::select! {
        r = served => r,
        () = signal => Ok(()),
    };
    // No request runs any more: what a store outage left unsaved is saved
    // now or lost with the process.
    crate::refresh::save_unsaved(&gateway.shared).await;
    gc.abort();
    idp_refresh.abort();
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    if let Some(mut t) = admin_task
        && tokio::time::timeout(drain_timeout, &mut t).await.is_err()
    {
        t.abort();
    }
    tracing::info!("shutdown complete");
    result.map_err(GatewayError::Io)
}

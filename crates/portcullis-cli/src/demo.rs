//! `portcullis demo`: gateway (dev profile) + development IdP + sample API +
//! sample SPA in one process, all on loopback, no config file needed.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use portcullis::{Gateway, config::Config, demo_events::DemoEvents};
use portcullis_demo::{DevIdp, DevIdpConfig, SampleApi};
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Address of the gateway (must be loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin listener (/healthz, /readyz, /metrics); skipped if busy.
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// Session store URL; default: SQLite in the data dir.
    #[arg(long)]
    store: Option<String>,
    /// Where the IdP signing key and the SQLite store live.
    #[arg(long, default_value = "./portcullis-demo")]
    data_dir: PathBuf,
    /// Lifetime of access tokens the development IdP issues. Short, so that the gateway's
    /// proactive refresh (`session.refresh_before`, 60 s before expiry) shows within a minute.
    #[arg(long, default_value = "90s", value_parser = humantime_duration)]
    access_token_ttl: Duration,
    /// Serve this built SPA (e.g. `examples/vue-spa/dist`) instead of the plain demo page.
    #[arg(long, value_name = "DIR")]
    spa: Option<PathBuf>,
    /// Origin the browser uses when it is not the listen address: the Vite dev server
    /// (e.g. `http://localhost:5173`) that proxies `/auth` and `/api` to the demo.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

const CLIENT_ID: &str = "portcullis-demo";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("the demo listens on loopback only (got {})", args.listen);
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;

    let shutdown = crate::shutdown_signal();
    let gateway_listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let gateway_addr = gateway_listener.local_addr()?;
    let idp_listener = TcpListener::bind("127.0.0.1:0").await?;
    let idp_addr = idp_listener.local_addr()?;
    let api_listener = TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = api_listener.local_addr()?;
    let admin_listener = match TcpListener::bind(args.admin_listen).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(addr = %args.admin_listen, error = %e, "admin listener not started");
            None
        }
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

    let public_url = match &args.public_url {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            url.trim_end_matches('/').to_string()
        }
        Some(url) => bail!("--public-url {url}: must be an http:// or https:// origin"),
        None => format!("http://{gateway_addr}"),
    };
    let issuer = format!("http://{idp_addr}");
    let client_secret = portcullis::session::random_token(32);
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("sessions.db").display()));

    let idp = DevIdp::new(DevIdpConfig {
        issuer: issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: client_secret.clone(),
        redirect_uris: vec![format!("{public_url}/auth/callback")],
        post_logout_redirect_uris: vec![format!("{public_url}/")],
        access_token_ttl: args.access_token_ttl,
        refresh_token_ttl: Duration::from_secs(12 * 3600),
        key_file: Some(args.data_dir.join("idp-signing-key.der")),
        // Server to server: straight to the gateway, even when the browser uses --public-url.
        backchannel_logout_uri: Some(format!("http://{gateway_addr}/auth/backchannel-logout")),
    })
    .context("starting the development IdP")?;
    let api = SampleApi::new(issuer.clone(), format!("{issuer}/jwks"));
    tokio::spawn(async move {
        if let Err(e) = idp.serve(idp_listener).await {
            tracing::error!(error = %e, "development IdP stopped");
        }
    });
    tokio::spawn(async move {
        if let Err(e) = api.serve(api_listener).await {
            tracing::error!(error = %e, "sample API stopped");
        }
    });

    let key_file = demo_session_key(&args.data_dir)?;
    let spa_dir = args.spa.as_deref().map(spa_dir).transpose()?;
    let mut toml = demo_config(
        gateway_addr,
        &public_url,
        &issuer,
        &client_secret,
        &store,
        api_addr,
        &key_file,
    );
    if let Some(dir) = &spa_dir {
        toml.push_str(&format!(
            "\n[static]\ndir = \"{}\"\n",
            toml_escape(&dir.display().to_string())
        ));
    }
    let config = Config::from_toml_str(&toml, std::env::vars()).map_err(|e| {
        anyhow::anyhow!(
            "demo configuration invalid:\n{}",
            e.0.iter()
                .map(|i| format!("  {i}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    // The page's timeline and "what the gateway holds": demo only, never in `serve`.
    let events = Arc::new(DemoEvents::new(Some(format!("{issuer}/logout"))));
    let mut builder = Gateway::builder(config).demo_events(events);
    if spa_dir.is_none() {
        builder = builder.embedded_static(portcullis_demo::spa::files());
    }
    let gateway = builder.build().await.context("starting the gateway")?;

    println!();
    println!("  portcullis demo is running");
    println!();
    println!("  open      {public_url}/");
    println!("  users     alice / alice   (roles: admin, hr)");
    println!("            bob   / bob     (roles: hr)");
    println!("            carol / carol   (no roles)");
    if args.public_url.is_some() {
        println!("  gateway   http://{gateway_addr}  (behind the public URL above)");
    }
    if let Some(dir) = &spa_dir {
        println!("  SPA       {}", dir.display());
    }
    println!("  IdP       {issuer}  (development IdP, loopback only)");
    println!("  API       {public_url}/api/whoami  -> sample upstream at http://{api_addr}");
    println!(
        "  tokens    access tokens live {}; the gateway refreshes them 60 s before expiry",
        humantime::format_duration(args.access_token_ttl)
    );
    if let Some(a) = admin_addr {
        println!("  admin     http://{a}/healthz  http://{a}/readyz  http://{a}/metrics");
    }
    println!("  store     {}", portcullis::session::redact_url(&store));
    println!();
    println!("  Ctrl-C stops it.");
    println!();

    portcullis::serve(gateway, gateway_listener, admin_listener, shutdown).await?;
    Ok(())
}

/// The demo's gateway config, run through the same validation as any file.
fn demo_config(
    listen: SocketAddr,
    public_url: &str,
    issuer: &str,
    client_secret: &str,
    store: &str,
    api: SocketAddr,
    key_file: &std::path::Path,
) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
public_url = "{public_url}"
profile = "dev"

[admin]
listen = ""

[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{client_secret}"
scopes = ["openid", "profile", "email", "offline_access"]
roles_claim = "roles"

[session]
store = "{store}"
encryption_keys_file = "{key_file}"

[[routes]]
prefix = "/api/"
upstream = "http://{api}"

[[routes]]
prefix = "/api/admin/"
upstream = "http://{api}"
require_roles = ["admin"]

[[routes]]
prefix = "/api/hr/"
upstream = "http://{api}"
require_roles = ["hr", "admin"]
"#,
        public_url = toml_escape(public_url),
        store = toml_escape(store),
        key_file = toml_escape(&key_file.display().to_string()),
    )
}

/// `--spa DIR`: must be a built SPA (an `index.html` in it); made absolute so the
/// printed path and the config say exactly what is served.
fn spa_dir(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("--spa {}: no such directory", dir.display()))?;
    if !dir.join("index.html").is_file() {
        bail!(
            "--spa {}: no index.html in it (build the SPA first, e.g. `npm run build`)",
            dir.display()
        );
    }
    Ok(dir)
}

fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The demo's session-encryption key, created in the data dir on first run
/// (owner-only) and reused so sessions survive restarts.
fn demo_session_key(data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("session-key");
    if !path.exists() {
        let key = portcullis::session::random_key_base64();
        write_private(&path, format!("{key}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}

//! The `portcullis` binary: parse the command line, load config, run.
#![forbid(unsafe_code)]

// The demo pulls in the development IdP and sample app; a slim build
// (`--no-default-features`) leaves them out.
#[cfg(feature = "demo")]
mod demo;
mod health;
mod telemetry;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use portcullis::{
    Gateway,
    config::{Config, ConfigIssue},
};

// mimalloc: a request allocates a few dozen short-lived buffers, and glibc's
// malloc cost about a tenth of the proxy's CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Backend-for-Frontend authentication gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole stack (gateway, development IdP, sample API and SPA) for a first look.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Run the gateway.
    Serve(ConfigArg),
    /// Validate the configuration and print every problem.
    Check(CheckArgs),
    /// Create or upgrade the session store's SQL schema.
    Migrate(ConfigArg),
    /// Delete expired sessions now.
    Gc(ConfigArg),
    /// Print a new random session-encryption key.
    Keygen,
    /// Ask the running gateway's admin listener for /healthz; exit 0 when healthy
    /// (a container health check where there is no curl).
    Health(health::HealthArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also print the effective configuration (defaults filled in, secrets redacted).
    #[arg(long)]
    print: bool,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Config file [default: portcullis.toml when it exists, else the PORTCULLIS__… variables
    /// alone]. A file named here (or by PORTCULLIS_CONFIG) must exist.
    #[arg(long, short, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
}

/// The file read when neither `--config` nor `PORTCULLIS_CONFIG` names one.
const DEFAULT_CONFIG: &str = "portcullis.toml";

impl ConfigArg {
    /// The file to read: the one named, else `portcullis.toml` if it exists;
    /// `None` means the environment alone (12-factor). A named file that is
    /// missing stays an error: a typo in a path must not silently drop the
    /// whole file.
    fn file(&self) -> Option<PathBuf> {
        match &self.config {
            Some(path) => Some(path.clone()),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG);
                default.exists().then_some(default)
            }
        }
    }

    /// How messages name the configuration's source.
    fn label(&self) -> String {
        match self.file() {
            Some(path) => path.display().to_string(),
            None => format!("environment (no {DEFAULT_CONFIG})"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            init_logging(false);
            demo::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => {
            let Some((config, stray)) = load(&a) else {
                return Ok(ExitCode::FAILURE);
            };
            let _telemetry = telemetry::init(&config.server);
            for issue in &stray {
                tracing::warn!(variable = %issue.key, "{}", issue.message);
            }
            serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(CheckArgs { config: a, print }) => Ok(match load(&a) {
            Some((_, stray)) => {
                warn_stray(&stray);
                if print {
                    print_effective(&a)
                } else {
                    println!("{}: configuration OK", a.label());
                    ExitCode::SUCCESS
                }
            }
            None => ExitCode::FAILURE,
        }),
        Command::Migrate(a) => {
            let Some((config, stray)) = load(&a) else {
                return Ok(ExitCode::FAILURE);
            };
            warn_stray(&stray);
            // Opening a SQL store applies pending migrations (whatever `session.migrate` says).
            portcullis::session::open_store_with(
                &config.session.store,
                &admin_store_options(&config),
            )
            .await
            .context("opening the session store")?;
            println!("session store schema is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc(a) => {
            let Some((config, stray)) = load(&a) else {
                return Ok(ExitCode::FAILURE);
            };
            warn_stray(&stray);
            let store = portcullis::session::open_store_with(
                &config.session.store,
                &admin_store_options(&config),
            )
            .await
            .context("opening the session store")?;
            let now = portcullis::time::Clock::now(&portcullis::time::SystemClock);
            let n = store.gc(now).await.context("deleting expired sessions")?;
            println!("deleted {n} expired sessions");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen => {
            println!("{}", portcullis::session::random_key_base64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Health(args) => Ok(match health::run(args).await {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            // Always 1: Docker reserves exit code 2 of a health check.
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }),
    }
}

/// Load and validate; print every problem with its key on failure. Also
/// returns the stray `PORTCULLIS_…` variables (see
/// [`portcullis::config::stray_env_vars`]): warnings, printed with the errors
/// on failure since a typo there is a likely cause.
fn load(source: &ConfigArg) -> Option<(Config, Vec<ConfigIssue>)> {
    let stray = portcullis::config::stray_env_vars(std::env::vars());
    let loaded = match source.file() {
        Some(path) => Config::load(&path, std::env::vars()),
        None => Config::from_env(std::env::vars()),
    };
    match loaded {
        Ok(c) => Some((c, stray)),
        Err(e) => {
            warn_stray(&stray);
            eprintln!("{}: invalid configuration:", source.label());
            for issue in &e.0 {
                eprintln!("  {issue}");
            }
            None
        }
    }
}

/// Stray variables on stderr, for the commands that do not log.
fn warn_stray(stray: &[ConfigIssue]) {
    for issue in stray {
        eprintln!("warning: {issue}");
    }
}

/// `check --print`: the effective config as TOML on stdout, secrets redacted.
fn print_effective(source: &ConfigArg) -> ExitCode {
    let text = match source.file() {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => String::new(),
    };
    match portcullis::config::print::effective_toml(&text, std::env::vars()) {
        Ok(printed) => {
            print!("{printed}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: invalid configuration:\n{e}", source.label());
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "demo")]
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(telemetry::colour());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Store options for `migrate` and `gc`: they never open a payload, so no
/// keyring (and no dev key file is generated), no cache, always migrate.
fn admin_store_options(config: &portcullis::config::Config) -> portcullis::session::StoreOptions {
    portcullis::session::StoreOptions {
        keyring: None,
        key_prefix: config.session.key_prefix.clone(),
        timeout: config.session.store_timeout,
        cache: None,
        // Expired sessions only (gc) and the schema (migrate): safe beside a
        // serving process that claims the file.
        claim_sqlite_file: false,
        migrate: true,
        pg_schema: None,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.server.profile == portcullis::config::Profile::Dev {
        let differences = config.dev_profile_differences();
        tracing::warn!(
            "dev profile, never use it in production; it differs from prod: {}",
            differences.join("; ")
        );
    }
    let shutdown = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let admin = match config.admin.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding admin listener {addr}"))?,
        ),
        None => None,
    };
    let gateway = Gateway::new(config).await.context("starting the gateway")?;
    tracing::info!(
        listen = %gateway.config().server.listen,
        public_url = %gateway.config().server.public_url,
        "portcullis is serving"
    );
    portcullis::serve(gateway, listener, admin, shutdown).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so call it before binding:
/// a signal that arrives once the port accepts connections must not kill the
/// process with the default action.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {},
                _ = wait(term) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}

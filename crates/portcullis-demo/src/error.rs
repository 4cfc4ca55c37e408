//! The crate's one error type, for setup and serving (request errors become HTTP responses).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a demo component could not be built or served.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Reading, creating or writing a file, or serving on a listener, failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The signing key file exists but could not be read or created.
    #[error("signing key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The signing key could not be generated or parsed.
    #[error("signing key: {0}")]
    Key(String),
    /// The listener is bound to an address other than loopback; the demo never serves beyond
    /// this machine.
    #[error("refusing to serve the demo on non-loopback address {0}")]
    NotLoopback(SocketAddr),
    /// The configuration is unusable (bad issuer URL, bad redirect URI, empty client id, ...).
    #[error("invalid demo configuration: {0}")]
    Config(String),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Random,
}

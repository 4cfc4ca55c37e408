//! Benchmark IdP: the development OpenID Provider of `portcullis demo` in a
//! process of its own, so that `bench/scale.sh` can time a real
//! `portcullis serve` against a local IdP and count the gateway's CPU apart
//! from the IdP's.
//!
//! `cargo run --release -p portcullis --example bench_idp -- LISTEN REDIRECT_URI CLIENT_SECRET`
//! registers one client, `bench`, with that secret and redirect URI (users
//! as in the demo: `alice`/`alice`, ...), and prints `ISSUER=<url>`.

use portcullis_demo::{DevIdp, DevIdpConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:4112".into());
    let redirect_uri = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/auth/callback".into());
    let secret = args.next().unwrap_or_else(|| "bench-secret".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let mut config = DevIdpConfig::new(issuer.clone(), "bench", secret);
    config.redirect_uris = vec![redirect_uri];
    let idp = DevIdp::new(config)?;
    println!("ISSUER={issuer}");
    idp.serve(listener).await?;
    Ok(())
}

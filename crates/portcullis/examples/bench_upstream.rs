//! Benchmark upstream: answers every request with the same 1 KiB JSON body.
//!
//! `cargo run --release -p portcullis --example bench_upstream -- 127.0.0.1:4111`

use axum::{Router, http::header, response::IntoResponse};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4111".into());
    // {"data":"xxxx..."} padded to exactly 1024 bytes.
    let body: &'static str =
        Box::leak(format!("{{\"data\":\"{}\"}}", "x".repeat(1024 - 12)).into_boxed_str());
    let app = Router::new().fallback(move || async move {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bench upstream on http://{addr}");
    axum::serve(listener, app).await
}

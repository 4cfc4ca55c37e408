//! Serving a router on a listener that must be bound to loopback.

use axum::Router;
use tokio::net::TcpListener;

use crate::DemoError;

/// Serves `router` on `listener` until the returned future is dropped, refusing listeners
/// not bound to a loopback address (the demo components have no business on a network).
pub(crate) async fn serve_loopback(listener: TcpListener, router: Router) -> Result<(), DemoError> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(DemoError::NotLoopback(addr));
    }
    axum::serve(listener, router).await?;
    Ok(())
}

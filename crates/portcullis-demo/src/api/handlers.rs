//! The sample API's endpoints.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use serde_json::{Value, json};
use tokio::time::{Instant, interval_at};
use tokio_stream::wrappers::IntervalStream;

use super::auth::{ApiError, Caller};

/// Events `/api/stream` sends, one per [`STREAM_PERIOD`].
pub(crate) const STREAM_EVENTS: usize = 10;
const STREAM_PERIOD: Duration = Duration::from_millis(100);

/// `GET /api/whoami`.
pub(crate) async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({
        "sub": caller.sub,
        "roles": caller.roles,
        "token_expires_at": caller.exp,
    }))
}

/// `GET /api/admin/ping`: admins only.
pub(crate) async fn admin_ping(caller: Caller) -> Result<Json<Value>, ApiError> {
    if !caller.has_any_role(&["admin"]) {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(json!({ "pong": "admin" })))
}

/// `GET /api/hr/ping`: hr or admin.
pub(crate) async fn hr_ping(caller: Caller) -> Result<Json<Value>, ApiError> {
    if !caller.has_any_role(&["hr", "admin"]) {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(json!({ "pong": "hr" })))
}

/// `POST /api/echo`: the JSON body back, wrapped.
pub(crate) async fn echo(_caller: Caller, body: Bytes) -> Result<Json<Value>, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body is not JSON: {e}")))?;
    Ok(Json(json!({ "echo": value })))
}

/// `GET /api/stream`: server-sent events `{"n":1}` to `{"n":10}`, 100 ms apart, then the
/// end of the body; for checking that the gateway streams without buffering.
pub(crate) async fn stream(_caller: Caller) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Sse::new(counter()),
    )
        .into_response()
}

fn counter() -> impl Stream<Item = Result<Event, Infallible>> {
    IntervalStream::new(interval_at(Instant::now() + STREAM_PERIOD, STREAM_PERIOD))
        .take(STREAM_EVENTS)
        .enumerate()
        .map(|(i, _)| Ok(Event::default().data(json!({ "n": i + 1 }).to_string())))
}

/// Anything else.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

//! `/demo/events` and `/demo/session`: what the demo page shows of the
//! gateway. Routed only when the gateway has a demo event sink (see
//! `demo_events`), so `serve` has neither path. Each answers about the
//! caller's own session only, found by its session cookie.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::{Stream, StreamExt as _, stream};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, SessionLookup, current_session_by_hash, session_cookie_hash};
use crate::{
    demo_events::{DemoEvent, DemoEvents},
    session::SessionHash,
    state::Shared,
};

/// Comments sent on an idle stream, so proxies and browsers keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /demo/events`: the session's events so far, then live ones, as
/// Server-Sent Events (`data:` one JSON event, `id:` its `seq`). The stream
/// follows the cookie's session even after it ended, so the page can show
/// why it ended. Without a session cookie: 204, which tells `EventSource`
/// not to reconnect.
pub(crate) async fn events(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(demo) = &shared.demo else {
        return ApiError::NotFound.into_response();
    };
    let session = match session_cookie_hash(&shared, &headers) {
        Ok(Some(session)) => session,
        Ok(None) => return no_store(&shared, StatusCode::NO_CONTENT.into_response()),
        Err(e) => return e.into_response(),
    };
    let sse =
        Sse::new(session_stream(demo, session)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    no_store(&shared, sse.into_response())
}

/// `session`'s history, then its live events; the others' are skipped.
fn session_stream(
    demo: &DemoEvents,
    session: SessionHash,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let (history, live) = demo.subscribe(&session);
    let live = stream::unfold(live, move |mut rx| {
        let session = session.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok((owner, event)) if owner == session => return Some((event, rx)),
                    Ok(_) => {}
                    // A slow page misses some; the next event still arrives.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    stream::iter(history).chain(live).map(|e| Ok(sse_event(&e)))
}

fn sse_event(e: &DemoEvent) -> Event {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    Event::default().id(e.seq.to_string()).data(data)
}

/// `GET /demo/session`: what the gateway holds for the caller's session,
/// without any token text: expiry times, whether a refresh token and an ID
/// token are held, roles, the refresh count, and the IdP page that ends the
/// IdP session (by its `sid`). 401 without an active session.
pub(crate) async fn session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(demo) = &shared.demo else {
        return Err(ApiError::NotFound);
    };
    let hash = session_cookie_hash(&shared, &headers)?;
    let record = match current_session_by_hash(&shared, hash).await? {
        SessionLookup::Active(r) => r,
        SessionLookup::None | SessionLookup::Expired => {
            return Ok(no_store(
                &shared,
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"authenticated": false})),
                )
                    .into_response(),
            ));
        }
    };
    let now = shared.clock.now();
    let tokens = &record.tokens;
    let refresh_before = shared.config.session.refresh_before.as_secs() as i64;
    let body = json!({
        "authenticated": true,
        "now": now,
        "sub": record.sub,
        "roles": record.roles,
        "access_token": {
            "fingerprint": crate::demo_events::fingerprint(tokens.access_token.as_str()),
            "expires_at": tokens.access_expires_at,
            // The first API call from then on refreshes it first.
            "refresh_due_at": tokens.access_expires_at.map(|exp| exp - refresh_before),
        },
        "refresh_token_held": tokens.refresh_token.is_some(),
        "id_token_held": tokens.id_token.is_some(),
        "refresh_count": demo.refresh_count(&record.id),
        "refresh_before_secs": refresh_before,
        "session_cookie_name": shared.config.session.cookie_name,
        "session": {
            "created_at": record.created_at,
            "idle_expires_at": record.idle_expires_at,
            "expires_at": record.expires_at,
        },
        "idp_logout_url": record.sid.as_deref().and_then(|sid| demo.idp_logout_url(sid)),
    });
    Ok(no_store(&shared, Json(body).into_response()))
}

/// Not cached, with the security headers every page of the gateway gets.
fn no_store(shared: &Shared, mut resp: Response) -> Response {
    super::apply_security_headers(shared, resp.headers_mut());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

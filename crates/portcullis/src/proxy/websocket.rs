//! WebSocket tunnelling: the upgrade request goes to the upstream with the
//! user's token (like any proxied request), and once both sides have switched
//! protocols the two connections are spliced byte for byte.
//!
//! `Upgrade` and `Connection: upgrade` are hop-by-hop and stripped from every
//! other request; only a WebSocket handshake gets them back.

use axum::{body::Body, response::Response};
use http::{HeaderValue, Method, StatusCode, header, request::Parts};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::Route;
use super::{client::UpstreamClient, finish, headers, timed_send};
use crate::{gateway::Shared, http::ApiError};

/// A `GET` with `Upgrade: websocket` and `Connection: upgrade`.
pub(super) fn is_upgrade(parts: &Parts) -> bool {
    parts.method == Method::GET
        && header_has_token(parts, header::UPGRADE, "websocket")
        && header_has_token(parts, header::CONNECTION, "upgrade")
}

fn header_has_token(parts: &Parts, name: header::HeaderName, token: &str) -> bool {
    parts
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Forward the handshake (already rewritten by `headers::rewrite_request`)
/// and, on `101`, splice the browser's connection to the upstream's.
pub(super) async fn tunnel(
    shared: &Shared,
    route: &Route,
    client: &UpstreamClient,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    let browser_side = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or_else(|| ApiError::BadRequest("this connection cannot be upgraded".into()))?;
    restore_upgrade_headers(&mut parts.headers);
    let mut resp = timed_send(
        shared,
        route,
        client,
        axum::extract::Request::from_parts(parts, Body::empty()),
    )
    .await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream refused the upgrade: its answer is an ordinary response.
        return Ok(finish(shared, route, resp));
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (browser, upstream) = match tokio::try_join!(browser_side, upstream_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade did not complete");
                return;
            }
        };
        let mut browser = TokioIo::new(browser);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut browser, &mut upstream).await {
            tracing::debug!(error = %e, "websocket tunnel closed with an error");
        }
    });
    let (mut head, _) = resp.into_parts();
    headers::rewrite_response(&mut head.headers, &shared.proxy.owned_cookies);
    restore_upgrade_headers(&mut head.headers);
    Ok(Response::from_parts(head, Body::empty()))
}

fn restore_upgrade_headers(h: &mut http::HeaderMap) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

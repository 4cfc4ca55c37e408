//! The reverse proxy for `[[routes]]`: longest-prefix match, session and
//! role checks, CSRF on unsafe methods, token refresh, header hygiene, and a
//! streaming forward to the one configured upstream (one pooled client per
//! upstream), with one refresh-and-retry when the upstream answers 401.
//! WebSocket upgrades are tunnelled by `websocket.rs`.

mod client;
mod headers;
mod pool;
mod request_body;
mod websocket;

pub(crate) use client::Upstreams;

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, Version, request::Parts};

use crate::{
    api_error::ApiError,
    config::{RouteConfig, TokenMode},
    context::RequestContext,
    csrf,
    demo_events::{EventKind, TokenInfo},
    path, refresh,
    routes::Route,
    session::{SessionRecord, TokenSet},
    session_lookup::{SessionLookup, current_session_by_hash},
    state::Shared,
};

/// Request bodies up to this size are buffered so an upstream 401 can be
/// retried after a token refresh; larger (or unsized) bodies stream, unretried.
const RETRY_BUFFER_LIMIT: u64 = 1024 * 1024;

/// Proxy one request; always answers (errors become contract JSON).
pub(crate) async fn handle(
    shared: &Shared,
    upstreams: &Upstreams,
    route: &Route,
    req: Request,
    caller: RequestContext,
) -> Response {
    let request_id = caller.request_id.clone();
    let mut resp = match forward(shared, upstreams, route, req, caller).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut()
        .insert(crate::metrics::X_REQUEST_ID, request_id);
    resp
}

async fn forward(
    shared: &Shared,
    upstreams: &Upstreams,
    route: &Route,
    req: Request,
    caller: RequestContext,
) -> Result<Response, ApiError> {
    // The path is canonical already (`http::public`).
    let (mut parts, body) = req.into_parts();
    let websocket = websocket::is_upgrade(&parts);

    let session = match route.token {
        TokenMode::None => None,
        TokenMode::User => {
            let record = match current_session_by_hash(shared, caller.session).await? {
                SessionLookup::Active(r) => r,
                SessionLookup::Expired => return Err(ApiError::SessionExpired),
                SessionLookup::None => return Err(ApiError::Unauthorized),
            };
            if !has_required_role(route, &record) {
                return Err(ApiError::Forbidden);
            }
            if websocket {
                // A GET, so no CSRF token; cross-site WebSocket hijacking is
                // stopped by the Origin check.
                shared.csrf.check_origin(&parts.headers)?;
            } else if csrf::is_unsafe(&parts.method) {
                shared.csrf.check(&parts.headers, &record.csrf_token)?;
            }
            let fresh = refresh::ensure_fresh(shared, record).await?;
            shared.demo_event(&fresh.id, |_| EventKind::TokenAttached {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                access_token: Some(TokenInfo::of(
                    fresh.tokens.access_token.as_str(),
                    fresh.tokens.access_expires_at,
                )),
            });
            // A refresh may have brought new roles (one removed at the IdP);
            // without `require_roles` this is one `is_empty`.
            if !has_required_role(route, &fresh) {
                return Err(ApiError::Forbidden);
            }
            Some(fresh)
        }
    };
    // No session, so no CSRF token: a cross-site form must still not post
    // to a public route with the browser's other cookies (or its network
    // position); `check_origin = false` opts out for unsafe methods.
    if route.token == TokenMode::None
        && (websocket || (route.check_origin && csrf::is_unsafe(&parts.method)))
    {
        shared.csrf.check_origin(&parts.headers)?;
    }

    let client = upstreams.for_route(route);
    let target = upstream_uri(route, &parts.uri, client.takes_origin_form())?;
    headers::rewrite_request(
        &mut parts,
        headers::Forwarding {
            config: &shared.config,
            owned_cookies: &shared.routes.owned_cookies,
            forwarded_proto: shared.routes.forwarded_proto.as_ref(),
            forwarded_host: shared.routes.forwarded_host.as_ref(),
            peer: caller.peer,
            tokens: session.as_ref().map(|r| &r.tokens),
            request_id: &caller.request_id,
            upstream_host: client.host(),
        },
    );
    if let Some(target) = target {
        parts.uri = target;
    }
    // The browser's HTTP version is a property of its hop; the pool picks ours.
    parts.version = Version::HTTP_11;

    if websocket {
        return Box::pin(websocket::tunnel(
            shared,
            route,
            client,
            parts,
            session.as_deref(),
        ))
        .await;
    }

    let Some(record) = session else {
        let (body, failed) = request_body::watch(body);
        let req = Request::from_parts(parts, body);
        let resp = timed_send(shared, route, client, req, failed).await?;
        return Ok(finish(shared, route, resp));
    };

    // User token: keep what a retry needs when the body is small enough.
    let (body, replay, failed) = match buffer_small_body(body).await? {
        RequestBody::Buffered(bytes) => (Body::from(bytes.clone()), Some(bytes), None),
        RequestBody::Streaming(body) => {
            let (body, failed) = request_body::watch(body);
            (body, None, failed)
        }
    };
    let head = replay.as_ref().map(|_| RequestHead::of(&parts));
    let resp = timed_send(
        shared,
        route,
        client,
        Request::from_parts(parts, body),
        failed,
    )
    .await?;
    if resp.status() != StatusCode::UNAUTHORIZED {
        return Ok(finish(shared, route, resp));
    }
    let (Some(head), Some(bytes)) = (head, replay) else {
        return Ok(finish(shared, route, resp));
    };
    // Boxed: rare, and its futures would otherwise enlarge every request's.
    Box::pin(retry_with_refreshed_token(
        shared, route, client, &record, resp, head, bytes,
    ))
    .await
}

fn has_required_role(route: &Route, record: &SessionRecord) -> bool {
    route.require_roles.is_empty() || route.require_roles.iter().any(|r| record.roles.contains(r))
}

/// The upstream refused the token: refresh once, retry once.
async fn retry_with_refreshed_token(
    shared: &Shared,
    route: &Route,
    client: &client::UpstreamClient,
    record: &SessionRecord,
    rejected: http::Response<Body>,
    head: RequestHead,
    body: Bytes,
) -> Result<Response, ApiError> {
    shared.demo_event(&record.id, |_| EventKind::UpstreamRejected {
        method: head.method.to_string(),
        path: head.uri.path().to_string(),
    });
    let refreshed = refresh::after_rejection(shared, record).await?;
    if refreshed.tokens.access_token == record.tokens.access_token {
        return Ok(finish(shared, route, rejected));
    }
    // The refresh may have removed a role at the IdP: the retry is a new
    // request on the route, checked as the first one was.
    if !has_required_role(route, &refreshed) {
        return Err(ApiError::Forbidden);
    }
    drop(rejected);
    tracing::debug!(
        session = record.id.short(),
        "upstream 401; retrying with refreshed token"
    );
    let retry = head.into_request(&refreshed.tokens, body);
    let resp = timed_send(shared, route, client, retry, None).await?;
    Ok(finish(shared, route, resp))
}

/// Response head hygiene; the body streams as it arrives.
fn finish(shared: &Shared, route: &RouteConfig, resp: http::Response<Body>) -> Response {
    let (mut parts, body) = resp.into_parts();
    headers::rewrite_response(&mut parts.headers, &shared.routes.owned_cookies);
    if route.security_headers {
        crate::security_headers::apply_security_headers(shared, &mut parts.headers);
    }
    Response::from_parts(parts, body)
}

/// Send `req` upstream, timed and counted. `body_failed` watches the
/// browser's body in `req` (see `request_body`): when it broke, the send's
/// failure is the client's, answered 400 and not counted as the upstream's.
async fn timed_send(
    shared: &Shared,
    route: &Route,
    client: &client::UpstreamClient,
    req: Request,
    body_failed: Option<request_body::BodyFailed>,
) -> Result<http::Response<Body>, ApiError> {
    // Also the start of the upstream timeout: one clock read.
    let started = tokio::time::Instant::now();
    let mut result = client.send(req, started, route.timeout).await;
    if result.is_err() && body_failed.is_some_and(|f| f.get()) {
        return Err(ApiError::BadRequest(
            "the request body is malformed or was cut short".into(),
        ));
    }
    let kind = match &result {
        Ok(_) => None,
        Err(ApiError::UpstreamTimeout) => Some("timeout"),
        Err(_) => Some("connect"),
    };
    if let Some(kind) = kind {
        metrics::counter!(crate::metrics::UPSTREAM_ERRORS_TOTAL, "route" => route.prefix.clone(), "kind" => kind)
            .increment(1);
    } else {
        let took = started.elapsed();
        shared
            .metrics
            .record_upstream(route.key(), took.as_secs_f64());
        // Only the access line reads it: skip the extension map otherwise.
        if tracing::enabled!(target: "portcullis::access", tracing::Level::INFO)
            && let Ok(resp) = &mut result
        {
            resp.extensions_mut()
                .insert(crate::metrics::UpstreamDuration(took));
        }
    }
    result
}

enum RequestBody {
    Buffered(Bytes),
    Streaming(Body),
}

/// Buffer the body when it is known to be at most [`RETRY_BUFFER_LIMIT`]
/// (its size hint's upper bound: `Content-Length`, or zero for no body);
/// otherwise (larger, chunked, HTTP/2 without length) leave it streaming.
async fn buffer_small_body(body: Body) -> Result<RequestBody, ApiError> {
    use axum::body::HttpBody as _;
    let small = body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= RETRY_BUFFER_LIMIT);
    if !small {
        return Ok(RequestBody::Streaming(body));
    }
    axum::body::to_bytes(body, RETRY_BUFFER_LIMIT as usize)
        .await
        .map(RequestBody::Buffered)
        .map_err(|_| ApiError::BadRequest("request body could not be read".into()))
}

/// What a retry needs of a request already sent (its body is kept apart).
/// The version is not kept: upstream requests are all HTTP/1.1 here.
struct RequestHead {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl RequestHead {
    fn of(parts: &Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }

    /// The same request again, with `body`.
    fn with_body(self, body: Body) -> Request {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }

    /// The same request again, with `body` and new tokens.
    fn into_request(self, tokens: &TokenSet, body: Bytes) -> Request {
        let mut req = self.with_body(Body::from(body));
        headers::set_bearer(req.headers_mut(), tokens);
        req
    }
}

/// The URI of the upstream request: origin-form (path and query) for a
/// client that takes it, absolute otherwise; `None` when that is `incoming`
/// itself (origin-form, nothing stripped, no base path).
fn upstream_uri(
    route: &RouteConfig,
    incoming: &Uri,
    origin_form: bool,
) -> Result<Option<Uri>, ApiError> {
    let path = incoming.path();
    let (slash, forwarded_path) = if route.strip_prefix {
        let bare = route.prefix.trim_end_matches('/');
        // A case-insensitive route matched `/API/x` for `/api/`: strip that.
        let rest = if route.case_insensitive {
            path::fold_strip(bare, path)
        } else {
            path.strip_prefix(bare)
        }
        .unwrap_or(path);
        (!rest.starts_with('/'), rest)
    } else {
        (false, path)
    };
    let base = if origin_form {
        route.upstream.path()
    } else {
        route.upstream.as_str()
    }
    .trim_end_matches('/');
    if base.is_empty() && !slash && !route.strip_prefix && incoming.scheme().is_none() {
        return Ok(None);
    }
    let query = incoming.query();
    // One allocation: base + path (+ "?" query).
    let mut uri = String::with_capacity(
        base.len() + 1 + forwarded_path.len() + query.map_or(0, |q| q.len() + 1),
    );
    uri.push_str(base);
    if slash {
        uri.push('/');
    }
    uri.push_str(forwarded_path);
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(q);
    }
    Uri::try_from(uri)
        .map(Some)
        .map_err(|_| ApiError::BadRequest("cannot build upstream URI".into()))
}

#[cfg(test)]
mod tests {
    use super::upstream_uri;
    use crate::routes::tests::route;

    /// Origin-form for the HTTP/1 pool (the incoming URI itself when
    /// nothing changes), absolute for hyper-util's client.
    #[test]
    fn upstream_uris_keep_base_path_prefix_and_query() {
        let cases = [
            // (prefix, upstream, strip, incoming, origin-form, absolute)
            (
                "/api/",
                "http://u:1",
                false,
                "/api/x?a=1",
                None,
                "http://u:1/api/x?a=1",
            ),
            (
                "/api/",
                "http://u:1/",
                false,
                "/api/x",
                None,
                "http://u:1/api/x",
            ),
            (
                "/api/",
                "http://u:1/base/",
                false,
                "/api/x",
                Some("/base/api/x"),
                "http://u:1/base/api/x",
            ),
            (
                "/api/",
                "http://u:1",
                true,
                "/api/x?q",
                Some("/x?q"),
                "http://u:1/x?q",
            ),
            (
                "/api/",
                "http://u:1",
                true,
                "/api",
                Some("/"),
                "http://u:1/",
            ),
            (
                "/api",
                "http://u:1/v2",
                true,
                "/api/x",
                Some("/v2/x"),
                "http://u:1/v2/x",
            ),
            (
                "/api/",
                "http://u:1",
                false,
                "http://gw/api/x",
                Some("/api/x"),
                "http://u:1/api/x",
            ),
        ];
        for (prefix, upstream, strip, incoming, origin, absolute) in cases {
            let r = route(prefix, upstream, strip);
            let incoming: http::Uri = incoming.parse().unwrap();
            let got = upstream_uri(&r, &incoming, true).unwrap();
            assert_eq!(
                got.map(|u| u.to_string()).as_deref(),
                origin,
                "{prefix} {upstream} {incoming}"
            );
            let got = upstream_uri(&r, &incoming, false).unwrap().unwrap();
            assert_eq!(got.to_string(), absolute, "{prefix} {upstream} {incoming}");
        }
    }

    #[test]
    fn case_insensitive_route_strips_the_prefix_as_spelled() {
        let mut r = route("/api/", "http://u:1", true);
        r.case_insensitive = true;
        for (incoming, want) in [("/API/x?q", "/x?q"), ("/Api", "/"), ("/api/X", "/X")] {
            let incoming: http::Uri = incoming.parse().unwrap();
            let got = upstream_uri(&r, &incoming, true).unwrap().unwrap();
            assert_eq!(got.to_string(), want, "{incoming}");
        }
    }
}

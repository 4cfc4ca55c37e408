//! The reverse proxy for `[[routes]]`: longest-prefix match, session and
//! role checks, CSRF on unsafe methods, token refresh, header hygiene, and a
//! streaming forward to the one configured upstream.

mod client;
mod headers;
mod path;

use std::sync::Arc;

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use axum_extra::extract::CookieJar;
use http::{HeaderValue, Uri};

use crate::{
    config::{Config, RouteConfig, TokenMode},
    csrf,
    gateway::Shared,
    http::{ApiError, SessionLookup, current_session},
    refresh,
    session::random_token,
};

/// The route table and the upstream HTTP client.
pub struct Proxy {
    /// Sorted longest prefix first.
    routes: Vec<RouteConfig>,
    client: client::UpstreamClient,
    owned_cookies: Vec<String>,
}

impl Proxy {
    pub fn new(config: &Config) -> Self {
        let mut routes = config.routes.clone();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self {
            routes,
            client: client::UpstreamClient::new(),
            owned_cookies: crate::http::owned_cookie_names(config).to_vec(),
        }
    }

    /// The route with the longest prefix matching `path`.
    pub fn match_route(&self, path: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| prefix_matches(&r.prefix, path))
    }
}

/// `/api/` matches `/api/x`; `/api` matches `/api`, `/api/x` but not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        path.starts_with(prefix) || path == prefix.trim_end_matches('/')
    } else {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Proxy one request; always answers (errors become contract JSON).
pub(crate) async fn handle(shared: Arc<Shared>, route: &RouteConfig, req: Request) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .filter(|v| v.len() <= 128 && v.to_str().is_ok_and(|s| !s.is_empty()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&random_token(16)).unwrap_or(HeaderValue::from_static("-"))
        });
    let mut resp = match forward(&shared, route, req, &request_id).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert("x-request-id", request_id);
    resp
}

async fn forward(
    shared: &Shared,
    route: &RouteConfig,
    req: Request,
    request_id: &HeaderValue,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let path =
        path::checked_path(parts.uri.path()).map_err(|m| ApiError::BadRequest(m.to_string()))?;

    let access_token = match route.token {
        TokenMode::None => None,
        TokenMode::User => {
            let jar = CookieJar::from_headers(&parts.headers);
            let record = match current_session(shared, &jar).await? {
                SessionLookup::Active(r) => r,
                SessionLookup::Expired => return Err(ApiError::SessionExpired),
                SessionLookup::None => return Err(ApiError::Unauthorized),
            };
            if !route.require_roles.is_empty()
                && !route.require_roles.iter().any(|r| record.roles.contains(r))
            {
                return Err(ApiError::Forbidden);
            }
            if csrf::is_unsafe(&parts.method) {
                shared.csrf.check(&parts.headers, &record.csrf_token)?;
            }
            let record = refresh::ensure_fresh(shared, *record).await?;
            Some(record.tokens.access_token)
        }
    };

    let target = upstream_uri(route, &path, parts.uri.query())?;
    headers::rewrite_request(
        &mut parts,
        headers::Forwarding {
            config: &shared.config,
            owned_cookies: &shared.proxy.owned_cookies,
            access_token: access_token.as_deref(),
            request_id,
        },
    );
    parts.uri = target;
    let upstream_req = Request::from_parts(parts, body);
    let resp = shared
        .proxy
        .client
        .send(upstream_req, route.timeout)
        .await?;
    let (mut parts, body) = resp.into_parts();
    headers::rewrite_response(&mut parts.headers, &shared.proxy.owned_cookies);
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn upstream_uri(route: &RouteConfig, path: &str, query: Option<&str>) -> Result<Uri, ApiError> {
    let forwarded_path = if route.strip_prefix {
        let rest = path
            .strip_prefix(route.prefix.trim_end_matches('/'))
            .unwrap_or(path);
        if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        }
    } else {
        path.to_string()
    };
    let base = route.upstream.as_str().trim_end_matches('/');
    let uri = match query {
        Some(q) => format!("{base}{forwarded_path}?{q}"),
        None => format!("{base}{forwarded_path}"),
    };
    uri.parse()
        .map_err(|_| ApiError::BadRequest("cannot build upstream URI".into()))
}

#[cfg(test)]
mod tests {
    use super::prefix_matches;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(prefix_matches("/api/", "/api"));
        assert!(!prefix_matches("/api/", "/apix"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
    }
}

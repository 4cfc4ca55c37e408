//! Serving the SPA: a `[static]` directory (precompressed variants, ETag /
//! Last-Modified, SPA fallback) or files embedded in the binary (the demo).

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, Method, StatusCode, header};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::ApiError;
use crate::gateway::Shared;

pub(crate) async fn serve(shared: &Shared, req: Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return ApiError::NotFound.into_response();
    }
    if let Some(cfg) = &shared.config.static_files {
        let accepts_html = accepts_html(&req);
        let index = cfg.dir.join("index.html");
        let dir = ServeDir::new(&cfg.dir)
            .precompressed_br()
            .precompressed_gzip()
            .append_index_html_on_directories(true);
        let path = req.uri().path().to_string();
        let fallback_req = clone_head(&req);
        let resp = match dir.oneshot(req).await {
            Ok(r) => r.map(Body::new),
            Err(never) => match never {},
        };
        if resp.status() == StatusCode::NOT_FOUND && cfg.spa_fallback && accepts_html {
            let resp = match ServeFile::new(index).oneshot(fallback_req).await {
                Ok(r) => r.map(Body::new),
                Err(never) => match never {},
            };
            return with_cache_policy(resp, "/index.html");
        }
        if resp.status() == StatusCode::NOT_FOUND {
            return ApiError::NotFound.into_response();
        }
        return with_cache_policy(resp, &path);
    }
    if let Some(files) = shared.embedded {
        let path = match req.uri().path() {
            "/" => "/index.html",
            p => p,
        };
        if let Some((_, ctype, bytes)) = files.iter().find(|(p, _, _)| *p == path) {
            let mut resp = Response::new(Body::from(*bytes));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return resp;
        }
    }
    ApiError::NotFound.into_response()
}

fn accepts_html(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn clone_head(req: &Request) -> Request {
    let mut r = Request::new(Body::empty());
    *r.method_mut() = req.method().clone();
    *r.headers_mut() = req.headers().clone();
    r
}

/// `index.html` must be revalidated every time (it names the current assets);
/// content-hashed assets never change and may be cached for a year.
fn with_cache_policy(mut resp: Response, path: &str) -> Response {
    let value = if path.ends_with('/') || path.ends_with("index.html") {
        "no-cache"
    } else if looks_hashed(path) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    if resp.status().is_success() {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    }
    resp
}

/// Vite/webpack style names: `app-3f9a1c2b.js`, `index.Bx7_9aQ1.css`.
fn looks_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    stem.rsplit(['-', '.']).next().is_some_and(|h| {
        h.len() >= 8
            && h.len() < name.len()
            && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }) && stem.contains(['-', '.'])
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashed_asset_names() {
        assert!(super::looks_hashed("/assets/index-3f9a1c2b.js"));
        assert!(super::looks_hashed("/assets/index.Bx7_9aQ1.css"));
        assert!(!super::looks_hashed("/index.html"));
        assert!(!super::looks_hashed("/favicon.ico"));
    }
}

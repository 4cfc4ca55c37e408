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

use super::{ApiError, wants_html};
use crate::state::Shared;

pub(crate) async fn serve(shared: &Shared, req: Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return ApiError::NotFound.into_response();
    }
    // `/auth/` and `/auth` do not reach the nested auth router; they are the
    // gateway's all the same and never a file or the SPA.
    if super::auth_subpath(shared, req.uri().path()).is_some() {
        return ApiError::NotFound.into_response();
    }
    if let Some(cfg) = &shared.config.static_files {
        let accepts_html = wants_html(req.headers());
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
            let resp = match ServeFile::new(index)
                .oneshot(clone_head(&fallback_req))
                .await
            {
                Ok(r) => r.map(Body::new),
                Err(never) => match never {},
            };
            return with_validators(with_cache_policy(resp, "/index.html"), &fallback_req);
        }
        if resp.status() == StatusCode::NOT_FOUND {
            return ApiError::NotFound.into_response();
        }
        return with_validators(with_cache_policy(resp, &path), &fallback_req);
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

/// A weak `ETag` from what identifies the file's bytes (size, modification
/// time, encoding), and `304 Not Modified` when `If-None-Match` names it.
/// tower-http's `ServeDir` already answers `If-Modified-Since`.
fn with_validators(mut resp: Response, req: &Request) -> Response {
    if resp.status() != StatusCode::OK {
        return resp;
    }
    // Any file may have a `.br`/`.gz` twin: caches must key on the encoding.
    resp.headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let h = resp.headers();
    let (Some(len), Some(modified)) = (
        h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()),
        h.get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok()),
    ) else {
        return resp;
    };
    let encoding = h
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let digest = crate::session::hex_sha256(format!("{len}|{modified}|{encoding}").as_bytes());
    let Ok(etag) = HeaderValue::from_str(&format!("W/\"{}\"", &digest[..20])) else {
        return resp;
    };
    let matches = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || weak_eq(tag, etag.to_str().unwrap_or_default()));
    if matches {
        let mut not_modified = Response::new(Body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [header::CACHE_CONTROL, header::LAST_MODIFIED, header::VARY] {
            if let Some(v) = resp.headers().get(&name) {
                not_modified.headers_mut().insert(name, v.clone());
            }
        }
        not_modified.headers_mut().insert(header::ETAG, etag);
        return not_modified;
    }
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

/// RFC 9110 weak comparison: equal opaque tags, ignoring `W/`.
fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
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

//! `/auth/login`, `/auth/callback`, `/auth/me`, `/auth/logout`
//! (the HTTP interface: docs/http-interface.md).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::CookieJar;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::{
    ApiError, SessionLookup, cookies, current_session,
    silent_login::{self, Outcome},
    wants_html, wants_json,
};
use crate::{
    config::is_same_origin_path,
    login_cookie::{
        self, LoginCookieError, LoginCookies, MAX_PENDING, MAX_RETURN_TO, PendingLogin,
    },
    oidc::{self, IdTokenClaims},
    refresh::RefreshError,
    session::{SessionId, SessionRecord, StoreError, TokenSet, hex_sha256, random_token},
    state::Shared,
    time::{UnixTime, rfc3339},
};

/// Whether `path`, sent by the client, is a same-origin path we may redirect
/// to after login: [`is_same_origin_path`] (no `//x`, `/\x`, scheme or control
/// characters), and since it comes from the request, also no backslash or
/// whitespace anywhere and a bounded length.
pub fn is_safe_return_path(path: &str) -> bool {
    is_same_origin_path(path)
        && path.len() <= 2048
        && !path.chars().any(|c| c == '\\' || c.is_whitespace())
}

/// A 302 Found, the status docs/http-interface.md names for login redirects.
fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => ApiError::BadRequest("redirect target is not a valid header value".into())
            .into_response(),
    }
}

/// `GET /auth/login?return_to=/path`: start a code flow with PKCE.
pub(crate) async fn login(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match start_login(&shared, &params, &headers).await {
        Ok(resp) => resp,
        Err(e) if wants_html(&headers) => e.into_html_response("/"),
        Err(e) => e.into_response(),
    }
}

/// The login cookies of the request (`cookies::family`): every pair named
/// `<session cookie>-login-<8 hex>` with a value of the shape we seal.
/// Planted values of another shape are ignored; those of our shape simply
/// fail to open.
fn login_cookies(shared: &Shared, headers: &HeaderMap) -> Vec<(String, String)> {
    cookies::family(
        headers,
        &cookies::login_cookie_prefix(&shared.config),
        login_cookie::is_name_suffix,
        login_cookie::well_formed,
    )
}

async fn start_login(
    shared: &Shared,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let return_to = params.get("return_to").map(String::as_str).unwrap_or("/");
    if !is_safe_return_path(return_to) {
        return Err(ApiError::BadRequest(
            "return_to must be a same-origin path".into(),
        ));
    }
    // The login cookie holds every pending login: keep it small.
    if return_to.len() > MAX_RETURN_TO {
        return Err(ApiError::BadRequest(format!(
            "return_to is longer than {MAX_RETURN_TO} bytes"
        )));
    }
    // `prompt=none` alone: a login that needs the user is a normal one.
    let silent = match params.get("prompt").map(String::as_str) {
        None => false,
        Some(silent_login::SILENT_PROMPT) => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "prompt may only be \"none\" (silent login)".into(),
            ));
        }
    };
    let request = shared
        .oidc
        .authorization_request(silent.then_some(silent_login::SILENT_PROMPT))
        .await?;
    let now = shared.clock.now();
    let name = cookies::login_cookie_name(&shared.config, request.state.as_str());
    // Only this login's cookie is set: logins started at once in several
    // tabs (each request carrying the same cookies) never overwrite each
    // other. The pending logins the request shows count towards the limit;
    // unreadable or expired cookies do not (the browser drops them by Max-Age).
    let mut others: Vec<(UnixTime, String)> = login_cookies(shared, headers)
        .into_iter()
        .filter(|(n, _)| *n != name)
        .filter_map(|(n, v)| {
            let login = shared.login_cookies.open(&n, &v, now).ok()?;
            Some((login.created_at, n))
        })
        .collect();
    others.sort_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
    others.dedup_by(|a, b| a.1 == b.1);
    others.sort();
    let excess = (others.len() + 1).saturating_sub(MAX_PENDING);
    let login = PendingLogin {
        state: request.state,
        nonce: request.nonce,
        pkce_verifier: request.pkce_verifier,
        return_to: return_to.to_string(),
        created_at: now,
        silent,
    };
    // Nothing is stored server-side: the sealed cookie is the whole login state.
    let value = shared
        .login_cookies
        .seal(&name, &login)
        .map_err(|e| ApiError::Store(StoreError::Unavailable(format!("login cookie: {e}"))))?;
    // Beyond the limit the oldest pending logins give way (their tabs must start again).
    let mut jar = CookieJar::new();
    for (_, old) in others.into_iter().take(excess) {
        jar = jar.add(cookies::removal(&shared.config, old, true));
    }
    let jar = jar.add(cookies::login(&shared.config, name, &value));
    Ok((jar, found(&request.url)).into_response())
}

/// `GET /auth/callback`: finish the code flow and create the session.
pub(crate) async fn callback(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut login_cookie = None;
    let mut silent = false;
    let result = finish_login(&shared, &params, &headers, &mut login_cookie, &mut silent).await;
    // The used entry leaves the browser's cookie whatever the outcome.
    let login_cookie = match login_cookie {
        Some(c) => CookieJar::new().add(c),
        None => CookieJar::new(),
    };
    match result {
        Ok(resp) => {
            metrics::counter!(crate::metrics::LOGINS_TOTAL, "result" => "success").increment(1);
            (login_cookie, resp).into_response()
        }
        Err(e) => {
            let result = match e.status_and_code().0 {
                s if s.is_server_error() => "error",
                _ => "rejected",
            };
            metrics::counter!(crate::metrics::LOGINS_TOTAL, "result" => result).increment(1);
            if silent {
                // `login_required` is the expected answer when the IdP
                // session is gone: the SPA hears it, the log need not.
                tracing::debug!(reason = %e, "silent login did not complete");
                let outcome = match (&e, params.get("error")) {
                    (ApiError::LoginFailed(_), Some(error)) => Outcome::from_idp_error(error),
                    _ => Outcome::Error,
                };
                return (login_cookie, silent_login::page(outcome)).into_response();
            }
            if let ApiError::LoginFailed(_) = e {
                tracing::warn!(reason = %e, "login rejected");
            }
            let resp = if wants_html(&headers) {
                e.into_html_response("/")
            } else {
                e.into_response()
            };
            (login_cookie, resp).into_response()
        }
    }
}

async fn finish_login(
    shared: &Shared,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    used: &mut Option<axum_extra::extract::cookie::Cookie<'static>>,
    silent: &mut bool,
) -> Result<Response, ApiError> {
    let bad = |m: &str| ApiError::BadRequest(m.to_string());
    let state_param = params.get("state").ok_or_else(|| bad("missing state"))?;
    // The cookie for this state is found by name; every value of that name
    // is tried (a planted one beside ours only fails to open).
    let name = cookies::login_cookie_name(&shared.config, state_param);
    let now = shared.clock.now();
    let values = cookies::all_exact(headers, &name, login_cookie::well_formed);
    if values.is_empty() {
        return Err(bad("missing login cookie: start the login again"));
    }
    // Used or not, this login's cookie leaves the browser; the other tabs' stay.
    *used = Some(cookies::removal(&shared.config, name.clone(), true));
    let mut refused = None;
    let login = values
        .iter()
        .find_map(|v| match shared.login_cookies.open(&name, v, now) {
            Ok(login) if LoginCookies::is_for(&login, state_param) => Some(login),
            Ok(_) => None,
            Err(e) => {
                refused = Some(e);
                None
            }
        })
        .ok_or_else(|| {
            match refused {
                Some(LoginCookieError::Expired) | None => {
                    bad("unknown, expired or already used state: start the login again")
                }
                Some(e) => {
                    // Debug, not warn: anyone can send garbage cookies, logs must not flood.
                    tracing::debug!(reason = %e, "login cookie refused");
                    bad("invalid login cookie: start the login again")
                }
            }
        })?;
    *silent = login.silent;
    // Claim first: whatever happens next, this state is never used again here
    // (a racing callback, or a replay with a copy of the cookie, stops now).
    if !shared.login_cookies.claim(&login, now) {
        return Err(bad(
            "unknown, expired or already used state: start the login again",
        ));
    }
    if let Some(error) = params.get("error") {
        let desc = params
            .get("error_description")
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return Err(ApiError::LoginFailed(format!(
            "the identity provider answered {error}{desc}"
        )));
    }
    let meta = shared.oidc.metadata().await?;
    // RFC 9207: a present `iss` must be ours; a missing one is refused when the IdP promised it.
    match params.get("iss") {
        Some(iss) if iss != &shared.config.oidc.issuer => {
            return Err(bad("iss parameter does not match the issuer"));
        }
        None if meta.authorization_response_iss_parameter_supported => {
            return Err(bad("iss parameter missing"));
        }
        _ => {}
    }
    let code = params.get("code").ok_or_else(|| bad("missing code"))?;

    let tokens = shared
        .oidc
        .exchange_code(code, &login.pkce_verifier)
        .await?;
    let id_token = tokens
        .id_token
        .as_deref()
        .ok_or_else(|| ApiError::LoginFailed("token response has no id_token".into()))?;
    let id = shared
        .oidc
        .validate_id_token(
            id_token,
            oidc::id_token::Expectations {
                nonce: Some(&login.nonce),
                sub: None,
            },
        )
        .await?;
    // Single use across replicas too, for an IdP that accepts a code twice:
    // recorded only after a successful exchange, so bounded by real logins.
    let used_key = format!("login-state:{}", hex_sha256(login.state.as_bytes()));
    if !shared
        .store
        .remember_jti(&used_key, login.expires_at(), now)
        .await?
    {
        return Err(bad("state already used"));
    }
    let mut claims = id.all.clone();
    if let Some(info) = shared
        .oidc
        .userinfo(tokens.access_token.as_str(), &id.sub)
        .await?
    {
        claims.extend(info);
    }

    // Only now, with a fully validated ID token, does a session exist. The
    // request may carry the user's old session cookie and one planted by a
    // sibling subdomain (then `http::pipeline::observe` let it through): both go.
    for old in super::all_session_cookie_hashes(shared, headers) {
        shared.store.delete(&old).await?;
    }
    let session_id = SessionId::generate();
    let record = new_record(shared, &session_id, &id, &claims, tokens, headers);
    shared.store.save(&record).await?;
    tracing::info!(session = record.id.short(), "login succeeded");
    if let Some(demo) = &shared.demo {
        report_login(demo, &record, login.created_at, now);
    }

    // Copies of our cookies scoped to a parent domain are removed first (a
    // jar would keep one cookie per name, and order matters: see
    // `cookies::planted_copy_removals`), then the new ones are set.
    let set = cookies::planted_copy_removals(&shared.config)
        .into_iter()
        .chain([
            cookies::session(&shared.config, session_id.as_cookie_value()),
            cookies::csrf(&shared.config, &record.csrf_token),
        ]);
    // The host-only login cookie is re-set by `callback` (the logins still
    // pending in other tabs).
    let mut resp = match login.silent {
        true => silent_login::page(Outcome::Success),
        false => found(&login.return_to),
    };
    for c in set {
        let value = HeaderValue::from_str(&c.encoded().to_string())
            .map_err(|_| ApiError::BadRequest("cookie is not a valid header value".into()))?;
        resp.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(resp)
}

/// The demo's timeline of this login: told now that the session exists
/// (the redirect to the IdP happened at `started`, before there was one).
fn report_login(
    demo: &crate::demo_events::DemoEvents,
    record: &SessionRecord,
    started: UnixTime,
    now: UnixTime,
) {
    use crate::demo_events::{EventKind, TokenInfo};
    let tokens = &record.tokens;
    demo.set_sid(&record.id, record.sid.clone());
    demo.emit(&record.id, started, EventKind::LoginRedirect);
    demo.emit(
        &record.id,
        now,
        EventKind::CodeExchanged {
            access_token: Some(TokenInfo::of(
                tokens.access_token.as_str(),
                tokens.access_expires_at,
            )),
            refresh_token: tokens.refresh_token.is_some(),
            id_token: tokens.id_token.is_some(),
        },
    );
    demo.emit(
        &record.id,
        now,
        EventKind::SessionCreated {
            sub: record.sub.clone(),
            roles: record.roles.clone(),
            idle_expires_at: record.idle_expires_at,
            expires_at: record.expires_at,
        },
    );
}

fn new_record(
    shared: &Shared,
    session_id: &SessionId,
    id: &IdTokenClaims,
    claims: &serde_json::Map<String, Value>,
    tokens: oidc::TokenResponse,
    headers: &HeaderMap,
) -> SessionRecord {
    let now = shared.clock.now();
    let cfg = &shared.config.session;
    let expires_at = now + cfg.absolute_timeout.as_secs() as i64;
    SessionRecord {
        id: session_id.hash(),
        sub: id.sub.clone(),
        sid: id.sid.clone(),
        claims: oidc::user_claims(claims).into(),
        roles: oidc::roles_from_claims(claims, &shared.config.oidc.roles_claim),
        tokens: TokenSet {
            access_expires_at: tokens.expires_in.map(|s| now + s),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token.map(Into::into),
            // Checked above either way; kept only for `id_token_hint`.
            id_token: tokens
                .id_token
                .filter(|_| cfg.keep_id_token)
                .map(Into::into),
        },
        csrf_token: random_token(32),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            // The first 200 characters, copied at their exact size (the
            // record may live in memory for hours).
            .map(|ua| {
                let end = ua.char_indices().nth(200).map_or(ua.len(), |(i, _)| i);
                ua[..end].to_string()
            }),
        created_at: now,
        last_seen_at: now,
        expires_at,
        idle_expires_at: (now + cfg.idle_timeout.as_secs() as i64).min(expires_at),
        version: 1,
    }
}

/// `GET /auth/me`.
pub(crate) async fn me(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match current_session(&shared, &headers).await? {
        SessionLookup::Active(r) => {
            // Shows refreshed state, but refreshes only an already expired
            // token. The answer never depends on the IdP: while it cannot
            // be reached the user is still signed in, and the expired token
            // is left for the next API call to refresh.
            let r = match crate::refresh::ensure_valid(&shared, r.clone()).await {
                Ok(r) => r,
                Err(RefreshError::Ended(_) | RefreshError::Gone) => {
                    return Ok((
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"authenticated": false})),
                    )
                        .into_response());
                }
                Err(e @ (RefreshError::IdpUnavailable(_) | RefreshError::Busy)) => {
                    tracing::debug!(error = %e, "/auth/me answered from the session; IdP unavailable");
                    r
                }
                Err(e @ RefreshError::Store(_)) => return Err(e.into()),
            };
            let mut body = json!({
                "authenticated": true,
                "user": r.claims,
                "roles": r.roles,
                "session": {
                    "expires_at": rfc3339(r.expires_at),
                    "idle_expires_at": rfc3339(r.idle_expires_at),
                },
            });
            if shared.config.csrf.token_in_me {
                body["csrf_token"] = Value::String(r.csrf_token.clone());
            }
            Ok(Json(body).into_response())
        }
        SessionLookup::None | SessionLookup::Expired => Ok((
            StatusCode::UNAUTHORIZED,
            Json(json!({"authenticated": false})),
        )
            .into_response()),
    }
}

/// `POST /auth/logout`: destroy the session (CSRF-checked), revoke the
/// refresh token at the IdP, and send the browser to the IdP's logout.
pub(crate) async fn logout(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cfg = &shared.config;
    let post_logout_uri = format!("{}{}", cfg.public_origin(), cfg.oidc.post_logout_redirect);
    let mut id_token_hint = None;
    match current_session(&shared, &headers).await? {
        SessionLookup::Active(record) => {
            shared.csrf.check(&headers, &record.csrf_token)?;
            shared.store.delete(&record.id).await?;
            shared
                .tunnel_ends
                .notify(crate::tunnel_ends::SessionEnd::Session(record.id.clone()));
            tracing::info!(session = record.id.short(), "logout");
            shared.demo_event(&record.id, |_| {
                crate::demo_events::EventKind::SessionEnded {
                    reason: crate::demo_events::EndReason::Logout,
                }
            });
            metrics::counter!(crate::metrics::LOGOUTS_TOTAL, "kind" => "user").increment(1);
            spawn_revocation(shared.clone(), record.tokens.clone());
            id_token_hint = record.tokens.id_token.clone();
        }
        // Nothing to protect without a session, but a cross-site request still gets no answer.
        SessionLookup::None | SessionLookup::Expired => shared.csrf.check_origin(&headers)?,
    }
    let logout_url = match shared
        .oidc
        .end_session_url(id_token_hint.as_deref(), &post_logout_uri)
        .await
    {
        Ok(Some(url)) => url,
        Ok(None) => cfg.oidc.post_logout_redirect.clone(),
        Err(e) => {
            // The local session is gone already; an unreachable IdP must not block logout.
            tracing::warn!(error = %e, "no end_session URL; logging out locally only");
            cfg.oidc.post_logout_redirect.clone()
        }
    };
    let jar = CookieJar::new()
        .add(cookies::removal(cfg, cfg.session.cookie_name.clone(), true))
        .add(cookies::removal(cfg, cfg.csrf.cookie.clone(), false));
    let mut resp = if wants_json(&headers) {
        (jar, Json(json!({ "logout_url": logout_url }))).into_response()
    } else {
        (jar, Redirect::to(&logout_url)).into_response()
    };
    resp.headers_mut()
        .insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    Ok(resp)
}

/// Revoke refresh and access token in the background: the user is logged out
/// locally whatever the IdP says.
fn spawn_revocation(shared: Arc<Shared>, tokens: TokenSet) {
    tokio::spawn(async move {
        if let Some(rt) = tokens.refresh_token.as_deref()
            && let Err(e) = shared.oidc.revoke(rt, "refresh_token").await
        {
            tracing::warn!(error = %e, "refresh token revocation failed");
        }
        if let Err(e) = shared
            .oidc
            .revoke(tokens.access_token.as_str(), "access_token")
            .await
        {
            tracing::debug!(error = %e, "access token revocation failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::is_safe_return_path;

    #[test]
    fn return_to_accepts_only_same_origin_paths() {
        for ok in ["/", "/app", "/app?x=1#y", "/a/b%2F/c", "/x?next=https://e"] {
            assert!(is_safe_return_path(ok), "{ok}");
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil",
            "",
            "/\tx",
            "/a\\b",
            "/ok\r\nSet-Cookie: x",
        ] {
            assert!(!is_safe_return_path(bad), "{bad:?}");
        }
    }

    mod props {
        use super::is_safe_return_path;
        use proptest::prelude::*;

        /// Characters that matter to a URL parser resolving a redirect:
        /// slashes both ways, scheme and port colons, dots, escapes, digits,
        /// letters of `javascript`/`https`, controls, tabs, spaces.
        fn tricky() -> impl Strategy<Value = String> {
            let alphabet: Vec<char> = "/\\:.%09atpsj"
                .chars()
                .chain([
                    '\t', '\n', '\r', '\0', '\x0b', '\x0c', '\x7f', ' ', '\u{a0}', '\u{3000}', '@',
                    '?', '#',
                ])
                .collect();
            proptest::collection::vec(proptest::sample::select(alphabet), 0..12)
                .prop_map(|cs| cs.into_iter().collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

            /// Whatever is accepted resolves to the gateway's own origin, as
            /// a browser following the `Location` would resolve it.
            #[test]
            fn accepted_return_to_stays_on_origin(path in tricky()) {
                if is_safe_return_path(&path) {
                    let base = url::Url::parse("https://app.example.com/some/page").unwrap();
                    let joined = base.join(&path);
                    prop_assert!(joined.is_ok(), "{path:?}");
                    let joined = joined.unwrap();
                    prop_assert_eq!(joined.origin(), base.origin(), "{:?}", path);
                    prop_assert!(joined.username().is_empty() && joined.password().is_none());
                }
            }

            /// Any string at all: no panic.
            #[test]
            fn return_to_check_never_panics(path in ".{0,64}") {
                let _ = is_safe_return_path(&path);
            }
        }
    }
}

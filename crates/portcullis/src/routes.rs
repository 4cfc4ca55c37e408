//! The route table: `[[routes]]` sorted longest prefix first, the match of a
//! canonical path to its route (refusing a path an upstream could read as a
//! more specific route), and what every forwarded request shares (owned
//! cookie names, `X-Forwarded-Proto`/`-Host`). Built once at start; the
//! upstream clients themselves live in `proxy`, indexed by [`Route::upstream`].

use http::HeaderValue;

use crate::{
    config::{Config, RouteConfig},
    metrics::RouteKey,
    path,
};

/// A path that matches one route but differs from a more specific,
/// case-sensitive one only by case: an upstream that folds case would read
/// it as that route, so it is refused (`400`).
#[derive(Debug, thiserror::Error)]
#[error("path differs from a more specific route only by case")]
pub(crate) struct CaseShadowed;

/// The routes, longest prefix first, with what the hot path needs prebuilt.
pub(crate) struct RouteTable {
    /// Sorted longest prefix first.
    routes: Vec<Route>,
    /// One entry per upstream base URL and TLS settings (routes sharing
    /// both share one client and its pools): the index of the first route
    /// naming it, whose settings its client is built from.
    upstreams: Vec<usize>,
    pub(crate) owned_cookies: Vec<String>,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` from `server.public_url`,
    /// the same for every request, so built once.
    pub(crate) forwarded_proto: Option<HeaderValue>,
    pub(crate) forwarded_host: Option<HeaderValue>,
    /// Indexes of the case-sensitive routes: a path no route matches must
    /// not case-fold onto any of them.
    unrouted_shadows: Vec<usize>,
}

/// A configured route with what the hot path needs of it prebuilt.
pub(crate) struct Route {
    config: RouteConfig,
    /// Its `route` metric label (the prefix).
    key: RouteKey,
    /// Index of its upstream in [`RouteTable::upstreams`].
    upstream: usize,
    /// Indexes of the longer, case-sensitive routes a path of this route
    /// could be read as (`/api/admin/` for `/api/`); usually none.
    shadows: Vec<usize>,
}

impl std::ops::Deref for Route {
    type Target = RouteConfig;

    fn deref(&self) -> &RouteConfig {
        &self.config
    }
}

impl RouteTable {
    /// The table with each route's upstream chosen once, here, so a request
    /// pays nothing for TLS settings.
    pub(crate) fn new(config: &Config) -> Self {
        let mut configs = config.routes.clone();
        configs.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let mut ids: Vec<(&str, &crate::tls::TlsSettings)> = Vec::new();
        let mut upstreams = Vec::new();
        let mut routes = Vec::with_capacity(configs.len());
        for (i, r) in configs.iter().enumerate() {
            let id = (r.upstream.as_str(), &r.tls);
            let upstream = ids.iter().position(|u| *u == id).unwrap_or_else(|| {
                ids.push(id);
                upstreams.push(i);
                upstreams.len() - 1
            });
            routes.push(Route {
                config: r.clone(),
                key: RouteKey::route(routes.len()),
                upstream,
                shadows: Vec::new(),
            });
        }
        // Known at startup, so the per-request fold check compares only
        // against prefixes that can actually differ from the match by case.
        for i in 0..routes.len() {
            let mine = routes[i].prefix.trim_end_matches('/');
            let shadows = (0..routes.len())
                .filter(|&j| {
                    let other = &routes[j];
                    !other.case_insensitive
                        && other.prefix.len() > routes[i].prefix.len()
                        && other
                            .prefix
                            .get(..mine.len())
                            .is_some_and(|p| p.eq_ignore_ascii_case(mine))
                })
                .collect();
            routes[i].shadows = shadows;
        }
        let unrouted_shadows = (0..routes.len())
            .filter(|&j| !routes[j].case_insensitive)
            .collect();
        let public = &config.server.public_url;
        let host = authority(public).unwrap_or_default();
        Self {
            routes,
            upstreams,
            owned_cookies: crate::cookies::owned_names(config).to_vec(),
            forwarded_proto: HeaderValue::from_str(public.scheme()).ok(),
            forwarded_host: HeaderValue::from_str(&host).ok(),
            unrouted_shadows,
        }
    }

    /// Per upstream (in index order), the settings of the first route naming
    /// it: base URL, TLS, and the timeout its connects are bounded by.
    pub(crate) fn upstreams(&self) -> impl Iterator<Item = &RouteConfig> {
        self.upstreams.iter().map(|&i| &self.routes[i].config)
    }

    /// The route with the longest prefix matching `path` (exactly, or
    /// folded for a `case_insensitive` route).
    pub(crate) fn match_route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            if r.case_insensitive {
                path::fold_matches(&r.prefix, path)
            } else {
                prefix_matches(&r.prefix, path)
            }
        })
    }

    /// [`Self::match_route`] for a canonical path, refused when an upstream
    /// could read it as a more specific route than the one it matches:
    /// `/api/ADMIN/x` is `/api/admin/x` to ASP.NET or Express,
    /// `/api/admin.json` is `/api/admin` to older Spring MVC.
    pub(crate) fn route_for(&self, path: &str) -> Result<Option<&Route>, CaseShadowed> {
        let route = self.match_route(path);
        let shadows = route.map_or(&self.unrouted_shadows, |r| &r.shadows);
        if shadows
            .iter()
            .any(|&j| path::shadow_matches(&self.routes[j].prefix, path))
        {
            return Err(CaseShadowed);
        }
        Ok(route)
    }

    /// The route prefixes, in the order of their [`RouteKey`]s.
    pub(crate) fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.prefix.as_str())
    }
}

impl Route {
    /// Its `route` metric label.
    pub(crate) fn key(&self) -> RouteKey {
        self.key
    }

    /// Index of its upstream (see [`RouteTable::upstreams`]).
    pub(crate) fn upstream(&self) -> usize {
        self.upstream
    }
}

/// `host[:port]` of `url`, the port only when it is not the scheme's default:
/// what a client puts in `Host` (RFC 9110 7.2). No user info. `None` without a host.
pub(crate) fn authority(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
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

#[cfg(test)]
pub(crate) mod tests {
    use super::prefix_matches;
    use crate::config::{RouteConfig, TokenMode};

    /// A user-token route, for tests here and in `proxy`.
    pub(crate) fn route(prefix: &str, upstream: &str, strip_prefix: bool) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            upstream: url::Url::parse(upstream).unwrap(),
            token: TokenMode::User,
            require_roles: Vec::new(),
            strip_prefix,
            timeout: std::time::Duration::from_secs(1),
            security_headers: false,
            case_insensitive: false,
            check_origin: true,
            tls: Default::default(),
        }
    }

    /// Routes share an upstream (its client and pools) exactly when upstream and TLS
    /// settings are equal.
    #[test]
    fn routes_share_a_client_per_upstream_and_tls_settings() {
        let dir = crate::tls::tests::files();
        let private = crate::tls::TlsSettings {
            trust: crate::tls::TrustConfig {
                roots: None,
                ca_file: Some(dir.path().join("ca.pem")),
            },
            identity: None,
        };
        let mut config = crate::config::Config::from_toml_str(
            "[server]\npublic_url = \"https://app.example.com\"\n\
             [oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\n[session]\nencryption_keys = \
             [\"cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=\"]\n",
            Vec::new(),
        )
        .expect("config");
        let with = |prefix: &str, upstream: &str, tls: &crate::tls::TlsSettings| RouteConfig {
            tls: tls.clone(),
            ..route(prefix, upstream, false)
        };
        let default = crate::tls::TlsSettings::default();
        config.routes = vec![
            with("/a/", "https://api.internal", &default),
            with("/b/", "https://api.internal", &default),
            with("/c/", "https://api.internal", &private),
            with("/d/", "https://api.internal", &private),
            with("/e/", "https://other.internal", &private),
        ];
        let table = super::RouteTable::new(&config);
        assert_eq!(table.upstreams().count(), 3);
        let client = |prefix: &str| table.match_route(prefix).expect("route").upstream;
        assert_eq!(client("/a/"), client("/b/"));
        assert_eq!(client("/c/"), client("/d/"));
        assert_ne!(client("/a/"), client("/c/"));
        assert_ne!(client("/d/"), client("/e/"));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(prefix_matches("/api/", "/api"));
        assert!(!prefix_matches("/api/", "/apix"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
    }
}

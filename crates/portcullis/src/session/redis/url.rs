//! Parsing the Redis store URLs: `redis://`, `rediss://`,
//! `redis+sentinel://`, the cluster seed lists and the `cacert` option.

use redis::{Client, TlsCertificates};

use super::super::{StoreError, redact_url};

/// Build the client for `redis://`, `rediss://` or
/// `redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB]`.
pub(super) async fn client_for(
    url: &str,
) -> Result<(Client, Option<redis::sentinel::SentinelClient>), StoreError> {
    let bad = |why: &str| StoreError::BadUrl(format!("{}: {why}", redact_url(url)));
    if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        // The Sentinel URL has no TLS form; a CA here would protect nothing.
        if rest.contains(&format!("{CACERT}=")) {
            return Err(bad("cacert is not supported with redis+sentinel://"));
        }
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("missing /SERVICE"))?;
        let mut parts = path.split('/');
        let service = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("missing service name"))?;
        let db: i64 = match parts.next() {
            Some(db) if !db.is_empty() => db.parse().map_err(|_| bad("bad db number"))?,
            _ => 0,
        };
        let sentinels: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{h}"))
            .collect();
        if sentinels.is_empty() {
            return Err(bad("no sentinel host"));
        }
        let mut node = redis::sentinel::SentinelNodeConnectionInfo::default();
        let mut redis_info = redis::RedisConnectionInfo {
            db,
            ..Default::default()
        };
        if let Some(auth) = auth {
            let (user, pass) = auth.split_once(':').unwrap_or(("", auth));
            let decode = |s: &str| {
                url::form_urlencoded::parse(s.as_bytes())
                    .map(|(k, _)| k.into_owned())
                    .next()
                    .unwrap_or_default()
            };
            if !user.is_empty() {
                redis_info.username = Some(decode(user));
            }
            redis_info.password = Some(decode(pass));
        }
        node.redis_connection_info = Some(redis_info);
        let mut sentinel = redis::sentinel::SentinelClient::build(
            sentinels,
            service.to_string(),
            Some(node),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| bad(&e.to_string()))?;
        let client = sentinel
            .async_get_client()
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis sentinel: {e}")))?;
        return Ok((client, Some(sentinel)));
    }
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(bad("not a redis URL"));
    }
    let client = match split_cacert(url)? {
        (url, Some(certs)) => Client::build_with_tls(url.as_str(), certs),
        (_, None) => Client::open(url),
    };
    client.map(|c| (c, None)).map_err(|e| bad(&e.to_string()))
}

/// The URL option naming a PEM file of CA certificates, as `redis-cli --cacert`.
pub(crate) const CACERT: &str = "cacert";

/// Take the `cacert=PATH` option out of a `rediss://` or `rediss+cluster://`
/// URL: the server certificate must then chain to a CA in that file (a
/// private CA), and the system roots are not used. Returns the URL without
/// the option (the redis crate does not know it) and the certificates to
/// build the client with. Errors never echo the URL: it may carry a password.
pub(crate) fn split_cacert(url: &str) -> Result<(String, Option<TlsCertificates>), StoreError> {
    let bad = |why: String| StoreError::BadUrl(format!("redis store URL: {why}"));
    let (head, fragment) = match url.split_once('#') {
        Some((head, fragment)) => (head, Some(fragment)),
        None => (url, None),
    };
    let Some((base, query)) = head.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut path = None;
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key == CACERT {
            path = Some(value.into_owned());
        } else {
            kept.append_pair(&key, &value);
        }
    }
    let Some(path) = path else {
        return Ok((url.to_owned(), None));
    };
    // A CA on a plaintext URL would look protected and not be.
    if !(url.starts_with("rediss://") || url.starts_with("rediss+cluster://")) {
        return Err(bad(format!(
            "{CACERT} needs TLS: use rediss:// or rediss+cluster://"
        )));
    }
    if fragment == Some("insecure") {
        return Err(bad(format!("{CACERT} and #insecure contradict each other")));
    }
    let pem = std::fs::read(&path).map_err(|e| bad(format!("{CACERT} {path}: {e}")))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(bad(format!(
            "{CACERT} {path}: no PEM certificate in the file"
        )));
    }
    let mut stripped = base.to_owned();
    let kept = kept.finish();
    if !kept.is_empty() {
        stripped.push('?');
        stripped.push_str(&kept);
    }
    if let Some(fragment) = fragment {
        stripped.push('#');
        stripped.push_str(fragment);
    }
    let certs = TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Ok((stripped, Some(certs)))
}

/// Seed node URLs of a `redis+cluster://` or `rediss+cluster://` URL. Errors
/// never echo the URL: it may carry a password.
pub(super) fn cluster_nodes(url: &str) -> Result<Vec<String>, StoreError> {
    let bad = |why: &str| StoreError::BadUrl(format!("redis cluster URL: {why}"));
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis://", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss://", rest)
    } else {
        return Err(bad("expected redis+cluster:// or rediss+cluster://"));
    };
    // `#insecure` (and any fragment) belongs to every seed's URL, after its query.
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, format!("#{fragment}")),
        None => (rest, String::new()),
    };
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), rest),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (hosts, tail) = rest.split_at(end);
    let query = match tail.strip_prefix('/').unwrap_or(tail) {
        "" => "",
        q if q.starts_with('?') => q,
        // A cluster has only database 0.
        _ => return Err(bad("a cluster has no database number; use /?options only")),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}{auth}{h}/{query}{fragment}"))
        .collect();
    if nodes.is_empty() {
        return Err(bad("no seed node"));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_file() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let path = path.display().to_string();
        (dir, path)
    }

    /// `#insecure` after the seeds (with or without options) reaches every
    /// seed's URL instead of being read as a database number.
    #[test]
    fn cluster_fragment_is_kept_for_every_seed() {
        for (url, want) in [
            (
                "rediss+cluster://a:1,b:2#insecure",
                "rediss://b:2/#insecure",
            ),
            (
                "rediss+cluster://:pw@a:1,b:2/?protocol=resp3#insecure",
                "rediss://:pw@b:2/?protocol=resp3#insecure",
            ),
            (
                "rediss+cluster://a:1,b:2/#insecure",
                "rediss://b:2/#insecure",
            ),
        ] {
            let nodes = cluster_nodes(url).expect(url);
            assert_eq!(nodes.len(), 2, "{url}");
            assert_eq!(nodes[1], want, "{url}");
        }
        assert!(cluster_nodes("redis+cluster://a:1/0#insecure").is_err());
    }

    #[test]
    fn cacert_is_taken_out_and_other_options_kept() {
        let (_dir, ca) = ca_file();
        let url = format!("rediss://:pw@h:6380/1?cacert={ca}&protocol=resp3");
        let (stripped, certs) = split_cacert(&url).expect("split");
        assert_eq!(stripped, "rediss://:pw@h:6380/1?protocol=resp3");
        assert!(certs.and_then(|c| c.root_cert).is_some());
        let url = format!("rediss+cluster://n1:7000,n2:7000/?cacert={ca}");
        assert_eq!(
            split_cacert(&url).expect("split").0,
            "rediss+cluster://n1:7000,n2:7000/"
        );
        let plain = "rediss://h:6380/0?protocol=resp3#insecure";
        let (same, none) = split_cacert(plain).expect("no cacert");
        assert_eq!(same, plain);
        assert!(none.is_none());
    }

    #[test]
    fn cacert_needs_tls_a_readable_pem_and_no_insecure() {
        let (dir, ca) = ca_file();
        for url in [
            format!("redis://:hunter2@h/?cacert={ca}"),
            format!("redis+cluster://:hunter2@h:7000/?cacert={ca}"),
            format!("rediss://:hunter2@h/?cacert={ca}#insecure"),
            "rediss://:hunter2@h/?cacert=/nonexistent/ca.pem".to_owned(),
        ] {
            match split_cacert(&url) {
                Err(StoreError::BadUrl(message)) => {
                    assert!(!message.contains("hunter2"), "{message}")
                }
                other => panic!("{url}: expected BadUrl, got {:?}", other.map(|(u, _)| u)),
            }
        }
        let not_pem = dir.path().join("key.txt");
        std::fs::write(&not_pem, "not a certificate").expect("write");
        let url = format!("rediss://h/?cacert={}", not_pem.display());
        assert!(matches!(split_cacert(&url), Err(StoreError::BadUrl(_))));
    }
}

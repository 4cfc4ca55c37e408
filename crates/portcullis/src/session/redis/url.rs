//! Parsing the Redis store URLs: `redis://`, `rediss://`,
//! `redis+sentinel://` and the cluster seed lists.

use redis::Client;

use super::super::{StoreError, redact_url};

/// Build the client for `redis://`, `rediss://` or
/// `redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB]`.
pub(super) async fn client_for(
    url: &str,
) -> Result<(Client, Option<redis::sentinel::SentinelClient>), StoreError> {
    let bad = |why: &str| StoreError::BadUrl(format!("{}: {why}", redact_url(url)));
    if let Some(rest) = url.strip_prefix("redis+sentinel://") {
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
    Client::open(url)
        .map(|c| (c, None))
        .map_err(|e| bad(&e.to_string()))
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
        .map(|h| format!("{scheme}{auth}{h}/{query}"))
        .collect();
    if nodes.is_empty() {
        return Err(bad("no seed node"));
    }
    Ok(nodes)
}

//! The start-up check that a Redis Cluster's nodes answer at the addresses
//! they announce. The client sends commands to those (from `CLUSTER SLOTS`
//! and `MOVED`), not to the seed list; when none of them can be reached as
//! announced (a TLS certificate that names the seeds' host names but not
//! the announced IPs, a NAT, a container-internal address) the cluster
//! client still connects, and then fails every command with "No connections
//! found", which names neither the node nor the cause.

use std::time::Duration;

use futures_util::future::join_all;
use redis::{Client, ConnectionAddr, Value};

use crate::session::StoreError;

/// Refuses the cluster when no primary it announces answers a `PING` there,
/// with the first node's error (a refused certificate says so); logs each
/// unreachable one when others answer (a node down is an outage, not a
/// configuration error). `seeds` are clients for the seed nodes, with the
/// URL's TLS settings and credentials.
pub(super) async fn check_announced_nodes(
    seeds: &[Client],
    timeout: Duration,
) -> Result<(), StoreError> {
    let Some((seed, slots)) = slot_map(seeds, timeout).await else {
        // The cluster connection just read it; nothing more to learn here.
        return Ok(());
    };
    let primaries = announced_primaries(&slots);
    let probes = primaries.iter().map(|(host, port)| async move {
        let result = ping_at(seed, host, *port, timeout).await;
        (format!("{host}:{port}"), result)
    });
    let results = join_all(probes).await;
    let failures: Vec<&(String, Result<(), String>)> =
        results.iter().filter(|(_, r)| r.is_err()).collect();
    match failures.first() {
        Some((node, Err(e))) if failures.len() == results.len() => {
            Err(StoreError::Unavailable(format!(
                "redis cluster: no node answers at the address it announces \
                 (CLUSTER SLOTS): {node}: {e}; with TLS, the node certificates must \
                 name those addresses (or announce host names: cluster-announce-hostname, \
                 cluster-preferred-endpoint-type hostname)"
            )))
        }
        _ => {
            for (node, e) in failures {
                if let Err(e) = e {
                    tracing::warn!(%node, error = %e, "redis cluster node unreachable at its announced address");
                }
            }
            Ok(())
        }
    }
}

/// `CLUSTER SLOTS` from the first seed that answers, and that seed.
async fn slot_map(seeds: &[Client], timeout: Duration) -> Option<(&Client, Value)> {
    for seed in seeds {
        let query = async {
            let mut conn = seed.get_multiplexed_async_connection().await?;
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut conn)
                .await
        };
        if let Ok(Ok(slots)) = tokio::time::timeout(timeout, query).await {
            return Some((seed, slots));
        }
    }
    None
}

/// The primaries' `(host, port)` in a `CLUSTER SLOTS` reply, each once.
/// Hosts the cluster leaves unknown (`""`, `"?"`) are skipped: the client
/// uses the seed's host for those.
pub(super) fn announced_primaries(slots: &Value) -> Vec<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return Vec::new();
    };
    let mut nodes: Vec<(String, u16)> = ranges
        .iter()
        .filter_map(|range| match range {
            // [start, end, [host, port, id, …], replicas…]
            Value::Array(items) => match items.get(2) {
                Some(Value::Array(node)) if node.len() >= 2 => {
                    let host: String = redis::from_redis_value(&node[0]).ok()?;
                    let port: u16 = redis::from_redis_value(&node[1]).ok()?;
                    (!host.is_empty() && host != "?").then_some((host, port))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// `PING` at `host:port` with `seed`'s TLS settings and credentials.
async fn ping_at(seed: &Client, host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let mut info = seed.get_connection_info().clone();
    match &mut info.addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            *h = host.to_owned();
            *p = port;
        }
        ConnectionAddr::Unix(_) => return Ok(()),
    }
    let client = Client::open(info).map_err(|e| e.to_string())?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn primaries_are_read_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                bulk(host),
                Value::Int(port),
                bulk("id"),
                Value::Map(vec![]),
            ])
        };
        let range = |start: i64, primary: Value, replicas: Vec<Value>| {
            let mut items = vec![Value::Int(start), Value::Int(start + 1), primary];
            items.extend(replicas);
            Value::Array(items)
        };
        let slots = Value::Array(vec![
            range(0, node("10.0.0.2", 6380), vec![node("10.0.0.9", 6380)]),
            range(2, node("10.0.0.1", 6380), vec![]),
            range(4, node("10.0.0.2", 6380), vec![]),
            range(6, node("?", 6380), vec![]),
            range(8, node("", 6380), vec![]),
        ]);
        assert_eq!(
            announced_primaries(&slots),
            [("10.0.0.1".to_owned(), 6380), ("10.0.0.2".to_owned(), 6380)]
        );
        assert!(announced_primaries(&Value::Nil).is_empty());
    }
}

//! Cache invalidation over Redis pub/sub, for a single Redis (or Sentinel
//! master) and for a Redis Cluster.
//!
//! On a cluster, a classic `PUBLISH` on any node reaches the subscribers of
//! every node (the cluster bus broadcasts it), so one subscriber connection
//! to any node hears every replica; when that node goes away the subscriber
//! moves on to the next seed.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Client};
use tokio::sync::broadcast;

use super::super::StoreError;
use super::super::cache::{Invalidation, InvalidationBus};
use super::record::unavailable;
use super::{Link, read};

/// Where invalidations are published.
pub(super) enum Publisher {
    /// The current master (it changes after a Sentinel failover).
    Master(Arc<RwLock<Link>>),
    /// Any cluster node: the cluster routes and broadcasts the message.
    Cluster(ClusterConnection),
}

/// Where the subscriber connects.
pub(super) enum Subscriber {
    Master(Arc<RwLock<Link>>),
    /// Cluster seed nodes, tried in turn.
    Seeds(Vec<Client>),
}

impl Subscriber {
    /// The client for connection attempt `attempt`.
    fn client(&self, attempt: usize) -> Option<Client> {
        match self {
            Subscriber::Master(link) => Some(read(link).client.clone()),
            Subscriber::Seeds(seeds) if !seeds.is_empty() => {
                Some(seeds[attempt % seeds.len()].clone())
            }
            Subscriber::Seeds(_) => None,
        }
    }
}

/// Cache invalidation over Redis pub/sub. A background task keeps one
/// subscriber connection and, after every (re)connect, tells the caches to
/// drop everything, since messages sent while it was away are lost.
pub struct RedisBus {
    publisher: Publisher,
    channel: String,
    tx: broadcast::Sender<Invalidation>,
    task: tokio::task::JoinHandle<()>,
}

impl RedisBus {
    pub(super) fn start(
        publisher: Publisher,
        subscriber: Subscriber,
        channel: String,
    ) -> Arc<Self> {
        let (tx, _) = broadcast::channel(4096);
        let task = tokio::spawn(subscribe_loop(subscriber, channel.clone(), tx.clone()));
        Arc::new(Self {
            publisher,
            channel,
            tx,
            task,
        })
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn subscribe_loop(
    subscriber: Subscriber,
    channel: String,
    tx: broadcast::Sender<Invalidation>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    let mut attempt = 0usize;
    loop {
        let Some(client) = subscriber.client(attempt) else {
            return;
        };
        attempt = attempt.wrapping_add(1);
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    backoff = Duration::from_millis(50);
                    if !first {
                        let _ = tx.send(Invalidation::All);
                    }
                    first = false;
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let text = String::from_utf8_lossy(msg.get_payload_bytes());
                        let _ = tx.send(Invalidation::decode(&text));
                    }
                    // No `Invalidation::All` here but once subscribed again
                    // (above): during a store outage, cached sessions serve
                    // until their TTL, which bounds a missed message anyway.
                    tracing::warn!("session invalidation subscription lost; reconnecting");
                    // Straight to the next node: this one just went away.
                    continue;
                }
                Err(e) => tracing::debug!(error = %e, "cannot subscribe to invalidations"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot connect invalidation subscriber"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[async_trait]
impl InvalidationBus for RedisBus {
    async fn publish(&self, message: Invalidation) -> Result<(), StoreError> {
        let text = message.encode();
        let published = async {
            match &self.publisher {
                Publisher::Master(link) => {
                    let mut conn = read(link).conn.clone();
                    conn.publish::<_, _, i64>(&self.channel, text).await
                }
                Publisher::Cluster(conn) => {
                    conn.clone().publish::<_, _, i64>(&self.channel, text).await
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), published).await {
            Ok(r) => r.map(|_| ()).map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable("redis: publish timed out".into())),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.tx.subscribe()
    }
}

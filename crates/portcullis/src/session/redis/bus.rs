//! Cache invalidation over Redis pub/sub, for a single Redis (or Sentinel
//! master) and for a Redis Cluster.
//!
//! On a cluster, a classic `PUBLISH` on any node reaches the subscribers of
//! every node (the cluster bus broadcasts it), so one subscriber connection
//! to any node hears every replica; when that node goes away the subscriber
//! moves on to the next seed.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Client};

use super::super::StoreError;
use super::super::bus::{ReconnectingBus, Subscription, Transport};
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

/// Redis pub/sub as the transport of the [`ReconnectingBus`].
pub struct RedisTransport {
    publisher: Publisher,
    subscriber: Subscriber,
}

/// Cache invalidation over Redis pub/sub.
pub type RedisBus = ReconnectingBus<RedisTransport>;

impl RedisTransport {
    pub(super) fn bus(
        publisher: Publisher,
        subscriber: Subscriber,
        channel: String,
    ) -> Arc<RedisBus> {
        ReconnectingBus::start(
            Self {
                publisher,
                subscriber,
            },
            channel,
        )
    }
}

pub struct RedisSubscription(redis::aio::PubSubStream);

#[async_trait]
impl Subscription for RedisSubscription {
    async fn next(&mut self) -> Option<String> {
        let msg = self.0.next().await?;
        Some(String::from_utf8_lossy(msg.get_payload_bytes()).into_owned())
    }
}

#[async_trait]
impl Transport for RedisTransport {
    type Subscription = RedisSubscription;

    async fn subscribe(
        &self,
        attempt: usize,
        channel: &str,
    ) -> Result<RedisSubscription, StoreError> {
        let client = self
            .subscriber
            .client(attempt)
            .ok_or_else(|| StoreError::Unavailable("redis: no node to subscribe on".into()))?;
        let mut pubsub = client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub.subscribe(channel).await.map_err(unavailable)?;
        Ok(RedisSubscription(pubsub.into_on_message()))
    }

    async fn publish(&self, channel: &str, text: String) -> Result<(), StoreError> {
        let published = match &self.publisher {
            Publisher::Master(link) => {
                let mut conn = read(link).conn.clone();
                conn.publish::<_, _, i64>(channel, text).await
            }
            Publisher::Cluster(conn) => conn.clone().publish::<_, _, i64>(channel, text).await,
        };
        published.map(|_| ()).map_err(unavailable)
    }
}

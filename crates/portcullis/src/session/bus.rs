//! The reconnecting invalidation bus, once for every remote store: a
//! background task keeps one subscription open through a [`Transport`]
//! (Redis pub/sub, PostgreSQL LISTEN/NOTIFY), reconnects with back-off when
//! it is lost, and after every reconnect tells the caches to drop
//! everything, since messages sent while it was away are gone.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::StoreError;
use super::cache::{Invalidation, InvalidationBus};

/// An open subscription.
#[async_trait]
pub trait Subscription: Send {
    /// The next message's text; `None` once the connection is lost.
    async fn next(&mut self) -> Option<String>;
}

/// How one store's messages travel.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    type Subscription: Subscription;

    /// Connect (attempt number `attempt`: a transport with several nodes
    /// moves to the next one) and subscribe to `channel`.
    async fn subscribe(
        &self,
        attempt: usize,
        channel: &str,
    ) -> Result<Self::Subscription, StoreError>;

    /// Send `text` to every subscriber of `channel`, this process's included.
    async fn publish(&self, channel: &str, text: String) -> Result<(), StoreError>;
}

/// How long a publish may take before the write it follows goes on without it
/// (the other replicas' entries still expire after the cache TTL).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// An [`InvalidationBus`] over any [`Transport`] that reconnects by itself.
pub struct ReconnectingBus<T: Transport> {
    transport: Arc<T>,
    channel: String,
    tx: broadcast::Sender<Invalidation>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Transport> ReconnectingBus<T> {
    pub fn start(transport: T, channel: String) -> Arc<Self> {
        let transport = Arc::new(transport);
        let (tx, _) = broadcast::channel(4096);
        let task = tokio::spawn(subscribe_loop(
            transport.clone(),
            channel.clone(),
            tx.clone(),
        ));
        Arc::new(Self {
            transport,
            channel,
            tx,
            task,
        })
    }
}

impl<T: Transport> Drop for ReconnectingBus<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn subscribe_loop<T: Transport>(
    transport: Arc<T>,
    channel: String,
    tx: broadcast::Sender<Invalidation>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    let mut attempt = 0usize;
    loop {
        match transport.subscribe(attempt, &channel).await {
            Ok(mut subscription) => {
                backoff = Duration::from_millis(50);
                // Not at the loss but once subscribed again: during a store
                // outage cached sessions serve until their TTL, which bounds
                // a missed message anyway.
                if !first {
                    let _ = tx.send(Invalidation::All);
                }
                first = false;
                while let Some(text) = subscription.next().await {
                    let _ = tx.send(Invalidation::decode(&text));
                }
                tracing::warn!("session invalidation subscription lost; reconnecting");
                // Straight to the next attempt (the next node, for a cluster).
                attempt = attempt.wrapping_add(1);
                continue;
            }
            Err(e) => tracing::debug!(error = %e, "cannot subscribe to session invalidations"),
        }
        attempt = attempt.wrapping_add(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[async_trait]
impl<T: Transport> InvalidationBus for ReconnectingBus<T> {
    async fn publish(&self, message: Invalidation) -> Result<(), StoreError> {
        let published = self.transport.publish(&self.channel, message.encode());
        match tokio::time::timeout(PUBLISH_TIMEOUT, published).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(
                "session invalidation: publish timed out".into(),
            )),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A transport whose subscriptions the test breaks at will.
    #[derive(Default)]
    struct Scripted {
        attempts: Mutex<Vec<usize>>,
        live: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
        fail_first: usize,
    }

    struct Sub(tokio::sync::mpsc::UnboundedReceiver<String>);

    #[async_trait]
    impl Subscription for Sub {
        async fn next(&mut self) -> Option<String> {
            self.0.recv().await
        }
    }

    #[async_trait]
    impl Transport for Scripted {
        type Subscription = Sub;
        async fn subscribe(&self, attempt: usize, _: &str) -> Result<Sub, StoreError> {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push(attempt);
            if attempts.len() <= self.fail_first {
                return Err(StoreError::Unavailable("down".into()));
            }
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            *self.live.lock().unwrap() = Some(tx);
            Ok(Sub(rx))
        }
        async fn publish(&self, _: &str, text: String) -> Result<(), StoreError> {
            match &*self.live.lock().unwrap() {
                Some(tx) => tx
                    .send(text)
                    .map_err(|_| StoreError::Unavailable("lost".into())),
                None => Err(StoreError::Unavailable("not connected".into())),
            }
        }
    }

    async fn until_connected(bus: &ReconnectingBus<Scripted>) {
        // A sleep, not a yield: paused time only advances (through the
        // back-off) while every task is idle.
        while bus.transport.live.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn messages_pass_and_a_reconnect_clears_every_cache() {
        let bus = ReconnectingBus::start(
            Scripted {
                fail_first: 2,
                ..Default::default()
            },
            "ch".into(),
        );
        let mut rx = bus.subscribe();
        until_connected(&bus).await;
        // Two failed attempts with back-off, then a subscription; the first
        // one clears nothing (there was nothing to miss).
        assert_eq!(*bus.transport.attempts.lock().unwrap(), vec![0, 1, 2]);
        bus.publish(Invalidation::Session("a".into()))
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Invalidation::Session("a".into()));

        // The connection drops: the bus reconnects (next node) and tells the
        // caches to forget everything.
        bus.transport.live.lock().unwrap().take();
        assert_eq!(rx.recv().await.unwrap(), Invalidation::All);
        assert_eq!(*bus.transport.attempts.lock().unwrap(), vec![0, 1, 2, 3]);
        bus.publish(Invalidation::Subject("s".into()))
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Invalidation::Subject("s".into()));
    }
}

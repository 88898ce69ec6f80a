//! The event bus: publish bytes to a topic; subscribe a stream to a changing set of topics.
//!
//! Backends are sibling modules chosen by URL: `memory://` (in-process, the all-in-one default),
//! `redis://` (pub/sub, reconnecting) and `nats://` (the scale-out alternative). Delivery is at-most-once per backend, in order per topic from one
//! publisher; consumers that need more (ws-edge) detect gaps by seq and are told after every reconnect
//! (`Delivery::Resubscribed`) so they can fetch what they may have missed.

mod memory;
mod nats_bus;
mod redis_bus;

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("unsupported bus URL {0:?} (expected memory://, redis:// or nats://)")]
    BadUrl(String),
}

/// Something the subscription stream yields.
#[derive(Debug, Clone)]
pub enum Delivery {
    Message {
        topic: Arc<str>,
        payload: Bytes,
    },
    /// The connection to the broker was lost and is back with every subscription restored;
    /// messages published in between may be missing.
    Resubscribed,
}

/// A bus handle: cheap to clone, shared by every task of a service.
#[derive(Clone)]
pub enum Bus {
    Memory(memory::MemoryBus),
    Redis(redis_bus::RedisBus),
    Nats(nats_bus::NatsBus),
}

/// Bound on one publish: past it the caller (the outbox) keeps the event and retries later.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

impl Bus {
    /// `None`, empty or `memory://` selects the in-process bus.
    pub async fn connect(url: Option<&str>) -> Result<Bus, BusError> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(Bus::Memory(memory::MemoryBus::default())),
            Some(u) if u.starts_with("memory:") => Ok(Bus::Memory(memory::MemoryBus::default())),
            Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                Ok(Bus::Redis(redis_bus::RedisBus::new(u)?))
            }
            Some(u) if u.starts_with("nats://") || u.starts_with("tls://") => {
                Ok(Bus::Nats(nats_bus::NatsBus::connect(u).await?))
            }
            Some(u) => Err(BusError::BadUrl(u.to_string())),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Bus::Memory(_) => "memory",
            Bus::Redis(_) => "redis",
            Bus::Nats(_) => "nats",
        }
    }

    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        let r = match self {
            Bus::Memory(m) => m.publish(topic, payload).await,
            Bus::Redis(r) => r.publish(topic, payload).await,
            Bus::Nats(n) => n.publish(topic, payload).await,
        };
        match &r {
            Ok(()) => metrics::counter!("bus_published_total").increment(1),
            Err(_) => metrics::counter!("bus_publish_errors_total").increment(1),
        }
        r
    }

    /// Publishes several messages in order with one round trip where the broker allows it (a Redis
    /// pipeline, one NATS flush). All or error: after an error any prefix may have gone out, so the
    /// caller retries the whole batch (at-least-once; receivers de-duplicate by seq).
    pub async fn publish_batch(&self, items: Vec<(String, Bytes)>) -> Result<(), BusError> {
        let n = items.len() as u64;
        let r = match self {
            Bus::Memory(m) => {
                let mut r = Ok(());
                for (topic, payload) in items {
                    r = m.publish(&topic, payload).await;
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
            Bus::Redis(r) => r.publish_batch(items).await,
            Bus::Nats(c) => c.publish_batch(items).await,
        };
        match &r {
            Ok(()) => metrics::counter!("bus_published_total").increment(n),
            Err(_) => metrics::counter!("bus_publish_errors_total").increment(1),
        }
        r
    }

    /// Whether the broker answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), BusError> {
        match self {
            Bus::Memory(_) => Ok(()),
            Bus::Redis(r) => r.ping().await,
            Bus::Nats(n) => n.ping().await,
        }
    }

    /// A new subscription stream with room for `buffer` undelivered messages.
    pub fn subscriber(&self, buffer: usize) -> (Subscriptions, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(buffer);
        let subs = match self {
            Bus::Memory(m) => Subscriptions::Memory(m.subscriber(tx)),
            Bus::Redis(r) => Subscriptions::Redis(r.subscriber(tx)),
            Bus::Nats(n) => Subscriptions::Nats(n.subscriber(tx)),
        };
        (subs, rx)
    }
}

/// Controls which topics a subscription stream receives. Cloneable; the stream lives until
/// every clone is dropped.
#[derive(Clone)]
pub enum Subscriptions {
    Memory(memory::MemorySubscriptions),
    Redis(redis_bus::RedisSubscriptions),
    Nats(nats_bus::NatsSubscriptions),
}

pub(crate) enum Control {
    Subscribe(Vec<String>, oneshot::Sender<()>),
    Unsubscribe(Vec<String>),
}

impl Subscriptions {
    /// Returns once the broker has confirmed (or, while it is down, once the topics are recorded for
    /// the resubscription that follows reconnecting).
    pub async fn subscribe(&self, topics: Vec<String>) {
        match self {
            Subscriptions::Memory(m) => m.subscribe(topics),
            Subscriptions::Redis(r) => r.subscribe(topics).await,
            Subscriptions::Nats(n) => n.subscribe(topics).await,
        }
    }

    pub fn unsubscribe(&self, topics: Vec<String>) {
        match self {
            Subscriptions::Memory(m) => m.unsubscribe(topics),
            Subscriptions::Redis(r) => r.unsubscribe(topics),
            Subscriptions::Nats(n) => n.unsubscribe(topics),
        }
    }
}

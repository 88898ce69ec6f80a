//! The event bus: publish bytes to a topic; subscribe a stream to a changing set of topics.
//!
//! Backends are sibling modules chosen by URL: `memory://` (in-process, the all-in-one default),
//! `redis://` (pub/sub, reconnecting) and `nats://` (the scale-out alternative). Delivery is at-most-once per backend, in order per topic from one
//! publisher; consumers that need more (ws-edge) detect gaps by seq and are told after every reconnect
//! (`Delivery::Resubscribed`) so they can fetch what they may have missed.

mod memory;
mod nats_bus;
mod redis_bus;
pub mod seal;

pub use nats_bus::client as nats_client;
pub use seal::BusKey;

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
    #[error("bad topic prefix {0:?} (letters, digits, '.', '_', '-'; at most 64)")]
    BadPrefix(String),
    #[error(
        "BUS_SIGNING_KEY (or BUS_SIGNING_KEY_FILE) is required with a Redis or NATS bus: every message is \
         authenticated with it (openssl rand -hex 32, the same value for every service)"
    )]
    KeyRequired,
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
pub struct Bus {
    backend: Backend,
    /// Put before every topic (`BUS_TOPIC_PREFIX`): deployments (or tests) sharing a broker stay apart.
    prefix: Arc<str>,
    /// Seals what is published and opens what arrives (Redis and NATS; the in-process bus needs none).
    key: Option<Arc<BusKey>>,
}

#[derive(Clone)]
enum Backend {
    Memory(memory::MemoryBus),
    Redis(redis_bus::RedisBus),
    Nats(nats_bus::NatsBus),
}

/// A URL as it may be shown in errors and logs: any password (or token) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// What a subscriber passes on: with a key, the payload of a message sealed for `topic` (anything
/// else is dropped and counted by `BusKey::open`); without one, the message as it came.
pub(crate) fn unseal(key: Option<&BusKey>, topic: &str, payload: Bytes) -> Option<Bytes> {
    match key {
        Some(k) => k.open(topic, payload),
        None => Some(payload),
    }
}

/// A delay between half and all of `d`, so reconnecting clients spread out instead of retrying in step.
pub(crate) fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish() % 1000;
    d / 2 + d.mul_f64(r as f64 / 2000.0)
}

/// Bound on one publish: past it the caller (the outbox) keeps the event and retries later.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// The prefix must be usable in a NATS subject and a Redis channel alike.
fn check_prefix(prefix: &str) -> Result<(), BusError> {
    let ok = prefix.len() <= 64
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !prefix.starts_with('.')
        && !prefix.contains("..");
    if ok { Ok(()) } else { Err(BusError::BadPrefix(prefix.to_string())) }
}

impl Bus {
    /// `None`, empty or `memory://` selects the in-process bus. `topic_prefix` (often empty) is put
    /// before every topic this handle publishes or subscribes.
    pub async fn connect(url: Option<&str>, topic_prefix: &str) -> Result<Bus, BusError> {
        check_prefix(topic_prefix)?;
        let backend = match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Backend::Memory(memory::MemoryBus::default()),
            Some(u) if u.starts_with("memory:") => Backend::Memory(memory::MemoryBus::default()),
            Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                Backend::Redis(redis_bus::RedisBus::new(u)?)
            }
            Some(u) if u.starts_with("nats://") || u.starts_with("tls://") => {
                Backend::Nats(nats_bus::NatsBus::connect(u).await?)
            }
            Some(u) => return Err(BusError::BadUrl(redact(u))),
        };
        Ok(Bus { backend, prefix: Arc::from(topic_prefix), key: None })
    }

    /// `connect` for a service: messages on a Redis or NATS bus are sealed with `key` (required
    /// there, `BusError::KeyRequired` without it) and unsealed ones are dropped on receipt.
    pub async fn connect_signed(url: Option<&str>, topic_prefix: &str, key: Option<BusKey>) -> Result<Bus, BusError> {
        let mut bus = Bus::connect(url, topic_prefix).await?;
        if !matches!(bus.backend, Backend::Memory(_)) {
            bus.key = Some(Arc::new(key.ok_or(BusError::KeyRequired)?));
        }
        Ok(bus)
    }

    fn sealed(&self, topic: &str, payload: Bytes) -> Bytes {
        match &self.key {
            Some(k) => k.seal(topic, &payload),
            None => payload,
        }
    }

    pub fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
            Backend::Nats(_) => "nats",
        }
    }

    fn topic<'a>(&self, topic: &'a str) -> std::borrow::Cow<'a, str> {
        if self.prefix.is_empty() { topic.into() } else { format!("{}{topic}", self.prefix).into() }
    }

    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        let topic = self.topic(topic);
        let payload = self.sealed(&topic, payload);
        let r = match &self.backend {
            Backend::Memory(m) => m.publish(&topic, payload).await,
            Backend::Redis(r) => r.publish(&topic, payload).await,
            Backend::Nats(n) => n.publish(&topic, payload).await,
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
    pub async fn publish_batch(&self, mut items: Vec<(String, Bytes)>) -> Result<(), BusError> {
        let n = items.len() as u64;
        if !self.prefix.is_empty() {
            for (t, _) in &mut items {
                t.insert_str(0, &self.prefix);
            }
        }
        if self.key.is_some() {
            for (t, p) in &mut items {
                *p = self.sealed(t, std::mem::take(p));
            }
        }
        let r = match &self.backend {
            Backend::Memory(m) => {
                let mut r = Ok(());
                for (topic, payload) in items {
                    r = m.publish(&topic, payload).await;
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
            Backend::Redis(r) => r.publish_batch(items).await,
            Backend::Nats(c) => c.publish_batch(items).await,
        };
        match &r {
            Ok(()) => metrics::counter!("bus_published_total").increment(n),
            Err(_) => metrics::counter!("bus_publish_errors_total").increment(1),
        }
        r
    }

    /// Whether the broker answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), BusError> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.ping().await,
            Backend::Nats(n) => n.ping().await,
        }
    }

    /// A new subscription stream with room for `buffer` undelivered messages.
    pub fn subscriber(&self, buffer: usize) -> (Subscriptions, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(buffer);
        let subs = match &self.backend {
            Backend::Memory(m) => SubsBackend::Memory(m.subscriber(tx)),
            Backend::Redis(r) => SubsBackend::Redis(r.subscriber(tx, self.key.clone())),
            Backend::Nats(n) => SubsBackend::Nats(n.subscriber(tx, self.key.clone())),
        };
        (Subscriptions { backend: subs, prefix: self.prefix.clone() }, rx)
    }
}

/// Controls which topics a subscription stream receives. Cloneable; the stream lives until
/// every clone is dropped.
#[derive(Clone)]
pub struct Subscriptions {
    backend: SubsBackend,
    prefix: Arc<str>,
}

#[derive(Clone)]
enum SubsBackend {
    Memory(memory::MemorySubscriptions),
    Redis(redis_bus::RedisSubscriptions),
    Nats(nats_bus::NatsSubscriptions),
}

pub(crate) enum Control {
    Subscribe(Vec<String>, oneshot::Sender<()>),
    Unsubscribe(Vec<String>),
}

impl Subscriptions {
    fn topics(&self, mut topics: Vec<String>) -> Vec<String> {
        if !self.prefix.is_empty() {
            for t in &mut topics {
                t.insert_str(0, &self.prefix);
            }
        }
        topics
    }

    /// Asks for `topics` now, in order with earlier and later (un)subscriptions of this stream; the
    /// returned future completes once the broker has confirmed (or, while it is down, once the topics
    /// are recorded for the resubscription that follows reconnecting). Holding no borrow, it can be
    /// awaited elsewhere, so a bus dispatcher never waits for its own stream.
    pub fn subscribe(&self, topics: Vec<String>) -> impl Future<Output = ()> + Send + 'static {
        let topics = self.topics(topics);
        let confirmed = match &self.backend {
            SubsBackend::Memory(m) => {
                m.subscribe(topics);
                None
            }
            SubsBackend::Redis(r) => r.subscribe(topics),
            SubsBackend::Nats(n) => n.subscribe(topics),
        };
        async move {
            if let Some(rx) = confirmed {
                let _ = rx.await;
            }
        }
    }

    pub fn unsubscribe(&self, topics: Vec<String>) {
        let topics = self.topics(topics);
        match &self.backend {
            SubsBackend::Memory(m) => m.unsubscribe(topics),
            SubsBackend::Redis(r) => r.unsubscribe(topics),
            SubsBackend::Nats(n) => n.unsubscribe(topics),
        }
    }
}

//! Redis pub/sub bus: a reconnecting publisher and one subscriber connection per subscription stream.

use crate::{BusError, Control, Delivery, PUBLISH_TIMEOUT};
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};

#[derive(Clone)]
pub struct RedisBus {
    client: redis::Client,
    // Connected lazily and kept; ConnectionManager reconnects by itself after that.
    conn: Arc<RwLock<Option<ConnectionManager>>>,
    connecting: Arc<Mutex<()>>,
}

impl RedisBus {
    pub(crate) fn new(url: &str) -> Result<Self, BusError> {
        let client = redis::Client::open(url).map_err(|e| BusError::BadUrl(format!("{}: {e}", crate::redact(url))))?;
        Ok(RedisBus { client, conn: Arc::default(), connecting: Arc::default() })
    }

    async fn conn(&self) -> Result<ConnectionManager, BusError> {
        if let Some(c) = self.conn.read().expect("lock").clone() {
            return Ok(c);
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.conn.read().expect("lock").clone() {
            return Ok(c);
        }
        let c = tokio::time::timeout(PUBLISH_TIMEOUT, ConnectionManager::new(self.client.clone()))
            .await
            .map_err(|_| BusError::Unavailable("connect timed out".into()))?
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        *self.conn.write().expect("lock") = Some(c.clone());
        Ok(c)
    }

    pub(crate) async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        let mut c = self.conn().await?;
        let cmd = redis::cmd("PUBLISH").arg(topic).arg(&payload[..]).to_owned();
        match tokio::time::timeout(PUBLISH_TIMEOUT, cmd.query_async::<i64>(&mut c)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(e.to_string())),
            Err(_) => Err(BusError::Unavailable("publish timed out".into())),
        }
    }

    pub(crate) async fn publish_batch(&self, items: Vec<(String, Bytes)>) -> Result<(), BusError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        for (topic, payload) in &items {
            pipe.cmd("PUBLISH").arg(topic).arg(&payload[..]);
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, pipe.query_async::<Vec<i64>>(&mut c)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(e.to_string())),
            Err(_) => Err(BusError::Unavailable("publish timed out".into())),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), BusError> {
        let mut c = self.conn().await?;
        match tokio::time::timeout(PUBLISH_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut c)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(e.to_string())),
            Err(_) => Err(BusError::Unavailable("ping timed out".into())),
        }
    }

    pub(crate) fn subscriber(&self, tx: mpsc::Sender<Delivery>, key: Option<Arc<crate::BusKey>>) -> RedisSubscriptions {
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_subscriber(self.client.clone(), ctl_rx, tx, key));
        RedisSubscriptions { ctl: ctl_tx }
    }
}

#[derive(Clone)]
pub struct RedisSubscriptions {
    ctl: mpsc::UnboundedSender<Control>,
}

impl RedisSubscriptions {
    /// Queues the subscription; the receiver hears when it is in effect.
    pub(crate) fn subscribe(&self, topics: Vec<String>) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::Subscribe(topics, tx)).is_ok().then_some(rx)
    }
    pub(crate) fn unsubscribe(&self, topics: Vec<String>) {
        let _ = self.ctl.send(Control::Unsubscribe(topics));
    }
}

/// Owns one pub/sub connection: applies subscription changes (batched), forwards messages, and on
/// connection loss reconnects with backoff, resubscribes everything, then reports `Resubscribed`.
/// Every failed attempt (connect or SUBSCRIBE) waits a growing, jittered delay before the next, so
/// a broker that accepts connections but refuses subscriptions is not hammered.
async fn run_subscriber(
    client: redis::Client,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    out: mpsc::Sender<Delivery>,
    key: Option<Arc<crate::BusKey>>,
) {
    let mut topics: HashSet<String> = HashSet::new();
    let mut backoff = Duration::from_millis(50);
    let mut retry_in: Option<Duration> = None;
    let mut first = true;
    loop {
        if let Some(delay) = retry_in.take() {
            // While down, keep recording subscription changes so the resubscription is exact.
            let sleep = tokio::time::sleep(crate::jitter(delay));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    c = ctl.recv() => match c {
                        None => return,
                        Some(c) => apply_offline(&mut topics, c),
                    },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        let pubsub = tokio::time::timeout(PUBLISH_TIMEOUT, client.get_async_pubsub()).await;
        let (mut sink, mut stream) = match pubsub {
            Ok(Ok(p)) => p.split(),
            _ => {
                // Subscriptions asked for meanwhile are confirmed without being live: the connection
                // that follows must be reported as a resubscription even if it is the first.
                first = false;
                retry_in = Some(backoff);
                continue;
            }
        };
        if !topics.is_empty() {
            let all: Vec<&String> = topics.iter().collect();
            if let Err(e) = sink.subscribe(&all).await {
                tracing::warn!(error = %e, "redis bus: SUBSCRIBE refused; retrying");
                first = false;
                retry_in = Some(backoff);
                continue;
            }
        }
        let up_since = tokio::time::Instant::now();
        if !first {
            tracing::warn!(topics = topics.len(), "redis bus reconnected and resubscribed");
            metrics::counter!("bus_reconnects_total").increment(1);
            if out.send(Delivery::Resubscribed).await.is_err() {
                return;
            }
        }
        first = false;
        loop {
            tokio::select! {
                c = ctl.recv() => {
                    let Some(c) = c else { return };
                    // Drain whatever else is queued so a burst becomes one SUBSCRIBE round trip.
                    let mut subs = Vec::new();
                    let mut acks = Vec::new();
                    let mut unsubs = Vec::new();
                    let mut next = Some(c);
                    while let Some(c) = next {
                        match c {
                            Control::Subscribe(t, ack) => {
                                for t in t {
                                    if topics.insert(t.clone()) { subs.push(t); }
                                }
                                acks.push(ack);
                            }
                            Control::Unsubscribe(t) => {
                                for t in t {
                                    if topics.remove(&t) { unsubs.push(t); }
                                }
                            }
                        }
                        next = if acks.len() + unsubs.len() < 1024 { ctl.try_recv().ok() } else { None };
                    }
                    let mut ok = true;
                    if !subs.is_empty() {
                        ok &= sink.subscribe(&subs).await.is_ok();
                    }
                    if !unsubs.is_empty() {
                        ok &= sink.unsubscribe(&unsubs).await.is_ok();
                    }
                    for a in acks { let _ = a.send(()); }
                    if !ok { break; }
                }
                m = stream.next() => {
                    let Some(m) = m else { break };
                    let topic: Arc<str> = Arc::from(m.get_channel_name());
                    let payload = Bytes::copy_from_slice(m.get_payload_bytes());
                    metrics::counter!("bus_received_total").increment(1);
                    let Some(payload) = crate::unseal(key.as_deref(), &topic, payload) else { continue };
                    if out.send(Delivery::Message { topic, payload }).await.is_err() {
                        return;
                    }
                }
            }
        }
        tracing::warn!("redis bus subscription connection lost; reconnecting");
        // A connection that held for a while reconnects at once; one that keeps dropping backs off.
        if up_since.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(50);
        } else {
            retry_in = Some(backoff);
        }
    }
}

fn apply_offline(topics: &mut HashSet<String>, c: Control) {
    match c {
        Control::Subscribe(t, ack) => {
            topics.extend(t);
            let _ = ack.send(());
        }
        Control::Unsubscribe(t) => {
            for t in t {
                topics.remove(&t);
            }
        }
    }
}

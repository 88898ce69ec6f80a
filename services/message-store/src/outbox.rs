//! The outbox relay: publishes committed events on the bus, in commit order, and keeps them while
//! the bus is down. Woken right after each commit, and every 500 ms in case another replica wrote.

use crate::store::{RelayError, Store};
use bytes::Bytes;
use chat_bus::Bus;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    /// Starts the relay task.
    pub fn start(store: Store, bus: Bus) -> Outbox {
        let wake = Arc::new(Notify::new());
        tokio::spawn(relay(store, bus, wake.clone()));
        Outbox { wake }
    }

    /// Called after a commit that wrote outbox rows.
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

async fn relay(store: Store, bus: Bus, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(50);
    let mut depth_at: Option<std::time::Instant> = None;
    loop {
        let r = store
            .relay_outbox(256, |items: Vec<(String, String)>| {
                let bus = bus.clone();
                // One span per event (continuing its trace), open while the batch goes out.
                let spans: Vec<tracing::Span> = items
                    .iter()
                    .map(|(topic, payload)| {
                        let span = tracing::info_span!("bus.publish", topic = %topic);
                        if chat_telemetry::tracing_exported()
                            && let Some(env) =
                                chat_protocol::bus::Envelope::decode(Bytes::copy_from_slice(payload.as_bytes()))
                            && let Some(tp) = env.header.traceparent
                        {
                            chat_telemetry::set_remote_parent(&span, &tp);
                        }
                        span
                    })
                    .collect();
                let batch: Vec<(String, Bytes)> = items.into_iter().map(|(t, p)| (t, Bytes::from(p))).collect();
                async move {
                    let r = bus.publish_batch(batch).await.map_err(|e| e.to_string());
                    drop(spans);
                    r
                }
            })
            .await;
        match r {
            // A full batch: more may be waiting.
            Ok(Some(n)) if n >= 256 => continue,
            Ok(Some(_)) => {
                backoff = Duration::from_millis(50);
                let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
            }
            // Another replica is relaying; look again soon.
            Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => {
                if let RelayError::Publish(_) = e {
                    metrics::counter!("outbox_publish_failures_total").increment(1);
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay paused");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        // Counting the table costs a scan: once a second is enough for a gauge, and keeps the count
        // off the path between a commit and its publish.
        if depth_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            depth_at = Some(std::time::Instant::now());
            if let Ok(depth) = store.outbox_depth().await {
                metrics::gauge!("outbox_depth").set(depth as f64);
            }
        }
    }
}

//! NATS bus: one client connection (reconnecting; the client restores subscriptions by itself),
//! publishes confirmed with a flush, and a forwarding task per subscribed subject.

use crate::{BusError, Control, Delivery, PUBLISH_TIMEOUT};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;

#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    /// Fires after every reconnect, so each subscription stream can report `Resubscribed`.
    reconnected: broadcast::Sender<()>,
}

impl NatsBus {
    pub(crate) async fn connect(url: &str) -> Result<Self, BusError> {
        let (reconnected, _) = broadcast::channel(16);
        let tx = reconnected.clone();
        // Credentials in the URL (`nats://user:password@host`, or `nats://token@host`) are given to
        // the client as options: it does not read them from the URL itself.
        let (url, options) = options_for(url);
        let client = options
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            let _ = tx.send(());
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("nats bus disconnected; reconnecting");
                        }
                        _ => {}
                    }
                }
            })
            .connect(url.as_str())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(NatsBus { client, reconnected })
    }

    /// One message: a batch of one (publish, then flush: the outbox may delete once it returns).
    pub(crate) async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        self.publish_batch(vec![(topic.to_string(), payload)]).await
    }

    pub(crate) async fn publish_batch(&self, items: Vec<(String, Bytes)>) -> Result<(), BusError> {
        let client = self.client.clone();
        let r = tokio::time::timeout(PUBLISH_TIMEOUT, async move {
            for (subject, payload) in items {
                client.publish(subject, payload).await.map_err(|e| e.to_string())?;
            }
            client.flush().await.map_err(|e| e.to_string())
        })
        .await;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(e)),
            Err(_) => Err(BusError::Unavailable("publish timed out".into())),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), BusError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(BusError::Unavailable(format!("nats {other:?}"))),
        }
    }

    pub(crate) fn subscriber(&self, tx: mpsc::Sender<Delivery>, key: Option<Arc<crate::BusKey>>) -> NatsSubscriptions {
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(self.client.clone(), self.reconnected.subscribe(), ctl_rx, tx, key));
        NatsSubscriptions { ctl: ctl_tx }
    }
}

#[derive(Clone)]
pub struct NatsSubscriptions {
    ctl: mpsc::UnboundedSender<Control>,
}

impl NatsSubscriptions {
    /// Queues the subscription; the receiver hears when it is in effect.
    pub(crate) fn subscribe(&self, topics: Vec<String>) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::Subscribe(topics, tx)).is_ok().then_some(rx)
    }
    pub(crate) fn unsubscribe(&self, topics: Vec<String>) {
        let _ = self.ctl.send(Control::Unsubscribe(topics));
    }
}

/// Owns the subscriptions of one stream; each subject's messages are forwarded by a small task
/// (dropping it unsubscribes). Ends when every `NatsSubscriptions` clone is gone.
async fn run(
    client: async_nats::Client,
    mut reconnected: broadcast::Receiver<()>,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    out: mpsc::Sender<Delivery>,
    key: Option<Arc<crate::BusKey>>,
) {
    let mut subs: HashMap<String, AbortHandle> = HashMap::new();
    loop {
        tokio::select! {
            c = ctl.recv() => match c {
                None => break,
                Some(Control::Subscribe(topics, ack)) => {
                    for t in topics {
                        if subs.contains_key(&t) {
                            continue;
                        }
                        match client.subscribe(t.clone()).await {
                            Ok(mut s) => {
                                let out = out.clone();
                                let key = key.clone();
                                let topic: Arc<str> = Arc::from(t.as_str());
                                let h = tokio::spawn(async move {
                                    while let Some(m) = s.next().await {
                                        metrics::counter!("bus_received_total").increment(1);
                                        let Some(payload) = crate::unseal(key.as_deref(), &topic, m.payload)
                                        else {
                                            continue;
                                        };
                                        let d = Delivery::Message { topic: topic.clone(), payload };
                                        if out.send(d).await.is_err() {
                                            break;
                                        }
                                    }
                                });
                                subs.insert(t, h.abort_handle());
                            }
                            Err(e) => tracing::warn!(topic = %t, error = %e, "nats subscribe failed"),
                        }
                    }
                    // SUB is only queued by the client: the flush's PING/PONG makes sure the server has
                    // it before the caller relies on it (an edge sends `hello` after this returns).
                    let _ = tokio::time::timeout(PUBLISH_TIMEOUT, client.flush()).await;
                    let _ = ack.send(());
                }
                Some(Control::Unsubscribe(topics)) => {
                    for t in topics {
                        if let Some(h) = subs.remove(&t) {
                            h.abort();
                        }
                    }
                }
            },
            r = reconnected.recv() => {
                if r.is_ok() {
                    metrics::counter!("bus_reconnects_total").increment(1);
                    if out.send(Delivery::Resubscribed).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    for (_, h) in subs {
        h.abort();
    }
}

/// A plain NATS client for other uses of the bus's broker (presence keeps its state in JetStream
/// there): the same URL forms and credentials as the bus, reconnecting, first connect bounded.
pub async fn client(url: &str) -> Result<async_nats::Client, BusError> {
    let (url, options) = options_for(url);
    options
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(url.as_str())
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))
}

/// The URL without credentials and client options carrying them.
fn options_for(url: &str) -> (String, async_nats::ConnectOptions) {
    let (url, auth) = split_credentials(url);
    let options = async_nats::ConnectOptions::new();
    let options = match auth {
        Some((user, Some(password))) => options.user_and_password(user, password),
        Some((token, None)) => options.token(token),
        None => options,
    };
    (url, options)
}

/// Splits `scheme://user:password@host…` into the URL without credentials and the (percent-decoded)
/// user and password; a lone user part is a token.
fn split_credentials(url: &str) -> (String, Option<(String, Option<String>)>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return (url.to_string(), None) };
    let (creds, host) = (&rest[..at], &rest[at + 1..]);
    let auth = match creds.split_once(':') {
        Some((u, p)) => (percent_decode(u), Some(percent_decode(p))),
        None => (percent_decode(creds), None),
    };
    (format!("{scheme}://{host}"), Some(auth))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_leave_the_url() {
        let (u, a) = super::split_credentials("tls://chat:s%40cret@127.0.0.1:4222");
        assert_eq!(u, "tls://127.0.0.1:4222");
        assert_eq!(a, Some(("chat".into(), Some("s@cret".into()))));
        let (u, a) = super::split_credentials("nats://tok@host:4222/x");
        assert_eq!((u.as_str(), a), ("nats://host:4222/x", Some(("tok".into(), None))));
        assert_eq!(super::split_credentials("nats://host:4222").1, None);
    }
}

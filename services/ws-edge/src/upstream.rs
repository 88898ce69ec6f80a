//! What ws-edge asks of other services. In microservices these are HTTP calls to their internal
//! routes; the all-in-one binary implements the same traits with direct calls into the libraries.

use axum::http::StatusCode;
use chat_common::ApiError;
use chat_protocol::internal::{
    BatchOutcome, BatchSend, MAX_SEND_BATCH, Membership, SendBatch, SendBatchResult, UserConversations,
};
use chat_protocol::{Message, MessagePage};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

#[async_trait::async_trait]
pub trait MessageStore: Send + Sync {
    /// The user's conversations with their last seq and members.
    async fn user_conversations(&self, user: Uuid) -> Result<Vec<Membership>, ApiError>;
    /// Stores a message (durable when this returns).
    async fn send(&self, user: Uuid, cid: Uuid, body: &str, client_msg_id: Option<&str>) -> Result<Message, ApiError>;
    /// Messages after `after` (or the latest, when None), ascending; 404 if `user` is not a member.
    async fn history(&self, user: Uuid, cid: Uuid, after: Option<i64>, limit: i64) -> Result<MessagePage, ApiError>;
    async fn read(&self, user: Uuid, cid: Uuid, seq: i64) -> Result<(), ApiError>;
}

#[async_trait::async_trait]
pub trait Presence: Send + Sync {
    /// Reports connection changes since the last report, plus liveness (`full` = every user online
    /// here, sent on start and each heartbeat so a restarted presence replica or edge converges).
    async fn report(&self, edge: &str, report: &PresenceReport) -> Result<(), ApiError>;
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PresenceReport {
    /// Users who gained their first connection on this edge.
    pub online: Vec<Uuid>,
    /// Users who lost their last connection on this edge.
    pub offline: Vec<Uuid>,
    /// Every user online on this edge (heartbeats), replacing what presence holds for the edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<Vec<Uuid>>,
    /// Heartbeat interval, so presence knows when this edge counts as dead.
    pub heartbeat_ms: u64,
}

/// An HTTP client of the internal API: every request carries the service credential.
fn client(token: &chat_common::internal::InternalToken) -> reqwest::Client {
    chat_authn::internal_client(token, Duration::from_secs(10)).pool_max_idle_per_host(64).build().expect("http client")
}

/// Turns a non-2xx answer into the same problem the service gave.
async fn problem(resp: reqwest::Response) -> ApiError {
    #[derive(Deserialize)]
    struct P {
        code: String,
        detail: Option<String>,
    }
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let p = resp.json::<P>().await.ok();
    let detail = p.as_ref().and_then(|p| p.detail.clone()).unwrap_or_default();
    ApiError::new(status, known_code(p.as_ref().map(|p| p.code.as_str())), detail)
}

/// The problem codes of the public contract (anything else is `internal`).
fn known_code(code: Option<&str>) -> &'static str {
    match code {
        Some("validation_failed") => "validation_failed",
        Some("not_found") => "not_found",
        Some("forbidden") => "forbidden",
        Some("conflict") => "conflict",
        Some("rate_limited") => "rate_limited",
        Some("unavailable") => "unavailable",
        Some("unauthorized") => "unauthorized",
        _ => "internal",
    }
}

/// Carries the current trace to the called service.
fn traced(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match chat_telemetry::current_traceparent() {
        Some(tp) => req.header("traceparent", tp),
        None => req,
    }
}

/// A failed call to another service. The client learns only that it may retry: the error's text
/// names internal addresses, so it goes to the log, never into a frame.
pub(crate) fn unreachable(e: reqwest::Error) -> ApiError {
    tracing::warn!(error = %e, "internal call failed");
    ApiError::unavailable("a service is unreachable; retry shortly")
}

pub struct HttpMessageStore {
    http: reqwest::Client,
    base: String,
    /// Sends waiting for the batcher, which is started by the first send.
    sends: std::sync::OnceLock<mpsc::Sender<PendingSend>>,
}

struct PendingSend {
    send: BatchSend,
    reply: oneshot::Sender<Result<Message, ApiError>>,
}

/// Send requests in flight to the message-store at once per edge. When all are busy, the sends that
/// arrive meanwhile go together in the next request (up to `MAX_SEND_BATCH`): one HTTP round trip for
/// many sends under load, none added for a lone send.
const SENDS_IN_FLIGHT: usize = 4;

impl HttpMessageStore {
    pub fn new(base: &str, token: &chat_common::internal::InternalToken) -> Self {
        HttpMessageStore {
            http: client(token),
            base: base.trim_end_matches('/').to_string(),
            sends: Default::default(),
        }
    }

    fn sends(&self) -> &mpsc::Sender<PendingSend> {
        self.sends.get_or_init(|| {
            let (tx, rx) = mpsc::channel(MAX_SEND_BATCH * SENDS_IN_FLIGHT * 4);
            tokio::spawn(batch_sends(self.http.clone(), self.base.clone(), rx));
            tx
        })
    }
}

/// Takes waiting sends as a permit frees up and posts them: one alone to the single-send route, more
/// to the batch route.
async fn batch_sends(http: reqwest::Client, base: String, mut rx: mpsc::Receiver<PendingSend>) {
    let permits = Arc::new(Semaphore::new(SENDS_IN_FLIGHT));
    let mut buf = Vec::with_capacity(MAX_SEND_BATCH);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        if rx.recv_many(&mut buf, MAX_SEND_BATCH).await == 0 {
            return;
        }
        let batch = std::mem::take(&mut buf);
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            post_sends(&http, &base, batch).await;
            drop(permit);
        });
    }
}

async fn post_sends(http: &reqwest::Client, base: &str, mut batch: Vec<PendingSend>) {
    metrics::histogram!("store_send_batch_size").record(batch.len() as f64);
    if batch.len() == 1 {
        let p = batch.pop().expect("one send");
        let s = &p.send;
        let url = format!("{base}/internal/v1/conversations/{}/messages", s.conversation_id);
        let body = SingleSend { sender_id: s.sender_id, body: &s.body, client_msg_id: s.client_msg_id.as_deref() };
        let mut req = http.post(url).json(&body);
        if let Some(tp) = &s.traceparent {
            req = req.header("traceparent", tp);
        }
        let r = match req.send().await {
            Ok(resp) if resp.status().is_success() => resp.json().await.map_err(unreachable),
            Ok(resp) => Err(problem(resp).await),
            Err(e) => Err(unreachable(e)),
        };
        let _ = p.reply.send(r);
        return;
    }
    let (sends, replies): (Vec<BatchSend>, Vec<_>) = batch.into_iter().map(|p| (p.send, p.reply)).unzip();
    let resp = http.post(format!("{base}/internal/v1/messages/batch")).json(&SendBatch { sends }).send().await;
    let results: Result<SendBatchResult, ApiError> = match resp {
        Ok(resp) if resp.status().is_success() => resp.json().await.map_err(unreachable),
        Ok(resp) => Err(problem(resp).await),
        Err(e) => Err(unreachable(e)),
    };
    match results {
        Ok(r) if r.results.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(r.results) {
                let _ = reply.send(match outcome {
                    BatchOutcome::Message(m) => Ok(m),
                    BatchOutcome::Error(p) => {
                        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_GATEWAY);
                        let mut e = ApiError::new(status, known_code(Some(&p.code)), p.detail);
                        e.retry_after = p.retry_after;
                        Err(e)
                    }
                });
            }
        }
        Ok(_) => {
            let e = ApiError::unavailable("message-store answered a batch with the wrong number of results");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[derive(serde::Serialize)]
struct SingleSend<'a> {
    sender_id: Uuid,
    body: &'a str,
    client_msg_id: Option<&'a str>,
}

#[async_trait::async_trait]
impl MessageStore for HttpMessageStore {
    async fn user_conversations(&self, user: Uuid) -> Result<Vec<Membership>, ApiError> {
        let url = format!("{}/internal/v1/users/{user}/conversations", self.base);
        let resp = self.http.get(url).send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(problem(resp).await);
        }
        let list: UserConversations = resp.json().await.map_err(unreachable)?;
        Ok(list.conversations)
    }

    async fn send(&self, user: Uuid, cid: Uuid, body: &str, client_msg_id: Option<&str>) -> Result<Message, ApiError> {
        let (reply, rx) = oneshot::channel();
        let send = BatchSend {
            conversation_id: cid,
            sender_id: user,
            body: body.to_owned(),
            client_msg_id: client_msg_id.map(str::to_owned),
            traceparent: chat_telemetry::current_traceparent(),
        };
        if self.sends().send(PendingSend { send, reply }).await.is_err() {
            return Err(ApiError::unavailable("send batcher stopped"));
        }
        rx.await.unwrap_or_else(|_| Err(ApiError::unavailable("send batcher stopped")))
    }

    async fn history(&self, user: Uuid, cid: Uuid, after: Option<i64>, limit: i64) -> Result<MessagePage, ApiError> {
        let url = format!("{}/internal/v1/conversations/{cid}/messages", self.base);
        let mut q = vec![("user_id", user.to_string()), ("limit", limit.to_string())];
        if let Some(a) = after {
            q.push(("after_seq", a.to_string()));
        }
        let resp = traced(self.http.get(url).query(&q)).send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(problem(resp).await);
        }
        resp.json().await.map_err(unreachable)
    }

    async fn read(&self, user: Uuid, cid: Uuid, seq: i64) -> Result<(), ApiError> {
        let url = format!("{}/internal/v1/conversations/{cid}/read", self.base);
        let resp = self
            .http
            .post(url)
            .json(&serde_json::json!({ "user_id": user, "seq": seq }))
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(problem(resp).await);
        }
        Ok(())
    }
}

pub struct HttpPresence {
    http: reqwest::Client,
    base: String,
}

impl HttpPresence {
    pub fn new(base: &str, token: &chat_common::internal::InternalToken) -> Self {
        HttpPresence { http: client(token), base: base.trim_end_matches('/').to_string() }
    }
}

#[async_trait::async_trait]
impl Presence for HttpPresence {
    async fn report(&self, edge: &str, report: &PresenceReport) -> Result<(), ApiError> {
        let url = format!("{}/internal/v1/edges/{edge}/report", self.base);
        let resp = self.http.post(url).json(report).send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(problem(resp).await);
        }
        Ok(())
    }
}

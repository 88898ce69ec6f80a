//! What ws-edge asks of other services. In microservices these are HTTP calls to their internal
//! routes; the all-in-one binary implements the same traits with direct calls into the libraries.

use axum::http::StatusCode;
use chat_common::ApiError;
use chat_protocol::internal::{Membership, UserConversations};
use chat_protocol::{Message, MessagePage};
use serde::Deserialize;
use std::time::Duration;
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

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(64).build().expect("http client")
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
    let code: &'static str = match p.as_ref().map(|p| p.code.as_str()) {
        Some("validation_failed") => "validation_failed",
        Some("not_found") => "not_found",
        Some("forbidden") => "forbidden",
        Some("conflict") => "conflict",
        Some("rate_limited") => "rate_limited",
        Some("unavailable") => "unavailable",
        Some("unauthorized") => "unauthorized",
        _ => "internal",
    };
    ApiError::new(status, code, p.and_then(|p| p.detail).unwrap_or_default())
}

/// Carries the current trace to the called service.
fn traced(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match chat_telemetry::current_traceparent() {
        Some(tp) => req.header("traceparent", tp),
        None => req,
    }
}

fn unreachable(e: reqwest::Error) -> ApiError {
    ApiError::unavailable(format!("upstream unreachable: {e}"))
}

pub struct HttpMessageStore {
    http: reqwest::Client,
    base: String,
}

impl HttpMessageStore {
    pub fn new(base: &str) -> Self {
        HttpMessageStore { http: client(), base: base.trim_end_matches('/').to_string() }
    }
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
        let url = format!("{}/internal/v1/conversations/{cid}/messages", self.base);
        let req = serde_json::json!({ "sender_id": user, "body": body, "client_msg_id": client_msg_id });
        let resp = traced(self.http.post(url).json(&req)).send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(problem(resp).await);
        }
        resp.json().await.map_err(unreachable)
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
    pub fn new(base: &str) -> Self {
        HttpPresence { http: client(), base: base.trim_end_matches('/').to_string() }
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

//! Bodies of the internal service-to-service routes (never routed by the public gateway).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One of a user's conversations as an edge needs it: where it stands and who is in it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Membership {
    pub id: Uuid,
    pub last_seq: i64,
    pub members: Vec<Uuid>,
}

/// `GET /internal/v1/users/{uid}/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserConversations {
    pub conversations: Vec<Membership>,
}

/// A user as the old (Django Channels) WebSocket dialect shows them: integer id when imported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LegacyUser {
    pub id: Uuid,
    pub username: String,
    pub legacy_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyUsers {
    pub users: Vec<LegacyUser>,
}

/// An imported conversation's new id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyConversation {
    pub id: Uuid,
}

/// One send of `POST /internal/v1/messages/batch`: an edge's concurrent sends in one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchSend {
    pub conversation_id: Uuid,
    pub sender_id: Uuid,
    pub body: String,
    #[serde(default)]
    pub client_msg_id: Option<String>,
    /// The W3C trace context of the send (one request carries many traces).
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// Sends per `POST /internal/v1/messages/batch` at most: 32 of the longest bodies stay under the
/// services' 1 MiB body limit.
pub const MAX_SEND_BATCH: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendBatch {
    pub sends: Vec<BatchSend>,
}

/// The outcome of one send of a batch: the stored message or the problem a single send would get.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchOutcome {
    Message(crate::Message),
    Error(BatchProblem),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchProblem {
    pub status: u16,
    pub code: String,
    pub detail: String,
    #[serde(default)]
    pub retry_after: Option<u64>,
}

/// The answer of `POST /internal/v1/messages/batch`: one outcome per send, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendBatchResult {
    pub results: Vec<BatchOutcome>,
}

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

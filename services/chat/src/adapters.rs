//! In-process implementations of the traits services use to call each other: the all-in-one
//! binary wires the libraries together directly instead of over HTTP.

use chat_common::ApiError;
use chat_protocol::{Message, MessagePage};
use std::collections::HashSet;
use uuid::Uuid;

/// ws-edge → message-store, as direct calls into the message-store's service layer.
pub struct LocalStore(pub chat_message_store::AppState);

#[async_trait::async_trait]
impl chat_ws_edge::upstream::MessageStore for LocalStore {
    async fn user_conversations(&self, user: Uuid) -> Result<Vec<chat_protocol::internal::Membership>, ApiError> {
        chat_message_store::service::user_conversations(&self.0, user).await
    }
    async fn send(&self, user: Uuid, cid: Uuid, body: &str, client_msg_id: Option<&str>) -> Result<Message, ApiError> {
        chat_message_store::service::send(&self.0, user, cid, body, client_msg_id).await.map(|(m, _)| m)
    }
    async fn history(&self, user: Uuid, cid: Uuid, after: Option<i64>, limit: i64) -> Result<MessagePage, ApiError> {
        chat_message_store::service::history(&self.0, user, cid, after, None, limit).await
    }
    async fn read(&self, user: Uuid, cid: Uuid, seq: i64) -> Result<(), ApiError> {
        chat_message_store::service::read(&self.0, user, cid, seq).await
    }
}

/// ws-edge → presence.
pub struct LocalPresence(pub chat_presence::AppState);

#[async_trait::async_trait]
impl chat_ws_edge::upstream::Presence for LocalPresence {
    async fn report(&self, edge: &str, r: &chat_ws_edge::upstream::PresenceReport) -> Result<(), ApiError> {
        let report = chat_presence::Report {
            online: r.online.clone(),
            offline: r.offline.clone(),
            full: r.full.clone(),
            heartbeat_ms: r.heartbeat_ms,
        };
        chat_presence::apply_report(&self.0, edge, &report).await.map_err(ApiError::unavailable)
    }
}

/// message-store → auth: which user ids exist.
pub struct LocalDirectory(pub chat_auth::store::Store);

#[async_trait::async_trait]
impl chat_message_store::directory::UserDirectory for LocalDirectory {
    async fn existing(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, String> {
        self.0.existing(ids).await.map(|v| v.into_iter().collect()).map_err(|e| e.to_string())
    }
}

/// The old WebSocket dialect's lookups, straight from the stores and the presence state.
pub struct LocalLegacy {
    pub auth: chat_auth::store::Store,
    pub store: chat_message_store::AppState,
    pub presence: chat_presence::AppState,
}

#[async_trait::async_trait]
impl chat_ws_edge::legacy::LegacyDirectory for LocalLegacy {
    async fn conversation(&self, legacy_id: i64) -> Result<Option<Uuid>, ApiError> {
        self.store.store.legacy_conversation(legacy_id).await.map_err(|e| ApiError::unavailable(e.to_string()))
    }
    async fn users(&self, ids: &[Uuid]) -> Result<Vec<chat_protocol::internal::LegacyUser>, ApiError> {
        let users = self.auth.legacy_users(ids).await.map_err(|e| ApiError::unavailable(e.to_string()))?;
        Ok(users
            .into_iter()
            .map(|(id, username, legacy_id)| chat_protocol::internal::LegacyUser { id, username, legacy_id })
            .collect())
    }
    async fn online(&self, _token: &str, ids: &[Uuid]) -> Result<Vec<Uuid>, ApiError> {
        let entries = self.presence.presence.query(ids).await.map_err(ApiError::unavailable)?;
        Ok(entries
            .into_iter()
            .filter(|p| p.status == chat_protocol::PresenceStatus::Online)
            .map(|p| p.user_id)
            .collect())
    }
}

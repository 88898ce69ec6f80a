//! The Django Channels backend's WebSocket dialect, `/ws/chat/{conversation_id}/?token=<access token>`,
//! spoken over the new system so old clients keep working while they move to `/v1/ws`. Identity comes
//! from the token only; membership is checked (the old backend did not); old integer ids of imported
//! conversations and users are accepted and shown through the import's mapping.

use crate::Edge;
use crate::hub::close;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use chat_authn::VerifyError;
use chat_common::ApiError;
use chat_protocol::frames::TypingState;
use chat_protocol::internal::{LegacyConversation, LegacyUser, LegacyUsers};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Close codes of the old dialect.
const TOKEN_EXPIRED: u16 = 4000;
const TOKEN_INVALID: u16 = 4001;
const NO_TOKEN: u16 = 4002;
/// Not in the old backend (it let anyone in): the conversation does not exist or the user is not in it.
const NOT_A_MEMBER: u16 = 4003;

/// What the old dialect needs from the other services.
#[async_trait::async_trait]
pub trait LegacyDirectory: Send + Sync {
    /// The new id of an imported conversation.
    async fn conversation(&self, legacy_id: i64) -> Result<Option<Uuid>, ApiError>;
    /// Usernames and old ids of users.
    async fn users(&self, ids: &[Uuid]) -> Result<Vec<LegacyUser>, ApiError>;
    /// Which of `ids` are online (asked with the connecting user's token).
    async fn online(&self, token: &str, ids: &[Uuid]) -> Result<Vec<Uuid>, ApiError>;
}

/// The microservices' implementation: internal routes of message-store, auth and presence.
pub struct HttpLegacyDirectory {
    http: reqwest::Client,
    store: String,
    auth: String,
    presence: String,
}

impl HttpLegacyDirectory {
    pub fn new(store: &str, auth: &str, presence: &str, token: &chat_common::internal::InternalToken) -> Self {
        let trim = |s: &str| s.trim_end_matches('/').to_string();
        let http = chat_authn::internal_client(token, Duration::from_secs(10)).build().expect("http client");
        HttpLegacyDirectory { http, store: trim(store), auth: trim(auth), presence: trim(presence) }
    }
}

fn upstream(e: reqwest::Error) -> ApiError {
    crate::upstream::unreachable(e)
}

#[async_trait::async_trait]
impl LegacyDirectory for HttpLegacyDirectory {
    async fn conversation(&self, legacy_id: i64) -> Result<Option<Uuid>, ApiError> {
        let url = format!("{}/internal/v1/legacy/conversations/{legacy_id}", self.store);
        let resp = self.http.get(url).send().await.map_err(upstream)?;
        match resp.status().as_u16() {
            404 => Ok(None),
            s if (200..300).contains(&s) => Ok(Some(resp.json::<LegacyConversation>().await.map_err(upstream)?.id)),
            s => Err(ApiError::unavailable(format!("message-store answered {s}"))),
        }
    }

    async fn users(&self, ids: &[Uuid]) -> Result<Vec<LegacyUser>, ApiError> {
        let url = format!("{}/internal/v1/legacy/users", self.auth);
        let resp = self.http.post(url).json(&json!({ "ids": ids })).send().await.map_err(upstream)?;
        if !resp.status().is_success() {
            return Err(ApiError::unavailable(format!("auth answered {}", resp.status())));
        }
        Ok(resp.json::<LegacyUsers>().await.map_err(upstream)?.users)
    }

    async fn online(&self, _token: &str, ids: &[Uuid]) -> Result<Vec<Uuid>, ApiError> {
        let list: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let url = format!("{}/internal/v1/presence", self.presence);
        let resp = self.http.get(url).query(&[("user_ids", list.join(","))]).send().await.map_err(upstream)?;
        if !resp.status().is_success() {
            return Err(ApiError::unavailable(format!("presence answered {}", resp.status())));
        }
        let list: chat_protocol::PresenceList = resp.json().await.map_err(upstream)?;
        Ok(list
            .presence
            .into_iter()
            .filter(|p| p.status == chat_protocol::PresenceStatus::Online)
            .map(|p| p.user_id)
            .collect())
    }
}

type LegacyState = (Edge, Arc<dyn LegacyDirectory>);

pub fn router(edge: Edge, directory: Arc<dyn LegacyDirectory>) -> Router {
    Router::new()
        .route("/ws/chat/{conversation_id}/", get(upgrade))
        .route("/ws/chat/{conversation_id}", get(upgrade))
        .with_state((edge, directory))
}

async fn upgrade(
    State((edge, directory)): State<LegacyState>,
    Path(conversation): Path<String>,
    Query(mut q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    // The old backend accepted first and closed with its codes; old clients expect those codes.
    let token = q.remove("token").filter(|t| !t.is_empty());
    ws.max_message_size(crate::MAX_FRAME_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| session(edge, directory, conversation, token, socket))
}

async fn close_with(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

/// A user as the old dialect shows one: `{"id": <old integer id, or the new id>, "username"}`.
fn old_user(u: &LegacyUser) -> Value {
    match u.legacy_id {
        Some(n) => json!({"id": n, "username": u.username}),
        None => json!({"id": u.id, "username": u.username}),
    }
}

struct Names {
    known: HashMap<Uuid, Value>,
    directory: Arc<dyn LegacyDirectory>,
}

impl Names {
    async fn get(&mut self, ids: &[Uuid]) -> Vec<Value> {
        let missing: Vec<Uuid> = ids.iter().filter(|id| !self.known.contains_key(id)).copied().collect();
        if !missing.is_empty()
            && let Ok(users) = self.directory.users(&missing).await
        {
            for u in users {
                self.known.insert(u.id, old_user(&u));
            }
        }
        ids.iter().map(|id| self.known.get(id).cloned().unwrap_or_else(|| json!({"id": id, "username": ""}))).collect()
    }
    async fn one(&mut self, id: Uuid) -> Value {
        self.get(&[id]).await.pop().unwrap_or(Value::Null)
    }
}

async fn session(
    edge: Edge,
    directory: Arc<dyn LegacyDirectory>,
    conversation: String,
    token: Option<String>,
    socket: WebSocket,
) {
    let hub = edge.hub.clone();
    let Some(token) = token else {
        return close_with(socket, NO_TOKEN, "no token").await;
    };
    let claims = match hub.verifier.verify(&token).await {
        Ok(c) => c,
        Err(VerifyError::Expired) => return close_with(socket, TOKEN_EXPIRED, "token expired").await,
        Err(_) => return close_with(socket, TOKEN_INVALID, "invalid token").await,
    };
    let user = claims.sub;
    let cid = match conversation.parse::<i64>() {
        Ok(n) => directory.conversation(n).await.ok().flatten(),
        Err(_) => Uuid::parse_str(&conversation).ok(),
    };
    // One answer for "no such conversation" and "not yours": outsiders learn nothing about which
    // old ids exist.
    let Some(cid) = cid else {
        return close_with(socket, NOT_A_MEMBER, "not a member of this conversation").await;
    };
    let reg = match hub.register(user, claims.sid, false).await {
        Ok(r) => r,
        Err(_) => return close_with(socket, 1011, "try again").await,
    };
    if !hub.is_member(user, cid) {
        hub.unregister(reg.id);
        return close_with(socket, NOT_A_MEMBER, "not a member of this conversation").await;
    }
    metrics::counter!("ws_legacy_connects_total").increment(1);
    let mut names = Names { known: HashMap::new(), directory: directory.clone() };
    let me = names.one(user).await;
    let members = hub.conversation_members(cid);
    let mut online: HashSet<Uuid> = directory.online(&token, &members).await.unwrap_or_default().into_iter().collect();
    online.insert(user);
    let (mut sink, mut stream) = socket.split();
    let heartbeat = hub.limits.heartbeat;
    // Every write is bounded by the heartbeat window: a client that stops reading is closed.
    let stall = 2 * heartbeat;
    let status = online_status(&mut names, &online, "online").await;
    let mut ok = send_bounded(&mut sink, Message::Text(status.to_string().into()), stall).await;
    let mut ping = tokio::time::interval(heartbeat);
    let mut last_seen = Instant::now();
    let mut last_typing: Option<Instant> = None;
    let expires = tokio::time::Instant::now()
        + Duration::from_secs(u64::try_from(claims.exp - chat_authn::now_secs()).unwrap_or(0));
    let mut close = None;
    while ok {
        if let Some(code) = reg.signal.requested() {
            close = Some((code, ""));
            break;
        }
        tokio::select! {
            frame = reg.queue.pop() => {
                let Some(frame) = frame else { break };
                let Ok(ev) = serde_json::from_str::<Value>(frame.as_str()) else { continue };
                match translate(&ev, cid, user, &me, &mut names, &mut online, &hub).await {
                    Translated::Send(out) => ok = send_bounded(&mut sink, Message::Text(out.to_string().into()), stall).await,
                    Translated::Removed => {
                        close = Some((NOT_A_MEMBER, "not a member of this conversation"));
                        break;
                    }
                    Translated::Nothing => {}
                }
            }
            msg = stream.next() => {
                last_seen = Instant::now();
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Some(reply) = handle_client(t.as_str(), cid, user, &hub, &mut last_typing).await {
                            ok = send_bounded(&mut sink, Message::Text(reply.to_string().into()), stall).await;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        close = Some((close::UNSUPPORTED, ""));
                        break;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
            _ = reg.signal.notify.notified() => {}
            // The old backend never looked at expiry again; a connection ends with its token.
            _ = tokio::time::sleep_until(expires) => {
                close = Some((TOKEN_EXPIRED, "token expired"));
                break;
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > heartbeat * 2 {
                    break;
                }
                ok = send_bounded(&mut sink, Message::Ping(Default::default()), stall).await;
            }
        }
    }
    if !ok {
        // A write stalled or failed: nothing more can be written; the reader is a slow one.
        reg.signal.close(close::SLOW_READER);
    } else if let Some((code, reason)) = close {
        let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
        let _ = send_bounded(&mut sink, frame, Duration::from_secs(2)).await;
    }
    hub.unregister(reg.id);
}

/// One write to the socket, given up after `limit` (a peer that stopped reading).
async fn send_bounded(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    msg: Message,
    limit: Duration,
) -> bool {
    matches!(tokio::time::timeout(limit, sink.send(msg)).await, Ok(Ok(())))
}

enum Translated {
    Send(Value),
    Removed,
    Nothing,
}

async fn online_status(names: &mut Names, online: &HashSet<Uuid>, status: &str) -> Value {
    let mut ids: Vec<Uuid> = online.iter().copied().collect();
    ids.sort();
    json!({"type": "online_status", "online_users": names.get(&ids).await, "status": status})
}

/// A new-protocol event for this user, as the old dialect says it (if it has a way to).
async fn translate(
    ev: &Value,
    cid: Uuid,
    user: Uuid,
    me: &Value,
    names: &mut Names,
    online: &mut HashSet<Uuid>,
    hub: &crate::hub::Hub,
) -> Translated {
    let in_conv = |v: &Value| v.as_str().and_then(|s| Uuid::parse_str(s).ok()) == Some(cid);
    let uuid = |v: &Value| v.as_str().and_then(|s| Uuid::parse_str(s).ok());
    match ev["type"].as_str() {
        Some("message") if in_conv(&ev["message"]["conversation_id"]) && ev["message"]["deleted_at"].is_null() => {
            let m = &ev["message"];
            let Some(sender) = uuid(&m["sender_id"]) else { return Translated::Nothing };
            Translated::Send(json!({
                "type": "chat_message",
                "message": m["body"],
                "user": names.one(sender).await,
                "timestamp": m["created_at"],
            }))
        }
        Some("typing") if in_conv(&ev["conversation_id"]) => match uuid(&ev["user_id"]) {
            Some(typer) if typer != user => Translated::Send(json!({
                "type": "typing",
                "user": names.one(typer).await,
                "receiver": me["id"],
                "is_typing": ev["state"] == "start",
            })),
            _ => Translated::Nothing,
        },
        Some("presence") => {
            let Some(who) = uuid(&ev["user_id"]) else { return Translated::Nothing };
            if !hub.conversation_members(cid).contains(&who) {
                return Translated::Nothing;
            }
            let status = if ev["status"] == "online" { "online" } else { "offline" };
            if status == "online" {
                online.insert(who);
            } else {
                online.remove(&who);
            }
            Translated::Send(online_status(names, online, status).await)
        }
        Some("conversation") if !hub.is_member(user, cid) => Translated::Removed,
        _ => Translated::Nothing,
    }
}

/// An old-dialect frame from the client. Identity is the token's, whatever the frame says.
async fn handle_client(
    text: &str,
    cid: Uuid,
    user: Uuid,
    hub: &Arc<crate::hub::Hub>,
    last_typing: &mut Option<Instant>,
) -> Option<Value> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Some(json!({"type": "error", "message": "invalid JSON"}));
    };
    match v["type"].as_str() {
        Some("chat_message") => {
            let Some(body) = v["message"].as_str() else {
                return Some(json!({"type": "error", "message": "`message` must be a string"}));
            };
            if !hub.take_send_token(user) {
                return Some(json!({"type": "error", "message": "too many messages, slow down"}));
            }
            // The message comes back to this client as a `chat_message` event, as it did before.
            match hub.store.send(user, cid, body, None).await {
                Ok(_) => None,
                Err(e) => Some(json!({"type": "error", "message": e.detail})),
            }
        }
        Some("typing") => {
            // `receiver` (an old integer id or a new one) only named the other side of a direct
            // conversation; the typing event goes to the conversation either way.
            if last_typing.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) && hub.take_typing_token(user) {
                *last_typing = Some(Instant::now());
                hub.publish_typing(cid, user, TypingState::Start).await;
            }
            None
        }
        _ => Some(json!({"type": "error", "message": "unknown type"})),
    }
}

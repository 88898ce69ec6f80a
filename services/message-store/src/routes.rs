//! HTTP handlers of the message-store: thin wrappers over `service`.

use crate::AppState;
use crate::service::{self, NewConversation};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chat_authn::AuthUser;
use chat_common::openapi::AuthedErrors;
use chat_common::{ApiError, ApiJson, ApiQuery, ApiResult, path_uuid, validate};
use chat_protocol::internal::UserConversations;
use chat_protocol::{Conversation, ConversationPage, Message, MessagePage, NewMessage};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

type Query = ApiQuery<HashMap<String, String>>;

/// The public routes and their OpenAPI document, from the same declarations.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, rename))
        .routes(routes!(add_member))
        .routes(routes!(set_role, remove_member))
        .routes(routes!(send, history))
        .routes(routes!(edit, delete))
        .routes(routes!(read))
}

pub fn public(state: AppState) -> Router {
    documented().split_for_parts().0.with_state(state)
}

/// Routes for ws-edge only: the edge has authenticated the user already.
pub fn internal(state: AppState) -> Router {
    Router::new()
        .route("/internal/v1/ready", get(|| async { "ok" }))
        .route("/internal/v1/users/{uid}/conversations", get(user_conversations))
        .route("/internal/v1/conversations/{cid}/messages", post(internal_send).get(internal_history))
        .route("/internal/v1/messages/batch", post(internal_send_batch))
        .route("/internal/v1/conversations/{cid}/read", post(internal_read))
        .route("/internal/v1/legacy/conversations/{legacy_id}", get(legacy_conversation))
        .with_state(state)
}

#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    request_body = NewConversation,
    responses((status = 201, description = "created", body = Conversation),
        (status = 200, description = "the existing direct conversation of the two", body = Conversation), AuthedErrors))]
async fn create(
    State(s): State<AppState>,
    who: AuthUser,
    ApiJson(b): ApiJson<NewConversation>,
) -> ApiResult<impl IntoResponse> {
    let (c, created) = service::create(&s, who.user_id, b).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, ApiJson(c)))
}

#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "the caller's conversations, latest activity first", body = ConversationPage),
        AuthedErrors))]
async fn list(State(s): State<AppState>, who: AuthUser, ApiQuery(q): Query) -> ApiResult<impl IntoResponse> {
    let limit = validate::limit(q.get("limit").map(String::as_str), 20, 1, 100)?;
    Ok(ApiJson(service::list(&s, who.user_id, limit, q.get("cursor").map(String::as_str)).await?))
}

#[utoipa::path(get, path = "/v1/conversations/{cid}", tag = "conversations", security(("bearer" = [])),
    params(("cid" = Uuid, Path)),
    responses((status = 200, description = "the conversation", body = Conversation), AuthedErrors))]
async fn get_one(
    State(s): State<AppState>,
    who: AuthUser,
    Path(cid): Path<String>,
) -> ApiResult<ApiJson<Conversation>> {
    Ok(ApiJson(service::get(&s, who.user_id, path_uuid(&cid)?).await?))
}

#[derive(Deserialize, ToSchema)]
struct TitleBody {
    #[schema(min_length = 1, max_length = 128)]
    title: String,
}

#[utoipa::path(patch, path = "/v1/conversations/{cid}", tag = "conversations", security(("bearer" = [])),
    params(("cid" = Uuid, Path)), request_body = TitleBody,
    responses((status = 200, description = "renamed (group; owner or admin)", body = Conversation), AuthedErrors))]
async fn rename(
    State(s): State<AppState>,
    who: AuthUser,
    Path(cid): Path<String>,
    ApiJson(b): ApiJson<TitleBody>,
) -> ApiResult<ApiJson<Conversation>> {
    Ok(ApiJson(service::rename(&s, who.user_id, path_uuid(&cid)?, &b.title).await?))
}

#[derive(Deserialize, ToSchema)]
struct AddMember {
    user_id: Uuid,
    /// `member` (default) or `admin`.
    #[schema(pattern = "^(member|admin)$")]
    role: Option<String>,
}

#[utoipa::path(post, path = "/v1/conversations/{cid}/members", tag = "conversations", security(("bearer" = [])),
    params(("cid" = Uuid, Path)), request_body = AddMember,
    responses((status = 201, description = "added (group; owner or admin)", body = Conversation), AuthedErrors))]
async fn add_member(
    State(s): State<AppState>,
    who: AuthUser,
    Path(cid): Path<String>,
    ApiJson(b): ApiJson<AddMember>,
) -> ApiResult<impl IntoResponse> {
    let c = service::add_member(&s, who.user_id, path_uuid(&cid)?, b.user_id, b.role.as_deref()).await?;
    Ok((StatusCode::CREATED, ApiJson(c)))
}

#[derive(Deserialize, ToSchema)]
struct RoleBody {
    #[schema(pattern = "^(member|admin)$")]
    role: String,
}

#[utoipa::path(patch, path = "/v1/conversations/{cid}/members/{uid}", tag = "conversations",
    security(("bearer" = [])), params(("cid" = Uuid, Path), ("uid" = Uuid, Path)), request_body = RoleBody,
    responses((status = 200, description = "role changed (owner only)", body = Conversation), AuthedErrors))]
async fn set_role(
    State(s): State<AppState>,
    who: AuthUser,
    Path((cid, uid)): Path<(String, String)>,
    ApiJson(b): ApiJson<RoleBody>,
) -> ApiResult<ApiJson<Conversation>> {
    let (cid, uid) = (path_uuid(&cid)?, path_uuid(&uid)?);
    Ok(ApiJson(service::set_role(&s, who.user_id, cid, uid, &b.role).await?))
}

#[utoipa::path(delete, path = "/v1/conversations/{cid}/members/{uid}", tag = "conversations",
    security(("bearer" = [])), params(("cid" = Uuid, Path), ("uid" = Uuid, Path)),
    responses((status = 204, description = "removed, or left"), AuthedErrors))]
async fn remove_member(
    State(s): State<AppState>,
    who: AuthUser,
    Path((cid, uid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    service::remove_member(&s, who.user_id, path_uuid(&cid)?, path_uuid(&uid)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
struct EditBody {
    #[schema(min_length = 1, max_length = 4000)]
    body: String,
}

#[utoipa::path(patch, path = "/v1/conversations/{cid}/messages/{mid}", tag = "messages",
    security(("bearer" = [])), params(("cid" = Uuid, Path), ("mid" = Uuid, Path)), request_body = EditBody,
    responses((status = 200, description = "edited (sender only)", body = Message), AuthedErrors))]
async fn edit(
    State(s): State<AppState>,
    who: AuthUser,
    Path((cid, mid)): Path<(String, String)>,
    ApiJson(b): ApiJson<EditBody>,
) -> ApiResult<ApiJson<Message>> {
    let (cid, mid) = (path_uuid(&cid)?, path_uuid(&mid)?);
    Ok(ApiJson(service::edit_message(&s, who.user_id, cid, mid, &b.body).await?))
}

#[utoipa::path(delete, path = "/v1/conversations/{cid}/messages/{mid}", tag = "messages",
    security(("bearer" = [])), params(("cid" = Uuid, Path), ("mid" = Uuid, Path)),
    responses((status = 204, description = "deleted (a tombstone stays)"), AuthedErrors))]
async fn delete(
    State(s): State<AppState>,
    who: AuthUser,
    Path((cid, mid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    service::delete_message(&s, who.user_id, path_uuid(&cid)?, path_uuid(&mid)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn sent(r: (Message, bool)) -> impl IntoResponse {
    (if r.1 { StatusCode::CREATED } else { StatusCode::OK }, ApiJson(r.0))
}

#[utoipa::path(post, path = "/v1/conversations/{cid}/messages", tag = "messages", security(("bearer" = [])),
    params(("cid" = Uuid, Path)), request_body = NewMessage,
    responses((status = 201, description = "stored (durable before the answer)", body = Message),
        (status = 200, description = "the message stored before with this client_msg_id", body = Message), AuthedErrors))]
async fn send(
    State(s): State<AppState>,
    who: AuthUser,
    Path(cid): Path<String>,
    ApiJson(b): ApiJson<NewMessage>,
) -> ApiResult<impl IntoResponse> {
    let cid = path_uuid(&cid)?;
    Ok(sent(service::send(&s, who.user_id, cid, &b.body, b.client_msg_id.as_deref()).await?))
}

fn seq_param(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    q.get(name)
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::validation(format!("`{name}` must be an integer"))))
        .transpose()
}

#[utoipa::path(get, path = "/v1/conversations/{cid}/messages", tag = "messages", security(("bearer" = [])),
    params(("cid" = Uuid, Path),
        ("before_seq" = Option<i64>, Query, description = "the last `limit` messages below this seq"),
        ("after_seq" = Option<i64>, Query, description = "the first `limit` messages above this seq"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "default 50")),
    responses((status = 200, description = "messages in ascending seq", body = MessagePage), AuthedErrors))]
async fn history(
    State(s): State<AppState>,
    who: AuthUser,
    Path(cid): Path<String>,
    ApiQuery(q): Query,
) -> ApiResult<ApiJson<MessagePage>> {
    let cid = path_uuid(&cid)?;
    let limit = validate::limit(q.get("limit").map(String::as_str), 50, 1, 200)?;
    let page = service::history(&s, who.user_id, cid, seq_param(&q, "after_seq")?, seq_param(&q, "before_seq")?, limit);
    Ok(ApiJson(page.await?))
}

#[derive(Deserialize, ToSchema)]
struct ReadBody {
    seq: i64,
}

#[utoipa::path(post, path = "/v1/conversations/{cid}/read", tag = "messages", security(("bearer" = [])),
    params(("cid" = Uuid, Path)), request_body = ReadBody,
    responses((status = 204, description = "read marker set (never moves back)"), AuthedErrors))]
async fn read(
    State(s): State<AppState>,
    who: AuthUser,
    Path(cid): Path<String>,
    ApiJson(b): ApiJson<ReadBody>,
) -> ApiResult<StatusCode> {
    service::read(&s, who.user_id, path_uuid(&cid)?, b.seq).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Drives `data` through the decoding and database-free checks of every public request of this
/// service, as the handlers do: the fuzz targets (fuzz/) and their corpus regression test call it.
/// Errors are expected; a panic is the bug.
pub fn check_request_bodies(data: &[u8]) {
    use chat_common::extract::{decode_json, decode_query};
    if let Ok(b) = decode_json::<NewConversation>(data) {
        let _ = chat_protocol::ConversationKind::parse(&b.kind);
        if let Some(t) = &b.title {
            let _ = validate::text("title", t, 1, 128);
        }
    }
    if let Ok(b) = decode_json::<TitleBody>(data) {
        let _ = validate::text("title", &b.title, 1, 128);
    }
    if let Ok(b) = decode_json::<AddMember>(data) {
        let _ = b.role.as_deref().map(chat_protocol::Role::parse);
    }
    if let Ok(b) = decode_json::<RoleBody>(data) {
        let _ = chat_protocol::Role::parse(&b.role);
    }
    if let Ok(b) = decode_json::<NewMessage>(data) {
        let _ = service::check_new_message(&b.body, b.client_msg_id.as_deref());
    }
    if let Ok(b) = decode_json::<EditBody>(data) {
        let _ = service::check_new_message(&b.body, None);
    }
    let _ = decode_json::<ReadBody>(data);
    if let Ok(q) = std::str::from_utf8(data) {
        if let Ok(q) = decode_query::<HashMap<String, String>>(q) {
            let _ = validate::limit(q.get("limit").map(String::as_str), 50, 1, 200);
            let _ = seq_param(&q, "after_seq");
            let _ = seq_param(&q, "before_seq");
            let _ = q.get("cursor").map(|c| service::decode_cursor(c));
        }
        let _ = service::decode_cursor(q);
    }
}

// --- internal ---

async fn user_conversations(
    State(s): State<AppState>,
    Path(uid): Path<String>,
) -> ApiResult<ApiJson<UserConversations>> {
    let conversations = service::user_conversations(&s, path_uuid(&uid)?).await?;
    Ok(ApiJson(UserConversations { conversations }))
}

#[derive(Serialize, Deserialize)]
pub struct InternalSend {
    pub sender_id: Uuid,
    pub body: String,
    #[serde(default)]
    pub client_msg_id: Option<String>,
}

async fn internal_send(
    State(s): State<AppState>,
    Path(cid): Path<String>,
    ApiJson(b): ApiJson<InternalSend>,
) -> ApiResult<impl IntoResponse> {
    let cid = path_uuid(&cid)?;
    Ok(sent(service::send(&s, b.sender_id, cid, &b.body, b.client_msg_id.as_deref()).await?))
}

/// An edge's concurrent sends in one request: each is stored as if sent alone (all of them reach the
/// group commit together) and answered in order with its message or its problem.
async fn internal_send_batch(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<chat_protocol::internal::SendBatch>,
) -> ApiResult<ApiJson<chat_protocol::internal::SendBatchResult>> {
    use chat_protocol::internal::{BatchOutcome, BatchProblem, MAX_SEND_BATCH};
    use tracing::Instrument;
    if b.sends.len() > MAX_SEND_BATCH {
        return Err(ApiError::validation(format!("at most {MAX_SEND_BATCH} sends per batch")));
    }
    let sends = b.sends.iter().map(|x| {
        // Each send continues its own trace (the request carries many).
        let span = tracing::info_span!("store.send", conversation_id = %x.conversation_id);
        if let Some(tp) = &x.traceparent {
            chat_telemetry::set_remote_parent(&span, tp);
        }
        service::send(&s, x.sender_id, x.conversation_id, &x.body, x.client_msg_id.as_deref()).instrument(span)
    });
    let results = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| match r {
            Ok((m, _)) => BatchOutcome::Message(m),
            Err(e) => BatchOutcome::Error(BatchProblem {
                status: e.status.as_u16(),
                code: e.code.to_string(),
                detail: e.detail,
                retry_after: e.retry_after,
            }),
        })
        .collect();
    Ok(ApiJson(chat_protocol::internal::SendBatchResult { results }))
}

async fn internal_history(
    State(s): State<AppState>,
    Path(cid): Path<String>,
    ApiQuery(q): Query,
) -> ApiResult<ApiJson<MessagePage>> {
    let cid = path_uuid(&cid)?;
    let user = q
        .get("user_id")
        .and_then(|u| Uuid::parse_str(u).ok())
        .ok_or_else(|| ApiError::validation("`user_id` required"))?;
    let limit = validate::limit(q.get("limit").map(String::as_str), 50, 1, 200)?;
    let page = service::history(&s, user, cid, seq_param(&q, "after_seq")?, seq_param(&q, "before_seq")?, limit);
    Ok(ApiJson(page.await?))
}

#[derive(Serialize, Deserialize)]
pub struct InternalRead {
    pub user_id: Uuid,
    pub seq: i64,
}

async fn internal_read(
    State(s): State<AppState>,
    Path(cid): Path<String>,
    ApiJson(b): ApiJson<InternalRead>,
) -> ApiResult<StatusCode> {
    service::read(&s, b.user_id, path_uuid(&cid)?, b.seq).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The new id of a conversation imported from the Django backend (old integer id in the path).
async fn legacy_conversation(
    State(s): State<AppState>,
    Path(legacy): Path<String>,
) -> ApiResult<ApiJson<chat_protocol::internal::LegacyConversation>> {
    let legacy: i64 = legacy.parse().map_err(|_| ApiError::not_found())?;
    let id = s.store.legacy_conversation(legacy).await.map_err(chat_db::StoreError::from)?;
    id.map(|id| ApiJson(chat_protocol::internal::LegacyConversation { id })).ok_or_else(ApiError::not_found)
}

//! HTTP handlers of the auth service: thin, validation and wiring only; the rules live in `accounts`.

use crate::AppState;
use crate::accounts::{self, ClientAddr};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chat_authn::AuthUser;
use chat_common::openapi::{AuthedErrors, PublicErrors};
use chat_common::{ApiError, ApiJson, ApiQuery, ApiResult, path_uuid};
use chat_protocol::{TokenResponse, User, UserList};
use serde::Deserialize;
use std::collections::HashMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The public routes and their OpenAPI document, from the same declarations.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(user))
        .routes(routes!(search))
        .routes(routes!(jwks))
}

pub fn public(state: AppState) -> Router {
    let (router, _) = documented().split_for_parts();
    router.with_state(state)
}

/// Routes for other services only, on the internal listener. The JWKS is there too (public data,
/// served without the credential), so the other services need only this one address of auth.
pub fn internal(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/internal/v1/users/lookup", post(lookup))
        .route("/internal/v1/revoked-sessions", get(revoked_sessions))
        .route("/internal/v1/legacy/users", post(legacy_users))
        .with_state(state)
}

#[derive(Deserialize, ToSchema)]
struct Register {
    #[schema(pattern = "^[a-zA-Z0-9_.-]{3,32}$")]
    username: String,
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    #[schema(min_length = 1, max_length = 64)]
    display_name: Option<String>,
}

#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = Register,
    responses((status = 201, description = "registered and logged in", body = TokenResponse), PublicErrors))]
async fn register(
    State(s): State<AppState>,
    addr: ClientAddr,
    ApiJson(b): ApiJson<Register>,
) -> ApiResult<impl IntoResponse> {
    let body = accounts::register(&s, addr, &b.username, b.password, b.display_name).await?;
    Ok((StatusCode::CREATED, ApiJson(body)))
}

#[derive(Deserialize, ToSchema)]
struct Login {
    username: String,
    password: String,
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, description = "logged in", body = TokenResponse), PublicErrors))]
async fn login(
    State(s): State<AppState>,
    addr: ClientAddr,
    ApiJson(b): ApiJson<Login>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(accounts::login(&s, addr, &b.username, b.password).await?))
}

/// A refresh token of the wrong JSON type is a validation failure (422); a malformed string is an
/// invalid token (401, or 204 on logout).
#[derive(Deserialize, ToSchema)]
struct RefreshBody {
    refresh_token: String,
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses((status = 200, description = "a new token pair; the presented one is rotated out", body = TokenResponse),
        PublicErrors))]
async fn refresh(State(s): State<AppState>, ApiJson(b): ApiJson<RefreshBody>) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(accounts::refresh(&s, &b.refresh_token).await?))
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshBody,
    responses((status = 204, description = "the session is revoked (also for an unknown token)"), PublicErrors))]
async fn logout(State(s): State<AppState>, ApiJson(b): ApiJson<RefreshBody>) -> ApiResult<StatusCode> {
    accounts::logout(&s, &b.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "the caller", body = User), AuthedErrors))]
async fn me(State(s): State<AppState>, who: AuthUser) -> ApiResult<ApiJson<User>> {
    let u = s.store.user(who.user_id).await.map_err(crate::Error::from)?;
    u.map(ApiJson).ok_or_else(ApiError::not_found)
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "user id")),
    responses((status = 200, description = "the user", body = User), AuthedErrors))]
async fn user(State(s): State<AppState>, _who: AuthUser, Path(id): Path<String>) -> ApiResult<ApiJson<User>> {
    let id = path_uuid(&id)?;
    let u = s.store.user(id).await.map_err(crate::Error::from)?;
    u.map(ApiJson).ok_or_else(ApiError::not_found)
}

/// Drives `data` through the decoding and database-free checks of every public request of this
/// service, as the handlers do: the fuzz targets (fuzz/) and their corpus regression test call it.
/// Errors are expected; a panic is the bug.
pub fn check_request_bodies(data: &[u8]) {
    use chat_common::extract::{decode_json, decode_query};
    if let Ok(b) = decode_json::<Register>(data) {
        let _ = accounts::check_registration(&b.username, &b.password, b.display_name.as_deref());
    }
    let _ = decode_json::<Login>(data);
    let _ = decode_json::<RefreshBody>(data);
    if let Ok(q) = std::str::from_utf8(data) {
        if let Ok(q) = decode_query::<HashMap<String, String>>(q) {
            let _ = chat_common::validate::limit(q.get("limit").map(String::as_str), 20, 1, 100);
        }
        let _ = path_uuid(q);
    }
}

#[utoipa::path(get, path = "/v1/users", tag = "users", security(("bearer" = [])),
    params(("q" = Option<String>, Query, description = "username prefix, case-insensitive"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "default 20")),
    responses((status = 200, description = "users by username", body = UserList), AuthedErrors))]
async fn search(
    State(s): State<AppState>,
    _who: AuthUser,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> ApiResult<ApiJson<UserList>> {
    let limit = chat_common::validate::limit(q.get("limit").map(String::as_str), 20, 1, 100)?;
    let prefix = q.get("q").map(|p| p.to_lowercase()).unwrap_or_default();
    if prefix.contains('\0') {
        return Err(ApiError::validation("`q` must not contain NUL"));
    }
    let users = s.store.search(&prefix, limit).await.map_err(crate::Error::from)?;
    Ok(ApiJson(UserList { users }))
}

/// A JSON Web Key Set (RFC 7517).
#[derive(ToSchema)]
#[allow(dead_code)] // documents what `keys::jwks` renders
struct Jwks {
    #[schema(value_type = Vec<Object>)]
    keys: Vec<serde_json::Value>,
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "the public keys that verify access tokens", body = Jwks)))]
async fn jwks(State(s): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CACHE_CONTROL, "public, max-age=60")], ApiJson(s.keys.jwks()))
}

#[derive(Deserialize, serde::Serialize)]
pub struct Lookup {
    pub ids: Vec<Uuid>,
}

async fn lookup(State(s): State<AppState>, ApiJson(b): ApiJson<Lookup>) -> ApiResult<ApiJson<Lookup>> {
    let ids = s.store.existing(&b.ids).await.map_err(crate::Error::from)?;
    Ok(ApiJson(Lookup { ids }))
}

async fn revoked_sessions(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    let list = s.store.revoked_sessions(chat_authn::now_secs()).await.map_err(crate::Error::from)?;
    let out: Vec<serde_json::Value> =
        list.into_iter().map(|(sid, until)| serde_json::json!({"session_id": sid, "until": until})).collect();
    Ok(ApiJson(serde_json::json!({ "sessions": out })))
}

/// Usernames and old integer ids of users, for the old WebSocket dialect (`/ws/chat/...` on ws-edge).
async fn legacy_users(State(s): State<AppState>, ApiJson(b): ApiJson<Lookup>) -> ApiResult<impl IntoResponse> {
    let users = s.store.legacy_users(&b.ids).await.map_err(crate::Error::from)?;
    Ok(ApiJson(chat_protocol::internal::LegacyUsers {
        users: users
            .into_iter()
            .map(|(id, username, legacy_id)| chat_protocol::internal::LegacyUser { id, username, legacy_id })
            .collect(),
    }))
}

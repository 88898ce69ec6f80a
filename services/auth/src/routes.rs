//! HTTP handlers of the auth service: thin, validation and wiring only; the rules live in `accounts`.

use crate::AppState;
use crate::accounts::{self, ClientAddr};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chat_authn::AuthUser;
use chat_common::{ApiError, ApiJson, ApiQuery, ApiResult, path_uuid};
use chat_protocol::{User, UserList};
use serde::Deserialize;
use std::collections::HashMap;
use uuid::Uuid;

pub fn public(state: AppState) -> Router {
    Router::new()
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/users/me", get(me))
        .route("/v1/users/{id}", get(user))
        .route("/v1/users", get(search))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

/// Routes for other services only: never routed by the public gateway.
pub fn internal(state: AppState) -> Router {
    Router::new()
        .route("/internal/v1/users/lookup", post(lookup))
        .route("/internal/v1/revoked-sessions", get(revoked_sessions))
        .with_state(state)
}

#[derive(Deserialize)]
struct Register {
    username: String,
    password: String,
    display_name: Option<String>,
}

async fn register(
    State(s): State<AppState>,
    addr: ClientAddr,
    ApiJson(b): ApiJson<Register>,
) -> ApiResult<impl IntoResponse> {
    let body = accounts::register(&s, addr, &b.username, b.password, b.display_name).await?;
    Ok((StatusCode::CREATED, ApiJson(body)))
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login(
    State(s): State<AppState>,
    addr: ClientAddr,
    ApiJson(b): ApiJson<Login>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(accounts::login(&s, addr, &b.username, b.password).await?))
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: serde_json::Value,
}

fn token_str(v: &serde_json::Value) -> Option<&str> {
    v.as_str()
}

async fn refresh(State(s): State<AppState>, ApiJson(b): ApiJson<RefreshBody>) -> ApiResult<impl IntoResponse> {
    let token = token_str(&b.refresh_token).ok_or_else(|| ApiError::unauthorized("invalid refresh token"))?;
    Ok(ApiJson(accounts::refresh(&s, token).await?))
}

async fn logout(State(s): State<AppState>, ApiJson(b): ApiJson<RefreshBody>) -> ApiResult<StatusCode> {
    if let Some(token) = token_str(&b.refresh_token) {
        accounts::logout(&s, token).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(s): State<AppState>, who: AuthUser) -> ApiResult<ApiJson<User>> {
    let u = s.store.user(who.user_id).await.map_err(crate::Error::from)?;
    u.map(ApiJson).ok_or_else(ApiError::not_found)
}

async fn user(State(s): State<AppState>, _who: AuthUser, Path(id): Path<String>) -> ApiResult<ApiJson<User>> {
    let id = path_uuid(&id)?;
    let u = s.store.user(id).await.map_err(crate::Error::from)?;
    u.map(ApiJson).ok_or_else(ApiError::not_found)
}

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

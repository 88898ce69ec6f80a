//! Account rules: registration, login with throttling, token issue, refresh rotation with reuse
//! detection, logout and session revocation.

use crate::AppState;
use crate::store::RotateOutcome;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_authn::Claims;
use chat_common::{ApiError, ApiResult, validate};
use chat_protocol::bus::{Envelope, EventHeader, EventKind, topics};
use chat_protocol::{Timestamp, TokenResponse, User};
use std::net::{IpAddr, SocketAddr};
use uuid::Uuid;

/// The client's address: the socket peer, or `X-Forwarded-For` when the peer is a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let trusted = |ip: &IpAddr| s.limits.trusted_proxies.iter().any(|c| c.contains(ip));
        let Some(peer) = peer else {
            return Ok(ClientAddr(None));
        };
        if !trusted(&peer) {
            return Ok(ClientAddr(Some(peer)));
        }
        // Walk X-Forwarded-For from the right: the first address not itself a trusted proxy is the client.
        let xff: Vec<IpAddr> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.trim().parse().ok())
            .collect();
        let client = xff.iter().rev().find(|ip| !trusted(ip)).copied().unwrap_or(peer);
        Ok(ClientAddr(Some(client)))
    }
}

fn valid_username(u: &str) -> Result<(), ApiError> {
    let n = u.chars().count();
    if !(3..=32).contains(&n) || !u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(ApiError::validation("`username` must be 3-32 characters of a-z A-Z 0-9 _ . -"));
    }
    Ok(())
}

/// The registration rules that need no database.
pub fn check_registration(username: &str, password: &str, display_name: Option<&str>) -> ApiResult<()> {
    valid_username(username)?;
    validate::text("password", password, 8, 256)?;
    if let Some(d) = display_name {
        validate::text("display_name", d, 1, 64)?;
    }
    Ok(())
}

pub async fn register(
    s: &AppState,
    addr: ClientAddr,
    username: &str,
    password: String,
    display_name: Option<String>,
) -> ApiResult<TokenResponse> {
    check_registration(username, &password, display_name.as_deref())?;
    let username = username.to_ascii_lowercase();
    // The address's budget is taken before any hashing, atomically; a taken name is found before
    // hashing too and gives its attempt back (no Argon2 work for it).
    let ip_key = addr.0.map(|ip| throttle_key("reg", &ip.to_string()));
    if let Some(k) = &ip_key {
        reserve(s, k, s.limits.registrations_per_ip, s.limits.register_window_secs).await?;
    }
    let taken = || ApiError::conflict("username_taken", "that username is taken");
    if s.store.user_id_by_name(&username).await.map_err(crate::Error::from)?.is_some() {
        release(s, ip_key.as_deref()).await?;
        return Err(taken());
    }
    let hash = s.hasher.hash(password).await?;
    let user = User {
        id: Uuid::now_v7(),
        display_name: display_name.unwrap_or_else(|| username.clone()),
        username,
        created_at: Timestamp::now(),
    };
    if !s.store.create_user(&user, &hash).await.map_err(crate::Error::from)? {
        return Err(taken());
    }
    metrics::counter!("auth_registrations_total").increment(1);
    issue_session(s, user).await
}

pub async fn login(s: &AppState, addr: ClientAddr, username: &str, password: String) -> ApiResult<TokenResponse> {
    if username.contains('\0') || password.contains('\0') {
        return Err(ApiError::validation("fields must not contain NUL"));
    }
    let username = username.to_ascii_lowercase();
    // Each attempt is counted before the password is hashed, atomically (concurrent wrong guesses
    // each take a place; the 11th is refused however they race). A success gives its places back.
    let user_key = throttle_key("login:u", &username);
    let ip_key = addr.0.map(|ip| throttle_key("login:ip", &ip.to_string()));
    let attempts_key = addr.0.map(|ip| throttle_key("login:all", &ip.to_string()));
    reserve(s, &user_key, s.limits.login_failures_per_user, s.limits.login_window_secs).await?;
    if let Some(k) = &ip_key
        && let Err(e) = reserve(s, k, s.limits.login_failures_per_ip, s.limits.login_window_secs).await
    {
        release(s, Some(&user_key)).await?;
        return Err(e);
    }
    // Successful logins cost a hash too: every attempt from an address counts here, kept or not.
    if let Some(k) = &attempts_key
        && let Err(e) = reserve(s, k, s.limits.login_attempts_per_ip, s.limits.login_window_secs).await
    {
        release(s, Some(&user_key)).await?;
        release(s, ip_key.as_deref()).await?;
        return Err(e);
    }
    let found = s.store.user_with_hash(&username).await.map_err(crate::Error::from)?;
    let (user, hash, disabled) = match found {
        Some((u, h, d)) => (Some(u), Some(h), d),
        None => (None, None, false),
    };
    let old_hash = hash.clone().filter(|h| crate::password::needs_rehash(h));
    let ok = s.hasher.verify(password.clone(), hash).await?;
    match user {
        Some(user) if ok => {
            s.store.throttle_clear(&user_key).await.map_err(crate::Error::from)?;
            release(s, ip_key.as_deref()).await?;
            // Only with the right password does the caller learn the account is switched off.
            if disabled {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "account_disabled",
                    "this account is disabled",
                ));
            }
            // An imported Django (PBKDF2) hash is replaced by Argon2id on the first good login.
            if let Some(old) = old_hash {
                let new = s.hasher.hash(password).await?;
                s.store.replace_password_hash(user.id, &old, &new).await.map_err(crate::Error::from)?;
            }
            issue_session(s, user).await
        }
        _ => {
            metrics::counter!("auth_login_failures_total").increment(1);
            Err(ApiError::unauthorized("wrong username or password"))
        }
    }
}

/// A throttle key: the kind and a hash of the subject, so keys are short whatever a client sends
/// (a 1 MB username must not become a 1 MB row).
fn throttle_key(kind: &str, subject: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, subject.as_bytes());
    let hex: String = d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}:{hex}")
}

/// Takes one attempt of `key`'s window; 429 once more than `limit` were taken, with `Retry-After`
/// when the window ends.
async fn reserve(s: &AppState, key: &str, limit: i64, window_secs: i64) -> ApiResult<()> {
    let now = Timestamp::now().0;
    let window_ms = window_secs * 1000;
    let (n, start) = s.store.throttle_reserve(key, now, now - window_ms).await.map_err(crate::Error::from)?;
    if n > limit {
        let retry = (start + window_ms - now) / 1000 + 1;
        return Err(ApiError::rate_limited(retry.clamp(1, window_secs.max(1)) as u64));
    }
    Ok(())
}

async fn release(s: &AppState, key: Option<&str>) -> ApiResult<()> {
    if let Some(k) = key {
        s.store.throttle_release(k).await.map_err(crate::Error::from)?;
    }
    Ok(())
}

fn new_refresh_token() -> Result<String, crate::Error> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|e| crate::Error::Internal(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// Refresh tokens are stored only as SHA-256 hashes: a database leak does not leak live tokens.
fn hash_token(t: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn access_token(s: &AppState, user: Uuid, sid: Uuid) -> Result<(String, i64), crate::Error> {
    let iat = chat_authn::now_secs();
    let exp = iat + s.limits.access_ttl;
    let claims = Claims { sub: user, sid, iat, exp, jti: Uuid::new_v4().to_string() };
    Ok((s.keys.sign(&claims)?, exp))
}

async fn issue_session(s: &AppState, user: User) -> ApiResult<TokenResponse> {
    let sid = Uuid::now_v7();
    let (access, exp) = access_token(s, user.id, sid)?;
    let refresh = new_refresh_token()?;
    let refresh_exp = Timestamp::now().0 + s.limits.refresh_ttl * 1000;
    s.store.create_session(sid, user.id, exp, &hash_token(&refresh), refresh_exp).await.map_err(crate::Error::from)?;
    Ok(token_response(s, user, access, refresh))
}

fn token_response(s: &AppState, user: User, access: String, refresh: String) -> TokenResponse {
    TokenResponse {
        user,
        access_token: access,
        refresh_token: refresh,
        token_type: "Bearer".into(),
        expires_in: s.limits.access_ttl,
    }
}

pub async fn refresh(s: &AppState, token: &str) -> ApiResult<TokenResponse> {
    let invalid = || ApiError::unauthorized("invalid refresh token");
    if token.len() != 43 {
        return Err(invalid());
    }
    let hash = hash_token(token);
    let row = s.store.refresh_token(&hash).await.map_err(crate::Error::from)?.ok_or_else(invalid)?;
    if row.session_revoked {
        return Err(invalid());
    }
    if row.used {
        // Reuse of a rotated token: someone holds a copy. Revoke the whole login session.
        tracing::warn!(session = %row.session_id, "refresh token reuse detected; revoking session");
        revoke(s, row.session_id).await?;
        return Err(invalid());
    }
    if row.expires_at < Timestamp::now().0 {
        return Err(invalid());
    }
    // A disabled account's sessions were revoked when it was disabled; this also covers a login
    // that raced the disable.
    let user = s.store.enabled_user(row.user_id).await.map_err(crate::Error::from)?.ok_or_else(invalid)?;
    let (access, exp) = access_token(s, user.id, row.session_id)?;
    let new = new_refresh_token()?;
    let new_exp = Timestamp::now().0 + s.limits.refresh_ttl * 1000;
    let outcome = s
        .store
        .rotate_refresh(&hash, &hash_token(&new), row.session_id, new_exp, exp)
        .await
        .map_err(crate::Error::from)?;
    match outcome {
        RotateOutcome::Rotated => Ok(token_response(s, user, access, new)),
        // Lost a race with another use of the same token: that is reuse too.
        RotateOutcome::AlreadyUsed => {
            revoke(s, row.session_id).await?;
            Err(invalid())
        }
        // A logout won the race: the new access token is never handed out.
        RotateOutcome::SessionRevoked => Err(invalid()),
    }
}

pub async fn logout(s: &AppState, token: &str) -> ApiResult<()> {
    if token.len() != 43 {
        return Ok(());
    }
    if let Some(row) = s.store.refresh_token(&hash_token(token)).await.map_err(crate::Error::from)? {
        revoke(s, row.session_id).await?;
    }
    Ok(())
}

/// Revokes a session and tells every service (verifiers refuse its tokens; edges close with 4001).
pub async fn revoke(s: &AppState, sid: Uuid) -> ApiResult<()> {
    if let Some(access_exp) = s.store.revoke_session(sid).await.map_err(crate::Error::from)? {
        s.verifier.revoke(sid, access_exp);
        announce_revocation(&s.bus, sid, access_exp).await;
    }
    Ok(())
}

/// Publishes a session's revocation (verifiers refuse its tokens; edges close its sockets with 4001).
/// A failed publish is delayed, not lost: the other services also poll /internal/v1/revoked-sessions.
pub async fn announce_revocation(bus: &chat_bus::Bus, sid: Uuid, until: i64) {
    let mut h = EventHeader::new(EventKind::SessionRevoked);
    h.session_id = Some(sid);
    h.until = Some(until);
    if let Err(e) = bus.publish(topics::SESSIONS_REVOKED, Envelope::encode(&h, "{}")).await {
        tracing::warn!(error = %e, "could not publish session revocation");
    }
}

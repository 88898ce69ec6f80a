//! The internal (service-to-service) surface: its own listener and a shared service credential.
//!
//! Every request to an internal listener must carry `Authorization: Bearer <CHAT_INTERNAL_TOKEN>`;
//! the comparison takes the same time wherever the first wrong byte is. A missing or wrong credential
//! gets `401` and counts in `internal_auth_failures_total`. Public data (the JWKS) is served there
//! too, without the credential, so a verifier needs no second URL.

use crate::ApiError;
use crate::config::{ConfigError, secret};
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub const TOKEN_VAR: &str = "CHAT_INTERNAL_TOKEN";
pub const TOKEN_FILE_VAR: &str = "CHAT_INTERNAL_TOKEN_FILE";

/// Shortest credential accepted: 32 characters (e.g. `openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_LEN: usize = 32;

/// The shared service credential. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct InternalToken(Arc<str>);

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken(<redacted>)")
    }
}

impl InternalToken {
    pub fn new(secret: &str) -> Result<InternalToken, ConfigError> {
        let secret = secret.trim();
        if secret.len() < MIN_TOKEN_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError {
                name: TOKEN_VAR,
                value: "<redacted>".into(),
                reason: format!("needs at least {MIN_TOKEN_LEN} printable characters (openssl rand -hex 32)"),
            });
        }
        Ok(InternalToken(Arc::from(secret)))
    }

    /// `CHAT_INTERNAL_TOKEN`, or the first line of the file `CHAT_INTERNAL_TOKEN_FILE` names (a
    /// mounted Secret). Required: a service never serves or calls the internal API without it.
    pub fn from_env() -> Result<InternalToken, ConfigError> {
        InternalToken::from_env_optional()?.ok_or_else(|| ConfigError {
            name: TOKEN_VAR,
            value: String::new(),
            reason: format!(
                "required: the shared credential of the internal API (or {TOKEN_FILE_VAR} naming a file with it)"
            ),
        })
    }

    /// Like `from_env`, but unset is `None` (subcommands such as `migrate` need no credential); a
    /// set but unusable value is still an error.
    pub fn from_env_optional() -> Result<Option<InternalToken>, ConfigError> {
        secret(TOKEN_VAR, TOKEN_FILE_VAR)?.map(|(_, v)| InternalToken::new(&v)).transpose()
    }

    /// The credential a serving process needs, or the error naming the variable.
    pub fn required(token: &Option<InternalToken>) -> Result<InternalToken, ConfigError> {
        match token {
            Some(t) => Ok(t.clone()),
            None => InternalToken::from_env(),
        }
    }

    /// True when `presented` is the credential; the time taken does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        if presented.len() != ours.len() {
            return false;
        }
        let diff = ours.iter().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// The `Authorization` header a client sends, marked sensitive (never logged by hyper/reqwest).
    pub fn header_value(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.0)).unwrap_or(HeaderValue::from_static(""));
        v.set_sensitive(true);
        v
    }

    /// Default headers for an HTTP client of the internal API.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, self.header_value());
        h
    }
}

/// Paths an internal listener serves without the credential: public data only.
fn is_public(path: &str) -> bool {
    path == "/.well-known/jwks.json"
}

async fn require(token: InternalToken, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if token.matches(presented) {
        return next.run(req).await;
    }
    let reason = if presented.is_empty() { "missing" } else { "wrong" };
    metrics::counter!("internal_auth_failures_total", "reason" => reason).increment(1);
    tracing::warn!(reason, path = %req.uri().path(), "internal request without a valid service credential");
    ApiError::unauthorized("service credential required").into_response()
}

/// Wraps the internal routes: the credential check (innermost, before any handler or body read),
/// then the same limits, spans and metrics as a public router.
pub fn internal_layers(router: Router, token: InternalToken) -> Router {
    let router = router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move { require(token, req, next).await }
    }));
    crate::server::public_layers(router)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_exactly() {
        let t = InternalToken::new("0123456789abcdef0123456789abcdef").unwrap();
        assert!(t.matches(b"0123456789abcdef0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdef0123456789abcdeF"));
        assert!(!t.matches(b"0123456789abcdef0123456789abcde"));
        assert!(!t.matches(b""));
        assert!(InternalToken::new("short").is_err());
        assert!(!format!("{t:?}").contains("0123"));
    }
}

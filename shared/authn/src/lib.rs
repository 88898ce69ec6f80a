//! Access-token verification, done locally by every service against the auth service's JWKS.
//!
//! Keys are cached by `kid` and refetched when a token names an unknown one (at most once a second,
//! so garbage `kid`s cannot turn into a request flood). Only EdDSA is accepted: `alg: none`, HMAC and
//! any algorithm the key was not published for are refused before any signature check.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use chat_common::ApiError;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token was revoked")]
    Revoked,
    #[error("invalid access token: {0}")]
    Invalid(&'static str),
    #[error("cannot fetch signing keys: {0}")]
    KeysUnavailable(String),
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Expired => ApiError::token_expired(),
            VerifyError::KeysUnavailable(d) => ApiError::unavailable(format!("cannot verify tokens now: {d}")),
            other => ApiError::unauthorized(other.to_string()),
        }
    }
}

/// Where the public keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// `GET <url>` returning a JWK set (microservices: auth's `/.well-known/jwks.json`).
    Url(String),
    /// The auth service in the same process (all-in-one).
    Local(Arc<dyn JwksProvider>),
}

pub trait JwksProvider: Send + Sync {
    fn jwks(&self) -> JwkSet;
}

pub struct Verifier {
    source: KeySource,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    // Revoked login sessions, kept until the latest expiry of their access tokens.
    revoked: RwLock<HashMap<Uuid, i64>>,
    revocations: std::sync::atomic::AtomicU64,
    validation: Validation,
    /// The longest `exp - iat` accepted: a token minted with a leaked key cannot live for years.
    max_lifetime: i64,
}

/// The longest access-token lifetime accepted: `CHAT_ACCESS_TOKEN_TTL` (default 900 s, the same
/// variable auth issues with) plus a minute for clock differences.
pub fn max_token_lifetime_from_env() -> i64 {
    chat_common::config::env_parse("CHAT_ACCESS_TOKEN_TTL", 900i64).unwrap_or(900).max(1) + 60
}

impl Verifier {
    pub fn new(source: KeySource) -> Arc<Self> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Arc::new(Verifier {
            source,
            http: reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("http client"),
            keys: RwLock::default(),
            last_fetch: Mutex::default(),
            fetching: tokio::sync::Mutex::default(),
            revoked: RwLock::default(),
            revocations: std::sync::atomic::AtomicU64::new(0),
            validation,
            max_lifetime: max_token_lifetime_from_env(),
        })
    }

    /// Verifies signature, algorithm, `kid`, expiry and revocation.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Invalid("malformed token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Invalid("unsupported algorithm"));
        }
        let kid = header.kid.ok_or(VerifyError::Invalid("missing kid"))?;
        let key = match self.key(&kid) {
            Some(k) => k,
            None => {
                self.refresh_keys().await?;
                self.key(&kid).ok_or(VerifyError::Invalid("unknown kid"))?
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => VerifyError::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => VerifyError::Invalid("bad signature"),
            _ => VerifyError::Invalid("invalid token"),
        })?;
        let c = data.claims;
        if c.exp - c.iat > self.max_lifetime || c.iat > now_secs() + 60 {
            return Err(VerifyError::Invalid("token lifetime out of bounds"));
        }
        if self.is_revoked(c.sid) {
            return Err(VerifyError::Revoked);
        }
        Ok(c)
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().expect("keys lock").get(kid).cloned()
    }

    /// Refetches the key set, at most once per second. Keys that left the set are forgotten: a key
    /// retired from the JWKS (`rotate-key --retire-previous`) stops verifying at the next refresh.
    pub async fn refresh_keys(&self) -> Result<(), VerifyError> {
        let _g = self.fetching.lock().await;
        {
            let last = self.last_fetch.lock().expect("lock");
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Ok(());
            }
        }
        let set = match &self.source {
            KeySource::Local(p) => p.jwks(),
            KeySource::Url(url) => {
                let resp = self.http.get(url).send().await.map_err(|e| VerifyError::KeysUnavailable(e.to_string()))?;
                if !resp.status().is_success() {
                    return Err(VerifyError::KeysUnavailable(format!("JWKS answered {}", resp.status())));
                }
                resp.json::<JwkSet>().await.map_err(|e| VerifyError::KeysUnavailable(e.to_string()))?
            }
        };
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(k)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) {
                keys.insert(kid, k);
            }
        }
        *self.keys.write().expect("keys lock") = keys;
        *self.last_fetch.lock().expect("lock") = Some(Instant::now());
        Ok(())
    }

    /// Marks a login session revoked until `until` (Unix seconds: the last expiry of its tokens).
    pub fn revoke(&self, sid: Uuid, until: i64) {
        let now = now_secs();
        let mut r = self.revoked.write().expect("revoked lock");
        r.retain(|_, exp| *exp >= now);
        if r.insert(sid, until).is_none() {
            self.revocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn is_revoked(&self, sid: Uuid) -> bool {
        let r = self.revoked.read().expect("revoked lock");
        !r.is_empty() && r.get(&sid).is_some_and(|exp| *exp >= now_secs())
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// Consumes `session_revoked` events from the bus and records them, so every service refuses the
/// session's access tokens within moments of the logout or reuse detection.
pub fn spawn_revocation_listener(verifier: Arc<Verifier>, bus: &chat_bus::Bus) {
    let (subs, mut rx) = bus.subscriber(256);
    tokio::spawn(async move {
        subs.subscribe(vec![chat_protocol::bus::topics::SESSIONS_REVOKED.to_string()]).await;
        while let Some(d) = rx.recv().await {
            if let chat_bus::Delivery::Message { payload, .. } = d
                && let Some(env) = chat_protocol::bus::Envelope::decode(payload)
                && let Some(sid) = env.header.session_id
            {
                verifier.revoke(sid, env.header.until.unwrap_or(now_secs() + 86_400));
            }
        }
        drop(subs);
    });
}

/// Refreshes the key set every `every` (`CHAT_JWKS_REFRESH_SECS`, default 60), not only when a token
/// names an unknown key, so a key retired from the JWKS stops being trusted within that time. When
/// the JWKS cannot be fetched the cached keys stay (an auth outage must not stop verification).
pub fn spawn_key_refresher(verifier: Arc<Verifier>, every: Duration) {
    let weak = Arc::downgrade(&verifier);
    drop(verifier);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(v) = weak.upgrade() else { return };
            if let Err(e) = v.refresh_keys().await {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys");
            }
        }
    });
}

/// `CHAT_JWKS_REFRESH_SECS` (default 60).
pub fn jwks_refresh_from_env() -> Duration {
    Duration::from_secs(chat_common::config::env_parse("CHAT_JWKS_REFRESH_SECS", 60u64).unwrap_or(60).max(1))
}

/// The authenticated caller of a REST route. Handlers take this and never parse tokens themselves.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub claims: Claims,
}

/// Extracts the bearer token of an `Authorization` header.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let verifier = Arc::<Verifier>::from_ref(state);
        let claims = verifier.verify(token).await?;
        Ok(AuthUser { user_id: claims.sub, session_id: claims.sid, claims })
    }
}

/// An HTTP client of another service's internal listener: every request carries the service
/// credential, and none waits longer than `timeout`.
pub fn internal_client(token: &chat_common::internal::InternalToken, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(timeout).default_headers(token.headers())
}

/// The verifier of a service other than auth: keys from auth's JWKS (re-read every
/// `CHAT_JWKS_REFRESH_SECS`), revocations polled from auth every 2 s and, given the `bus`, also
/// applied the moment they are published.
pub fn remote_verifier(
    auth_base: &str,
    token: &chat_common::internal::InternalToken,
    bus: Option<&chat_bus::Bus>,
) -> Arc<Verifier> {
    let auth = auth_base.trim_end_matches('/');
    let verifier = Verifier::new(KeySource::Url(format!("{auth}/.well-known/jwks.json")));
    spawn_key_refresher(verifier.clone(), jwks_refresh_from_env());
    if let Some(bus) = bus {
        spawn_revocation_listener(verifier.clone(), bus);
    }
    spawn_revocation_poller(verifier.clone(), auth, token, Duration::from_secs(2));
    verifier
}

/// The backup path for revocations: polls auth's `/internal/v1/revoked-sessions` every `every`, so a
/// revocation published while the bus was down (or before this service started) still takes effect.
pub fn spawn_revocation_poller(
    verifier: Arc<Verifier>,
    auth_base: &str,
    token: &chat_common::internal::InternalToken,
    every: Duration,
) {
    let url = format!("{}/internal/v1/revoked-sessions", auth_base.trim_end_matches('/'));
    let http = internal_client(token, Duration::from_secs(3)).build().unwrap_or_else(|_| verifier.http.clone());
    tokio::spawn(async move {
        #[derive(Deserialize)]
        struct Entry {
            session_id: Uuid,
            until: i64,
        }
        #[derive(Deserialize)]
        struct List {
            sessions: Vec<Entry>,
        }
        loop {
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    if let Ok(list) = r.json::<List>().await {
                        for e in list.sessions {
                            if !verifier.is_revoked(e.session_id) {
                                verifier.revoke(e.session_id, e.until);
                            }
                        }
                    }
                }
                Ok(r) => tracing::debug!(status = %r.status(), "revocation poll refused"),
                Err(e) => tracing::debug!(error = %e, "revocation poll failed"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

impl Verifier {
    /// Changes whenever a session is newly revoked (lets edges sweep connections only when needed).
    pub fn revocation_version(&self) -> u64 {
        self.revocations.load(std::sync::atomic::Ordering::Relaxed)
    }
}

//! The presence service: who is online across every ws-edge, `GET /v1/presence`, and online/offline
//! transitions published on the bus for edges to fan out.

mod nats_state;
mod redis_state;
pub mod state;

use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use chat_authn::{AuthUser, Verifier};
use chat_bus::Bus;
use chat_common::config::{ConfigError, env_opt, env_or};
use chat_common::ops::ReadyCheck;
use chat_common::{ApiError, ApiJson, ApiQuery, ApiResult};
use chat_protocol::bus::{Envelope, EventHeader, EventKind, topics};
use chat_protocol::frames::ServerEvent;
use chat_protocol::{PresenceList, PresenceStatus};
use state::{MemoryPresence, Transition};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Config {
    /// `PRESENCE_LISTEN`, `PRESENCE_ADMIN_LISTEN`.
    pub listen: String,
    /// `PRESENCE_INTERNAL_LISTEN`: `/internal/v1/*` (edge reports), for the other services only.
    pub internal_listen: String,
    /// `CHAT_INTERNAL_TOKEN` (or `_FILE`): the service credential of the internal API.
    pub internal_token: Option<chat_common::internal::InternalToken>,
    pub admin_listen: String,
    /// `BUS_URL`: where transitions are published.
    pub bus_url: Option<String>,
    /// `BUS_TOPIC_PREFIX`: put before every bus topic (deployments sharing a broker).
    pub bus_topic_prefix: String,
    /// `BUS_SIGNING_KEY` (or `_FILE`): authenticates bus messages (required with Redis or NATS).
    pub bus_key: Option<chat_bus::BusKey>,
    /// `AUTH_URL`: auth's internal listener (JWKS for verifying callers, revocations).
    pub auth_url: String,
    /// `PRESENCE_STORE_URL`: Redis or NATS (shared by replicas) or `memory://` (one replica only).
    /// Defaults to `BUS_URL`, else memory.
    pub store_url: Option<String>,
    /// `PRESENCE_KEY_PREFIX` (`chat:presence`): Redis key prefix.
    pub key_prefix: String,
}

/// The settings of `chat-presence` itself (flags and environment variables).
pub const SETTINGS: &[chat_common::cli::Setting] = &[
    chat_common::cli::Setting::new("PRESENCE_LISTEN", "127.0.0.1:8083", "the public API"),
    chat_common::cli::Setting::new(
        "PRESENCE_INTERNAL_LISTEN",
        "127.0.0.1:7083",
        "/internal/v1/* (credential required)",
    ),
    chat_common::cli::Setting::new("PRESENCE_ADMIN_LISTEN", "127.0.0.1:9083", "/healthz, /readyz, /metrics"),
    chat_common::cli::Setting::url(
        "PRESENCE_STORE_URL",
        "",
        "redis://…, rediss://…, nats://…, tls://… (shared by replicas), memory:// (one replica); default: BUS_URL",
    ),
    chat_common::cli::Setting::new(
        "PRESENCE_KEY_PREFIX",
        "chat:presence",
        "Redis key prefix; on NATS, the JetStream key-value buckets' prefix",
    ),
    chat_common::cli::Setting::url("AUTH_URL", "http://127.0.0.1:7081", "auth's internal listener"),
];

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            listen: env_or("PRESENCE_LISTEN", "127.0.0.1:8083"),
            internal_listen: env_or("PRESENCE_INTERNAL_LISTEN", "127.0.0.1:7083"),
            internal_token: chat_common::internal::InternalToken::from_env_optional()?,
            admin_listen: env_or("PRESENCE_ADMIN_LISTEN", "127.0.0.1:9083"),
            bus_url: env_opt("BUS_URL"),
            bus_topic_prefix: env_or("BUS_TOPIC_PREFIX", ""),
            bus_key: chat_common::config::bus_key()?,
            auth_url: env_or("AUTH_URL", "http://127.0.0.1:7081"),
            store_url: store_url_from_env()?,
            key_prefix: env_or("PRESENCE_KEY_PREFIX", "chat:presence"),
        })
    }
}

fn is_redis(url: &str) -> bool {
    url.starts_with("redis://") || url.starts_with("rediss://")
}

fn is_nats(url: &str) -> bool {
    url.starts_with("nats://") || url.starts_with("tls://")
}

fn is_memory(url: &str) -> bool {
    url.starts_with("memory://")
}

/// `PRESENCE_STORE_URL`, checked: an unknown scheme is a configuration error, never memory.
pub fn store_url_from_env() -> Result<Option<String>, ConfigError> {
    let url = env_opt("PRESENCE_STORE_URL");
    if let Some(u) = &url
        && !(is_redis(u) || is_nats(u) || is_memory(u))
    {
        return Err(ConfigError {
            name: "PRESENCE_STORE_URL",
            value: chat_common::config::redact_url(u),
            reason: "expected redis://, rediss://, nats://, tls:// or memory://".into(),
        });
    }
    Ok(url)
}

/// The store presence uses: `PRESENCE_STORE_URL`, else the bus's broker (Redis keys, or JetStream
/// key-value buckets on NATS: replicas and all-in-one instances sharing the broker share presence
/// too), else memory.
pub fn effective_store_url(store_url: Option<&str>, bus_url: Option<&str>) -> Option<String> {
    store_url.or(bus_url.filter(|u| is_redis(u) || is_nats(u))).map(str::to_string)
}

/// Where presence state lives.
#[derive(Clone)]
pub enum Backend {
    Memory(Arc<MemoryPresence>),
    Redis(redis_state::RedisPresence),
    Nats(Box<nats_state::NatsPresence>),
}

impl Backend {
    /// `redis://`/`rediss://` (Redis), `nats://`/`tls://` (JetStream key-value), `memory://` or none
    /// (this process only); any other scheme is an error.
    pub async fn connect(url: Option<&str>, prefix: &str) -> Result<Backend, String> {
        match url {
            Some(u) if is_redis(u) => {
                Ok(Backend::Redis(redis_state::RedisPresence::connect(u, prefix).await.map_err(|e| e.to_string())?))
            }
            Some(u) if is_nats(u) => Ok(Backend::Nats(Box::new(nats_state::NatsPresence::connect(u, prefix).await?))),
            None => Ok(Backend::Memory(Arc::default())),
            Some(u) if is_memory(u) => Ok(Backend::Memory(Arc::default())),
            Some(u) => Err(format!("unsupported presence store {}", chat_common::config::redact_url(u))),
        }
    }

    async fn report(&self, edge: &str, r: &Report) -> Result<Vec<Transition>, String> {
        // An edge counts as dead 1.5 heartbeats after its last report (it reports every half beat),
        // so its users are offline within 2 heartbeat intervals of its death.
        let ttl = Duration::from_millis(r.heartbeat_ms.max(1) * 3 / 2);
        match self {
            Backend::Memory(m) => Ok(m.report(edge, &r.online, &r.offline, r.full.as_deref(), ttl)),
            Backend::Redis(x) => {
                x.report(edge, &r.online, &r.offline, r.full.as_deref(), ttl).await.map_err(|e| e.to_string())
            }
            Backend::Nats(x) => x.report(edge, &r.online, &r.offline, r.full.as_deref(), ttl).await,
        }
    }

    async fn expire_edges(&self) -> Result<Vec<Transition>, String> {
        match self {
            Backend::Memory(m) => Ok(m.expire_edges()),
            Backend::Redis(x) => x.expire_edges().await.map_err(|e| e.to_string()),
            Backend::Nats(x) => x.expire_edges().await,
        }
    }

    pub async fn query(&self, users: &[Uuid]) -> Result<Vec<chat_protocol::PresenceEntry>, String> {
        match self {
            Backend::Memory(m) => Ok(m.query(users)),
            Backend::Redis(x) => x.query(users).await.map_err(|e| e.to_string()),
            Backend::Nats(x) => x.query(users).await,
        }
    }

    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(x) => x.ping().await,
            Backend::Nats(x) => x.ping().await,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub presence: Backend,
    pub bus: Bus,
    pub verifier: Arc<Verifier>,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(s: &AppState) -> Arc<Verifier> {
        s.verifier.clone()
    }
}

/// Builds the state and starts the dead-edge sweeper (every replica runs one; the sweep is atomic).
pub fn build(presence: Backend, bus: Bus, verifier: Arc<Verifier>) -> AppState {
    let s = AppState { presence, bus, verifier };
    let sweeper = s.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            match sweeper.presence.expire_edges().await {
                Ok(t) => publish(&sweeper, t).await,
                Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
            }
        }
    });
    s
}

async fn publish(s: &AppState, transitions: Vec<Transition>) {
    let online = match &s.presence {
        Backend::Memory(m) => Some(m.online_count() as f64),
        Backend::Redis(r) if !transitions.is_empty() => r.online_count().await.ok().map(|n| n as f64),
        // Not counted on NATS (no atomic counter beside the per-user entries).
        Backend::Redis(_) | Backend::Nats(_) => None,
    };
    if let Some(n) = online {
        metrics::gauge!("presence_online_users").set(n);
    }
    for t in transitions {
        let mut h = EventHeader::new(EventKind::Presence);
        h.user_id = Some(t.user);
        let ev = ServerEvent::Presence {
            user_id: t.user,
            status: if t.online { PresenceStatus::Online } else { PresenceStatus::Offline },
            last_seen_at: (!t.online).then_some(t.at),
        };
        metrics::counter!("presence_transitions_total").increment(1);
        if let Err(e) = s.bus.publish(topics::PRESENCE, Envelope::encode(&h, &ev.to_json())).await {
            tracing::warn!(error = %e, "presence transition not published");
        }
    }
}

fn documented() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(query))
}

pub fn public_router(s: &AppState) -> Router {
    documented().split_for_parts().0.with_state(s.clone())
}

/// The OpenAPI 3.1 document of the public routes, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    chat_common::openapi::finish(documented().into_openapi(), "chat presence")
}

pub fn internal_router(s: &AppState) -> Router {
    Router::new()
        .route("/internal/v1/edges/{edge}/report", post(report))
        .route("/internal/v1/presence", axum::routing::get(internal_query))
        .with_state(s.clone())
}

/// `GET /v1/presence` for the other services (the old WebSocket dialect on the edges).
async fn internal_query(
    State(s): State<AppState>,
    q: ApiQuery<HashMap<String, String>>,
) -> ApiResult<ApiJson<PresenceList>> {
    lookup(&s, q).await
}

#[utoipa::path(get, path = "/v1/presence", tag = "presence", security(("bearer" = [])),
    params(("user_ids" = String, Query, description = "1-200 comma-separated user ids")),
    responses((status = 200, description = "one entry per id, in the order asked", body = PresenceList),
        chat_common::openapi::AuthedErrors))]
async fn query(
    State(s): State<AppState>,
    _who: AuthUser,
    q: ApiQuery<HashMap<String, String>>,
) -> ApiResult<ApiJson<PresenceList>> {
    lookup(&s, q).await
}

/// The presence of the `user_ids` asked for, in that order (public and internal routes alike).
async fn lookup(s: &AppState, ApiQuery(q): ApiQuery<HashMap<String, String>>) -> ApiResult<ApiJson<PresenceList>> {
    let ids = parse_user_ids(q.get("user_ids").map(String::as_str).unwrap_or(""))?;
    let presence = s.presence.query(&ids).await.map_err(ApiError::unavailable)?;
    Ok(ApiJson(PresenceList { presence }))
}

/// `user_ids` of a presence query: 1-200 comma-separated UUIDs. Public for the fuzz target (fuzz/).
pub fn parse_user_ids(raw: &str) -> ApiResult<Vec<Uuid>> {
    let mut ids = Vec::new();
    for part in raw.split(',').filter(|p| !p.is_empty()) {
        if ids.len() == 200 {
            return Err(ApiError::validation("`user_ids` takes 1-200 comma-separated ids"));
        }
        ids.push(Uuid::parse_str(part.trim()).map_err(|_| ApiError::validation(format!("not a user id: {part:?}")))?);
    }
    if ids.is_empty() {
        return Err(ApiError::validation("`user_ids` takes 1-200 comma-separated ids"));
    }
    Ok(ids)
}

/// An edge's batched report (see ws-edge `PresenceReport`).
#[derive(serde::Deserialize)]
pub struct Report {
    #[serde(default)]
    pub online: Vec<Uuid>,
    #[serde(default)]
    pub offline: Vec<Uuid>,
    #[serde(default)]
    pub full: Option<Vec<Uuid>>,
    pub heartbeat_ms: u64,
}

async fn report(
    State(s): State<AppState>,
    Path(edge): Path<String>,
    ApiJson(r): ApiJson<Report>,
) -> ApiResult<StatusCode> {
    apply_report(&s, &edge, &r).await.map_err(ApiError::unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Applies an edge report and publishes the transitions (used by the route and the all-in-one).
pub async fn apply_report(s: &AppState, edge: &str, r: &Report) -> Result<(), String> {
    metrics::counter!("presence_reports_total").increment(1);
    let t = s.presence.report(edge, r).await?;
    publish(s, t).await;
    Ok(())
}

pub async fn run(cfg: Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let bus = Bus::connect_signed(cfg.bus_url.as_deref(), &cfg.bus_topic_prefix, cfg.bus_key.clone())
        .await
        .map_err(std::io::Error::other)?;
    let token = chat_common::internal::InternalToken::required(&cfg.internal_token).map_err(std::io::Error::other)?;
    let auth = cfg.auth_url.trim_end_matches('/').to_string();
    let verifier = chat_authn::remote_verifier(&auth, &token, Some(&bus));
    let store_url = effective_store_url(cfg.store_url.as_deref(), cfg.bus_url.as_deref());
    let backend = Backend::connect(store_url.as_deref(), &cfg.key_prefix).await.map_err(std::io::Error::other)?;
    let s = build(backend.clone(), bus.clone(), verifier);
    let checks = vec![
        chat_common::ops::bus_check(bus),
        ReadyCheck::new("presence-store", move || {
            let b = backend.clone();
            async move { b.ping().await }
        }),
        // Not auth (see message-store): readiness is this replica's own.
    ];
    let app = public_router(&s).merge(chat_common::openapi::serve(&openapi()));
    let app = chat_common::server::public_layers(app);
    let internal = chat_common::server::Internal {
        addr: cfg.internal_listen.clone(),
        var: "PRESENCE_INTERNAL_LISTEN",
        router: chat_common::internal::internal_layers(internal_router(&s), token),
    };
    chat_common::server::serve_service(
        &cfg.listen,
        "PRESENCE_LISTEN",
        app,
        Some(internal),
        &cfg.admin_listen,
        "PRESENCE_ADMIN_LISTEN",
        checks,
        shutdown,
    )
    .await
}

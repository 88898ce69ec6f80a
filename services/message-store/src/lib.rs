//! The message-store service: conversations and members, messages with a gapless per-conversation
//! seq, idempotent sends, read state, and a transactional outbox that publishes every change on the bus.

pub mod config;
pub mod directory;
mod error;
pub mod events;
pub mod outbox;
pub mod routes;
pub mod service;
pub mod store;
pub mod writer;

pub use config::{Config, Limits};
pub use error::Error;

use axum::Router;
use axum::extract::FromRef;
use chat_authn::Verifier;
use chat_bus::Bus;
use chat_common::ops::ReadyCheck;
use chat_db::Db;
use directory::UserDirectory;
use std::sync::Arc;

static MIGRATIONS_PG: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct AppState {
    pub store: store::Store,
    pub outbox: outbox::Outbox,
    /// Sends go through the writer: batched on PostgreSQL (group commit).
    pub writer: writer::Writer,
    pub verifier: Arc<Verifier>,
    pub directory: Arc<dyn UserDirectory>,
    /// One send budget per user for REST and WebSocket sends alike.
    pub sends: Arc<chat_common::rate::UserBudgets>,
    /// Conversations a user may create.
    pub creations: Arc<chat_common::rate::UserBudgets>,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(s: &AppState) -> Arc<Verifier> {
        s.verifier.clone()
    }
}

/// Connects and migrates the database and starts the outbox relay and the writers. `group_commit`
/// is the most sends one transaction stores (`MESSAGE_STORE_GROUP_COMMIT`; 1 stores each alone).
pub async fn build(
    db: &chat_db::DbConfig,
    group_commit: usize,
    limits: &Limits,
    bus: Bus,
    verifier: Arc<Verifier>,
    directory: Arc<dyn UserDirectory>,
) -> Result<AppState, Error> {
    let db = Db::connect_for_serving(db, &MIGRATIONS_PG, &MIGRATIONS_SQLITE).await?;
    db.spawn_pool_metrics("message-store");
    let store = store::Store::new(db);
    let outbox = outbox::Outbox::start(store.clone(), bus);
    let writer = writer::Writer::start(store.clone(), group_commit);
    let sends = Arc::new(chat_common::rate::UserBudgets::new(limits.send_rate, limits.send_burst));
    let creations = Arc::new(chat_common::rate::UserBudgets::new(limits.create_per_min / 60.0, limits.create_burst));
    Ok(AppState { store, outbox, writer, verifier, directory, sends, creations })
}

/// The store alone, migrated (for `chat import-django`, which writes history without running the service).
pub async fn open_store(db: &chat_db::DbConfig) -> Result<store::Store, Error> {
    Ok(store::Store::new(Db::connect_and_migrate(db, &MIGRATIONS_PG, &MIGRATIONS_SQLITE).await?))
}

/// `chat-message-store migrate`: applies the migrations and exits (the one-shot step of deployments).
pub async fn migrate(db: &chat_db::DbConfig) -> Result<(), Error> {
    Db::connect_and_migrate(db, &MIGRATIONS_PG, &MIGRATIONS_SQLITE).await?;
    Ok(())
}

pub fn public_router(s: &AppState) -> Router {
    routes::public(s.clone())
}

/// The OpenAPI 3.1 document of the public routes, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    chat_common::openapi::finish(routes::documented().into_openapi(), "chat message-store")
}

pub fn internal_router(s: &AppState) -> Router {
    routes::internal(s.clone())
}

pub fn ready_checks(s: &AppState) -> Vec<ReadyCheck> {
    vec![s.store.db().ready_check("message-store-database")]
}

/// Runs the service until `shutdown`.
pub async fn run(cfg: Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let bus = Bus::connect_signed(cfg.bus_url.as_deref(), &cfg.bus_topic_prefix, cfg.bus_key.clone())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let token = chat_common::internal::InternalToken::required(&cfg.internal_token)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let auth = cfg.auth_url.trim_end_matches('/').to_string();
    let verifier = chat_authn::remote_verifier(&auth, &token, Some(&bus));
    let directory = Arc::new(directory::HttpDirectory::new(&auth, &token));
    let state = build(&cfg.database, cfg.group_commit, &cfg.limits, bus.clone(), verifier, directory).await?;
    let mut checks = ready_checks(&state);
    checks.push(chat_common::ops::bus_check(bus));
    // Not auth: cached keys keep verifying through an auth outage, and a readiness that followed
    // auth's would take every replica out of its Service at once.
    let app = public_router(&state).merge(chat_common::openapi::serve(&openapi()));
    let app = chat_common::server::public_layers(app);
    let internal = chat_common::server::Internal {
        addr: cfg.internal_listen.clone(),
        var: "MESSAGE_STORE_INTERNAL_LISTEN",
        router: chat_common::internal::internal_layers(internal_router(&state), token),
    };
    chat_common::server::serve_service(
        &cfg.listen,
        "MESSAGE_STORE_LISTEN",
        app,
        Some(internal),
        &cfg.admin_listen,
        "MESSAGE_STORE_ADMIN_LISTEN",
        checks,
        shutdown,
    )
    .await
    .map_err(|e| Error::Internal(e.to_string()))
}

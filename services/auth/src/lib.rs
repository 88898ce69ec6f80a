//! The auth service: accounts, Ed25519-signed access tokens published as a JWKS, rotating refresh
//! tokens with reuse detection, login throttling, and the user directory.

pub mod accounts;
pub mod config;
mod error;
pub mod key_cipher;
pub mod keys;
pub mod legacy;
pub mod operator;
mod password;
pub mod routes;
pub mod store;

pub use config::{Cidr, Config, Limits};
pub use error::Error;

use axum::Router;
use axum::extract::FromRef;
use chat_authn::{KeySource, Verifier};
use chat_bus::Bus;
use chat_common::ops::ReadyCheck;
use chat_db::Db;
use std::sync::Arc;
use std::time::Duration;

static MIGRATIONS_PG: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: store::Store,
    pub keys: keys::Keys,
    pub hasher: password::Hasher,
    pub bus: Bus,
    pub verifier: Arc<Verifier>,
    pub limits: Arc<Limits>,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(s: &AppState) -> Arc<Verifier> {
        s.verifier.clone()
    }
}

/// Connects the database, migrates, loads (or creates) the signing key.
pub async fn build(db: chat_db::DbConfig, limits: Limits, bus: Bus) -> Result<AppState, Error> {
    let db = Db::connect_for_serving(&db, &MIGRATIONS_PG, &MIGRATIONS_SQLITE).await?;
    db.spawn_pool_metrics("auth");
    let store = store::Store::new(db);
    require_cipher(&store, &limits.key_cipher)?;
    let keys = keys::Keys::load(&store, limits.access_ttl, limits.key_cipher.clone()).await?;
    let verifier = Verifier::new(KeySource::Local(Arc::new(keys.clone())));
    for (sid, until) in store.revoked_sessions(chat_authn::now_secs()).await? {
        verifier.revoke(sid, until);
    }
    let hasher = password::Hasher::new(limits.hash_concurrency, limits.hash_queue);
    if let Some(sample) = store.sample_legacy_hash().await? {
        hasher.calibrate_legacy(sample).await;
    }
    Ok(AppState { store, keys, hasher, bus, verifier, limits: Arc::new(limits) })
}

/// Background upkeep: reload keys (a rotation on another replica), purge old throttle events.
pub fn spawn_background(s: &AppState) {
    chat_authn::spawn_key_refresher(s.verifier.clone(), chat_authn::jwks_refresh_from_env());
    let s = s.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(s.limits.key_reload_secs.max(1)));
        // Revocations recorded by another process (an operator's command, another replica) since
        // this one started are enforced here and announced again (edges close the sockets).
        let mut revoked_seen = chat_protocol::Timestamp::now().0;
        loop {
            tick.tick().await;
            let now = chat_protocol::Timestamp::now().0;
            match s.store.revoked_since(revoked_seen).await {
                Ok(rows) => {
                    for (sid, until, at) in rows {
                        revoked_seen = revoked_seen.max(at);
                        if !s.verifier.is_revoked(sid) && until >= chat_authn::now_secs() {
                            s.verifier.revoke(sid, until);
                            accounts::announce_revocation(&s.bus, sid, until).await;
                        }
                    }
                    // Rows stamped just before `now` by a slow transaction are read again next time.
                    revoked_seen = revoked_seen.max(now - 5_000);
                }
                Err(e) => tracing::warn!(error = %e, "revocation poll failed"),
            }
            if let Err(e) = s.keys.reload(&s.store, s.limits.access_ttl).await {
                tracing::warn!(error = %e, "key reload failed");
            }
            let horizon = chat_protocol::Timestamp::now().0
                - 1000 * s.limits.login_window_secs.max(s.limits.register_window_secs);
            if let Err(e) = s.store.throttle_purge(horizon).await {
                tracing::warn!(error = %e, "throttle purge failed");
            }
            // Expired refresh tokens, and sessions nothing can use any more (a day's grace keeps
            // recently revoked sessions answerable by the revocation poll).
            let now = chat_protocol::Timestamp::now().0;
            match s.store.purge_sessions(now, now / 1000 - 86_400).await {
                Ok(n) if n > 0 => metrics::counter!("auth_sessions_purged_total").increment(n),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "session purge failed"),
            }
        }
    });
}

/// `chat-auth migrate`: applies the migrations and exits (the one-shot step of deployments).
pub async fn migrate(db: &chat_db::DbConfig) -> Result<(), Error> {
    Db::connect_and_migrate(db, &MIGRATIONS_PG, &MIGRATIONS_SQLITE).await?;
    Ok(())
}

/// The store alone, migrated (for `chat import-django`, which writes users without running the service).
pub async fn open_store(db: &chat_db::DbConfig) -> Result<store::Store, Error> {
    Ok(store::Store::new(Db::connect_and_migrate(db, &MIGRATIONS_PG, &MIGRATIONS_SQLITE).await?))
}

/// Key rotation (`chat-auth rotate-key`): a new signing key becomes active; the previous ones stay
/// in the JWKS until every token they signed has expired. Running replicas switch within
/// `AUTH_KEY_RELOAD_SECS`. Returns the new `kid`.
/// With `retire_previous` (a leaked key) the previous keys leave the JWKS at once instead of after
/// their tokens expired: tokens they signed stop verifying within `AUTH_KEY_RELOAD_SECS` +
/// `CHAT_JWKS_REFRESH_SECS` (clients log in again).
pub async fn rotate_key(
    db: &chat_db::DbConfig,
    cipher: Option<&key_cipher::KeyCipher>,
    retire_previous: bool,
) -> Result<String, Error> {
    let store = store::Store::new(Db::connect_and_migrate(db, &MIGRATIONS_PG, &MIGRATIONS_SQLITE).await?);
    require_cipher(&store, &cipher.cloned())?;
    keys::Keys::rotate(&store, cipher, retire_previous).await
}

/// Signing keys in PostgreSQL are encrypted at rest: the database is shared by backups, replicas and
/// operators' tools, and a private key read there forges any user's tokens.
fn require_cipher(store: &store::Store, cipher: &Option<key_cipher::KeyCipher>) -> Result<(), Error> {
    if cipher.is_none() && store.db().backend == chat_db::Backend::Postgres {
        return Err(Error::Internal(format!(
            "{} (or {}) is required when the auth database is PostgreSQL: the signing keys are encrypted \
             at rest with it (openssl rand -hex 32)",
            key_cipher::VAR,
            key_cipher::FILE_VAR
        )));
    }
    Ok(())
}

pub fn public_router(s: &AppState) -> Router {
    routes::public(s.clone())
}

/// The OpenAPI 3.1 document of the public routes, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    chat_common::openapi::finish(routes::documented().into_openapi(), "chat auth")
}

pub fn internal_router(s: &AppState) -> Router {
    routes::internal(s.clone())
}

pub fn ready_checks(s: &AppState) -> Vec<ReadyCheck> {
    vec![s.store.db().ready_check("auth-database")]
}

/// Runs the service until `shutdown`: public routes on `listen`, internal ones (credential required)
/// on `internal_listen`, admin on `admin_listen`.
pub async fn run(cfg: Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let bus = Bus::connect_signed(cfg.bus_url.as_deref(), &cfg.bus_topic_prefix, cfg.bus_key.clone())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let token = chat_common::internal::InternalToken::required(&cfg.internal_token)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let state = build(cfg.database.clone(), cfg.limits.clone(), bus.clone()).await?;
    spawn_background(&state);
    let mut checks = ready_checks(&state);
    checks.push(chat_common::ops::bus_check(bus));
    let app = public_router(&state).merge(chat_common::openapi::serve(&openapi()));
    let app = chat_common::server::public_layers(app);
    let internal = chat_common::server::Internal {
        addr: cfg.internal_listen.clone(),
        var: "AUTH_INTERNAL_LISTEN",
        router: chat_common::internal::internal_layers(internal_router(&state), token),
    };
    chat_common::server::serve_service(
        &cfg.listen,
        "AUTH_LISTEN",
        app,
        Some(internal),
        &cfg.admin_listen,
        "AUTH_ADMIN_LISTEN",
        checks,
        shutdown,
    )
    .await
    .map_err(|e| Error::Internal(e.to_string()))
}

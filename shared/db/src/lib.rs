//! One pool type (`sqlx::AnyPool`) over PostgreSQL and SQLite, so each store writes its SQL once.
//!
//! The SQL is kept portable (`$n` placeholders, `RETURNING`, `ON CONFLICT`); ids are UUID text and
//! times are Unix milliseconds (BIGINT), which both engines index and compare identically. Where the
//! engines truly differ (row locks, migrations' DDL) the store asks `Db::backend`.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported DATABASE_URL {0:?} (expected postgres:// or sqlite://)")]
    BadUrl(String),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the database schema is behind this version (missing migrations {0}) and MIGRATE_ON_START is false: \
         run the `migrate` subcommand (or the migration Job) first"
    )]
    Behind(String),
}

/// How to connect: the URL, an optional PostgreSQL schema (created if missing, then used as the
/// search path: lets several services or tests share one database), and the pool size.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: String,
    pub schema: Option<String>,
    pub max_connections: u32,
}

impl Db {
    pub async fn connect(cfg: &DbConfig) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if cfg.url.starts_with("postgres://") || cfg.url.starts_with("postgresql://") {
            Backend::Postgres
        } else if cfg.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(DbError::BadUrl(chat_common::config::redact_url(&cfg.url)));
        };
        if let Some(schema) = &cfg.schema
            && !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(DbError::BadUrl(format!("schema {schema:?} must be [A-Za-z0-9_]")));
        }
        if backend == Backend::Sqlite {
            private_sqlite_file(&cfg.url)?;
        }
        let schema = cfg.schema.clone().filter(|_| backend == Backend::Postgres);
        if let Some(s) = &schema {
            // Create the schema once on a plain connection before the pool sets it as search path.
            let opts = AnyConnectOptions::from_str(&cfg.url)?;
            let pool = AnyPoolOptions::new().max_connections(1).connect_with(opts).await?;
            // Only when it is missing: a least-privilege role owns its schema but may not create
            // schemas in the database, and PostgreSQL checks that right before `IF NOT EXISTS`.
            let exists = sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
                .bind(s.as_str())
                .fetch_optional(&pool)
                .await?
                .is_some();
            if !exists {
                pool.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""))).await?;
            }
            pool.close().await;
        }
        let opts = AnyConnectOptions::from_str(&cfg.url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { cfg.max_connections.min(8) } else { cfg.max_connections })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    match backend {
                        Backend::Postgres => {
                            if let Some(s) = schema {
                                conn.execute(sqlx::AssertSqlSafe(format!("SET search_path TO \"{s}\""))).await?;
                            }
                        }
                        // WAL lets readers run beside the one writer; busy_timeout makes writers queue
                        // instead of failing; transactions begin with a write so the wait applies.
                        Backend::Sqlite => {
                            conn.execute(
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                                 PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;",
                            )
                            .await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        Ok(Db { pool, backend })
    }

    /// Runs the migrations for this backend. On PostgreSQL sqlx holds an advisory lock while it
    /// migrates, so replicas starting together apply each migration exactly once.
    pub async fn migrate(&self, postgres: &Migrator, sqlite: &Migrator) -> Result<(), DbError> {
        match self.backend {
            Backend::Postgres => postgres.run(&self.pool).await?,
            Backend::Sqlite => sqlite.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Exports `db_pool_connections{pool, state}` (busy and idle) every 5 s.
    pub fn spawn_pool_metrics(&self, pool: &'static str) {
        let p = self.pool.clone();
        tokio::spawn(async move {
            loop {
                let (size, idle) = (p.size() as f64, p.num_idle() as f64);
                metrics::gauge!("db_pool_connections", "pool" => pool, "state" => "busy").set(size - idle);
                metrics::gauge!("db_pool_connections", "pool" => pool, "state" => "idle").set(idle);
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
    }

    /// A cheap round trip for `/readyz`.
    pub async fn ping(&self) -> Result<(), String> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Whether an error is a unique-constraint violation (by kind, never by message text).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Whether an error means the database cannot be reached right now (answer 503, not 500).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        sqlx::Error::WorkerCrashed => true,
        // PostgreSQL shutting down or starting (57P01-57P03), connection exceptions (08xxx), too many
        // connections (53300): the server is going or coming back, not the request at fault.
        sqlx::Error::Database(d) => {
            d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08") || c == "53300")
        }
        _ => false,
    }
}

/// For SQLite files in the data directory: makes sure the directory exists, readable by this user
/// only (0700: it holds the signing key and every message), and the file may be created.
pub fn sqlite_url_for(path: &std::path::Path) -> String {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)) {
                tracing::warn!(dir = %parent.display(), error = %e, "cannot make the data directory private");
            }
        }
    }
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Creates a SQLite database file readable and writable by this user only (0600), or narrows an
/// existing one to that; SQLite gives its `-wal` and `-shm` files the same mode.
fn private_sqlite_file(url: &str) -> Result<(), DbError> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| DbError::BadUrl(format!("{path}: {e}"));
        if !std::path::Path::new(path).exists() {
            std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(io)?;
        }
        for suffix in ["", "-wal", "-shm"] {
            let p = format!("{path}{suffix}");
            if std::path::Path::new(&p).exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// The error of a service whose failures are database failures or internal ones; mapped to problem
/// details in one place: an unreachable database is 503 `unavailable`, the rest 500 (logged, never sent).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sqlx(e) => StoreError::Db(e),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for chat_common::ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db(e) if is_unavailable(&e) => chat_common::ApiError::unavailable("database unavailable"),
            other => chat_common::ApiError::internal(other),
        }
    }
}

impl Db {
    /// Connects for serving: applies the migrations when `MIGRATE_ON_START` is true (the default),
    /// else only checks that every migration of this version has been applied (deployments that run
    /// DDL from a migration Job alone, with an application role that may not change the schema).
    pub async fn connect_for_serving(cfg: &DbConfig, postgres: &Migrator, sqlite: &Migrator) -> Result<Db, DbError> {
        let migrate =
            chat_common::config::env_parse("MIGRATE_ON_START", true).map_err(|e| DbError::BadUrl(e.to_string()))?;
        if migrate {
            return Db::connect_and_migrate(cfg, postgres, sqlite).await;
        }
        let db = Db::connect(cfg).await?;
        let migrator = if db.backend == Backend::Postgres { postgres } else { sqlite };
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&db.pool)
            .await
            .unwrap_or_default();
        let missing: Vec<String> =
            migrator.iter().filter(|m| !applied.contains(&m.version)).map(|m| m.version.to_string()).collect();
        if missing.is_empty() { Ok(db) } else { Err(DbError::Behind(missing.join(", "))) }
    }

    /// Connects and applies the migrations (the `migrate` subcommand of the services).
    pub async fn connect_and_migrate(cfg: &DbConfig, postgres: &Migrator, sqlite: &Migrator) -> Result<Db, DbError> {
        let db = Db::connect(cfg).await?;
        db.migrate(postgres, sqlite).await?;
        Ok(db)
    }

    /// The readiness check of this database.
    pub fn ready_check(&self, name: &'static str) -> chat_common::ops::ReadyCheck {
        let db = self.clone();
        chat_common::ops::ReadyCheck::new(name, move || {
            let db = db.clone();
            async move { db.ping().await }
        })
    }
}

//! Message-store configuration, read from the environment once at start.

use chat_common::config::{ConfigError, env_opt, env_or, env_parse};
use chat_db::DbConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// `MESSAGE_STORE_LISTEN`: the public API.
    pub listen: String,
    /// `MESSAGE_STORE_INTERNAL_LISTEN`: `/internal/v1/*`, for the other services only.
    pub internal_listen: String,
    /// `CHAT_INTERNAL_TOKEN` (or `_FILE`): the service credential of the internal API.
    pub internal_token: Option<chat_common::internal::InternalToken>,
    /// `MESSAGE_STORE_ADMIN_LISTEN`: /healthz, /readyz, /metrics.
    pub admin_listen: String,
    pub database: DbConfig,
    /// `BUS_URL`: where committed events are published.
    pub bus_url: Option<String>,
    /// `BUS_TOPIC_PREFIX`: put before every bus topic (deployments sharing a broker).
    pub bus_topic_prefix: String,
    /// `BUS_SIGNING_KEY` (or `_FILE`): authenticates bus messages (required with Redis or NATS).
    pub bus_key: Option<chat_bus::BusKey>,
    /// `AUTH_URL`: the auth service's internal listener (JWKS for tokens, user lookups).
    pub auth_url: String,
    /// `MESSAGE_STORE_GROUP_COMMIT`: the most concurrent sends stored in one PostgreSQL transaction.
    pub group_commit: usize,
    pub limits: Limits,
}

/// Per-user budgets (same variables in the all-in-one binary). The send budget is the one the edges
/// apply to WebSocket sends: here it covers REST and WebSocket sends together.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `CHAT_SEND_RATE_PER_SEC` (20) and `CHAT_SEND_BURST` (40).
    pub send_rate: f64,
    pub send_burst: f64,
    /// `CHAT_CREATE_PER_MIN` (60) and `CHAT_CREATE_BURST` (60): conversations a user may create.
    pub create_per_min: f64,
    pub create_burst: f64,
}

impl Limits {
    pub fn from_env() -> Result<Limits, ConfigError> {
        Ok(Limits {
            send_rate: env_parse("CHAT_SEND_RATE_PER_SEC", 20.0)?,
            send_burst: env_parse("CHAT_SEND_BURST", 40.0)?,
            create_per_min: env_parse("CHAT_CREATE_PER_MIN", 60.0)?,
            create_burst: env_parse("CHAT_CREATE_BURST", 60.0)?,
        })
    }
}

use chat_common::cli::Setting;

/// The settings of `chat-message-store` itself (flags and environment variables).
pub const SETTINGS: &[Setting] = &[
    Setting::new("MESSAGE_STORE_LISTEN", "127.0.0.1:8082", "the public API"),
    Setting::new("MESSAGE_STORE_INTERNAL_LISTEN", "127.0.0.1:7082", "/internal/v1/* (credential required)"),
    Setting::new("MESSAGE_STORE_ADMIN_LISTEN", "127.0.0.1:9082", "/healthz, /readyz, /metrics"),
    Setting::url(
        "DATABASE_URL",
        "sqlite://./data/messages.db?mode=rwc",
        "postgres://… (sslmode, sslrootcert honoured) or sqlite://…",
    ),
    Setting::new("DATABASE_SCHEMA", "", "PostgreSQL schema (created if missing)"),
    Setting::new("DATABASE_MAX_CONNECTIONS", "20", "pool size"),
    Setting::new("MIGRATE_ON_START", "true", "apply migrations at start (false: only check they were applied)"),
    Setting::new("MESSAGE_STORE_GROUP_COMMIT", "128", "concurrent sends stored in one transaction at most"),
    Setting::url("AUTH_URL", "http://127.0.0.1:7081", "auth's internal listener"),
];

/// Per-user budgets: shared with the all-in-one binary.
pub const LIMIT_SETTINGS: &[Setting] = &[
    Setting::new("CHAT_SEND_RATE_PER_SEC", "20", "sends per user per second (REST and WebSocket together)"),
    Setting::new("CHAT_SEND_BURST", "40", "send burst per user"),
    Setting::new("CHAT_CREATE_PER_MIN", "60", "conversations a user may create per minute"),
    Setting::new("CHAT_CREATE_BURST", "60", "conversation-creation burst per user"),
];

/// Default of `MESSAGE_STORE_GROUP_COMMIT`.
pub const GROUP_COMMIT: usize = 128;

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            listen: env_or("MESSAGE_STORE_LISTEN", "127.0.0.1:8082"),
            internal_listen: env_or("MESSAGE_STORE_INTERNAL_LISTEN", "127.0.0.1:7082"),
            internal_token: chat_common::internal::InternalToken::from_env_optional()?,
            admin_listen: env_or("MESSAGE_STORE_ADMIN_LISTEN", "127.0.0.1:9082"),
            database: DbConfig {
                url: env_or("DATABASE_URL", "sqlite://./data/messages.db?mode=rwc"),
                schema: env_opt("DATABASE_SCHEMA"),
                max_connections: env_parse("DATABASE_MAX_CONNECTIONS", 20)?,
            },
            bus_url: env_opt("BUS_URL"),
            bus_topic_prefix: env_or("BUS_TOPIC_PREFIX", ""),
            bus_key: chat_common::config::bus_key()?,
            auth_url: env_or("AUTH_URL", "http://127.0.0.1:7081"),
            group_commit: env_parse("MESSAGE_STORE_GROUP_COMMIT", GROUP_COMMIT)?,
            limits: Limits::from_env()?,
        })
    }
}

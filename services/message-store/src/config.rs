//! Message-store configuration, read from the environment once at start.

use chat_common::config::{ConfigError, env_opt, env_or, env_parse};
use chat_db::DbConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// `MESSAGE_STORE_LISTEN`: public and internal API.
    pub listen: String,
    /// `MESSAGE_STORE_ADMIN_LISTEN`: /healthz, /readyz, /metrics.
    pub admin_listen: String,
    pub database: DbConfig,
    /// `BUS_URL`: where committed events are published.
    pub bus_url: Option<String>,
    /// `AUTH_URL`: the auth service (JWKS for tokens, user lookups).
    pub auth_url: String,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            listen: env_or("MESSAGE_STORE_LISTEN", "127.0.0.1:8082"),
            admin_listen: env_or("MESSAGE_STORE_ADMIN_LISTEN", "127.0.0.1:9082"),
            database: DbConfig {
                url: env_or("DATABASE_URL", "sqlite://./data/messages.db?mode=rwc"),
                schema: env_opt("DATABASE_SCHEMA"),
                max_connections: env_parse("DATABASE_MAX_CONNECTIONS", 20)?,
            },
            bus_url: env_opt("BUS_URL"),
            auth_url: env_or("AUTH_URL", "http://127.0.0.1:8081"),
        })
    }
}

//! Auth service configuration, read from the environment once at start.

use chat_common::config::{ConfigError, env_opt, env_or, env_parse};
use chat_db::DbConfig;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_LISTEN`: public and internal API.
    pub listen: String,
    /// `AUTH_ADMIN_LISTEN`: /healthz, /readyz, /metrics.
    pub admin_listen: String,
    pub database: DbConfig,
    /// `BUS_URL`: where revocation events go.
    pub bus_url: Option<String>,
    pub limits: Limits,
}

/// Token lifetimes and throttling: shared by the service and the all-in-one binary (same variables).
#[derive(Debug, Clone)]
pub struct Limits {
    /// `CHAT_ACCESS_TOKEN_TTL` seconds (default 900).
    pub access_ttl: i64,
    /// `CHAT_REFRESH_TOKEN_TTL` seconds (default 30 days).
    pub refresh_ttl: i64,
    /// `CHAT_LOGIN_MAX_FAILURES_PER_USER` (10) and `CHAT_LOGIN_MAX_FAILURES_PER_IP` (50) within
    /// `CHAT_LOGIN_WINDOW_SECS` (900).
    pub login_failures_per_user: i64,
    pub login_failures_per_ip: i64,
    pub login_window_secs: i64,
    /// `CHAT_REGISTER_MAX_PER_IP` (1000) within `CHAT_REGISTER_WINDOW_SECS` (3600).
    pub registrations_per_ip: i64,
    pub register_window_secs: i64,
    /// `CHAT_TRUSTED_PROXIES`: comma-separated addresses whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// `AUTH_HASH_CONCURRENCY`: password hashes computed at once (each takes 19 MiB).
    pub hash_concurrency: usize,
    /// `AUTH_KEY_RELOAD_SECS` (30): how soon a key rotation done elsewhere is picked up.
    pub key_reload_secs: u64,
}

impl Limits {
    pub fn from_env() -> Result<Limits, ConfigError> {
        let trusted = env_or("CHAT_TRUSTED_PROXIES", "");
        let mut trusted_proxies = Vec::new();
        for p in trusted.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            trusted_proxies.push(p.parse().map_err(|e: std::net::AddrParseError| ConfigError {
                name: "CHAT_TRUSTED_PROXIES",
                value: p.to_string(),
                reason: e.to_string(),
            })?);
        }
        Ok(Limits {
            access_ttl: env_parse("CHAT_ACCESS_TOKEN_TTL", 900)?,
            refresh_ttl: env_parse("CHAT_REFRESH_TOKEN_TTL", 30 * 24 * 3600)?,
            login_failures_per_user: env_parse("CHAT_LOGIN_MAX_FAILURES_PER_USER", 10)?,
            login_failures_per_ip: env_parse("CHAT_LOGIN_MAX_FAILURES_PER_IP", 50)?,
            login_window_secs: env_parse("CHAT_LOGIN_WINDOW_SECS", 900)?,
            registrations_per_ip: env_parse("CHAT_REGISTER_MAX_PER_IP", 1000)?,
            register_window_secs: env_parse("CHAT_REGISTER_WINDOW_SECS", 3600)?,
            trusted_proxies,
            hash_concurrency: env_parse("AUTH_HASH_CONCURRENCY", 4)?,
            key_reload_secs: env_parse("AUTH_KEY_RELOAD_SECS", 30)?,
        })
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            listen: env_or("AUTH_LISTEN", "127.0.0.1:8081"),
            admin_listen: env_or("AUTH_ADMIN_LISTEN", "127.0.0.1:9081"),
            database: DbConfig {
                url: env_or("DATABASE_URL", "sqlite://./data/auth.db?mode=rwc"),
                schema: env_opt("DATABASE_SCHEMA"),
                max_connections: env_parse("DATABASE_MAX_CONNECTIONS", 10)?,
            },
            bus_url: env_opt("BUS_URL"),
            limits: Limits::from_env()?,
        })
    }
}

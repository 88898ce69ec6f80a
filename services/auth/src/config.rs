//! Auth service configuration, read from the environment once at start.

use chat_common::config::{ConfigError, env_opt, env_or, env_parse};
use chat_db::DbConfig;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_LISTEN`: the public API.
    pub listen: String,
    /// `AUTH_INTERNAL_LISTEN`: `/internal/v1/*` and the JWKS, for the other services only.
    pub internal_listen: String,
    /// `CHAT_INTERNAL_TOKEN` (or `_FILE`): the service credential of the internal API.
    pub internal_token: Option<chat_common::internal::InternalToken>,
    /// `AUTH_ADMIN_LISTEN`: /healthz, /readyz, /metrics.
    pub admin_listen: String,
    pub database: DbConfig,
    /// `BUS_URL`: where revocation events go.
    pub bus_url: Option<String>,
    /// `BUS_TOPIC_PREFIX`: put before every bus topic (deployments sharing a broker).
    pub bus_topic_prefix: String,
    /// `BUS_SIGNING_KEY` (or `_FILE`): authenticates bus messages (required with Redis or NATS).
    pub bus_key: Option<chat_bus::BusKey>,
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
    /// `CHAT_LOGIN_MAX_ATTEMPTS_PER_IP` (500): every login attempt from one address within the window,
    /// successful or not (each costs a password hash).
    pub login_attempts_per_ip: i64,
    /// `CHAT_REGISTER_MAX_PER_IP` (1000) within `CHAT_REGISTER_WINDOW_SECS` (3600).
    pub registrations_per_ip: i64,
    pub register_window_secs: i64,
    /// `CHAT_TRUSTED_PROXIES`: comma-separated addresses or CIDR ranges (`10.0.0.0/8`) whose
    /// `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// `AUTH_HASH_CONCURRENCY`: password hashes computed at once (each takes 19 MiB).
    pub hash_concurrency: usize,
    /// `AUTH_HASH_QUEUE` (64): hashes waiting for a thread at most; past it requests get 503.
    pub hash_queue: usize,
    /// `AUTH_KEY_RELOAD_SECS` (30): how soon a key rotation done elsewhere is picked up.
    pub key_reload_secs: u64,
    /// `AUTH_KEY_ENCRYPTION_KEY` (or `_FILE`): encrypts the signing keys at rest. Required when the
    /// auth database is PostgreSQL (readable by backups and other roles); optional on SQLite, whose
    /// file is readable by the service user only.
    pub key_cipher: Option<crate::key_cipher::KeyCipher>,
}

impl Limits {
    pub fn from_env() -> Result<Limits, ConfigError> {
        let trusted = env_or("CHAT_TRUSTED_PROXIES", "");
        let mut trusted_proxies = Vec::new();
        for p in trusted.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            trusted_proxies.push(Cidr::parse(p).ok_or_else(|| ConfigError {
                name: "CHAT_TRUSTED_PROXIES",
                value: p.to_string(),
                reason: "expected an IP address or CIDR range".into(),
            })?);
        }
        Ok(Limits {
            access_ttl: env_parse("CHAT_ACCESS_TOKEN_TTL", 900)?,
            refresh_ttl: env_parse("CHAT_REFRESH_TOKEN_TTL", 30 * 24 * 3600)?,
            login_failures_per_user: env_parse("CHAT_LOGIN_MAX_FAILURES_PER_USER", 10)?,
            login_failures_per_ip: env_parse("CHAT_LOGIN_MAX_FAILURES_PER_IP", 50)?,
            login_window_secs: env_parse("CHAT_LOGIN_WINDOW_SECS", 900)?,
            login_attempts_per_ip: env_parse("CHAT_LOGIN_MAX_ATTEMPTS_PER_IP", 500)?,
            registrations_per_ip: env_parse("CHAT_REGISTER_MAX_PER_IP", 1000)?,
            register_window_secs: env_parse("CHAT_REGISTER_WINDOW_SECS", 3600)?,
            trusted_proxies,
            hash_concurrency: env_parse("AUTH_HASH_CONCURRENCY", 4)?,
            hash_queue: env_parse("AUTH_HASH_QUEUE", 64)?,
            key_reload_secs: env_parse("AUTH_KEY_RELOAD_SECS", 30)?,
            key_cipher: crate::key_cipher::KeyCipher::from_env()?,
        })
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            listen: env_or("AUTH_LISTEN", "127.0.0.1:8081"),
            internal_listen: env_or("AUTH_INTERNAL_LISTEN", "127.0.0.1:7081"),
            internal_token: chat_common::internal::InternalToken::from_env_optional()?,
            admin_listen: env_or("AUTH_ADMIN_LISTEN", "127.0.0.1:9081"),
            database: DbConfig {
                url: env_or("DATABASE_URL", "sqlite://./data/auth.db?mode=rwc"),
                schema: env_opt("DATABASE_SCHEMA"),
                max_connections: env_parse("DATABASE_MAX_CONNECTIONS", 10)?,
            },
            bus_url: env_opt("BUS_URL"),
            bus_topic_prefix: env_or("BUS_TOPIC_PREFIX", ""),
            bus_key: chat_common::config::bus_key()?,
            limits: Limits::from_env()?,
        })
    }
}

use chat_common::cli::Setting;

/// The settings of `chat-auth` itself (flags and environment variables; `--help` shows them).
pub const SETTINGS: &[Setting] = &[
    Setting::new("AUTH_LISTEN", "127.0.0.1:8081", "the public API"),
    Setting::new("AUTH_INTERNAL_LISTEN", "127.0.0.1:7081", "/internal/v1/* and the JWKS (credential required)"),
    Setting::new("AUTH_ADMIN_LISTEN", "127.0.0.1:9081", "/healthz, /readyz, /metrics"),
    Setting::url(
        "DATABASE_URL",
        "sqlite://./data/auth.db?mode=rwc",
        "postgres://… (sslmode, sslrootcert honoured) or sqlite://…",
    ),
    Setting::new("DATABASE_SCHEMA", "", "PostgreSQL schema (created if missing)"),
    Setting::new("DATABASE_MAX_CONNECTIONS", "10", "pool size"),
    Setting::new("MIGRATE_ON_START", "true", "apply migrations at start (false: only check they were applied)"),
];

/// Token lifetimes, throttling and key handling: shared with the all-in-one binary.
pub const LIMIT_SETTINGS: &[Setting] = &[
    Setting::new("CHAT_ACCESS_TOKEN_TTL", "900", "access-token lifetime, seconds"),
    Setting::new("CHAT_REFRESH_TOKEN_TTL", "2592000", "refresh-token lifetime, seconds"),
    Setting::new("CHAT_LOGIN_MAX_FAILURES_PER_USER", "10", "failed logins per username per window"),
    Setting::new("CHAT_LOGIN_MAX_FAILURES_PER_IP", "50", "failed logins per client address per window"),
    Setting::new("CHAT_LOGIN_MAX_ATTEMPTS_PER_IP", "500", "login attempts per client address per window"),
    Setting::new("CHAT_LOGIN_WINDOW_SECS", "900", "the login window, seconds"),
    Setting::new("CHAT_REGISTER_MAX_PER_IP", "1000", "registrations per client address per window"),
    Setting::new("CHAT_REGISTER_WINDOW_SECS", "3600", "the registration window, seconds"),
    Setting::new("CHAT_TRUSTED_PROXIES", "", "addresses or CIDR ranges whose X-Forwarded-For is believed"),
    Setting::new("AUTH_HASH_CONCURRENCY", "4", "password hashes computed at once (19 MiB each)"),
    Setting::new("AUTH_HASH_QUEUE", "64", "hashes waiting for a thread at most (then 503)"),
    Setting::new("AUTH_KEY_RELOAD_SECS", "30", "how soon a key rotation done elsewhere is picked up"),
    Setting::secret(
        "AUTH_KEY_ENCRYPTION_KEY",
        "64 hex characters encrypting the signing keys (required on PostgreSQL)",
    ),
    Setting::new("AUTH_KEY_ENCRYPTION_KEY_FILE", "", "a file holding AUTH_KEY_ENCRYPTION_KEY"),
];

/// An address range: `192.0.2.0/24`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net: addr, bits })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        fn masked(bytes: &[u8], bits: u8) -> Vec<u8> {
            bytes
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let keep = (bits as i32 - 8 * i as i32).clamp(0, 8) as u32;
                    if keep == 0 { 0 } else { b & (0xffu8 << (8 - keep)) }
                })
                .collect()
        }
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => masked(&n.octets(), self.bits) == masked(&i.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(i)) => masked(&n.octets(), self.bits) == masked(&i.octets(), self.bits),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    #[test]
    fn cidr_ranges() {
        let c = Cidr::parse("172.16.0.0/12").unwrap();
        assert!(c.contains(&"172.18.0.5".parse().unwrap()));
        assert!(!c.contains(&"172.32.0.1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(&"127.0.0.1".parse().unwrap()));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(&"127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().contains(&"2001:db8::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }
}

//! ws-edge configuration, read from the environment once at start.

use chat_common::config::{ConfigError, env_opt, env_or, env_parse};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `WS_EDGE_LISTEN`: the public WebSocket endpoint `/v1/ws`.
    pub listen: String,
    /// `WS_EDGE_ADMIN_LISTEN`: /healthz, /readyz, /metrics.
    pub admin_listen: String,
    /// `BUS_URL`.
    pub bus_url: Option<String>,
    /// `BUS_TOPIC_PREFIX`: put before every bus topic (deployments sharing a broker).
    pub bus_topic_prefix: String,
    /// `BUS_SIGNING_KEY` (or `_FILE`): authenticates bus messages (required with Redis or NATS).
    pub bus_key: Option<chat_bus::BusKey>,
    /// `AUTH_URL`, `MESSAGE_STORE_URL`, `PRESENCE_URL`: the internal listeners of the services this
    /// edge calls.
    pub auth_url: String,
    pub message_store_url: String,
    pub presence_url: String,
    /// `CHAT_INTERNAL_TOKEN` (or `_FILE`): the service credential of the internal API.
    pub internal_token: Option<chat_common::internal::InternalToken>,
    /// `WS_EDGE_ID`: this edge's identity for presence (default: a random one per start).
    pub edge_id: String,
    pub limits: Limits,
}

/// Protocol limits (same variables in the all-in-one binary).
#[derive(Debug, Clone)]
pub struct Limits {
    /// `CHAT_HEARTBEAT_INTERVAL_MS` (15000): WebSocket pings; two missed intervals close the connection.
    pub heartbeat: Duration,
    /// `CHAT_SEND_RATE_PER_SEC` (20) and `CHAT_SEND_BURST` (40): per-user send rate.
    pub send_rate: f64,
    pub send_burst: f64,
    /// `CHAT_OUTBOUND_QUEUE` (1024): frames queued per connection before it counts as a slow reader.
    /// Above the largest burst the edge itself produces (a relay batch of 256, a gap fill of 200);
    /// the channel allocates lazily, so an idle connection does not pay for the capacity.
    pub outbound_queue: usize,
    /// `CHAT_DRAIN_WINDOW_MS` (10000): how long a drain spreads its 1012 closes over.
    pub drain_window: Duration,
    /// `CHAT_SOCKET_SEND_BUFFER` (65536): kernel send buffer per connection, bytes (0 = kernel default).
    pub socket_send_buffer: usize,
}

impl Limits {
    pub fn from_env() -> Result<Limits, ConfigError> {
        Ok(Limits {
            heartbeat: Duration::from_millis(env_parse("CHAT_HEARTBEAT_INTERVAL_MS", 15_000)?),
            send_rate: env_parse("CHAT_SEND_RATE_PER_SEC", 20.0)?,
            send_burst: env_parse("CHAT_SEND_BURST", 40.0)?,
            outbound_queue: env_parse("CHAT_OUTBOUND_QUEUE", 1024)?,
            drain_window: Duration::from_millis(env_parse("CHAT_DRAIN_WINDOW_MS", 10_000)?),
            socket_send_buffer: env_parse("CHAT_SOCKET_SEND_BUFFER", 64 * 1024)?,
        })
    }
}

use chat_common::cli::Setting;

/// The settings of `chat-ws-edge` itself (flags and environment variables).
pub const SETTINGS: &[Setting] = &[
    Setting::new("WS_EDGE_LISTEN", "127.0.0.1:8084", "/v1/ws"),
    Setting::new("WS_EDGE_ADMIN_LISTEN", "127.0.0.1:9084", "/healthz, /readyz, /metrics"),
    Setting::new("WS_EDGE_ID", "", "identity reported to presence (default: random per start)"),
    Setting::url("AUTH_URL", "http://127.0.0.1:7081", "auth's internal listener"),
    Setting::url("MESSAGE_STORE_URL", "http://127.0.0.1:7082", "the message-store's internal listener"),
    Setting::url("PRESENCE_URL", "http://127.0.0.1:7083", "presence's internal listener"),
];

/// Protocol limits: shared with the all-in-one binary.
pub const LIMIT_SETTINGS: &[Setting] = &[
    Setting::new("CHAT_HEARTBEAT_INTERVAL_MS", "15000", "WebSocket ping interval (two missed close the connection)"),
    Setting::new("CHAT_SEND_RATE_PER_SEC", "20", "sends per user per second"),
    Setting::new("CHAT_SEND_BURST", "40", "send burst per user"),
    Setting::new("CHAT_OUTBOUND_QUEUE", "1024", "frames queued per connection before it is a slow reader"),
    Setting::new("CHAT_DRAIN_WINDOW_MS", "10000", "how long a drain spreads its 1012 closes"),
    Setting::new("CHAT_SOCKET_SEND_BUFFER", "65536", "kernel send buffer per connection, bytes (0: default)"),
];

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            listen: env_or("WS_EDGE_LISTEN", "127.0.0.1:8084"),
            admin_listen: env_or("WS_EDGE_ADMIN_LISTEN", "127.0.0.1:9084"),
            bus_url: env_opt("BUS_URL"),
            bus_topic_prefix: env_or("BUS_TOPIC_PREFIX", ""),
            bus_key: chat_common::config::bus_key()?,
            auth_url: env_or("AUTH_URL", "http://127.0.0.1:7081"),
            message_store_url: env_or("MESSAGE_STORE_URL", "http://127.0.0.1:7082"),
            presence_url: env_or("PRESENCE_URL", "http://127.0.0.1:7083"),
            internal_token: chat_common::internal::InternalToken::from_env_optional()?,
            edge_id: env_opt("WS_EDGE_ID").unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            limits: Limits::from_env()?,
        })
    }
}

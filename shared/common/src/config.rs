//! Reading configuration from environment variables, with defaults and clear errors.

use std::str::FromStr;

/// A URL as it may appear in errors and logs (password or token replaced by `***`).
pub use chat_bus::redact as redact_url;

#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {value:?} ({reason})")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// A setting that is set and not blank (a flag, else the environment variable, else the binary's
/// documented default: see `chat_settings`).
pub fn env_opt(name: &str) -> Option<String> {
    chat_settings::var(name)
}

pub fn env_or(name: &str, default: &str) -> String {
    env_opt(name).unwrap_or_else(|| default.to_string())
}

/// Parses a variable, or returns `default` when it is unset.
pub fn env_parse<T: FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env_opt(name) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|e: T::Err| ConfigError { name, reason: e.to_string(), value }),
    }
}

/// `BUS_SIGNING_KEY` (or `BUS_SIGNING_KEY_FILE`): the key that authenticates bus messages.
pub fn bus_key() -> Result<Option<chat_bus::BusKey>, ConfigError> {
    chat_bus::BusKey::from_env().map_err(|reason| ConfigError {
        name: chat_bus::seal::KEY_VAR,
        value: "<redacted>".into(),
        reason,
    })
}

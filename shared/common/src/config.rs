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

/// A secret setting given directly (`var`) or as the first line of the file `file_var` names (a
/// mounted Secret, which wins): which of the two supplied it, and the value. `Ok(None)` when
/// neither is set.
pub fn secret(var: &'static str, file_var: &'static str) -> Result<Option<(&'static str, String)>, ConfigError> {
    if let Some(path) = env_opt(file_var) {
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            name: file_var,
            value: path.clone(),
            reason: e.to_string(),
        })?;
        return Ok(Some((file_var, text.lines().next().unwrap_or("").to_string())));
    }
    Ok(env_opt(var).map(|v| (var, v)))
}

/// A 32-byte key from its setting's 64 hex characters; the error names the setting, never the value.
pub fn key32(name: &'static str, value: &str) -> Result<[u8; 32], ConfigError> {
    chat_settings::hex32(value).ok_or_else(|| ConfigError {
        name,
        value: "<redacted>".into(),
        reason: "expected 64 hex characters (openssl rand -hex 32)".into(),
    })
}

/// `BUS_SIGNING_KEY` (or `BUS_SIGNING_KEY_FILE`): the key that authenticates bus messages.
pub fn bus_key() -> Result<Option<chat_bus::BusKey>, ConfigError> {
    use chat_bus::seal::{KEY_FILE_VAR, KEY_VAR};
    let Some((name, value)) = secret(KEY_VAR, KEY_FILE_VAR)? else { return Ok(None) };
    Ok(Some(chat_bus::BusKey::from_bytes(&key32(name, &value)?)))
}

//! Where a setting's value comes from: a flag on the command line, else its environment variable,
//! else the default the binary documents in `--help`. Every crate reads settings through `var`, so
//! a flag and its environment variable are one setting, whichever crate reads it.

use std::collections::HashMap;
use std::sync::OnceLock;

struct Layers {
    given: HashMap<String, String>,
    defaults: HashMap<String, String>,
}

static LAYERS: OnceLock<Layers> = OnceLock::new();

/// Installs the values given as flags and the binary's defaults; once, at start (later calls are
/// ignored: configuration does not change under a running process).
pub fn install(given: HashMap<String, String>, defaults: HashMap<String, String>) {
    let _ = LAYERS.set(Layers { given, defaults });
}

fn present(v: &str) -> bool {
    !v.trim().is_empty()
}

/// The value of setting `name` (its environment variable's name) when it is set and not blank.
pub fn var(name: &str) -> Option<String> {
    let layers = LAYERS.get();
    // A flag given blank means "unset", on purpose: it does not fall back to the environment.
    if let Some(v) = layers.and_then(|l| l.given.get(name)) {
        return present(v).then(|| v.clone());
    }
    if let Ok(v) = std::env::var(name)
        && present(&v)
    {
        return Some(v);
    }
    layers.and_then(|l| l.defaults.get(name)).filter(|v| present(v)).cloned()
}

/// Where a setting's value came from (`config` output; a flag-given OTLP endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    Default,
    Unset,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::Default => "default",
            Source::Unset => "unset",
        }
    }
}

/// Where `name`'s value came from.
pub fn source(name: &str) -> Source {
    let layers = LAYERS.get();
    if layers.is_some_and(|l| l.given.contains_key(name)) {
        Source::Flag
    } else if std::env::var(name).is_ok_and(|v| present(&v)) {
        Source::Env
    } else if layers.is_some_and(|l| l.defaults.get(name).is_some_and(|v| present(v))) {
        Source::Default
    } else {
        Source::Unset
    }
}

/// 32 bytes from 64 hex characters (`openssl rand -hex 32`): the form of every key setting.
pub fn hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_keys() {
        assert_eq!(super::hex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(super::hex32(&"ab".repeat(31)), None);
        assert_eq!(super::hex32(&"zz".repeat(32)), None);
        assert_eq!(super::hex32(&"é".repeat(32)), None, "non-ASCII never panics");
    }
}

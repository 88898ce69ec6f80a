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

/// Where `name`'s value came from, for `config` output.
pub fn source(name: &str) -> &'static str {
    let layers = LAYERS.get();
    if layers.is_some_and(|l| l.given.contains_key(name)) {
        "flag"
    } else if std::env::var(name).is_ok_and(|v| present(&v)) {
        "env"
    } else if layers.is_some_and(|l| l.defaults.get(name).is_some_and(|v| present(v))) {
        "default"
    } else {
        "unset"
    }
}

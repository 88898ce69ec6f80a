//! Plumbing every service shares: env config, problem-details errors, extractors, admin routes, serving.

pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod internal;
pub mod openapi;
pub mod ops;
pub mod rate;
pub mod server;
pub mod validate;

pub use error::{ApiError, ApiResult};
pub use extract::{ApiJson, ApiQuery, path_uuid};

/// Installs the process's TLS crypto provider (aws-lc-rs, the workspace's one provider). Every binary
/// calls it first: TLS clients (`rediss://`, `tls://` NATS) fail without one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

//! Plumbing every service shares: env config, problem-details errors, extractors, admin routes, serving.

pub mod config;
pub mod error;
pub mod extract;
pub mod internal;
pub mod openapi;
pub mod ops;
pub mod server;
pub mod validate;

pub use error::{ApiError, ApiResult};
pub use extract::{ApiJson, ApiQuery, path_uuid};

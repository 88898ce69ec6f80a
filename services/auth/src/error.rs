//! The auth service's error type and its one mapping to problem details.

use chat_common::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl From<chat_db::DbError> for Error {
    fn from(e: chat_db::DbError) -> Self {
        match e {
            chat_db::DbError::Sqlx(e) => Error::Db(e),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Db(e) if chat_db::is_unavailable(&e) => ApiError::unavailable("database unavailable"),
            other => ApiError::internal(other),
        }
    }
}

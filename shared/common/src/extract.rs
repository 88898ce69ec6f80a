//! Extractors whose rejections are problem details: malformed JSON is 422, an oversized body 413.

use crate::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// JSON body in and out. The `Content-Type` of requests is not enforced: a JSON API should not
/// refuse a well-formed body because a client forgot the header.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::validation(format!("unreadable body: {e}"))
            }
        })?;
        decode_json(&bytes).map(ApiJson)
    }
}

/// A request body as `ApiJson` decodes it (also what the fuzz targets drive).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::validation(format!("invalid JSON body: {e}")))
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query string parameters; a wrong type is 422.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        decode_query(q).map(ApiQuery)
    }
}

/// A query string as `ApiQuery` decodes it.
pub fn decode_query<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{q}").parse().map_err(|_| ApiError::validation("bad query"))?)
        .map(|axum::extract::Query(v)| v)
        .map_err(|e| ApiError::validation(format!("invalid query: {}", e.body_text())))
}

/// A path id: anything that is not a UUID is answered like a missing resource.
pub fn path_uuid(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| ApiError::not_found())
}

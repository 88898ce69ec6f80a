//! OpenAPI 3.1 plumbing shared by the services: the problem-details schema, the error response sets,
//! the bearer scheme, and the route that serves a service's document.

use axum::Router;
use axum::routing::get;
use std::collections::BTreeMap;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};

/// RFC 9457 problem details, as every error answer carries them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the JSON that `ApiError` writes
pub struct Problem {
    /// Always `about:blank`.
    #[schema(rename = "type")]
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    /// Stable machine-readable code (`validation_failed`, `not_found`, ...).
    code: String,
}

fn problems(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
            let response =
                ResponseBuilder::new().description(*description).content("application/problem+json", content);
            (status.to_string(), response.build().into())
        })
        .collect()
}

const BASE: &[(u16, &str)] = &[
    (408, "the request body came too slowly (`request_timeout`)"),
    (413, "request body over 1 MiB (`payload_too_large`)"),
    (422, "malformed JSON, a wrong field type or an invalid value (`validation_failed`)"),
    (500, "internal failure (`internal`)"),
    (503, "a dependency is down (`unavailable`, with `Retry-After`)"),
];

/// Errors of routes without a bearer token (register, login, refresh, logout).
pub struct PublicErrors;
impl utoipa::IntoResponses for PublicErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut r = problems(BASE);
        r.extend(problems(&[
            (401, "wrong credentials or an invalid token (`unauthorized`)"),
            (409, "username taken (`username_taken`)"),
            (429, "too many attempts (`rate_limited`, with `Retry-After`)"),
        ]));
        r
    }
}

/// Errors of routes that take `Authorization: Bearer <access token>`.
pub struct AuthedErrors;
impl utoipa::IntoResponses for AuthedErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut r = problems(BASE);
        r.extend(problems(&[
            (401, "missing, invalid, revoked (`unauthorized`) or expired (`token_expired`) access token"),
            (403, "a member without the role this needs (`forbidden`)"),
            (404, "no such resource, or a conversation the caller is not in (`not_found`)"),
            (409, "conflicts with the current state (`conflict`)"),
            (429, "over the rate limit (`rate_limited`, with `Retry-After`)"),
        ]));
        r
    }
}

/// Adds the problem schema and the bearer scheme every authenticated operation refers to.
pub fn finish(mut doc: OpenApi, title: &str) -> OpenApi {
    doc.info.title = title.to_string();
    doc.info.version = "1".to_string();
    doc.info.description = Some("Chat API v1: the public contract (this document; the WebSocket protocol: docs/websocket.md). WebSocket: `GET /v1/ws`.".into());
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert("Problem".into(), <Problem as utoipa::PartialSchema>::schema());
    components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    doc
}

/// `GET /openapi.json`, serving `doc` as rendered once at start.
pub fn serve(doc: &OpenApi) -> Router {
    let json = doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let body = axum::body::Bytes::from(json);
    Router::new().route(
        "/openapi.json",
        get(move || {
            let body = body.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    )
}

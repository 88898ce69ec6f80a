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
    // The project's own metadata, not the generator's crate defaults.
    doc.info.contact = Some(
        utoipa::openapi::ContactBuilder::new()
            .name(Some("chat-backend maintainers"))
            .url(Some("https://example.invalid/chat-backend"))
            .build(),
    );
    doc.info.license =
        Some(utoipa::openapi::LicenseBuilder::new().name("Apache-2.0").identifier(Some("Apache-2.0")).build());
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert("Problem".into(), <Problem as utoipa::PartialSchema>::schema());
    components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    doc
}

/// `GET /openapi.json` and its rendered page `GET /docs`, both made once at start.
pub fn serve(doc: &OpenApi) -> Router {
    let json = doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let body = axum::body::Bytes::from(json);
    let page = axum::body::Bytes::from(docs_page(doc));
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let body = body.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let page = page.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")], page) }
            }),
        )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escaped text with `code spans` set as code (the descriptions are written that way).
fn prose(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// A schema's name when it is a reference, else its JSON.
fn schema_text(schema: &serde_json::Value) -> String {
    match schema.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or(r);
            format!("<a href=\"#schema-{0}\">{0}</a>", escape(name))
        }
        None => format!("<code>{}</code>", escape(&schema.to_string())),
    }
}

/// The document as one self-contained HTML page (no scripts, nothing fetched): every operation
/// with its parameters, body and answers, then every schema. Served at `/docs`.
pub fn docs_page(doc: &OpenApi) -> String {
    use std::fmt::Write;
    let v = serde_json::to_value(doc).unwrap_or_default();
    let info = &v["info"];
    let title = escape(info["title"].as_str().unwrap_or("API"));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
         body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         h2{{border-bottom:1px solid #ccc}}.op{{margin:1.5rem 0}}.m{{font-weight:bold;text-transform:uppercase;\
         display:inline-block;min-width:4.5rem}}table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;\
         padding:.2rem .5rem;text-align:left;vertical-align:top}}pre{{background:#f6f6f6;padding:.5rem;overflow:auto}}\
         </style></head><body>\n<h1>{title} <small>{}</small></h1>\n<p>{}</p>\n<p>Licence: {}. Machine-readable: \
         <a href=\"openapi.json\">openapi.json</a>.</p>\n<h2>Operations</h2>\n",
        escape(info["version"].as_str().unwrap_or("")),
        prose(info["description"].as_str().unwrap_or("")),
        escape(info["license"]["name"].as_str().unwrap_or("")),
    );
    if let Some(paths) = v["paths"].as_object() {
        for (path, item) in paths {
            let Some(ops) = item.as_object() else { continue };
            for (method, op) in ops {
                let _ = writeln!(
                    h,
                    "<div class=\"op\" id=\"{}\"><h3><span class=\"m\">{}</span> <code>{}</code></h3>",
                    escape(op["operationId"].as_str().unwrap_or("")),
                    escape(method),
                    escape(path)
                );
                for key in ["summary", "description"] {
                    if let Some(t) = op[key].as_str() {
                        let _ = writeln!(h, "<p>{}</p>", prose(t));
                    }
                }
                if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                    h.push_str("<p>Needs <code>Authorization: Bearer &lt;access token&gt;</code>.</p>\n");
                }
                if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                    h.push_str("<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>\n");
                    for p in params {
                        let _ = writeln!(
                            h,
                            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            escape(p["name"].as_str().unwrap_or("")),
                            escape(p["in"].as_str().unwrap_or("")),
                            p["required"].as_bool().unwrap_or(false),
                            prose(p["description"].as_str().unwrap_or(""))
                        );
                    }
                    h.push_str("</table>\n");
                }
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    for (ty, c) in content {
                        let _ = writeln!(h, "<p>Body ({}): {}</p>", escape(ty), schema_text(&c["schema"]));
                    }
                }
                if let Some(responses) = op["responses"].as_object() {
                    h.push_str("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>\n");
                    for (status, r) in responses {
                        let body = r["content"]
                            .as_object()
                            .and_then(|c| c.values().next())
                            .map(|c| schema_text(&c["schema"]))
                            .unwrap_or_default();
                        let _ = writeln!(
                            h,
                            "<tr><td>{}</td><td>{}</td><td>{body}</td></tr>",
                            escape(status),
                            prose(r["description"].as_str().unwrap_or(""))
                        );
                    }
                    h.push_str("</table>\n");
                }
                h.push_str("</div>\n");
            }
        }
    }
    h.push_str("<h2>Schemas</h2>\n");
    if let Some(schemas) = v["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
            let _ = writeln!(h, "<h3 id=\"schema-{0}\">{0}</h3>\n<pre>{1}</pre>", escape(name), escape(&pretty));
        }
    }
    h.push_str("</body></html>\n");
    h
}

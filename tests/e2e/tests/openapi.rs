//! The OpenAPI documents: generated from the handlers, served by every service, merged for the
//! gateway, and the committed merged file (deploy/openapi/openapi.json) equal to what the code makes.

use chat_e2e::*;
use serde_json::Value;
use std::collections::BTreeSet;

fn operations(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    out
}

#[test]
fn committed_document_matches_the_code() {
    let out = std::process::Command::new(binary("chat")).arg("openapi").output().expect("chat openapi");
    assert!(out.status.success());
    let generated: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/openapi/openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("committed document")).unwrap();
    assert!(
        generated == committed,
        "deploy/openapi/openapi.json is stale: regenerate it with \
         `cargo run -p chat -- openapi > deploy/openapi/openapi.json`"
    );
    assert_eq!(generated["openapi"], "3.1.0");
    // The project's own metadata, not the generator's.
    assert_eq!(generated["info"]["license"]["identifier"], "Apache-2.0");
    assert_eq!(generated["info"]["contact"]["name"], "chat-backend maintainers");

    let out = std::process::Command::new(binary("chat")).args(["openapi", "--html"]).output().expect("chat openapi");
    assert!(out.status.success());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/openapi/docs.html");
    assert!(
        std::fs::read(path).ok().as_deref() == Some(&out.stdout[..]),
        "deploy/openapi/docs.html is stale: regenerate it with \
         `cargo run -p chat -- openapi --html > deploy/openapi/docs.html`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_its_document_and_the_merge_is_their_union() {
    let c = Cluster::start(&require_redis().await, 1, &[]).await;
    let mut union = BTreeSet::new();
    for base in [&c.auth, &c.store, &c.presence] {
        let (s, doc) = Api::new(format!("http://{base}")).call("GET", "/openapi.json", None, None).await;
        assert_eq!(s, 200, "{base}");
        assert_eq!(doc["openapi"], "3.1.0");
        let ops = operations(&doc);
        assert!(!ops.is_empty());
        assert!(union.is_disjoint(&ops), "one owner per operation");
        union.extend(ops);
    }
    let aio = AllInOne::start(&[]).await;
    let (s, merged) = aio.api().call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    let (s, page) = aio.api().call("GET", "/docs", None, None).await;
    assert_eq!(s, 200, "the rendered page on the public origin");
    assert!(page.as_str().is_some_and(|p| p.contains("POST") && p.contains("/v1/auth/register")));
    assert_eq!(operations(&merged), union, "the merged document is the union of the services'");
    // Every public REST route of the contract is there.
    for op in [
        "POST /v1/auth/register",
        "POST /v1/auth/login",
        "POST /v1/auth/refresh",
        "POST /v1/auth/logout",
        "GET /v1/users/me",
        "GET /v1/users/{id}",
        "GET /v1/users",
        "GET /.well-known/jwks.json",
        "POST /v1/conversations",
        "GET /v1/conversations",
        "GET /v1/conversations/{cid}",
        "PATCH /v1/conversations/{cid}",
        "POST /v1/conversations/{cid}/members",
        "PATCH /v1/conversations/{cid}/members/{uid}",
        "DELETE /v1/conversations/{cid}/members/{uid}",
        "POST /v1/conversations/{cid}/messages",
        "GET /v1/conversations/{cid}/messages",
        "PATCH /v1/conversations/{cid}/messages/{mid}",
        "DELETE /v1/conversations/{cid}/messages/{mid}",
        "POST /v1/conversations/{cid}/read",
        "GET /v1/presence",
    ] {
        assert!(union.contains(op), "{op} documented");
    }
    assert_eq!(union.len(), 21, "no undocumented extras: {union:?}");
}

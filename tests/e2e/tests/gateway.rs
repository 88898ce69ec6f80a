//! The gateway configuration of docker-compose (deploy/nginx), exercised for real: Debian's nginx
//! with the same template, in front of the microservices with two edges, WebSocket included.

use chat_e2e::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_api_through_nginx() {
    let redis = require_redis().await;
    let c = Cluster::start(&redis, 2, &[]).await;
    let gw = start_nginx(&c).await;
    let api = Api::new(format!("http://{}", gw.addr));
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let (s, _) = api.call("GET", "/v1/users/me", Some(&a.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(api.call("GET", "/.well-known/jwks.json", None, None).await.0, 200);
    let cid = api.direct(&a, &b).await;
    assert_eq!(api.call("GET", &format!("/v1/presence?user_ids={}", b.id), Some(&a.token), None).await.0, 200);
    // The merged OpenAPI document of the whole API.
    let (s, doc) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/v1/auth/login", "/v1/conversations/{cid}/messages", "/v1/presence"] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    // And rendered for people at /docs on the same origin.
    let (s, page) = api.call("GET", "/docs", None, None).await;
    assert_eq!(s, 200);
    let page = page.as_str().expect("HTML page").to_string();
    assert!(page.starts_with("<!doctype html>") && page.contains("/v1/conversations/{cid}/messages"), "{page:.200}");
    // Internal routes are never routed; unknown paths are problem details.
    let (s, v) = api.call("POST", "/internal/v1/users/lookup", None, Some(json!({"ids": [a.id]}))).await;
    assert_eq!(s, 404);
    assert_eq!(v["code"], "not_found");

    // WebSocket through the gateway (browser style: token in the query), to whichever edge.
    let ws = format!("ws://{}", gw.addr);
    let mut wa = Ws::connect(&ws, &a.token, "").await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "{ws}/v1/ws?access_token={}",
        b.token
    ))
    .unwrap();
    req.headers_mut().remove("authorization");
    let (sb, _) = tokio_tungstenite::connect_async(req).await.expect("upgrade through nginx");
    let mut wb = Ws { stream: sb };
    assert_eq!(wa.next(WAIT).await["type"], "hello");
    assert_eq!(wb.next(WAIT).await["type"], "hello");
    wa.send(json!({"type": "send", "id": "s1", "conversation_id": cid, "body": "via nginx"})).await;
    let ack = wa.wait_for(WAIT, |v| v["type"] == "ack").await;
    let got = wb.wait_for(WAIT, |v| v["type"] == "message").await;
    assert_eq!(got["message"]["id"], ack["message"]["id"]);
    // The body limit is the services' 413, not nginx's HTML page.
    let (s, v) = api.raw("POST", "/v1/auth/login", None, vec![b' '; 1024 * 1024 + 10]).await;
    assert_eq!((s, v["code"].as_str()), (413, Some("payload_too_large")));
    drop(wa);
    drop(wb);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(gw.dir.0.join("access.log")).unwrap_or_default();
    assert!(log.contains("/v1/ws"), "the access log records requests");
    assert!(!log.contains(&b.token), "tokens never reach the gateway log");
}

//! One message, one trace: the OTLP spans exported by two edges and the message-store (real
//! processes, OTLP/HTTP JSON to a collector in this test) form a single connected trace:
//! ws.send (edge) → http (message-store) → db.insert_message → bus.publish, and bus.deliver on both edges.

use chat_e2e::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
}

fn spans(bodies: &[Value]) -> Vec<Span> {
    let mut out = Vec::new();
    for b in bodies {
        for rs in b["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_string();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    out.push(Span {
                        service: service.clone(),
                        name: s["name"].as_str().unwrap_or_default().to_string(),
                        trace: s["traceId"].as_str().unwrap_or_default().to_lowercase(),
                        id: s["spanId"].as_str().unwrap_or_default().to_lowercase(),
                        parent: s["parentSpanId"].as_str().unwrap_or_default().to_lowercase(),
                    });
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_connected_trace() {
    let redis = require_redis().await;
    let (addr, bodies) = otlp_collector().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ];
    let c = Cluster::start(&redis, 2, &otel).await;
    let api = c.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let mut wa = Ws::connect(&c.edge_ws(0), &a.token, "").await;
    let mut wb = Ws::connect(&c.edge_ws(1), &b.token, "").await;
    wa.next(WAIT).await;
    wb.next(WAIT).await;
    let body = format!("traced-{}", uuid::Uuid::new_v4());
    wa.send(json!({"type": "send", "id": "s1", "conversation_id": cid, "body": body})).await;
    wa.wait_for(WAIT, |v| v["type"] == "ack").await;
    wb.wait_for(WAIT, |v| v["type"] == "message").await;

    let mut found = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let all = spans(&bodies.lock().unwrap());
        let Some(root) = all.iter().find(|s| s.name == "ws.send").cloned() else { continue };
        let trace: Vec<Span> = all.iter().filter(|s| s.trace == root.trace).cloned().collect();
        let delivered_on: std::collections::HashSet<&str> =
            trace.iter().filter(|s| s.name == "bus.deliver").map(|s| s.service.as_str()).collect();
        let has = |n: &str| trace.iter().any(|s| s.name == n);
        if has("http") && has("db.insert_message") && has("bus.publish") && !delivered_on.is_empty() {
            let deliveries = trace.iter().filter(|s| s.name == "bus.deliver").count();
            if deliveries >= 2 {
                found = Some((root, trace));
                break;
            }
        }
    }
    let (root, trace) = found.unwrap_or_else(|| {
        let all = spans(&bodies.lock().unwrap());
        let summary: Vec<String> =
            all.iter().map(|s| format!("{}:{} t={} id={} p={}", s.service, s.name, s.trace, s.id, s.parent)).collect();
        panic!("no connected trace with ws.send, http, db.insert_message, bus.publish and two deliveries; spans: {summary:#?}")
    });
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.id.as_str(), s)).collect();
    let parent_name = |s: &Span| by_id.get(s.parent.as_str()).map(|p| p.name.clone()).unwrap_or_default();
    let http = trace.iter().find(|s| s.name == "http" && s.service == "chat-message-store").expect("store http span");
    assert_eq!(http.parent, root.id, "the store's request continues the edge's send");
    let insert = trace.iter().find(|s| s.name == "db.insert_message").unwrap();
    assert_eq!(parent_name(insert), "http");
    for s in trace.iter().filter(|s| s.name == "bus.publish" || s.name == "bus.deliver") {
        assert_eq!(parent_name(s), "db.insert_message", "{} ({}) hangs off the insert", s.name, s.service);
    }
    assert!(trace.iter().filter(|s| s.name == "bus.deliver").all(|s| s.service == "chat-ws-edge"));
    let raw = serde_json::to_string(&*bodies.lock().unwrap()).unwrap();
    assert!(!raw.contains(&body), "message bodies never reach spans");
    assert!(!raw.contains(&a.token), "tokens never reach spans");
}

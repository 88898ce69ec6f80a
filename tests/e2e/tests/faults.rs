//! Faults of the bus: events committed while Redis is down are published when it returns (outbox),
//! and connected clients receive every message in order with no gap (edges catch up from the store).

use chat_e2e::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_loses_nothing_and_keeps_order() {
    bus_restart_loses_nothing_and_keeps_order("redis").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_loses_nothing_and_keeps_order() {
    bus_restart_loses_nothing_and_keeps_order("nats").await
}

async fn bus_restart_loses_nothing_and_keeps_order(kind: &'static str) {
    require_postgres().await;
    let mut redis = BrokerServer::start_kind(kind);
    let c = Cluster::start(&redis.url(), 2, &[]).await;
    let api = c.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let mut wa = Ws::connect(&c.edge_ws(0), &a.token, "").await;
    let mut wb = Ws::connect(&c.edge_ws(1), &b.token, "").await;
    wa.next(WAIT).await;
    wb.next(WAIT).await;

    let path = format!("/v1/conversations/{cid}/messages");
    let mut sent = 0;
    for _ in 0..5 {
        sent += 1;
        api.call("POST", &path, Some(&a.token), Some(json!({"body": format!("m{sent}")}))).await;
    }
    redis.stop();
    // While the bus is down, sends still commit (REST and WebSocket) and their events wait in the outbox.
    for _ in 0..5 {
        sent += 1;
        let (s, _) = api.call("POST", &path, Some(&a.token), Some(json!({"body": format!("m{sent}")}))).await;
        assert_eq!(s, 201);
    }
    sent += 1;
    wa.send(json!({"type": "send", "id": "ws", "conversation_id": cid, "body": format!("m{sent}")})).await;
    // Keep the message events that arrive before the ack: they count for `a` below.
    let mut seen_a = Vec::new();
    loop {
        let v = wa.next(WAIT).await;
        match v["type"].as_str() {
            Some("message") => seen_a.push(v["message"]["seq"].as_i64().unwrap()),
            Some("ack") => {
                assert_eq!(v["message"]["seq"], sent);
                break;
            }
            _ => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending = pg_scalar(format!("SELECT COUNT(*) FROM \"{}\".outbox", c.store_schema)).await;
    assert!(pending >= 6, "events wait in the outbox while the bus is down (found {pending})");
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    for _ in 0..4 {
        sent += 1;
        let (s, _) = api.call("POST", &path, Some(&a.token), Some(json!({"body": format!("m{sent}")}))).await;
        assert_eq!(s, 201);
    }
    for (who, ws, mut seqs) in [("a", &mut wa, seen_a), ("b", &mut wb, Vec::new())] {
        while seqs.len() < sent as usize {
            let v = ws.wait_for(Duration::from_secs(15), |v| v["type"] == "message").await;
            seqs.push(v["message"]["seq"].as_i64().unwrap());
        }
        assert_eq!(seqs, (1..=sent).collect::<Vec<i64>>(), "{who}: every message, in order, no gap, no duplicate");
    }
    let mut drained = false;
    for _ in 0..50 {
        if pg_scalar(format!("SELECT COUNT(*) FROM \"{}\".outbox", c.store_schema)).await == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drained, "the outbox is published once the bus is back");
    println!("{kind} restart: sent={sent} delivered_a={sent} delivered_b={sent} lost=0 duplicated=0 reordered=0");
}

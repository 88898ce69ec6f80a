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

// ---- Faults under live traffic: many clients on two edges, each checking every message it should get.

const TRAFFIC_DEADLINE: Duration = Duration::from_secs(60);

fn edges(c: &Cluster) -> Vec<String> {
    (0..c.edges.len()).map(|i| c.edge_ws(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_store_kill9_under_traffic_loses_and_duplicates_nothing() {
    let mut c = Cluster::start(&require_redis().await, 2, &[]).await;
    let api = c.api();
    let t = traffic::Traffic::start(&api, &edges(&c), traffic::Plan::default(), TRAFFIC_DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.kill_store().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.restart_store().await;
    let r = t.finish(&api).await;
    r.assert_clean("message-store kill -9");
    assert!(r.retries > 0, "the outage was felt: sends failed and were retried with their client_msg_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_traffic_loses_nothing() {
    bus_restart_under_traffic("redis").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_under_traffic_loses_nothing() {
    bus_restart_under_traffic("nats").await
}

async fn bus_restart_under_traffic(kind: &'static str) {
    require_postgres().await;
    let mut bus = BrokerServer::start_kind(kind);
    let c = Cluster::start(&bus.url(), 2, &[]).await;
    let api = c.api();
    let t = traffic::Traffic::start(&api, &edges(&c), traffic::Plan::default(), TRAFFIC_DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    bus.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bus.restart();
    let r = t.finish(&api).await;
    r.assert_clean(&format!("{kind} restart under traffic"));
}

/// Status, `Retry-After` and body of one request, within a bound: an outage must not make calls hang.
async fn call_with_headers(api: &Api, path: &str, token: &str) -> (u16, Option<String>, serde_json::Value) {
    let url = format!("{}{path}", api.base);
    let resp = tokio::time::timeout(Duration::from_secs(10), api.http.get(url).bearer_auth(token).send())
        .await
        .expect("answered within 10 s, never a hang")
        .expect("request");
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, retry, resp.json().await.unwrap_or_default())
}

async fn readyz(admin: &str) -> u16 {
    reqwest::get(format!("http://{admin}/readyz")).await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_and_recovers_on_its_own() {
    let pg = PgServer::start();
    let c = Cluster::start_on(&pg.url(), &require_redis().await, 2, &[]).await;
    let api = c.api();
    let probe = api.register(&unique("probe")).await;
    let t = traffic::Traffic::start(&api, &edges(&c), traffic::Plan::default(), TRAFFIC_DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    pg.stop();
    let store = c.store_api();
    let (s, retry, body) = call_with_headers(&store, "/v1/conversations", &probe.token).await;
    assert_eq!(s, 503, "store answers 503 while PostgreSQL is down: {body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok()), "Retry-After in seconds");
    let auth = c.auth_api();
    let (s, retry, body) = call_with_headers(&auth, &format!("/v1/users/{}", probe.id), &probe.token).await;
    assert_eq!(s, 503, "auth answers 503 while PostgreSQL is down: {body}");
    assert!(retry.is_some(), "Retry-After from auth");
    assert_eq!(readyz(&c.store_admin).await, 503, "message-store not ready");
    assert_eq!(readyz(&c.auth_admin).await, 503, "auth not ready");
    pg.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if readyz(&c.store_admin).await == 200 && readyz(&c.auth_admin).await == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "both ready again on their own");
    let r = t.finish(&api).await;
    r.assert_clean("PostgreSQL stop");
    assert!(r.retries > 0, "sends were refused while the database was down");
    let (s, _, _) = call_with_headers(&store, "/v1/conversations", &probe.token).await;
    assert_eq!(s, 200, "the API answers again");
}

const HEARTBEAT_MS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_kill9_clients_move_and_presence_is_corrected() {
    let hb = [("CHAT_HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS.to_string())];
    let mut c = Cluster::start(&require_redis().await, 2, &hb).await;
    let api = c.api();
    let watcher = api.register(&unique("watcher")).await;
    let gone = api.register(&unique("gone")).await;
    let mut gone_ws = Ws::connect(&c.edge_ws(0), &gone.token, "").await;
    gone_ws.next(WAIT).await;
    let q = format!("/v1/presence?user_ids={}", gone.id);
    let status = |v: serde_json::Value| v["presence"][0]["status"].as_str().unwrap_or_default().to_string();
    let mut online = false;
    for _ in 0..50 {
        if status(api.call("GET", &q, Some(&watcher.token), None).await.1) == "online" {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(online, "online while connected to edge 0");

    let t = traffic::Traffic::start(&api, &edges(&c), traffic::Plan::default(), TRAFFIC_DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.take_edge(0).kill().await;
    let killed = std::time::Instant::now();
    let mut offline_after = None;
    while killed.elapsed() < Duration::from_millis(4 * HEARTBEAT_MS) {
        if status(api.call("GET", &q, Some(&watcher.token), None).await.1) == "offline" {
            offline_after = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = offline_after.expect("presence corrected after the edge died");
    println!("edge kill -9: presence offline after {} ms (heartbeat {HEARTBEAT_MS} ms)", after.as_millis());
    assert!(after <= Duration::from_millis(2 * HEARTBEAT_MS), "within 2 heartbeat intervals, took {after:?}");
    let r = t.finish(&api).await;
    r.assert_clean("ws-edge kill -9");
    assert!(r.reconnects > 0, "the dead edge's clients reconnected to the other edge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sigterm_under_load_drains_with_1012_and_loses_nothing() {
    let drain = [("CHAT_DRAIN_WINDOW_MS", "500".to_string())];
    let mut c = Cluster::start(&require_redis().await, 2, &drain).await;
    let api = c.api();
    let t = traffic::Traffic::start(&api, &edges(&c), traffic::Plan::default(), TRAFFIC_DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = c.take_edge(0).terminate().await;
    assert!(status.success(), "the edge exits cleanly after draining: {status:?}");
    let r = t.finish(&api).await;
    r.assert_clean("ws-edge SIGTERM");
    assert!(r.close_codes.contains(&1012), "drained connections closed with 1012: {:?}", r.close_codes);
}

/// The drain starts by leaving the load balancer: from SIGTERM on, the edge's `/readyz` fails and new
/// upgrades get 503 (the gateway retries them on another edge) while open connections are still
/// being closed in batches. Its readiness does not follow auth: auth down leaves the edge ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_edge_turns_unready_and_refuses_new_connections_first() {
    let drain = [("CHAT_DRAIN_WINDOW_MS", "4000".to_string())];
    let mut c = Cluster::start(&require_redis().await, 1, &drain).await;
    let api = c.api();
    let mut users = Vec::new();
    for _ in 0..12 {
        users.push(api.register(&unique("drain")).await);
    }
    let mut open = Vec::new();
    for u in &users[..11] {
        let mut ws = Ws::connect(&c.edge_ws(0), &u.token, "").await;
        ws.next(WAIT).await;
        open.push(ws);
    }
    // Auth down: the edge stays ready (it verifies with the keys it holds).
    c.kill_auth().await;
    assert_eq!(readyz(&c.edge_admins[0]).await, 200, "an edge's readiness is its own");

    let edge = c.take_edge(0);
    let pid = edge.pid().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(readyz(&c.edge_admins[0]).await, 503, "unready as soon as the drain starts");
    let url = format!("{}/v1/ws?access_token={}", c.edge_ws(0), users[11].token);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a draining edge must refuse the upgrade with 503, got {:?}", other.map(|_| "a connection")),
    }
    // With ten batches over 4 s, most connections are still open at this point.
    let mut still_open = 0;
    for ws in &mut open {
        if tokio::time::timeout(Duration::from_millis(20), futures_util::StreamExt::next(&mut ws.stream)).await.is_err()
        {
            still_open += 1;
        }
    }
    assert!(still_open >= 5, "the drain spreads its closes (open after 300 ms: {still_open} of 11)");
    let status = edge.terminate().await;
    assert!(status.success(), "{status:?}");
}

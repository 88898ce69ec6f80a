//! Presence across edges: transitions only, to users who share a conversation, surviving edge
//! crashes and restarts (microservices on Redis; the fan-out also against the all-in-one binary).

use chat_e2e::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn presence_of<'a>(user: &'a TestUser) -> impl Fn(&Value) -> bool + 'a {
    move |v: &Value| v["type"] == "presence" && v["user_id"] == user.id.to_string()
}

/// Collects presence events about `user` for `d`.
async fn presence_events(ws: &mut Ws, user: &TestUser, d: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut ws.stream)).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if presence_of(user)(&v) {
                out.push(v);
            }
        }
    }
    out
}

async fn fan_out_to_contacts_only(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let c = api.register(&unique("c")).await;
    api.direct(&a, &b).await;
    let mut wb = Ws::connect(&t.ws(1), &b.token, "").await;
    let mut wc = Ws::connect(&t.ws(1), &c.token, "").await;
    wb.next(WAIT).await;
    wc.next(WAIT).await;
    let mut a1 = Ws::connect(&t.ws(0), &a.token, "").await;
    a1.next(WAIT).await;
    let on = wb.wait_for(WAIT, presence_of(&a)).await;
    assert_eq!((on["status"].as_str(), on["last_seen_at"].clone()), (Some("online"), Value::Null));
    // A second device: no event.
    let mut a2 = Ws::connect(&t.ws(1), &a.token, "").await;
    a2.next(WAIT).await;
    a1.stream.close(None).await.ok();
    drop(a1);
    assert!(presence_events(&mut wb, &a, Duration::from_millis(800)).await.is_empty(), "still online on one device");
    a2.stream.close(None).await.ok();
    drop(a2);
    let off = wb.wait_for(Duration::from_secs(3), presence_of(&a)).await;
    assert_eq!(off["status"], "offline");
    assert!(off["last_seen_at"].is_string());
    assert!(presence_events(&mut wc, &a, Duration::from_millis(300)).await.is_empty(), "c shares nothing with a");
}
both!(fan_out_to_contacts_only);

/// An edge killed with its connections open: its users go offline within two heartbeat intervals,
/// with exactly one offline event; a restart with the same identity clears stale sessions at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_crash_on_redis() {
    edge_crash(&require_redis().await).await;
}

/// The same on NATS: presence state in JetStream key-value buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_crash_on_nats() {
    edge_crash(&require_nats().await).await;
}

async fn edge_crash(redis: &str) {
    let hb = 1000u64;
    let mut c = Cluster::start(redis, 2, &[("CHAT_HEARTBEAT_INTERVAL_MS", hb.to_string())]).await;
    let api = c.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    api.direct(&a, &b).await;
    let mut wb = Ws::connect(&c.edge_ws(1), &b.token, "").await;
    wb.next(WAIT).await;
    let mut wa = Ws::connect(&c.edge_ws(0), &a.token, "").await;
    wa.next(WAIT).await;
    wb.wait_for(WAIT, presence_of(&a)).await;
    let killed = Instant::now();
    c.take_edge(0).kill().await;
    let off = wb.wait_for(Duration::from_secs(5), presence_of(&a)).await;
    let took = killed.elapsed();
    assert_eq!(off["status"], "offline");
    assert!(took <= Duration::from_millis(2 * hb + 300), "offline after {took:?}, heartbeat {hb} ms");
    assert!(presence_events(&mut wb, &a, Duration::from_millis(1500)).await.is_empty(), "exactly one offline event");
    println!("edge kill: a offline after {} ms (heartbeat {hb} ms)", took.as_millis());
    drop(wa);
}

/// With a long heartbeat, only the restart (same edge id) can clear a dead edge's sessions quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_restart_with_same_identity_clears_stale_sessions() {
    let redis = require_redis().await;
    let mut c = Cluster::start(&redis, 1, &[("CHAT_HEARTBEAT_INTERVAL_MS", "30000".to_string())]).await;
    let api = c.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let mut wa = Ws::connect(&c.edge_ws(0), &a.token, "").await;
    wa.next(WAIT).await;
    let q = format!("/v1/presence?user_ids={}", a.id);
    let status = |v: Value| v["presence"][0]["status"].as_str().unwrap_or_default().to_string();
    let mut online = false;
    for _ in 0..40 {
        if status(api.call("GET", &q, Some(&b.token), None).await.1) == "online" {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(online);
    c.take_edge(0).kill().await;
    drop(wa);
    c.restart_edge(0).await;
    let mut offline = false;
    for _ in 0..40 {
        if status(api.call("GET", &q, Some(&b.token), None).await.1) == "offline" {
            offline = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(offline, "the restarted edge cleared its stale sessions (ttl would take 45 s)");
}

/// Two all-in-one instances sharing PostgreSQL and a bus: presence is shared through the bus's broker. A user with a device on each instance stays
/// online when one closes, goes offline (once) when the other does, and a killed instance's users
/// go offline within two heartbeat intervals.
async fn presence_is_shared_between_instances(bus: &str) {
    let pg = require_postgres().await;
    let id = unique("pair");
    let env = |extra: Vec<(&'static str, String)>| {
        let mut v = vec![
            ("DATABASE_URL", pg.clone()),
            ("DATABASE_SCHEMA_PREFIX", format!("{id}_")),
            ("BUS_URL", bus.to_string()),
            ("BUS_TOPIC_PREFIX", format!("{id}.")),
            ("BUS_SIGNING_KEY", BUS_SIGNING_KEY.to_string()),
            ("AUTH_KEY_ENCRYPTION_KEY", KEY_ENCRYPTION_KEY.to_string()),
            ("PRESENCE_KEY_PREFIX", format!("{id}:presence")),
            ("CHAT_HEARTBEAT_INTERVAL_MS", "1000".to_string()),
        ];
        v.extend(extra);
        v
    };
    let one = AllInOne::start(&env(vec![])).await;
    let two = AllInOne::start(&env(vec![])).await;
    let api = one.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    api.direct(&a, &b).await;
    let mut wb = Ws::connect(&one.ws(), &b.token, "").await;
    wb.next(WAIT).await;
    let mut a1 = Ws::connect(&one.ws(), &a.token, "").await;
    a1.next(WAIT).await;
    assert_eq!(wb.wait_for(WAIT, presence_of(&a)).await["status"], "online");
    let mut a2 = Ws::connect(&two.ws(), &a.token, "").await;
    a2.next(WAIT).await;
    assert!(presence_events(&mut wb, &a, Duration::from_millis(500)).await.is_empty(), "a second device: no event");
    // Read a2 all along (its pongs keep it alive under the 1 s heartbeat).
    let a2 = tokio::spawn(async move { while futures_util::StreamExt::next(&mut a2.stream).await.is_some() {} });
    a1.stream.close(None).await.ok();
    drop(a1);
    assert!(
        presence_events(&mut wb, &a, Duration::from_millis(1500)).await.is_empty(),
        "still online on the other instance"
    );
    let q = format!("/v1/presence?user_ids={}", a.id);
    let (_, v) = two.api().call("GET", &q, Some(&b.token), None).await;
    assert_eq!(v["presence"][0]["status"], "online", "{v}");
    // The other instance dies with the last device: offline within two heartbeats, once.
    let killed = Instant::now();
    two.proc.kill().await;
    let off = wb.wait_for(Duration::from_secs(5), presence_of(&a)).await;
    assert_eq!(off["status"], "offline");
    assert!(killed.elapsed() <= Duration::from_millis(2300), "offline after {:?}", killed.elapsed());
    assert!(presence_events(&mut wb, &a, Duration::from_millis(1500)).await.is_empty(), "exactly one offline event");
    a2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_between_instances_on_redis() {
    presence_is_shared_between_instances(&require_redis().await).await;
}

/// On NATS, presence is shared through JetStream key-value buckets on the same broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_between_instances_on_nats() {
    presence_is_shared_between_instances(&require_nats().await).await;
}

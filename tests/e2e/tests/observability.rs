//! Observability over real processes: `/metrics` counters move with traffic, and no log line at any
//! level carries a token, password, password hash or message body.

use chat_e2e::*;
use serde_json::json;
use std::time::Duration;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(admin: &str) -> String {
    reqwest::get(format!("http://{admin}/metrics")).await.expect("scrape").text().await.expect("body")
}

/// Some traffic; the two connections stay open (returned) so the connection gauge can be checked.
async fn traffic(t: &Target) -> (Ws, Ws) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let (s, _) =
        api.call("POST", "/v1/auth/login", None, Some(json!({"username": a.username, "password": "nope nope"}))).await;
    assert_eq!(s, 401);
    let cid = api.direct(&a, &b).await;
    let mut wa = Ws::connect(&t.ws(0), &a.token, "").await;
    let mut wb = Ws::connect(&t.ws(1), &b.token, "").await;
    wa.next(WAIT).await;
    wb.next(WAIT).await;
    wa.send(json!({"type": "send", "id": "s", "conversation_id": cid, "body": "metrics"})).await;
    wa.wait_for(WAIT, |v| v["type"] == "ack").await;
    wb.wait_for(WAIT, |v| v["type"] == "message").await;
    (wa, wb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_all_in_one() {
    let t = Target::all_in_one(&[]).await;
    let _open = traffic(&t).await;
    let Target::AllInOne(app) = &t else { unreachable!() };
    let names = [
        "http_requests_total",
        "http_request_duration_seconds_count",
        "auth_login_failures_total",
        "auth_registrations_total",
        "messages_stored_total",
        "ws_send_ack_seconds_count",
        "ws_messages_delivered_total",
        "ws_frames_in_total",
        "ws_frames_out_total",
        "bus_published_total",
        "presence_reports_total",
        "ws_connects_total",
        "bus_delivery_lag_seconds_count",
    ];
    // The receiver may have got the message by catch-up from the store while its bus event is still
    // on the way: give the bus metrics a moment.
    let mut m = scrape(&app.admin).await;
    for _ in 0..50 {
        if names.iter().all(|n| metric(&m, n) >= 1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = scrape(&app.admin).await;
    }
    for name in names {
        assert!(metric(&m, name) >= 1.0, "{name} moved:\n{m}");
    }
    assert!(metric(&m, "ws_connections") >= 2.0, "open connections gauge");
    assert!(m.contains("outbox_depth"), "outbox depth is exported");
    assert!(m.contains("db_pool_connections{"), "database pool use is exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_services() {
    let t = Target::services(&[]).await;
    let _open = traffic(&t).await;
    let Target::Services(c) = &t else { unreachable!() };
    let edges = scrape(&c.edge_admins[0]).await + &scrape(&c.edge_admins[1]).await;
    assert!(metric(&edges, "ws_messages_delivered_total") >= 1.0, "{edges}");
    assert!(metric(&edges, "ws_send_ack_seconds_count") >= 1.0);
    assert!(metric(&edges, "ws_connections") >= 2.0);
    assert!(metric(&edges, "bus_events_received_total") >= 1.0);
}

/// Everything at trace level, captured, searched for secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_log_line() {
    let dir = tempdir::Dir::new("logs");
    let log = dir.0.join("chat.log");
    let app = AllInOne::start_logged(&[("RUST_LOG", "trace".to_string())], &log).await;
    let api = app.api();
    let name = unique("secret");
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    let (s, v) =
        api.call("POST", "/v1/auth/register", None, Some(json!({"username": name, "password": password}))).await;
    assert_eq!(s, 201);
    let token = v["access_token"].as_str().unwrap().to_string();
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    let b = api.register(&unique("b")).await;
    let me = TestUser {
        id: uuid::Uuid::parse_str(v["user"]["id"].as_str().unwrap()).unwrap(),
        username: name.clone(),
        token: token.clone(),
        refresh: refresh.clone(),
    };
    let cid = api.direct(&me, &b).await;
    let body = format!("body-{}", uuid::Uuid::new_v4());
    // The token in the query string (the browser way), a message, a login, a refresh.
    let (ws, _) = tokio_tungstenite::connect_async(format!("{}/v1/ws?access_token={token}", app.ws())).await.unwrap();
    let mut w = Ws { stream: ws };
    w.next(WAIT).await;
    w.send(json!({"type": "send", "id": "s", "conversation_id": cid, "body": body})).await;
    w.wait_for(WAIT, |v| v["type"] == "ack").await;
    api.call("POST", "/v1/auth/login", None, Some(json!({"username": name, "password": password}))).await;
    api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(text.lines().count() > 20, "trace logging was on");
    for (what, secret) in [
        ("access token", token.as_str()),
        ("refresh token", refresh.as_str()),
        ("password", password.as_str()),
        ("message body", body.as_str()),
        ("password hash", "$argon2id$"),
    ] {
        let hit = text.lines().find(|l| l.contains(secret));
        assert!(hit.is_none(), "{what} leaked into the log: {}", hit.unwrap_or_default());
    }
}

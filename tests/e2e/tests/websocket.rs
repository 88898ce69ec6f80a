//! The WebSocket contract (docs/websocket.md) (`/v1/ws`), against the all-in-one binary and the microservices
//! with two edges (users on different edges where it matters).

use chat_e2e::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn upgrade_status(url: String, header: Option<String>) -> u16 {
    let mut req = url.into_client_request().unwrap();
    if let Some(h) = header {
        req.headers_mut().insert("authorization", h.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

async fn upgrade_auth(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let ws = t.ws(0);
    assert_eq!(upgrade_status(format!("{ws}/v1/ws"), None).await, 401);
    assert_eq!(upgrade_status(format!("{ws}/v1/ws"), Some("Bearer junk".into())).await, 401);
    assert_eq!(upgrade_status(format!("{ws}/v1/ws?access_token=junk"), None).await, 401);
    assert_eq!(upgrade_status(format!("{ws}/v1/ws?access_token={}", a.token), None).await, 101);
    // The header wins over the query parameter.
    assert_eq!(upgrade_status(format!("{ws}/v1/ws?access_token={}", a.token), Some("Bearer junk".into())).await, 401);
    assert_eq!(upgrade_status(format!("{ws}/v1/ws?access_token=junk"), Some(format!("Bearer {}", a.token))).await, 101);
}
both!(upgrade_auth);

async fn frames_and_errors(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let c = api.register(&unique("c")).await;
    let cid = api.direct(&b, &c).await;
    let mut w = Ws::connect(&t.ws(0), &a.token, "").await;
    let hello = w.next(WAIT).await;
    assert_eq!(hello["type"], "hello");
    assert!(hello["connection_id"].is_string() && hello["heartbeat_interval_ms"].as_u64().unwrap() > 0);
    w.send(json!({"type": "ping", "id": "p1"})).await;
    assert_eq!(w.next(WAIT).await, json!({"type": "pong", "reply_to": "p1"}));
    w.stream.send(Message::Text("{nope".into())).await.unwrap();
    let e = w.next(WAIT).await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("validation_failed")));
    w.send(json!({"type": "fly", "id": "u1"})).await;
    let e = w.next(WAIT).await;
    assert_eq!((e["code"].as_str(), e["reply_to"].as_str()), (Some("validation_failed"), Some("u1")));
    w.send(json!({"type": "send", "conversation_id": cid, "body": "no id"})).await;
    assert_eq!(w.next(WAIT).await["code"], "validation_failed");
    // Not a member: not_found, and nothing is stored.
    w.send(json!({"type": "send", "id": "s1", "conversation_id": cid, "body": "intrude"})).await;
    let e = w.next(WAIT).await;
    assert_eq!((e["code"].as_str(), e["reply_to"].as_str()), (Some("not_found"), Some("s1")));
    w.send(json!({"type": "typing", "id": "t1", "conversation_id": cid, "state": "start"})).await;
    assert_eq!(w.next(WAIT).await["code"], "not_found");
    w.send(json!({"type": "read", "id": "r1", "conversation_id": cid, "seq": 1})).await;
    assert_eq!(w.next(WAIT).await["code"], "not_found");
    let (_, h) = api.call("GET", &format!("/v1/conversations/{cid}/messages"), Some(&b.token), None).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 0);
    // The connection is still usable.
    w.send(json!({"type": "ping", "id": "p2"})).await;
    assert_eq!(w.next(WAIT).await["reply_to"], "p2");
    // A binary frame closes with 1003; a frame over 64 KiB with 1009.
    w.stream.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(w.closed(WAIT).await, Some(1003));
    let mut w = Ws::connect(&t.ws(0), &a.token, "").await;
    w.next(WAIT).await;
    let big = json!({"type": "ping", "id": "x", "pad": "p".repeat(70 * 1024)});
    let _ = w.stream.send(Message::Text(big.to_string().into())).await;
    assert_eq!(w.closed(WAIT).await, Some(1009));
}
both!(frames_and_errors);

async fn typing_read_and_devices(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let mut a1 = Ws::connect(&t.ws(0), &a.token, "").await;
    let mut a2 = Ws::connect(&t.ws(1), &a.token, "").await;
    let mut b1 = Ws::connect(&t.ws(1), &b.token, "").await;
    let mut b2 = Ws::connect(&t.ws(0), &b.token, "").await;
    for w in [&mut a1, &mut a2, &mut b1, &mut b2] {
        assert_eq!(w.next(WAIT).await["type"], "hello");
    }
    a1.send(json!({"type": "typing", "id": "t1", "conversation_id": cid, "state": "start"})).await;
    assert_eq!(a1.wait_for(WAIT, |v| v["type"] == "ack").await["reply_to"], "t1");
    for w in [&mut b1, &mut b2] {
        let ty = w.wait_for(WAIT, |v| v["type"] == "typing").await;
        assert_eq!((ty["user_id"].as_str(), ty["state"].as_str()), (Some(a.id.to_string().as_str()), Some("start")));
    }
    // Every device gets every message; the sender's devices included.
    a1.send(json!({"type": "send", "id": "s1", "conversation_id": cid, "body": "hello"})).await;
    let (ack, own) = a1.ack_and_own_message(WAIT, "s1").await;
    assert_eq!(own["message"]["id"], ack["message"]["id"]);
    for w in [&mut a2, &mut b1, &mut b2] {
        let m = w.wait_for(WAIT, |v| v["type"] == "message").await;
        assert_eq!(m["message"]["id"], ack["message"]["id"]);
    }
    // Typing is never echoed to the typer's own connections: a2 sees the message and then b's
    // typing, but no typing event of a.
    b1.send(json!({"type": "read", "id": "r1", "conversation_id": cid, "seq": 1})).await;
    assert_eq!(b1.wait_for(WAIT, |v| v["type"] == "ack").await["reply_to"], "r1");
    let r = a2.wait_for(WAIT, |v| v["type"] == "read" || v["type"] == "typing").await;
    assert_eq!((r["type"].as_str(), r["seq"].as_i64()), (Some("read"), Some(1)), "no typing echo before the read: {r}");
}
both!(typing_read_and_devices);

async fn membership_follows_conversation_events(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let mut wa = Ws::connect(&t.ws(0), &a.token, "").await;
    let mut wb = Ws::connect(&t.ws(1), &b.token, "").await;
    wa.next(WAIT).await;
    wb.next(WAIT).await;
    // A group created after both connected: both learn it and receive its messages live.
    let (_, g) = api
        .call(
            "POST",
            "/v1/conversations",
            Some(&b.token),
            Some(json!({"kind": "group", "title": "new", "members": [a.id]})),
        )
        .await;
    let cid = g["id"].as_str().unwrap().to_string();
    let ev = wa.wait_for(WAIT, |v| v["type"] == "conversation").await;
    assert_eq!((ev["change"].as_str(), ev["conversation"]["id"].as_str()), (Some("created"), Some(cid.as_str())));
    wb.wait_for(WAIT, |v| v["type"] == "conversation").await;
    wb.send(json!({"type": "send", "id": "s1", "conversation_id": cid, "body": "first"})).await;
    assert_eq!(wa.wait_for(WAIT, |v| v["type"] == "message").await["message"]["body"], "first");
    // Removal: a member_removed event, then nothing more from that conversation.
    let (s, _) = api.call("DELETE", &format!("/v1/conversations/{cid}/members/{}", a.id), Some(&b.token), None).await;
    assert_eq!(s, 204);
    let ev = wa.wait_for(WAIT, |v| v["type"] == "conversation").await;
    assert_eq!(ev["change"], "member_removed");
    wb.send(json!({"type": "send", "id": "s2", "conversation_id": cid, "body": "secret"})).await;
    wb.wait_for(WAIT, |v| v["type"] == "ack").await;
    wa.send(json!({"type": "send", "id": "s3", "conversation_id": cid, "body": "let me in"})).await;
    let e = wa.wait_for(WAIT, |v| v["type"] == "error" || v["type"] == "message").await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("not_found")), "{e}");
}
both!(membership_follows_conversation_events);

async fn sync_replay_truncation_and_resume(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let path = format!("/v1/conversations/{cid}/messages");
    for i in 1..=5 {
        api.call("POST", &path, Some(&a.token), Some(json!({"body": format!("m{i}")}))).await;
    }
    let stranger = uuid::Uuid::now_v7();
    let mut wb = Ws::connect(&t.ws(1), &b.token, "").await;
    wb.next(WAIT).await;
    wb.send(json!({"type": "sync", "id": "y1", "positions": {cid.to_string(): 2, stranger.to_string(): 0}})).await;
    let mut got = Vec::new();
    let done = loop {
        let v = wb.next(WAIT).await;
        match v["type"].as_str() {
            Some("message") => got.push(v["message"]["seq"].as_i64().unwrap()),
            Some("sync_done") => break v,
            _ => {}
        }
    };
    assert_eq!(got, vec![3, 4, 5]);
    assert_eq!(done["reply_to"], "y1");
    assert_eq!(done["truncated"][cid.to_string()], false);
    assert_eq!(done["not_found"], json!([stranger]));
    drop(wb);

    // resume=1: live messages are held until the first sync is answered, then replay and live
    // form one sequence with no gap and no duplicate.
    let mut wb = Ws::connect(&t.ws(1), &b.token, "?resume=1").await;
    assert_eq!(wb.next(WAIT).await["type"], "hello");
    let mut wa = Ws::connect(&t.ws(0), &a.token, "").await;
    wa.next(WAIT).await;
    wa.send(json!({"type": "send", "id": "s6", "conversation_id": cid, "body": "m6"})).await;
    wa.wait_for(WAIT, |v| v["type"] == "ack").await;
    wa.send(json!({"type": "ping", "id": "p"})).await;
    wa.wait_for(WAIT, |v| v["type"] == "pong").await;
    // Nothing live arrives before the sync (a ping round trip proves the connection is served).
    wb.send(json!({"type": "ping", "id": "p0"})).await;
    let first = wb.wait_for(WAIT, |v| v["type"] != "presence").await;
    assert_eq!(first["type"], "pong", "no live message before sync: {first}");
    wb.send(json!({"type": "sync", "id": "y2", "positions": {cid.to_string(): 4}})).await;
    wa.send(json!({"type": "send", "id": "s7", "conversation_id": cid, "body": "m7"})).await;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&7) {
        let v = wb.next(WAIT).await;
        if v["type"] == "message" {
            seqs.push(v["message"]["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(seqs, vec![5, 6, 7], "replay then live, no gap, no duplicate");

    // More than 200 missing: the latest 200, marked truncated.
    let mut tasks = Vec::new();
    for chunk in 0..10 {
        let (api, a, path) = (api.clone(), a.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                api.call("POST", &path, Some(&a.token), Some(json!({"body": format!("bulk {chunk} {i}")}))).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // resume=1 keeps late live deliveries of the bulk out of the replay.
    let mut wc = Ws::connect(&t.ws(0), &b.token, "?resume=1").await;
    wc.next(WAIT).await;
    wc.send(json!({"type": "sync", "id": "y3", "positions": {cid.to_string(): 1}})).await;
    let mut replayed = Vec::new();
    let done = loop {
        let v = wc.next(WAIT).await;
        match v["type"].as_str() {
            Some("message") => replayed.push(v["message"]["seq"].as_i64().unwrap()),
            Some("sync_done") => break v,
            _ => {}
        }
    };
    assert_eq!(done["truncated"][cid.to_string()], true);
    assert_eq!(replayed, (8..=207).collect::<Vec<i64>>());
}
// Hundreds of messages sent at once over REST: above the default per-user send budget.
both!(sync_replay_truncation_and_resume, [("CHAT_SEND_RATE_PER_SEC", "100000"), ("CHAT_SEND_BURST", "100000")]);

async fn send_rate_limit(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let mut w = Ws::connect(&t.ws(0), &a.token, "").await;
    w.next(WAIT).await;
    for i in 0..4 {
        w.send(json!({"type": "send", "id": format!("s{i}"), "conversation_id": cid, "body": "x"})).await;
    }
    let mut acks = 0;
    let mut limited = 0;
    while acks + limited < 4 {
        let v = w.next(WAIT).await;
        match (v["type"].as_str(), v["code"].as_str()) {
            (Some("ack"), _) => acks += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => {}
        }
    }
    assert_eq!((acks, limited), (2, 2));
    let (_, h) = api.call("GET", &format!("/v1/conversations/{cid}/messages"), Some(&a.token), None).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2, "nothing stored for rejected sends");
}
both!(send_rate_limit, [("CHAT_SEND_RATE_PER_SEC", "0.01"), ("CHAT_SEND_BURST", "2")]);

async fn revoked_session_closes_4001(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let mut w = Ws::connect(&t.ws(1), &a.token, "").await;
    w.next(WAIT).await;
    let (s, _) = api.call("POST", "/v1/auth/logout", None, Some(json!({"refresh_token": a.refresh}))).await;
    assert_eq!(s, 204);
    assert_eq!(w.closed(Duration::from_secs(5)).await, Some(4001));
    assert_eq!(upgrade_status(format!("{}/v1/ws", t.ws(0)), Some(format!("Bearer {}", a.token))).await, 401);
}
both!(revoked_session_closes_4001);

async fn token_expiry_and_auth_frame(t: &Target) {
    let api = t.api();
    let name = unique("a");
    let a = api.register(&name).await;
    let other = api.register(&unique("o")).await;
    let mut stale = Ws::connect(&t.ws(0), &a.token, "").await;
    stale.next(WAIT).await;
    let mut renewed = Ws::connect(&t.ws(1), &a.token, "").await;
    renewed.next(WAIT).await;
    renewed.send(json!({"type": "auth", "id": "a0", "access_token": other.token})).await;
    assert_eq!(renewed.next(WAIT).await["code"], "forbidden");
    renewed.send(json!({"type": "auth", "id": "a1", "access_token": "junk"})).await;
    assert_eq!(renewed.next(WAIT).await["code"], "unauthorized");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, fresh) =
        api.call("POST", "/v1/auth/login", None, Some(json!({"username": name, "password": "correct horse 1"}))).await;
    renewed.send(json!({"type": "auth", "id": "a2", "access_token": fresh["access_token"]})).await;
    assert_eq!(renewed.next(WAIT).await, json!({"type": "ack", "reply_to": "a2"}));
    assert_eq!(stale.closed(Duration::from_secs(8)).await, Some(4000));
    // The renewed connection outlives the first token.
    renewed.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(renewed.next(WAIT).await["type"], "pong");
}
// A 4 s lifetime leaves room for a loaded machine; the renewal happens about 1.2 s in.
both!(token_expiry_and_auth_frame, [("CHAT_ACCESS_TOKEN_TTL", "4")]);

async fn presence_over_rest(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let q = format!("/v1/presence?user_ids={},{}", a.id, uuid::Uuid::now_v7());
    let (s, v) = api.call("GET", &q, Some(&b.token), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["presence"][0]["status"], "offline");
    assert_eq!(
        v["presence"][1],
        json!({"user_id": v["presence"][1]["user_id"], "status": "offline", "last_seen_at": null})
    );
    let w = Ws::connect(&t.ws(0), &a.token, "").await;
    let online = |v: &Value| v["presence"][0]["status"] == "online" && v["presence"][0]["last_seen_at"].is_null();
    let mut ok = false;
    for _ in 0..40 {
        if online(&api.call("GET", &q, Some(&b.token), None).await.1) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "online after connect");
    drop(w);
    let mut ok = false;
    for _ in 0..40 {
        let v = api.call("GET", &q, Some(&b.token), None).await.1;
        if v["presence"][0]["status"] == "offline" && v["presence"][0]["last_seen_at"].is_string() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "offline with last_seen_at within 2 s of a clean close");
    assert_eq!(api.call("GET", "/v1/presence?user_ids=nope", Some(&b.token), None).await.0, 422);
    assert_eq!(api.call("GET", "/v1/presence", Some(&b.token), None).await.0, 422);
}
both!(presence_over_rest);

/// SIGTERM drains: connected clients are closed with 1012.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_with_1012() {
    let app = AllInOne::start(&[("CHAT_DRAIN_WINDOW_MS", "300".to_string())]).await;
    let api = app.api();
    let a = api.register(&unique("a")).await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut w = Ws::connect(&app.ws(), &a.token, "").await;
        w.next(WAIT).await;
        conns.push(w);
    }
    let AllInOne { proc, data_dir, .. } = app;
    let exit = tokio::spawn(proc.terminate());
    for mut w in conns {
        assert_eq!(w.closed(Duration::from_secs(5)).await, Some(1012));
    }
    assert!(exit.await.unwrap().success(), "clean exit after the drain");
    drop(data_dir);
}

async fn typing_is_throttled_upstream(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let mut wa = Ws::connect(&t.ws(0), &a.token, "").await;
    let mut wb = Ws::connect(&t.ws(1), &b.token, "").await;
    wa.next(WAIT).await;
    wb.next(WAIT).await;
    for _ in 0..5 {
        wa.send(json!({"type": "typing", "conversation_id": cid, "state": "start"})).await;
    }
    wa.send(json!({"type": "typing", "conversation_id": cid, "state": "stop"})).await;
    wa.send(json!({"type": "typing", "conversation_id": cid, "state": "stop"})).await;
    wa.send(json!({"type": "send", "id": "marker", "conversation_id": cid, "body": "m"})).await;
    let mut states = Vec::new();
    loop {
        let v = wb.next(WAIT).await;
        match v["type"].as_str() {
            Some("typing") => states.push(v["state"].as_str().unwrap().to_string()),
            Some("message") => break,
            _ => {}
        }
    }
    assert_eq!(states, vec!["start", "stop"], "one start and one stop reach the other side");
}
both!(typing_is_throttled_upstream);

async fn sustained_abuse_closes_4008(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let mut w = Ws::connect(&t.ws(0), &a.token, "").await;
    w.next(WAIT).await;
    for i in 0..103 {
        w.send(json!({"type": "send", "id": format!("s{i}"), "conversation_id": cid, "body": "x"})).await;
    }
    assert_eq!(w.closed(WAIT).await, Some(4008));
}
both!(sustained_abuse_closes_4008, [("CHAT_SEND_RATE_PER_SEC", "0.01"), ("CHAT_SEND_BURST", "1")]);

/// A client that never answers pings is closed after two heartbeat intervals.
async fn silent_peer_is_closed(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let mut w = Ws::connect(&t.ws(0), &a.token, "").await;
    // Not polling the stream means not answering pings.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Closed by the server: a close frame, or (when our late pong replies hit the closed socket) a
    // reset. `closed` panics if the connection is still open after WAIT.
    let _ = w.closed(WAIT).await;
}
both!(silent_peer_is_closed, [("CHAT_HEARTBEAT_INTERVAL_MS", "500")]);

/// A reader too slow for its queue is closed with 4009; the other members are unaffected.
async fn slow_reader_closed_4009(t: &Target) {
    let api = t.api();
    let sender = api.register(&unique("s")).await;
    let slow = api.register(&unique("slow")).await;
    let fast = api.register(&unique("fast")).await;
    let (_, g) = api
        .call(
            "POST",
            "/v1/conversations",
            Some(&sender.token),
            Some(json!({"kind": "group", "title": "flood", "members": [slow.id, fast.id]})),
        )
        .await;
    let cid = g["id"].as_str().unwrap().to_string();
    // The slow client: a tiny receive buffer, and it does not read.
    let url = format!("{}/v1/ws", t.ws(0));
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").trim_end_matches("/v1/ws").parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", slow.token).parse().unwrap());
    let (slow_ws, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
    let mut slow_ws = Ws { stream: slow_ws };
    let mut fast_ws = Ws::connect(&t.ws(1), &fast.token, "").await;
    fast_ws.next(WAIT).await;
    let total = 600;
    let path = format!("/v1/conversations/{cid}/messages");
    // 600 frames of ~1.2 KB: far more than the slow reader's queue (64) and socket buffers hold. The
    // sender stays at most 24 messages ahead of the fast reader, so however loaded the machine, the
    // fast reader's queue never nears its limit.
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    {
        let (api, sender, path, received) = (api.clone(), sender.clone(), path.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..total {
                while i >= received.load(std::sync::atomic::Ordering::Acquire) + 24 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let body = format!("{i} {}", "x".repeat(1000));
                api.call("POST", &path, Some(&sender.token), Some(json!({"body": body}))).await;
            }
        }));
    }
    let mut got = 0;
    while got < total {
        let v = fast_ws.wait_for(Duration::from_secs(30), |v| v["type"] == "message").await;
        assert!(v["message"]["seq"].as_i64().unwrap() > 0);
        got += 1;
        received.store(got, std::sync::atomic::Ordering::Release);
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(slow_ws.closed(Duration::from_secs(15)).await, Some(4009), "the slow reader is closed with 4009");
    if let Target::Services(c) = t {
        let m = reqwest::get(format!("http://{}/metrics", c.edge_admins[0])).await.unwrap().text().await.unwrap();
        assert!(m.lines().any(|l| l.starts_with("ws_slow_consumer_closes_total 1")), "metric counts the close");
    }
}
both!(
    slow_reader_closed_4009,
    [("CHAT_OUTBOUND_QUEUE", "64"), ("CHAT_SEND_RATE_PER_SEC", "100000"), ("CHAT_SEND_BURST", "100000")]
);

//! The outside security audit's findings, each performed as the attack against the real processes.
//! A test here failed on the code the audit attacked and passes once the hole is closed.

use chat_e2e::*;
use serde_json::json;
use std::time::Duration;

async fn metric(admin: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.expect("metrics").text().await.expect("body");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Finding 1: internal routes on the public port and without a credential let anyone send as any
/// user, read any conversation and pin anyone online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_routes_are_off_the_public_ports_and_need_the_service_credential() {
    let c = Cluster::start(&require_redis().await, 1, &[]).await;
    let api = c.api();
    let (alice, bob, mallory) =
        (api.register(&unique("a")).await, api.register(&unique("b")).await, api.register(&unique("m")).await);
    let cid = api.direct(&alice, &bob).await;
    let forged = json!({"sends": [{"conversation_id": cid, "sender_id": alice.id, "body": "forged by mallory"}]});

    // The public ports do not serve the internal API at all, whatever the caller sends.
    for (base, path, body) in [
        (&c.store, "/internal/v1/messages/batch".to_string(), forged.clone()),
        (&c.store, format!("/internal/v1/conversations/{cid}/messages"), json!({"sender_id": alice.id, "body": "x"})),
        (&c.auth, "/internal/v1/users/lookup".to_string(), json!({"ids": [alice.id]})),
        (
            &c.presence,
            "/internal/v1/edges/evil/report".to_string(),
            json!({"online": [bob.id], "heartbeat_ms": 3_600_000}),
        ),
    ] {
        let public = Api::new(format!("http://{base}"));
        for cred in [None, Some(mallory.token.as_str()), Some(c.internal_token.as_str())] {
            let (s, v) = public.call("POST", &path, cred, Some(body.clone())).await;
            assert_eq!(s, 404, "{path} on the public port {base}: {s} {v}");
        }
        let (s, _) = public
            .call("GET", &format!("/internal/v1/conversations/{cid}/messages?user_id={}", alice.id), None, None)
            .await;
        assert!(s == 404 || s == 405, "history on the public port: {s}");
    }

    // The internal ports refuse a missing or wrong credential (and a user's access token) with 401.
    let before = metric(&c.store_admin, "internal_auth_failures_total").await;
    for (base, path, body) in [
        (&c.store_internal, "/internal/v1/messages/batch", forged.clone()),
        (&c.auth_internal, "/internal/v1/users/lookup", json!({"ids": [alice.id]})),
        (
            &c.presence_internal,
            "/internal/v1/edges/evil/report",
            json!({"online": [bob.id], "heartbeat_ms": 3_600_000}),
        ),
    ] {
        let internal = Api::new(format!("http://{base}"));
        let wrong = format!("{}x", &c.internal_token[..c.internal_token.len() - 1]);
        for cred in [None, Some(mallory.token.as_str()), Some(wrong.as_str())] {
            let (s, v) = internal.call("POST", path, cred, Some(body.clone())).await;
            assert_eq!(s, 401, "{path} on {base} with {cred:?}: {v}");
            assert_eq!(v["code"], "unauthorized");
        }
    }
    let after = metric(&c.store_admin, "internal_auth_failures_total").await;
    assert!(after >= before + 3.0, "refusals are counted: {before} -> {after}");

    // Nothing the attacker sent took effect: no forged message, bob is not pinned online.
    let (s, v) = api.call("GET", &format!("/v1/conversations/{cid}/messages"), Some(&bob.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(0), "no forged message stored: {v}");
    let (_, p) = api.call("GET", &format!("/v1/presence?user_ids={}", bob.id), Some(&alice.token), None).await;
    assert_eq!(p["presence"][0]["status"], "offline", "a forged report pinned bob online: {p}");

    // The services themselves hold the credential: a real send over the edge works end to end.
    let (s, v) = c
        .store_internal_api()
        .call("POST", "/internal/v1/messages/batch", Some(&c.internal_token), Some(json!({"sends": []})))
        .await;
    assert_eq!(s, 200, "the credential opens the internal API: {v}");
    let mut ws = Ws::connect(&c.edge_ws(0), &alice.token, "").await;
    assert_eq!(ws.next(WAIT).await["type"], "hello");
    ws.send(json!({"type": "send", "id": "s1", "conversation_id": cid, "body": "hello bob"})).await;
    let (ack, _) = ws.ack_and_own_message(WAIT, "s1").await;
    assert_eq!(ack["message"]["body"], "hello bob");
}

/// Finding 1, configuration: a service without the credential refuses to start, naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_the_credential_does_not_start() {
    let addrs = [free_addr(), free_addr(), free_addr()];
    let p = tokio::process::Command::new(binary("chat-presence"))
        .env_remove("CHAT_INTERNAL_TOKEN")
        .env_remove("CHAT_INTERNAL_TOKEN_FILE")
        .env("PRESENCE_LISTEN", &addrs[0])
        .env("PRESENCE_INTERNAL_LISTEN", &addrs[1])
        .env("PRESENCE_ADMIN_LISTEN", &addrs[2])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), p).await.expect("exits").expect("runs");
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("CHAT_INTERNAL_TOKEN"), "names the variable: {text}");
}

/// Opens a WebSocket by hand on a socket with a tiny receive buffer and returns it right after the
/// `101` headers, without reading further: a client that will stop reading.
async fn raw_ws(addr: &str, path: &str, token: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(2048).expect("rcvbuf");
    let target: std::net::SocketAddr = addr.parse().expect("addr");
    sock.connect(&target.into()).expect("connect");
    sock.set_nonblocking(true).expect("nonblocking");
    let mut tcp = tokio::net::TcpStream::from_std(std::net::TcpStream::from(sock)).expect("tokio stream");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.expect("upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.expect("upgrade answer");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// A masked client text frame (mask key zero: the payload goes as is).
fn client_frame(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut f = vec![0x81u8];
    if b.len() < 126 {
        f.push(0x80 | b.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(b.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(b);
    f
}

/// An all-in-one binary where a stalled reader shows quickly: 1 s heartbeats, a 4 KiB socket buffer.
async fn stall_target() -> AllInOne {
    AllInOne::start(&[
        ("CHAT_HEARTBEAT_INTERVAL_MS", "1000".into()),
        ("CHAT_SOCKET_SEND_BUFFER", "4096".into()),
        ("CHAT_SEND_RATE_PER_SEC", "100000".into()),
        ("CHAT_SEND_BURST", "100000".into()),
    ])
    .await
}

/// Writes `frame` again and again, each answered by the server, until the server stops reading too
/// (a write waits half a second). Returns how many went.
async fn flood_without_reading(tcp: &mut tokio::net::TcpStream, frame: &[u8]) -> usize {
    use tokio::io::AsyncWriteExt;
    let mut sent = 0;
    while sent < 200_000 {
        match tokio::time::timeout(Duration::from_millis(500), tcp.write_all(frame)).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    sent
}

/// `who`'s presence as `asker` sees it once it reads offline, or after 30 s.
async fn presence_once_offline(api: &Api, asker: &TestUser, who: &TestUser) -> String {
    let mut status = String::new();
    for _ in 0..150 {
        status = presence_of(api, asker, who).await;
        if status == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    status
}

async fn presence_of(api: &Api, asker: &TestUser, who: &TestUser) -> String {
    let (_, p) = api.call("GET", &format!("/v1/presence?user_ids={}", who.id), Some(&asker.token), None).await;
    p["presence"][0]["status"].as_str().unwrap_or_default().to_string()
}

/// Finding 3: a client that sends but never reads was never closed (its replies waited for queue room
/// outside any select, socket writes had no timeout), so it stayed online for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_goes_offline() {
    use tokio::io::AsyncWriteExt;
    let t =
        AllInOne::start(&[("CHAT_HEARTBEAT_INTERVAL_MS", "1000".into()), ("CHAT_SOCKET_SEND_BUFFER", "4096".into())])
            .await;
    let api = t.api();
    let (mallory, bob) = (api.register(&unique("m")).await, api.register(&unique("b")).await);
    api.direct(&mallory, &bob).await;
    let mut tcp = raw_ws(&t.addr, "/v1/ws", &mallory.token).await;
    // Pings, each answered by a pong the attacker never reads, until the server stops reading too.
    let frame = client_frame(r#"{"type":"ping","id":"p"}"#);
    let mut sent = 0;
    while sent < 200_000 {
        match tokio::time::timeout(Duration::from_millis(500), tcp.write_all(&frame)).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    assert!(sent > 1000, "the attack got going ({sent} frames)");
    // The connection is closed by the server and its user goes offline, while the attacker still
    // holds the socket open.
    let mut status = String::new();
    for _ in 0..150 {
        status = presence_of(&api, &bob, &mallory).await;
        if status == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, "offline", "a stalled reader stays connected and online");
    let text = reqwest::get(format!("http://{}/metrics", t.admin)).await.unwrap().text().await.unwrap();
    assert!(text.contains("ws_slow_consumer_closes_total"), "counted as a slow consumer");
    drop(tcp);
}

/// Finding 2: a `resume=1` connection that never sends `sync` held live messages without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_hold_without_sync_is_bounded_in_count_and_time() {
    // Count: a queue of 16 frames; 40 messages arrive while the connection holds.
    let t = AllInOne::start(&[
        ("CHAT_OUTBOUND_QUEUE", "16".into()),
        ("CHAT_SEND_RATE_PER_SEC", "1000".into()),
        ("CHAT_SEND_BURST", "1000".into()),
    ])
    .await;
    let api = t.api();
    let (alice, bob) = (api.register(&unique("a")).await, api.register(&unique("b")).await);
    let cid = api.direct(&alice, &bob).await;
    let mut held = Ws::connect(&t.ws(), &alice.token, "?resume=1").await;
    assert_eq!(held.next(WAIT).await["type"], "hello");
    for i in 0..40 {
        let (s, v) = api
            .call(
                "POST",
                &format!("/v1/conversations/{cid}/messages"),
                Some(&bob.token),
                Some(json!({"body": format!("m{i}")})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    assert_eq!(held.closed(Duration::from_secs(20)).await, Some(4009), "held past the queue's size");

    // Time: with a 1 s heartbeat, a resume connection that never syncs is closed within the window.
    let t = AllInOne::start(&[("CHAT_HEARTBEAT_INTERVAL_MS", "1000".into())]).await;
    let api = t.api();
    let alice = api.register(&unique("a")).await;
    let mut idle = Ws::connect(&t.ws(), &alice.token, "?resume=1").await;
    assert_eq!(idle.next(WAIT).await["type"], "hello");
    assert_eq!(idle.closed(Duration::from_secs(20)).await, Some(4009), "held past the heartbeat window");
    // A client that syncs at once is not affected.
    let mut good = Ws::connect(&t.ws(), &alice.token, "?resume=1").await;
    assert_eq!(good.next(WAIT).await["type"], "hello");
    good.send(json!({"type": "sync", "id": "s", "positions": {}})).await;
    assert_eq!(good.next(WAIT).await["type"], "sync_done");
    // Reading (and so answering the server's pings) past the window: still open.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(m)) = tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut good.stream)).await {
        assert!(!matches!(m, Ok(tokio_tungstenite::tungstenite::Message::Close(_))), "a synced client was closed");
    }
    good.send(json!({"type": "ping", "id": "still-here"})).await;
    assert_eq!(good.wait_for(WAIT, |v| v["type"] == "pong").await["reply_to"], "still-here");
}

/// Finding 26: the 4008 close threw away the `rate_limited` replies queued before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejected_frame_gets_its_reply_before_the_4008_close() {
    let t = AllInOne::start(&[("CHAT_SEND_RATE_PER_SEC", "0.01".into()), ("CHAT_SEND_BURST", "1".into())]).await;
    let api = t.api();
    let (alice, bob) = (api.register(&unique("a")).await, api.register(&unique("b")).await);
    let cid = api.direct(&alice, &bob).await;
    let mut ws = Ws::connect(&t.ws(), &alice.token, "").await;
    assert_eq!(ws.next(WAIT).await["type"], "hello");
    // One send within the budget, then 101 rejected ones: the 101st rejection closes with 4008.
    for i in 0..102 {
        ws.send(json!({"type": "send", "id": format!("s{i}"), "conversation_id": cid, "body": "x"})).await;
    }
    let mut replies = std::collections::HashSet::new();
    let mut limited = 0;
    let code = loop {
        let m = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws.stream))
            .await
            .expect("frames then a close")
            .expect("open")
            .expect("ws");
        match m {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if let Some(r) = v["reply_to"].as_str() {
                    assert!(replies.insert(r.to_string()), "one reply per frame: {v}");
                    if v["code"] == "rate_limited" {
                        limited += 1;
                    }
                }
            }
            tokio_tungstenite::tungstenite::Message::Close(c) => break c.map(|c| u16::from(c.code)),
            _ => {}
        }
    };
    assert_eq!(code, Some(4008));
    assert_eq!(limited, 101, "every rejection reached the client before the close");
    assert_eq!(replies.len(), 102, "the accepted send's ack too");
}

/// Finding 9: alternating typing start/stop was forwarded one event per frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typing_flood_reaches_the_other_member_as_a_trickle() {
    let t = AllInOne::start(&[]).await;
    let api = t.api();
    let (alice, bob) = (api.register(&unique("a")).await, api.register(&unique("b")).await);
    let cid = api.direct(&alice, &bob).await;
    let mut wb = Ws::connect(&t.ws(), &bob.token, "").await;
    assert_eq!(wb.next(WAIT).await["type"], "hello");
    let mut wa = Ws::connect(&t.ws(), &alice.token, "").await;
    assert_eq!(wa.next(WAIT).await["type"], "hello");
    let start = std::time::Instant::now();
    for i in 0..2000 {
        let state = if i % 2 == 0 { "start" } else { "stop" };
        wa.send(json!({"type": "typing", "conversation_id": cid, "state": state})).await;
    }
    wa.send(json!({"type": "ping", "id": "done"})).await;
    assert_eq!(wa.wait_for(Duration::from_secs(30), |v| v["type"] == "pong").await["reply_to"], "done");
    let secs = start.elapsed().as_secs_f64();
    // Count what bob received, until a marker message shows everything before it has arrived.
    let (s, _) = api
        .call("POST", &format!("/v1/conversations/{cid}/messages"), Some(&alice.token), Some(json!({"body": "end"})))
        .await;
    assert_eq!(s, 201);
    let mut typing = 0;
    loop {
        let v = wb.next(WAIT).await;
        match v["type"].as_str() {
            Some("typing") => typing += 1,
            Some("message") => break,
            _ => {}
        }
    }
    let allowed = 6 + (2.0 * secs).ceil() as usize + 1;
    assert!(typing <= allowed, "{typing} typing events reached bob in {secs:.1} s (at most {allowed})");
    assert!(typing >= 1, "typing still works");
}

async fn legacy_connect(base: &str, conversation: &str, token: &str) -> WsStream {
    let url = format!("{base}/ws/chat/{conversation}/?token={token}");
    tokio_tungstenite::connect_async(url).await.expect("old-dialect connect").0
}

/// The close code and reason of an old-dialect connection (reading, so pings are answered).
async fn legacy_close(ws: &mut WsStream, within: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, futures_util::StreamExt::next(ws)).await {
            Err(_) => panic!("no close within {within:?}"),
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(c))))) => {
                return (u16::from(c.code), c.reason.to_string());
            }
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("ended without a close frame: {other:?}"),
        }
    }
}

/// Findings 11 and 19 on the old dialect: the token's expiry was never enforced, and the close told
/// outsiders whether a legacy conversation id exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_dialect_enforces_expiry_and_does_not_tell_which_ids_exist() {
    let t = AllInOne::start(&[("CHAT_ACCESS_TOKEN_TTL", "3".into())]).await;
    let api = t.api();
    let (alice, bob, mallory) =
        (api.register(&unique("a")).await, api.register(&unique("b")).await, api.register(&unique("m")).await);
    let cid = api.direct(&alice, &bob).await;

    let mut missing = legacy_connect(&t.ws(), "987654321", &mallory.token).await;
    let mut foreign = legacy_connect(&t.ws(), &cid.to_string(), &mallory.token).await;
    let a = legacy_close(&mut missing, WAIT).await;
    let b = legacy_close(&mut foreign, WAIT).await;
    assert_eq!(a, b, "a missing id and someone else's conversation look the same");
    assert_eq!(a.0, 4003);

    // A member's connection ends when its token does (4000), though the client keeps reading.
    let mut ws = legacy_connect(&t.ws(), &cid.to_string(), &alice.token).await;
    let (code, _) = legacy_close(&mut ws, Duration::from_secs(20)).await;
    assert_eq!(code, 4000, "closed at expiry");
}

/// Finding 3 on the old dialect: a client that stops reading is closed and goes offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_dialect_client_that_stops_reading_is_closed() {
    let t = stall_target().await;
    let api = t.api();
    let (mallory, bob) = (api.register(&unique("m")).await, api.register(&unique("b")).await);
    let cid = api.direct(&mallory, &bob).await;
    let mut tcp = raw_ws(&t.addr, &format!("/ws/chat/{cid}/?token={}", mallory.token), &mallory.token).await;
    // Unknown frames, each answered by an error the attacker never reads.
    let frame = client_frame(r#"{"type":"nonsense","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#);
    let sent = flood_without_reading(&mut tcp, &frame).await;
    let status = presence_once_offline(&api, &bob, &mallory).await;
    assert_eq!(status, "offline", "a stalled old-dialect reader stays connected ({sent} frames sent)");
    drop(tcp);
}

/// Finding 5: 60 concurrent wrong passwords for one user were all checked against a limit of 10.
async fn login_limit_holds_under_a_race(t: &Target) {
    let api = t.api();
    let victim = api.register(&unique("v")).await;
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (api, name) = (api.clone(), victim.username.clone());
        tasks.push(tokio::spawn(async move {
            api.call("POST", "/v1/auth/login", None, Some(json!({"username": name, "password": "wrong guess 1"})))
                .await
                .0
        }));
    }
    let mut checked = 0;
    for t in tasks {
        match t.await.unwrap() {
            401 => checked += 1,
            429 | 503 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(checked <= 10, "{checked} passwords were checked with a limit of 10");
    let (s, _) = api
        .call("POST", "/v1/auth/login", None, Some(json!({"username": victim.username, "password": "correct horse 1"})))
        .await;
    assert_eq!(s, 429, "the limit holds for the right password too until the window passes");
}
both!(login_limit_holds_under_a_race, [("AUTH_HASH_QUEUE", "1000"), ("CHAT_LOGIN_MAX_FAILURES_PER_IP", "1000")]);

/// Findings 15 and 18: Argon2 work without limit (taken names hashed first, successful logins never
/// counted, an unbounded hash queue) and throttle keys holding whatever username a client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_is_bounded_and_throttle_keys_stay_small() {
    let c = Cluster::start(
        &require_redis().await,
        1,
        &[
            ("AUTH_HASH_CONCURRENCY", "1".into()),
            ("AUTH_HASH_QUEUE", "2".into()),
            ("CHAT_LOGIN_MAX_ATTEMPTS_PER_IP", "8".into()),
            ("CHAT_LOGIN_MAX_FAILURES_PER_IP", "1000".into()),
        ],
    )
    .await;
    let api = c.api();
    let alice = api.register(&unique("a")).await;
    let hashes = || metric(&c.auth_admin, "auth_password_hashes_total");
    // A taken name is refused before any hashing.
    let before = hashes().await;
    for _ in 0..20 {
        let (s, _) = api
            .call(
                "POST",
                "/v1/auth/register",
                None,
                Some(json!({"username": alice.username, "password": "another pass 1"})),
            )
            .await;
        assert_eq!(s, 409);
    }
    assert_eq!(hashes().await, before, "registrations of a taken name hashed passwords");

    // A burst beyond the hash queue is refused with 503 + Retry-After instead of queueing without end.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"username": format!("nobody{i}"), "password": "some password"});
            api.call("POST", "/v1/auth/login", None, Some(body)).await.0
        }));
    }
    let mut busy = 0;
    for t in tasks {
        match t.await.unwrap() {
            503 => busy += 1,
            401 | 429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(busy > 0, "no login was refused for a full hash queue");

    // Very long usernames do not turn into long keys.
    let long = "x".repeat(200_000);
    for _ in 0..3 {
        let (s, _) = api.call("POST", "/v1/auth/login", None, Some(json!({"username": long, "password": "pw"}))).await;
        assert!(s == 401 || s == 429 || s == 503, "{s}");
    }
    let longest =
        pg_scalar(format!("SELECT CAST(MAX(LENGTH(key)) AS BIGINT) FROM {}.throttle_counters", c.auth_schema)).await;
    assert!(longest <= 64, "a throttle key of {longest} characters");

    // Successful logins count toward the address's attempt budget (8 here, the burst above used it up).
    let mut last = 0;
    for _ in 0..3 {
        last = api
            .call(
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({"username": alice.username, "password": "correct horse 1"})),
            )
            .await
            .0;
    }
    assert_eq!(last, 429, "successful logins are never throttled");
}

/// Finding 14: a refresh racing a logout could mint an access token outliving the revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_racing_logout_never_outlives_the_revocation() {
    let c = Cluster::start(&require_redis().await, 1, &[("CHAT_LOGIN_MAX_ATTEMPTS_PER_IP", "10000".into())]).await;
    let api = c.api();
    let u = api.register(&unique("r")).await;
    let mut minted = Vec::new();
    for _ in 0..40 {
        let (s, v) = api
            .call("POST", "/v1/auth/login", None, Some(json!({"username": u.username, "password": "correct horse 1"})))
            .await;
        assert_eq!(s, 200, "{v}");
        let refresh = v["refresh_token"].as_str().unwrap().to_string();
        // Access tokens of a refresh expire a second or more after the login's.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (a, b) = (api.clone(), api.clone());
        let (r1, r2) = (refresh.clone(), refresh);
        let (rf, lo) = tokio::join!(
            async move { a.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": r1}))).await },
            async move { b.call("POST", "/v1/auth/logout", None, Some(json!({"refresh_token": r2}))).await }
        );
        assert_eq!(lo.0, 204);
        if rf.0 == 200 {
            minted.push(rf.1["access_token"].as_str().unwrap().to_string());
        }
    }
    // Every token a refresh handed out is covered by its session's revocation until it expires.
    let internal = Api::new(format!("http://{}", c.auth_internal));
    let (s, list) = internal.call("GET", "/internal/v1/revoked-sessions", Some(&c.internal_token), None).await;
    assert_eq!(s, 200);
    let until: std::collections::HashMap<String, i64> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["session_id"].as_str().unwrap().to_string(), e["until"].as_i64().unwrap()))
        .collect();
    for tok in minted {
        let claims = claims_of(&tok);
        let sid = claims["sid"].as_str().unwrap();
        let exp = claims["exp"].as_i64().unwrap();
        let covered = until.get(sid).copied().unwrap_or(0);
        assert!(covered >= exp, "session {sid}: a token valid until {exp} outlives its revocation (until {covered})");
    }
}

fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64");
    serde_json::from_slice(&bytes).expect("claims")
}

/// Finding 24: sessions and refresh tokens were never purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_and_refresh_tokens_are_purged() {
    let c = Cluster::start(&require_redis().await, 1, &[("AUTH_KEY_RELOAD_SECS", "1".into())]).await;
    let api = c.api();
    let (old, fresh) = (api.register(&unique("o")).await, api.register(&unique("f")).await);
    let schema = &c.auth_schema;
    // Age one user's session and refresh token past every expiry.
    pg_scalar(format!(
        "WITH a AS (UPDATE {schema}.sessions SET access_exp = 1 WHERE user_id = '{}' RETURNING id), \
         b AS (UPDATE {schema}.refresh_tokens SET expires_at = 1 WHERE session_id IN (SELECT id FROM a) RETURNING 1) \
         SELECT CAST(COUNT(*) AS BIGINT) FROM b",
        old.id
    ))
    .await;
    let count = |id: uuid::Uuid| {
        pg_scalar(format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {schema}.sessions WHERE user_id = '{id}'"))
    };
    let mut left = 1;
    for _ in 0..100 {
        left = count(old.id).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the expired session is still stored");
    assert_eq!(count(fresh.id).await, 1, "a live session is kept");
}

/// Finding 17: a request body trickled a byte at a time was read for as long as the client liked
/// and then processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_and_not_processed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = AllInOne::start(&[("HTTP_BODY_TIMEOUT_MS", "1000".into())]).await;
    let name = unique("slow");
    let body = json!({"username": name, "password": "correct horse 1"}).to_string();
    let mut tcp = tokio::net::TcpStream::connect(&t.addr).await.unwrap();
    let head = format!(
        "POST /v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // One byte every 200 ms: the whole body would take well past the deadline.
    let mut answer = Vec::new();
    for b in body.as_bytes() {
        if tcp.write_all(&[*b]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await {
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || !answer.is_empty() {
                break;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "a trickled body is answered 408: {answer:?}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // Nothing was registered.
    let (s, _) = t
        .api()
        .call("POST", "/v1/auth/login", None, Some(json!({"username": name, "password": "correct horse 1"})))
        .await;
    assert_eq!(s, 401, "the slow registration was processed");
}

/// Finding 25: data files, the signing key's included, were readable by every local user.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_are_private_to_the_service_user() {
    use std::os::unix::fs::PermissionsExt;
    let t = AllInOne::start(&[]).await;
    let api = t.api();
    api.register(&unique("p")).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    assert_eq!(mode(&t.data_dir.0), 0o700, "the data directory");
    let mut files = 0;
    for entry in std::fs::read_dir(&t.data_dir.0).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        files += 1;
    }
    assert!(files >= 2, "auth.db and messages.db (and their WAL files) were checked");
}

async fn pg_text(sql: String) -> String {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&pg_url()).await.expect("PostgreSQL");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await.expect("query");
    row.try_get::<String, _>(0).expect("text")
}

/// A token signed with the private key as stored by auth (what an attacker holding a leaked key does).
fn forge(der_b64: &str, kid: &str, sub: uuid::Uuid, lifetime: i64) -> String {
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(der_b64).expect("stored key");
    let key = jsonwebtoken::EncodingKey::from_ed_der(&der);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"sub": sub, "sid": uuid::Uuid::new_v4(), "iat": now, "exp": now + lifetime, "jti": "forged"});
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

/// Finding 7: a retired signing key stayed trusted after it left the JWKS (rotation could not revoke
/// a leaked key), and a token of any lifetime was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_key_stops_verifying_after_rotate_key_retire_previous() {
    let c = Cluster::start(
        &require_redis().await,
        1,
        &[("AUTH_KEY_RELOAD_SECS", "1".into()), ("CHAT_JWKS_REFRESH_SECS", "1".into())],
    )
    .await;
    let api = c.api();
    let victim = api.register(&unique("v")).await;
    let s = &c.auth_schema;
    let kid = pg_text(format!("SELECT kid FROM {s}.signing_keys WHERE retired_at IS NULL")).await;
    let der = pg_text(format!("SELECT private_der FROM {s}.signing_keys WHERE kid = '{kid}'")).await;
    let der = leaked_der(&der, &kid);

    // A token living ten years is refused outright, by every verifier.
    let decade = forge(&der, &kid, victim.id, 10 * 365 * 86_400);
    assert_eq!(api.call("GET", "/v1/users/me", Some(&decade), None).await.0, 401, "auth");
    assert_eq!(api.call("GET", "/v1/conversations", Some(&decade), None).await.0, 401, "message-store");

    // A normal-looking forged token works while the key is trusted...
    let forged = forge(&der, &kid, victim.id, 600);
    assert_eq!(api.call("GET", "/v1/conversations", Some(&forged), None).await.0, 200);
    let out = std::process::Command::new(binary("chat-auth"))
        .args(["rotate-key", "--retire-previous"])
        .env("DATABASE_URL", pg_url())
        .env("DATABASE_SCHEMA", s)
        .env("LOG_FORMAT", "pretty")
        .envs(key_env())
        .output()
        .expect("run rotate-key");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ...and stops everywhere once replicas reload and verifiers refresh (1 s each here).
    let refused = |path: String| {
        let (api, forged) = (api.clone(), forged.clone());
        async move {
            for _ in 0..100 {
                if api.call("GET", &path, Some(&forged), None).await.0 == 401 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(refused("/v1/users/me".into()).await, "auth still trusts the withdrawn key");
    assert!(refused("/v1/conversations".into()).await, "message-store still trusts the withdrawn key");
    let presence = format!("/v1/presence?user_ids={}", victim.id);
    assert!(refused(presence).await, "presence still trusts the withdrawn key");
    // The edge refreshes on its own schedule too: poll it like the others.
    let mut edge_refused = false;
    for _ in 0..100 {
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{}/v1/ws",
            c.edge_ws(0)
        ))
        .unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {forged}").parse().unwrap());
        if tokio_tungstenite::connect_async(req).await.is_err() {
            edge_refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(edge_refused, "the edge still trusts the withdrawn key");
    // Logging in again gives a token of the new key that works.
    let (st, v) = api
        .call("POST", "/v1/auth/login", None, Some(json!({"username": victim.username, "password": "correct horse 1"})))
        .await;
    assert_eq!(st, 200);
    assert_eq!(api.call("GET", "/v1/conversations", v["access_token"].as_str(), None).await.0, 200);
}

/// The private key as a thief with the database and the encryption key holds it (PKCS#8, base64).
fn leaked_der(stored: &str, kid: &str) -> String {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sealed = stored.strip_prefix("aesgcm:").expect("the key is encrypted at rest");
    let raw = b64.decode(sealed).unwrap();
    let key: Vec<u8> =
        (0..32).map(|i| u8::from_str_radix(&KEY_ENCRYPTION_KEY[2 * i..2 * i + 2], 16).unwrap()).collect();
    let key = RandomizedNonceKey::new(&AES_256_GCM, &key).unwrap();
    let (nonce, rest) = raw.split_at(12);
    let mut rest = rest.to_vec();
    let plain = key
        .open_in_place(Nonce::try_assume_unique_for_key(nonce).unwrap(), Aad::from(kid.as_bytes()), &mut rest)
        .expect("decrypts with the deployment's key");
    b64.encode(plain)
}

/// Environment a key-handling subcommand needs besides the database.
fn key_env() -> Vec<(&'static str, String)> {
    vec![("AUTH_KEY_ENCRYPTION_KEY", KEY_ENCRYPTION_KEY.to_string())]
}

async fn sqlite_text(path: &std::path::Path, sql: &str) -> String {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=ro", path.display());
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.expect("sqlite");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&pool).await.expect("query");
    let v = row.try_get::<String, _>(0).expect("text");
    pool.close().await;
    v
}

/// Finding 13: the signing private key sat in plain text in the auth database. On PostgreSQL a key
/// is now required and keys are sealed; an existing plain key is sealed when one is configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_are_encrypted_at_rest() {
    // chat-auth on PostgreSQL without the key refuses to start and names the variable.
    let pg = require_postgres().await;
    let out = tokio::process::Command::new(binary("chat-auth"))
        .env("DATABASE_URL", &pg)
        .env("DATABASE_SCHEMA", unique("nokey"))
        .env("CHAT_INTERNAL_TOKEN", internal_token())
        .env("AUTH_LISTEN", free_addr())
        .env("AUTH_INTERNAL_LISTEN", free_addr())
        .env("AUTH_ADMIN_LISTEN", free_addr())
        .env_remove("AUTH_KEY_ENCRYPTION_KEY")
        .env("LOG_FORMAT", "pretty")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out).await.expect("exits").expect("runs");
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("AUTH_KEY_ENCRYPTION_KEY"), "names the variable: {text}");

    // An all-in-one data directory from before: plain key; with a key configured it is sealed in
    // place and tokens signed before keep verifying.
    let dir = tempdir::Dir::new("keys");
    let start = |key: Option<&str>| {
        let (addr, admin) = (free_addr(), free_addr());
        let mut env = vec![
            ("CHAT_LISTEN", addr.clone()),
            ("CHAT_ADMIN_LISTEN", admin.clone()),
            ("CHAT_DATA_DIR", dir.0.display().to_string()),
        ];
        if let Some(k) = key {
            env.push(("AUTH_KEY_ENCRYPTION_KEY", k.to_string()));
        }
        (Proc::spawn("chat", &env), addr, admin)
    };
    let (p, addr, admin) = start(None);
    wait_ready("chat", &admin).await;
    let user = Api::new(format!("http://{addr}")).register(&unique("k")).await;
    p.terminate().await;
    let auth_db = dir.0.join("auth.db");
    let stored = sqlite_text(&auth_db, "SELECT private_der FROM signing_keys").await;
    assert!(!stored.starts_with("aesgcm:"), "no key configured: stored plain (0600 file)");

    let (p, addr, admin) = start(Some(KEY_ENCRYPTION_KEY));
    wait_ready("chat", &admin).await;
    let stored = sqlite_text(&auth_db, "SELECT private_der FROM signing_keys").await;
    assert!(stored.starts_with("aesgcm:"), "sealed once a key is configured");
    let api = Api::new(format!("http://{addr}"));
    assert_eq!(api.call("GET", "/v1/users/me", Some(&user.token), None).await.0, 200, "old tokens still verify");
    p.terminate().await;

    // Without the key a sealed store cannot be used: a clear error, not a new key.
    let (addr, admin) = (free_addr(), free_addr());
    let out = tokio::process::Command::new(binary("chat"))
        .env("CHAT_LISTEN", addr)
        .env("CHAT_ADMIN_LISTEN", admin)
        .env("CHAT_DATA_DIR", &dir.0)
        .env("LOG_FORMAT", "pretty")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out).await.expect("exits").expect("runs");
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("AUTH_KEY_ENCRYPTION_KEY"), "names the variable: {text}");
}

/// Publishes raw bytes on the broker, as anyone who can reach it could.
fn redis_publish(port: &str, channel: &str, payload: &str) {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", port, "PUBLISH", channel, payload])
        .output()
        .expect("redis-cli (apt-get install redis-tools)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Finding 4: the bus was trusted blindly. A forged `conversation` event added an outsider to a
/// conversation's live stream, and a forged revocation closed a victim's sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bus_events_are_dropped_and_counted() {
    let redis = require_redis().await;
    let port = redis.rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let c = Cluster::start(&redis, 1, &[]).await;
    let api = c.api();
    let (alice, bob, mallory) =
        (api.register(&unique("a")).await, api.register(&unique("b")).await, api.register(&unique("m")).await);
    let cid = api.direct(&alice, &bob).await;
    let mut wm = Ws::connect(&c.edge_ws(0), &mallory.token, "").await;
    assert_eq!(wm.next(WAIT).await["type"], "hello");
    let mut wa = Ws::connect(&c.edge_ws(0), &alice.token, "").await;
    assert_eq!(wa.next(WAIT).await["type"], "hello");
    let session = claims_of(&alice.token)["sid"].as_str().unwrap().to_string();

    // Mallory's forged membership event, and a forged revocation of alice's session.
    let header = json!({"kind": "conversation", "conversation_id": cid, "seq": 0,
        "members": [alice.id, bob.id, mallory.id]});
    let frame = json!({"type": "conversation", "change": "member_added", "conversation": {"id": cid}});
    redis_publish(&port, &format!("{}chat.conversations", c.topic_prefix), &format!("{header}\n{frame}"));
    let revoke = json!({"kind": "session_revoked", "session_id": session, "until": 4_000_000_000i64});
    redis_publish(&port, &format!("{}chat.sessions.revoked", c.topic_prefix), &format!("{revoke}\n{{}}"));

    // Alice's socket stays open, and her message reaches bob's conversation but not mallory.
    wa.send(json!({"type": "send", "id": "s1", "conversation_id": cid, "body": "for bob only"})).await;
    let (ack, _) = wa.ack_and_own_message(WAIT, "s1").await;
    assert_eq!(ack["message"]["body"], "for bob only", "a forged revocation closed the socket");
    wm.send(json!({"type": "ping", "id": "p"})).await;
    let v = wm.wait_for(WAIT, |v| v["type"] == "pong" || v["type"] == "message").await;
    assert_eq!(v["type"], "pong", "an outsider received the conversation's message: {v}");
    let mut rejected = 0.0;
    for _ in 0..50 {
        rejected = metric(&c.edge_admins[0], "bus_envelopes_rejected_total").await;
        if rejected >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rejected >= 2.0, "both forgeries are counted ({rejected})");
}

/// Finding 4, broker credentials: the services run on a Redis ACL user limited to the deployment's
/// channels and keys, and nothing works without the shared bus key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_run_on_a_redis_acl_user_limited_to_their_channels() {
    let broker = BrokerServer::start();
    let port = broker.port.to_string();
    // The cluster's prefix is only known after start: allow the "e2e_" test prefixes here.
    let acl = std::process::Command::new("redis-cli")
        .args(["-p", &port, "ACL", "SETUSER", "chat", "on", ">chat-secret", "resetchannels", "&e2e_*", "~e2e_*"])
        .args(["+@pubsub", "+@read", "+@write", "+@scripting", "+@connection", "+ping", "-@dangerous"])
        .output()
        .expect("redis-cli");
    assert!(acl.status.success(), "{}", String::from_utf8_lossy(&acl.stderr));
    let url = format!("redis://chat:chat-secret@127.0.0.1:{port}");
    let c = Cluster::start(&url, 1, &[]).await;
    let api = c.api();
    let (alice, bob) = (api.register(&unique("a")).await, api.register(&unique("b")).await);
    let cid = api.direct(&alice, &bob).await;
    let mut wb = Ws::connect(&c.edge_ws(0), &bob.token, "").await;
    assert_eq!(wb.next(WAIT).await["type"], "hello");
    let (s, _) = api
        .call("POST", &format!("/v1/conversations/{cid}/messages"), Some(&alice.token), Some(json!({"body": "acl"})))
        .await;
    assert_eq!(s, 201);
    let m = wb.wait_for(WAIT, |v| v["type"] == "message").await;
    assert_eq!(m["message"]["body"], "acl", "delivered over the restricted user");
    // The user reaches only its own channels.
    let denied = std::process::Command::new("redis-cli")
        .args(["-p", &port, "--user", "chat", "--pass", "chat-secret", "PUBLISH", "other.topic", "x"])
        .output()
        .expect("redis-cli");
    assert!(String::from_utf8_lossy(&denied.stdout).contains("NOPERM"), "channels outside the prefix are refused");
}

/// Finding 4, transport: a passive listener on the broker's network read every body. The services
/// speak TLS to Redis (`rediss://`), trusting a private CA through `SSL_CERT_FILE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_talk_to_redis_over_tls() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(&ca);
    // The plain protocol is not spoken on that port.
    let plain = std::process::Command::new("redis-cli").args(["-p", &redis.port.to_string(), "PING"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("PONG"), "the TLS port answered plain text");
    let c = Cluster::start(&redis.url(), 2, &[("SSL_CERT_FILE", ca.file("ca.pem"))]).await;
    message_crosses_edges(&c, "over tls").await;
}

/// A message sent on edge 0 arrives on edge 1 (so it crossed the bus).
async fn message_crosses_edges(c: &Cluster, body: &str) {
    let api = c.api();
    let (alice, bob) = (api.register(&unique("a")).await, api.register(&unique("b")).await);
    let cid = api.direct(&alice, &bob).await;
    let mut wb = Ws::connect(&c.edge_ws(1), &bob.token, "").await;
    assert_eq!(wb.next(WAIT).await["type"], "hello");
    let mut wa = Ws::connect(&c.edge_ws(0), &alice.token, "").await;
    assert_eq!(wa.next(WAIT).await["type"], "hello");
    wa.send(json!({"type": "send", "id": "s", "conversation_id": cid, "body": body})).await;
    wa.ack_and_own_message(WAIT, "s").await;
    let m = wb.wait_for(WAIT, |v| v["type"] == "message").await;
    assert_eq!(m["message"]["body"], body, "crossed edges over the bus");
}

/// Finding 4 on NATS: the services authenticate to the broker and speak TLS to it (`tls://`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_talk_to_nats_with_credentials_over_tls() {
    let ca = TestCa::new();
    let nats = TlsNats::start(&ca, "chat", "nats-secret");
    // Presence needs Redis beside a NATS bus (its own store).
    let redis = require_redis().await;
    let url = format!("tls://chat:nats-secret@127.0.0.1:{}", nats.port);
    let c = Cluster::start(&url, 2, &[("SSL_CERT_FILE", ca.file("ca.pem")), ("PRESENCE_STORE_URL", redis)]).await;
    message_crosses_edges(&c, "over nats tls").await;
}

/// Finding 6: membership changes published while an edge's bus subscription was down were never
/// reconciled, so a removed member kept receiving the conversation's live messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_missed_during_a_bus_outage_is_reconciled() {
    let redis = require_redis().await;
    let target = redis.trim_start_matches("redis://").trim_end_matches('/').to_string();
    let proxy = CutProxy::start(&target).await;
    let c = Cluster::start_with_edge_env(&redis, 1, &[], &[("BUS_URL", format!("redis://{}", proxy.addr))]).await;
    let api = c.api();
    let (owner, bob, carol) =
        (api.register(&unique("o")).await, api.register(&unique("b")).await, api.register(&unique("c")).await);
    let (s, g) = api
        .call(
            "POST",
            "/v1/conversations",
            Some(&owner.token),
            Some(json!({"kind": "group", "title": "g", "members": [bob.id, carol.id]})),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let cid = g["id"].as_str().unwrap().to_string();
    let mut wb = Ws::connect(&c.edge_ws(0), &bob.token, "").await;
    assert_eq!(wb.next(WAIT).await["type"], "hello");
    let mut wc = Ws::connect(&c.edge_ws(0), &carol.token, "").await;
    assert_eq!(wc.next(WAIT).await["type"], "hello");

    // The edge loses its broker; bob is removed meanwhile.
    let reconciles = metric(&c.edge_admins[0], "ws_membership_reconciles_total").await;
    proxy.cut();
    let (s, v) =
        api.call("DELETE", &format!("/v1/conversations/{cid}/members/{}", bob.id), Some(&owner.token), None).await;
    assert_eq!(s, 204, "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    let mut done = reconciles;
    for _ in 0..200 {
        done = metric(&c.edge_admins[0], "ws_membership_reconciles_total").await;
        if done > reconciles {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done > reconciles, "the edge reconciled memberships after resubscribing");

    // The next message reaches carol, never bob.
    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/conversations/{cid}/messages"),
            Some(&owner.token),
            Some(json!({"body": "after the removal"})),
        )
        .await;
    assert_eq!(s, 201);
    let m = wc.wait_for(WAIT, |v| v["type"] == "message" && v["message"]["body"] == "after the removal").await;
    assert_eq!(m["message"]["body"], "after the removal");
    wb.send(json!({"type": "ping", "id": "p"})).await;
    let v = wb.wait_for(WAIT, |v| v["type"] == "pong" || v["type"] == "message").await;
    assert_eq!(v["type"], "pong", "a removed member still receives the conversation: {v}");
}

/// Finding 8: behind the gateway a client's own X-Forwarded-For was passed on, so rotating it gave
/// every attempt a fresh address and the per-address login limit never bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_for_through_the_gateway_does_not_dodge_the_address_limit() {
    let c = Cluster::start(
        &require_redis().await,
        2,
        &[("CHAT_TRUSTED_PROXIES", "127.0.0.1".into()), ("CHAT_LOGIN_MAX_FAILURES_PER_IP", "2".into())],
    )
    .await;
    let gw = start_nginx(&c).await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let s = http
            .post(format!("http://{}/v1/auth/login", gw.addr))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"username": unique("nobody"), "password": "wrong password"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        statuses.push(s);
    }
    assert_eq!(statuses, [401, 401, 429, 429], "forged addresses were believed");
}

/// Finding 10: REST sends had no rate limit (300/s while the WebSocket allowed 20/s), and creating
/// conversations none at all. One budget per user now covers both ways of sending.
async fn one_send_budget_for_rest_and_websocket(t: &Target) {
    let api = t.api();
    let (alice, bob) = (api.register(&unique("a")).await, api.register(&unique("b")).await);
    let cid = api.direct(&alice, &bob).await;
    let path = format!("/v1/conversations/{cid}/messages");
    // The burst (5 here) over the WebSocket...
    let mut ws = Ws::connect(&t.ws(0), &alice.token, "").await;
    assert_eq!(ws.next(WAIT).await["type"], "hello");
    for i in 0..5 {
        let id = format!("w{i}");
        ws.send(json!({"type": "send", "id": id, "conversation_id": cid, "body": "ws"})).await;
        let (ack, _) = ws.ack_and_own_message(WAIT, &id).await;
        assert!(ack["message"]["seq"].as_i64().is_some());
    }
    // ...leaves nothing for REST: 429 with Retry-After, nothing stored.
    let (s, v) = api.call("POST", &path, Some(&alice.token), Some(json!({"body": "rest"}))).await;
    assert_eq!((s, v["code"].as_str()), (429, Some("rate_limited")), "{v}");
    let (_, h) = api.call("GET", &path, Some(&bob.token), None).await;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(5));
    // Conversation creation has its own budget (3 here).
    let mut created = Vec::new();
    for _ in 0..5 {
        let other = api.register(&unique("o")).await;
        let (s, _) = api
            .call(
                "POST",
                "/v1/conversations",
                Some(&alice.token),
                Some(json!({"kind": "direct", "members": [other.id]})),
            )
            .await;
        created.push(s);
    }
    assert_eq!(created, [201, 201, 201, 429, 429], "creations are limited");
}
both!(
    one_send_budget_for_rest_and_websocket,
    [
        ("CHAT_SEND_RATE_PER_SEC", "0.01"),
        ("CHAT_SEND_BURST", "5"),
        ("CHAT_CREATE_PER_MIN", "0.01"),
        ("CHAT_CREATE_BURST", "4")
    ]
);

/// Finding 20: login timing told imported-but-not-upgraded accounts (PBKDF2, slow) from unknown
/// names (a dummy Argon2id check, faster). Compared as medians of a few attempts each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_timing_does_not_tell_imported_accounts_apart() {
    use base64::Engine;
    let c = Cluster::start(&require_redis().await, 1, &[]).await;
    let api = c.api();
    let mut out = [0u8; 32];
    let n = std::num::NonZeroU32::new(600_000).unwrap();
    aws_lc_rs::pbkdf2::derive(aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256, n, b"saltsalt", b"old password", &mut out);
    let hash = format!("pbkdf2_sha256$600000$saltsalt${}", base64::engine::general_purpose::STANDARD.encode(out));
    let name = unique("imported");
    pg_scalar(format!(
        "WITH i AS (INSERT INTO {}.users (id, username, display_name, password_hash, created_at) \
         VALUES ('{}', '{name}', '{name}', '{hash}', 0) RETURNING 1) SELECT CAST(COUNT(*) AS BIGINT) FROM i",
        c.auth_schema,
        uuid::Uuid::now_v7()
    ))
    .await;
    let time_login = |user: String| {
        let api = api.clone();
        async move {
            let start = std::time::Instant::now();
            let (s, _) =
                api.call("POST", "/v1/auth/login", None, Some(json!({"username": user, "password": "wrong"}))).await;
            assert_eq!(s, 401);
            start.elapsed().as_secs_f64()
        }
    };
    time_login(name.clone()).await; // the first check of an imported hash teaches the padding
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (mut imported, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        imported.push(time_login(name.clone()).await);
        unknown.push(time_login(unique("nobody")).await);
    }
    let (i, u) = (median(imported), median(unknown));
    assert!(u >= 0.7 * i, "an unknown name answers in {:.0} ms, an imported account in {:.0} ms", u * 1e3, i * 1e3);
}

/// Finding 21: error frames named internal addresses ("upstream unreachable: … (http://…/internal/v1/…)").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_frames_do_not_name_internal_addresses() {
    let mut c = Cluster::start(&require_redis().await, 1, &[]).await;
    let api = c.api();
    let (alice, bob) = (api.register(&unique("a")).await, api.register(&unique("b")).await);
    let cid = api.direct(&alice, &bob).await;
    let mut ws = Ws::connect(&c.edge_ws(0), &alice.token, "").await;
    assert_eq!(ws.next(WAIT).await["type"], "hello");
    c.kill_store().await;
    ws.send(json!({"type": "send", "id": "s", "conversation_id": cid, "body": "while the store is down"})).await;
    let e = ws.wait_for(Duration::from_secs(30), |v| v["reply_to"] == "s").await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("unavailable")), "{e}");
    let text = e["message"].as_str().unwrap_or_default();
    for leak in ["http://", "127.0.0.1", "/internal/", &c.store_internal] {
        assert!(!text.contains(leak), "the error frame names {leak:?}: {text}");
    }
}

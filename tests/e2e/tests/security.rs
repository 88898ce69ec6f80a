//! Security: the permission matrix (every conversation route and frame × non-member, member, admin,
//! owner, removed member), impersonation attempts, tokens of deleted or revoked sessions, the body
//! limit, and the slow-header and idle-connection timeouts.

use chat_e2e::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    NonMember,
    Member,
    Admin,
    Owner,
    Removed,
}
use Role::*;
const ROLES: [Role; 5] = [NonMember, Member, Admin, Owner, Removed];

/// The people of one fresh group: the actor of each role, plus targets the actions work on.
struct Group {
    cid: Uuid,
    users: Vec<(Role, TestUser)>,
    /// A second plain member and a second admin, targets of role changes and removals.
    member2: TestUser,
    admin2: TestUser,
    /// Not in the group: the one added by "add member" actions.
    outsider: TestUser,
    /// A message by member2 (edit/delete targets).
    message: Uuid,
}

struct People {
    owner: TestUser,
    admin: TestUser,
    member: TestUser,
    removed: TestUser,
    non_member: TestUser,
    member2: TestUser,
    admin2: TestUser,
    outsider: TestUser,
}

impl People {
    async fn register(api: &Api) -> People {
        People {
            owner: api.register(&unique("own")).await,
            admin: api.register(&unique("adm")).await,
            member: api.register(&unique("mem")).await,
            removed: api.register(&unique("rem")).await,
            non_member: api.register(&unique("non")).await,
            member2: api.register(&unique("mem2")).await,
            admin2: api.register(&unique("adm2")).await,
            outsider: api.register(&unique("out")).await,
        }
    }

    /// A fresh group, so that every cell of the matrix starts from the same state.
    async fn group(&self, api: &Api) -> Group {
        let members = [&self.admin, &self.member, &self.removed, &self.member2, &self.admin2].map(|u| u.id);
        let (s, v) = api
            .call(
                "POST",
                "/v1/conversations",
                Some(&self.owner.token),
                Some(json!({"kind": "group", "title": "matrix", "members": members})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let cid = Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
        for a in [&self.admin, &self.admin2] {
            let (s, v) = api
                .call(
                    "PATCH",
                    &format!("/v1/conversations/{cid}/members/{}", a.id),
                    Some(&self.owner.token),
                    Some(json!({"role": "admin"})),
                )
                .await;
            assert_eq!(s, 200, "{v}");
        }
        let path = format!("/v1/conversations/{cid}/members/{}", self.removed.id);
        assert_eq!(api.call("DELETE", &path, Some(&self.owner.token), None).await.0, 204);
        let (s, v) = api
            .call(
                "POST",
                &format!("/v1/conversations/{cid}/messages"),
                Some(&self.member2.token),
                Some(json!({"body": "target"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let users = vec![
            (NonMember, self.non_member.clone()),
            (Member, self.member.clone()),
            (Admin, self.admin.clone()),
            (Owner, self.owner.clone()),
            (Removed, self.removed.clone()),
        ];
        Group {
            cid,
            users,
            member2: self.member2.clone(),
            admin2: self.admin2.clone(),
            outsider: self.outsider.clone(),
            message: Uuid::parse_str(v["id"].as_str().unwrap()).unwrap(),
        }
    }
}

/// One REST action: method, path and body built from the group.
type Action = fn(&Group, &TestUser) -> (&'static str, String, Option<Value>);

fn rest_matrix() -> Vec<(&'static str, Action, [u16; 5])> {
    // Expected status for [non-member, member, admin, owner, removed member].
    vec![
        ("get conversation", |g, _| ("GET", format!("/v1/conversations/{}", g.cid), None), [404, 200, 200, 200, 404]),
        (
            "rename",
            |g, _| ("PATCH", format!("/v1/conversations/{}", g.cid), Some(json!({"title": "renamed"}))),
            [404, 403, 200, 200, 404],
        ),
        (
            "add member",
            |g, _| {
                let body = json!({"user_id": g.outsider.id});
                ("POST", format!("/v1/conversations/{}/members", g.cid), Some(body))
            },
            [404, 403, 201, 201, 404],
        ),
        (
            "add admin",
            |g, _| {
                let body = json!({"user_id": g.outsider.id, "role": "admin"});
                ("POST", format!("/v1/conversations/{}/members", g.cid), Some(body))
            },
            [404, 403, 403, 201, 404],
        ),
        (
            "promote member",
            |g, _| {
                let path = format!("/v1/conversations/{}/members/{}", g.cid, g.member2.id);
                ("PATCH", path, Some(json!({"role": "admin"})))
            },
            [404, 403, 403, 200, 404],
        ),
        (
            "remove member",
            |g, _| ("DELETE", format!("/v1/conversations/{}/members/{}", g.cid, g.member2.id), None),
            [404, 403, 204, 204, 404],
        ),
        (
            "remove admin",
            |g, _| ("DELETE", format!("/v1/conversations/{}/members/{}", g.cid, g.admin2.id), None),
            [404, 403, 403, 204, 404],
        ),
        (
            "leave",
            |g, me| ("DELETE", format!("/v1/conversations/{}/members/{}", g.cid, me.id), None),
            [404, 204, 204, 204, 404],
        ),
        (
            "send",
            |g, _| ("POST", format!("/v1/conversations/{}/messages", g.cid), Some(json!({"body": "hi"}))),
            [404, 201, 201, 201, 404],
        ),
        ("history", |g, _| ("GET", format!("/v1/conversations/{}/messages", g.cid), None), [404, 200, 200, 200, 404]),
        (
            "edit another's message",
            |g, _| {
                let path = format!("/v1/conversations/{}/messages/{}", g.cid, g.message);
                ("PATCH", path, Some(json!({"body": "forged"})))
            },
            [404, 403, 403, 403, 404],
        ),
        (
            "delete another's message",
            |g, _| ("DELETE", format!("/v1/conversations/{}/messages/{}", g.cid, g.message), None),
            [404, 403, 204, 204, 404],
        ),
        (
            "mark read",
            |g, _| ("POST", format!("/v1/conversations/{}/read", g.cid), Some(json!({"seq": 1}))),
            [404, 204, 204, 204, 404],
        ),
    ]
}

async fn permission_matrix(t: &Target) {
    let api = t.api();
    let people = People::register(&api).await;
    let mut failures = Vec::new();
    let mut cells = 0;
    for (name, action, expected) in rest_matrix() {
        for (i, role) in ROLES.iter().enumerate() {
            let g = people.group(&api).await;
            let me = &g.users.iter().find(|(r, _)| r == role).unwrap().1;
            let (method, path, body) = action(&g, me);
            let (status, v) = api.call(method, &path, Some(&me.token), body).await;
            cells += 1;
            if status != expected[i] {
                failures.push(format!("{name} as {role:?}: {status} (want {}) {v}", expected[i]));
            }
            if status >= 400 {
                assert_eq!(v["status"], status, "{name} as {role:?}: problem details body: {v}");
            }
        }
    }

    // Frames: a non-member and a removed member get `not_found` and nothing is stored or delivered.
    let g = people.group(&api).await;
    let frames: Vec<(&str, Value)> = vec![
        ("send", json!({"type": "send", "id": "f", "conversation_id": g.cid, "body": "x"})),
        ("typing", json!({"type": "typing", "id": "f", "conversation_id": g.cid, "state": "start"})),
        ("read", json!({"type": "read", "id": "f", "conversation_id": g.cid, "seq": 1})),
    ];
    for (name, frame) in &frames {
        for (role, user) in &g.users {
            let mut ws = Ws::connect(&t.ws(0), &user.token, "").await;
            ws.next(WAIT).await; // hello
            ws.send(frame.clone()).await;
            let v = ws.wait_for(WAIT, |v| v["reply_to"] == "f").await;
            cells += 1;
            let allowed = matches!(role, Member | Admin | Owner);
            let ok = if allowed { v["type"] == "ack" } else { v["type"] == "error" && v["code"] == "not_found" };
            if !ok {
                failures.push(format!("frame {name} as {role:?}: {v}"));
            }
        }
    }
    for (role, user) in &g.users {
        let mut ws = Ws::connect(&t.ws(0), &user.token, "").await;
        ws.next(WAIT).await;
        ws.send(json!({"type": "sync", "id": "f", "positions": {g.cid.to_string(): 0}})).await;
        let v = ws.wait_for(WAIT, |v| v["reply_to"] == "f").await;
        cells += 1;
        let listed = v["not_found"].as_array().is_some_and(|a| a.contains(&json!(g.cid)));
        if listed == matches!(role, Member | Admin | Owner) {
            failures.push(format!("frame sync as {role:?}: {v}"));
        }
    }
    // Nothing of the refused sends was stored: the member's, admin's and owner's three sends only.
    let (s, v) =
        api.call("GET", &format!("/v1/conversations/{}/messages", g.cid), Some(&people.owner.token), None).await;
    assert_eq!(s, 200);
    let bodies: Vec<&str> = v["messages"].as_array().unwrap().iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(bodies, vec!["target", "x", "x", "x"], "only members' sends are stored");
    println!("permission matrix: {cells} cells checked, {} wrong", failures.len());
    assert!(failures.is_empty(), "permission matrix:\n{}", failures.join("\n"));
}
// One owner creates a fresh group for each of the 85 cells: above the default creation budget.
// Every cell creates a group and sends a message in it: more than the default budgets allow.
both!(permission_matrix, [("CHAT_CREATE_BURST", "1000"), ("CHAT_SEND_BURST", "1000")]);

/// Identity comes from the token only: ids in bodies, queries or frames never change who acts.
async fn impersonation(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    // A body naming another sender is ignored: the message is a's.
    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/conversations/{cid}/messages"),
            Some(&a.token),
            Some(json!({"body": "hi", "sender_id": b.id, "user_id": b.id})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["sender_id"], json!(a.id), "sender from the token");
    let mid = v["id"].as_str().unwrap().to_string();
    // b cannot edit a's message by claiming to be a.
    let (s, _) = api
        .call(
            "PATCH",
            &format!("/v1/conversations/{cid}/messages/{mid}"),
            Some(&b.token),
            Some(json!({"body": "forged", "sender_id": a.id})),
        )
        .await;
    assert_eq!(s, 403);
    // A frame naming another user is sent as the connection's user.
    let mut ws = Ws::connect(&t.ws(0), &b.token, "").await;
    ws.next(WAIT).await;
    ws.send(
        json!({"type": "send", "id": "x", "conversation_id": cid, "body": "as b", "user_id": a.id, "sender_id": a.id}),
    )
    .await;
    let v = ws.wait_for(WAIT, |v| v["type"] == "ack").await;
    assert_eq!(v["message"]["sender_id"], json!(b.id));
    // A token signed by another key, claiming a's id, is refused everywhere.
    let forged = forge_token(a.id);
    let (s, v) = api.call("GET", "/v1/users/me", Some(&forged), None).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")));
    let (s, _) = api.call("GET", "/v1/conversations", Some(&forged), None).await;
    assert_eq!(s, 401);
    let req = format!("{}/v1/ws?access_token={forged}", t.ws(0));
    let err = tokio_tungstenite::connect_async(req).await.expect_err("refused");
    assert!(err.to_string().contains("401"), "WebSocket upgrade refused with 401: {err}");
    // `alg: none` with the real key id is refused too.
    let none = unsigned_token(&a.token);
    assert_eq!(api.call("GET", "/v1/users/me", Some(&none), None).await.0, 401);
}
both!(impersonation);

fn forge_token(sub: Uuid) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("forged".into());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"sub": sub, "sid": Uuid::new_v4(), "iat": now, "exp": now + 600, "jti": Uuid::new_v4()});
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(pkcs8.as_ref())).expect("sign")
}

/// The payload of a real token under an `alg: none` header and no signature.
fn unsigned_token(real: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = real.split('.').nth(1).unwrap();
    let kid = {
        let h: Value = serde_json::from_slice(&b64.decode(real.split('.').next().unwrap()).unwrap()).unwrap();
        h["kid"].clone()
    };
    let header = b64.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    format!("{header}.{payload}.")
}

/// Tokens of a revoked session and of a rotated-out refresh token stop working everywhere.
async fn revoked_sessions(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let mut ws = Ws::connect(&t.ws(0), &a.token, "").await;
    ws.next(WAIT).await;
    let (s, _) = api.call("POST", "/v1/auth/logout", None, Some(json!({"refresh_token": a.refresh}))).await;
    assert_eq!(s, 204);
    assert_eq!(ws.closed(Duration::from_secs(10)).await, Some(4001), "the session's socket closes with 4001");
    let mut refused = false;
    for _ in 0..50 {
        let me = api.call("GET", "/v1/users/me", Some(&a.token), None).await.0;
        let conv = api.call("GET", &format!("/v1/conversations/{cid}"), Some(&a.token), None).await.0;
        let pres = api.call("GET", &format!("/v1/presence?user_ids={}", b.id), Some(&a.token), None).await.0;
        if (me, conv, pres) == (401, 401, 401) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "every service refuses the revoked session's access token within 5 s");
    let req = format!("{}/v1/ws?access_token={}", t.ws(0), a.token);
    assert!(tokio_tungstenite::connect_async(req).await.is_err(), "no new socket with a revoked token");
    let (s, _) = api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": a.refresh}))).await;
    assert_eq!(s, 401, "the revoked refresh token is dead");
}
both!(revoked_sessions);

/// The body limit on every service's public port: 1 MiB + 1 → 413 problem details.
async fn body_limit(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let big = vec![b'x'; 1024 * 1024 + 1];
    for path in ["/v1/auth/login", "/v1/conversations"] {
        let (s, v) = api.raw("POST", path, Some(&a.token), big.clone()).await;
        assert_eq!((s, v["code"].as_str()), (413, Some("payload_too_large")), "{path}: {v}");
    }
}
both!(body_limit);

/// A client that trickles its headers, or opens a connection and says nothing, is cut off after the
/// header timeout instead of holding a connection for ever (slowloris).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_cut_off() {
    let aio = AllInOne::start(&[("HTTP_HEADER_TIMEOUT_MS", "1000".to_string())]).await;
    let started = std::time::Instant::now();
    let mut idle = tokio::net::TcpStream::connect(&aio.addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(&aio.addr).await.unwrap();
    slow.write_all(b"GET /v1/users/me HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let slow_writer = tokio::spawn(async move {
        // One header byte every 200 ms: never finishes within the timeout.
        for _ in 0..40 {
            if slow.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.expect("idle connection closed");
    assert_eq!(n.unwrap_or(0), 0, "closed without a response");
    assert!(slow_writer.await.unwrap(), "the slow client is disconnected");
    assert!(started.elapsed() < Duration::from_secs(5), "cut off near the 1 s timeout: {:?}", started.elapsed());

    // A kept-alive connection that goes quiet after a request is closed too.
    let mut kept = tokio::net::TcpStream::connect(&aio.addr).await.unwrap();
    kept.write_all(b"GET /v1/users/me HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 401"), "{}", String::from_utf8_lossy(&buf[..n]));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection is closed after the timeout");
    // WebSockets are not affected: they live on past the header timeout (heartbeats keep them).
    let u = aio.api().register(&unique("ws")).await;
    let mut ws = Ws::connect(&aio.ws(), &u.token, "").await;
    ws.next(WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(ws.wait_for(WAIT, |v| v["type"] == "pong").await["reply_to"], "p");
}

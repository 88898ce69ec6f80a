//! The message-store contract over HTTP, against both targets.

use chat_e2e::*;
use serde_json::{Value, json};
use std::collections::HashSet;

async fn post(api: &Api, path: &str, who: &TestUser, body: Value) -> (u16, Value) {
    api.call("POST", path, Some(&who.token), Some(body)).await
}

async fn get(api: &Api, path: &str, who: &TestUser) -> (u16, Value) {
    api.call("GET", path, Some(&who.token), None).await
}

async fn direct_conversations(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let (s, c) =
        post(&api, "/v1/conversations", &a, json!({"kind": "direct", "members": [b.id], "title": "ignored"})).await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["title"], Value::Null);
    assert_eq!(c["last_seq"], 0);
    assert_eq!(c["members"].as_array().unwrap().len(), 2);
    assert!(c["members"].as_array().unwrap().iter().all(|m| m["role"] == "member"));
    let (s, again) = post(&api, "/v1/conversations", &b, json!({"kind": "direct", "members": [a.id]})).await;
    assert_eq!((s, &again["id"]), (200, &c["id"]), "the same direct conversation, never a second one");
    let (s, _) = post(&api, "/v1/conversations", &a, json!({"kind": "direct", "members": [a.id]})).await;
    assert_eq!(s, 422, "with oneself");
    let (s, _) =
        post(&api, "/v1/conversations", &a, json!({"kind": "direct", "members": [uuid::Uuid::now_v7()]})).await;
    assert_eq!(s, 422, "with an unknown user");
    let (s, _) = post(&api, "/v1/conversations", &a, json!({"kind": "triad", "members": [b.id]})).await;
    assert_eq!(s, 422);
    let (s, _) = post(&api, "/v1/conversations", &a, json!({"kind": "direct", "members": ["not-a-uuid"]})).await;
    assert_eq!(s, 422);
    let cid = c["id"].as_str().unwrap();
    // Direct conversations have fixed members and no title.
    let (s, _) =
        api.call("PATCH", &format!("/v1/conversations/{cid}"), Some(&a.token), Some(json!({"title": "x"}))).await;
    assert_eq!(s, 422);
    let (s, _) = post(&api, &format!("/v1/conversations/{cid}/members"), &a, json!({"user_id": b.id})).await;
    assert_eq!(s, 422);
    let (s, _) = api.call("DELETE", &format!("/v1/conversations/{cid}/members/{}", a.id), Some(&a.token), None).await;
    assert_eq!(s, 422, "no leaving a direct conversation");
    // Outsiders see 404, exactly like a conversation that does not exist.
    let eve = api.register(&unique("eve")).await;
    let (s1, v1) = get(&api, &format!("/v1/conversations/{cid}"), &eve).await;
    let (s2, v2) = get(&api, &format!("/v1/conversations/{}", uuid::Uuid::now_v7()), &eve).await;
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(v1, v2);
    let (s, _) = get(&api, "/v1/conversations/nope", &eve).await;
    assert_eq!(s, 404);
    let (s, _) = post(&api, &format!("/v1/conversations/{cid}/messages"), &eve, json!({"body": "hi"})).await;
    assert_eq!(s, 404);
    let (s, _) = get(&api, &format!("/v1/conversations/{cid}/messages"), &eve).await;
    assert_eq!(s, 404);
}
both!(direct_conversations);

async fn messages_seq_idempotency_and_validation(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let path = format!("/v1/conversations/{cid}/messages");
    let (s, m1) =
        post(&api, &path, &a, json!({"body": "  <script>'; DROP TABLE x; --  ", "client_msg_id": "k1"})).await;
    assert_eq!(s, 201, "{m1}");
    assert_eq!(m1["seq"], 1);
    assert_eq!(m1["body"], "  <script>'; DROP TABLE x; --  ");
    let (s, again) = post(&api, &path, &a, json!({"body": "different", "client_msg_id": "k1"})).await;
    assert_eq!((s, &again["id"]), (200, &m1["id"]), "idempotent retry");
    let (s, other) = post(&api, &path, &b, json!({"body": "b's own k1", "client_msg_id": "k1"})).await;
    assert_eq!((s, other["seq"].as_i64()), (201, Some(2)), "client_msg_id is per sender");
    for bad in [
        json!({"body": ""}),
        json!({"body": "x".repeat(4001)}),
        json!({"body": "a\u{0}b"}),
        json!({"body": 5}),
        json!({"body": "ok", "client_msg_id": ""}),
        json!({"body": "ok", "client_msg_id": "k".repeat(65)}),
    ] {
        let (s, v) = post(&api, &path, &a, bad.clone()).await;
        assert_eq!((s, v["code"].as_str()), (422, Some("validation_failed")), "{bad}");
    }
    let (s, m) = post(&api, &path, &a, json!({"body": "é".repeat(4000)})).await;
    assert_eq!(s, 201, "4000 characters (not bytes) are allowed");
    assert_eq!(m["seq"], 3);

    // 50 concurrent senders (with racing duplicate retries) produce exactly the next 50 seqs.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (api, who, path) = (api.clone(), if i % 2 == 0 { a.clone() } else { b.clone() }, path.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"body": format!("m{i}"), "client_msg_id": format!("c{i}")});
            let (r1, r2) = tokio::join!(post(&api, &path, &who, body.clone()), post(&api, &path, &who, body));
            assert!(r1.0 == 201 || r1.0 == 200, "{r1:?}");
            assert_eq!(r1.1["id"], r2.1["id"], "racing retries return one message");
            r1.1["seq"].as_i64().unwrap()
        }));
    }
    let mut seqs = HashSet::new();
    for t in tasks {
        seqs.insert(t.await.unwrap());
    }
    assert_eq!(seqs, (4..=53).collect::<HashSet<i64>>());
    let (_, c) = get(&api, &format!("/v1/conversations/{cid}"), &a).await;
    assert_eq!(c["last_seq"], 53, "no gaps, no reuse");
}
// A burst of 100 concurrent sends (50 with racing retries) is a concurrency test, not a rate test.
both!(messages_seq_idempotency_and_validation, [("CHAT_SEND_BURST", "200")]);

async fn history_pages(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let path = format!("/v1/conversations/{cid}/messages");
    for i in 1..=10 {
        post(&api, &path, &a, json!({"body": format!("n{i}")})).await;
    }
    let seqs =
        |v: &Value| v["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>();
    let (_, v) = get(&api, &format!("{path}?limit=3"), &b).await;
    assert_eq!((seqs(&v), v["has_more"].as_bool()), (vec![8, 9, 10], Some(true)));
    let (_, v) = get(&api, &format!("{path}?after_seq=2&limit=3"), &b).await;
    assert_eq!((seqs(&v), v["has_more"].as_bool()), (vec![3, 4, 5], Some(true)));
    let (_, v) = get(&api, &format!("{path}?after_seq=7&limit=3"), &b).await;
    assert_eq!((seqs(&v), v["has_more"].as_bool()), (vec![8, 9, 10], Some(false)));
    let (_, v) = get(&api, &format!("{path}?before_seq=4"), &b).await;
    assert_eq!((seqs(&v), v["has_more"].as_bool()), (vec![1, 2, 3], Some(false)));
    let (_, v) = get(&api, &format!("{path}?before_seq=9&limit=2"), &b).await;
    assert_eq!((seqs(&v), v["has_more"].as_bool()), (vec![7, 8], Some(true)));
    let (_, v) = get(&api, &format!("{path}?after_seq=10"), &b).await;
    assert_eq!((seqs(&v), v["has_more"].as_bool()), (vec![], Some(false)));
    for bad in ["limit=0", "limit=201", "limit=x", "after_seq=1&before_seq=5", "after_seq=x"] {
        let (s, _) = get(&api, &format!("{path}?{bad}"), &b).await;
        assert_eq!(s, 422, "{bad}");
    }
}
both!(history_pages);

async fn read_state_and_unread(t: &Target) {
    let api = t.api();
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = api.direct(&a, &b).await;
    let path = format!("/v1/conversations/{cid}/messages");
    let mut ids = Vec::new();
    for i in 1..=4 {
        ids.push(post(&api, &path, &a, json!({"body": format!("n{i}")})).await.1["id"].as_str().unwrap().to_string());
    }
    let conv = |who: &TestUser| {
        let (api, who) = (api.clone(), who.clone());
        async move { get(&api, &format!("/v1/conversations/{cid}"), &who).await.1 }
    };
    let c = conv(&a).await;
    assert_eq!((c["unread_count"].as_i64(), c["last_read_seq"].as_i64()), (Some(0), Some(4)), "sending reads");
    let c = conv(&b).await;
    assert_eq!((c["unread_count"].as_i64(), c["last_read_seq"].as_i64()), (Some(4), Some(0)));
    assert_eq!(c["last_message"]["seq"], 4);
    api.call("DELETE", &format!("{path}/{}", ids[3]), Some(&a.token), None).await;
    assert_eq!(conv(&b).await["unread_count"], 3, "deleted messages are not unread");
    let read = format!("/v1/conversations/{cid}/read");
    assert_eq!(post(&api, &read, &b, json!({"seq": 2})).await.0, 204);
    assert_eq!(conv(&b).await["unread_count"], 1);
    assert_eq!(post(&api, &read, &b, json!({"seq": 1})).await.0, 204);
    assert_eq!(conv(&b).await["last_read_seq"], 2, "never moves backwards");
    assert_eq!(post(&api, &read, &b, json!({"seq": 999})).await.0, 204);
    assert_eq!(conv(&b).await["last_read_seq"], 4, "clamped to last_seq");
    assert_eq!(post(&api, &read, &b, json!({"seq": "x"})).await.0, 422);
}
both!(read_state_and_unread);

async fn edits_and_tombstones(t: &Target) {
    let api = t.api();
    let owner = api.register(&unique("o")).await;
    let member = api.register(&unique("m")).await;
    let (_, g) =
        post(&api, "/v1/conversations", &owner, json!({"kind": "group", "title": "g", "members": [member.id]})).await;
    let cid = g["id"].as_str().unwrap();
    let path = format!("/v1/conversations/{cid}/messages");
    let (_, m) = post(&api, &path, &member, json!({"body": "original"})).await;
    let mpath = format!("{path}/{}", m["id"].as_str().unwrap());
    let (s, _) = api.call("PATCH", &mpath, Some(&owner.token), Some(json!({"body": "hijack"}))).await;
    assert_eq!(s, 403, "only the sender edits");
    let (s, e) = api.call("PATCH", &mpath, Some(&member.token), Some(json!({"body": "edited"}))).await;
    assert_eq!((s, e["body"].as_str()), (200, Some("edited")));
    assert!(e["edited_at"].is_string());
    assert_eq!(api.call("PATCH", &mpath, Some(&member.token), Some(json!({"body": ""}))).await.0, 422);
    // A group owner may delete others' messages; the tombstone keeps id and seq.
    assert_eq!(api.call("DELETE", &mpath, Some(&owner.token), None).await.0, 204);
    assert_eq!(api.call("DELETE", &mpath, Some(&owner.token), None).await.0, 204, "deleting again");
    let (s, v) = api.call("PATCH", &mpath, Some(&member.token), Some(json!({"body": "revive"}))).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("conflict")));
    let (_, h) = get(&api, &path, &owner).await;
    let t = &h["messages"][0];
    assert_eq!((t["id"].clone(), t["seq"].as_i64(), t["body"].clone()), (m["id"].clone(), Some(1), Value::Null));
    assert!(t["deleted_at"].is_string());
    // A plain member may not delete someone else's message.
    let (_, m2) = post(&api, &path, &owner, json!({"body": "owner's"})).await;
    let m2path = format!("{path}/{}", m2["id"].as_str().unwrap());
    assert_eq!(api.call("DELETE", &m2path, Some(&member.token), None).await.0, 403);
    assert_eq!(api.call("DELETE", &format!("{path}/{}", uuid::Uuid::now_v7()), Some(&owner.token), None).await.0, 404);
}
both!(edits_and_tombstones);

async fn group_roles_and_membership(t: &Target) {
    let api = t.api();
    let owner = api.register(&unique("own")).await;
    let admin = api.register(&unique("adm")).await;
    let m1 = api.register(&unique("m1")).await;
    let m2 = api.register(&unique("m2")).await;
    let out = api.register(&unique("out")).await;
    let (s, v) = post(&api, "/v1/conversations", &owner, json!({"kind": "group", "members": [admin.id]})).await;
    assert_eq!(s, 422, "a group needs a title: {v}");
    let (s, _) = post(&api, "/v1/conversations", &owner, json!({"kind": "group", "title": "", "members": []})).await;
    assert_eq!(s, 422);
    let (s, _) = post(
        &api,
        "/v1/conversations",
        &owner,
        json!({"kind": "group", "title": "t", "members": [uuid::Uuid::now_v7()]}),
    )
    .await;
    assert_eq!(s, 422, "unknown member");
    let (s, g) = post(
        &api,
        "/v1/conversations",
        &owner,
        json!({"kind": "group", "title": "team", "members": [owner.id, admin.id, m1.id]}),
    )
    .await;
    assert_eq!(s, 201);
    let role_of = |g: &Value, u: &TestUser| {
        g["members"].as_array().unwrap().iter().find(|m| m["user_id"] == u.id.to_string()).map(|m| m["role"].clone())
    };
    assert_eq!(role_of(&g, &owner), Some(json!("owner")));
    assert_eq!(g["members"].as_array().unwrap().len(), 3, "the creator's own id is ignored");
    let cid = g["id"].as_str().unwrap().to_string();
    let members = format!("/v1/conversations/{cid}/members");
    let conv = format!("/v1/conversations/{cid}");

    // Role changes: owner only; the owner cannot change their own role.
    let (s, _) =
        api.call("PATCH", &format!("{members}/{}", admin.id), Some(&m1.token), Some(json!({"role": "admin"}))).await;
    assert_eq!(s, 403);
    let (s, g) =
        api.call("PATCH", &format!("{members}/{}", admin.id), Some(&owner.token), Some(json!({"role": "admin"}))).await;
    assert_eq!((s, role_of(&g, &admin)), (200, Some(json!("admin"))));
    let (s, _) = api
        .call("PATCH", &format!("{members}/{}", owner.id), Some(&owner.token), Some(json!({"role": "member"})))
        .await;
    assert_eq!(s, 422);
    let (s, _) =
        api.call("PATCH", &format!("{members}/{}", m1.id), Some(&owner.token), Some(json!({"role": "owner"}))).await;
    assert_eq!(s, 422);

    // Adding: members cannot (403 before anything else); admins add members, only the owner adds admins.
    assert_eq!(post(&api, &members, &m1, json!({"user_id": m2.id})).await.0, 403);
    assert_eq!(post(&api, &members, &m1, json!({"user_id": uuid::Uuid::now_v7()})).await.0, 403);
    assert_eq!(post(&api, &members, &admin, json!({"user_id": m2.id, "role": "admin"})).await.0, 403);
    let (s, g) = post(&api, &members, &admin, json!({"user_id": m2.id})).await;
    assert_eq!((s, role_of(&g, &m2)), (201, Some(json!("member"))));
    assert_eq!(post(&api, &members, &admin, json!({"user_id": m2.id})).await.0, 409);
    assert_eq!(post(&api, &members, &admin, json!({"user_id": uuid::Uuid::now_v7()})).await.0, 422);
    assert_eq!(post(&api, &members, &admin, json!({"user_id": out.id, "role": "boss"})).await.0, 422);
    assert_eq!(post(&api, &members, &out, json!({"user_id": out.id})).await.0, 404, "outsiders see nothing");

    // Renaming: owner or admin.
    assert_eq!(api.call("PATCH", &conv, Some(&m1.token), Some(json!({"title": "x"}))).await.0, 403);
    let (s, v) = api.call("PATCH", &conv, Some(&admin.token), Some(json!({"title": "renamed"}))).await;
    assert_eq!((s, v["title"].as_str()), (200, Some("renamed")));
    assert_eq!(api.call("PATCH", &conv, Some(&admin.token), Some(json!({"title": "x".repeat(129)}))).await.0, 422);

    // Removing: admins remove plain members only; anyone may leave; a removed member loses access.
    assert_eq!(api.call("DELETE", &format!("{members}/{}", owner.id), Some(&admin.token), None).await.0, 403);
    assert_eq!(api.call("DELETE", &format!("{members}/{}", m1.id), Some(&m2.token), None).await.0, 403);
    assert_eq!(api.call("DELETE", &format!("{members}/{}", m2.id), Some(&admin.token), None).await.0, 204);
    assert_eq!(get(&api, &conv, &m2).await.0, 404, "removed member loses access at once");
    assert_eq!(api.call("DELETE", &format!("{members}/{}", m1.id), Some(&m1.token), None).await.0, 204, "leave");
    // The owner leaves: the longest-standing admin becomes owner.
    assert_eq!(api.call("DELETE", &format!("{members}/{}", owner.id), Some(&owner.token), None).await.0, 204);
    let (s, g) = get(&api, &conv, &admin).await;
    assert_eq!((s, role_of(&g, &admin)), (200, Some(json!("owner"))));
}
both!(group_roles_and_membership);

async fn conversation_list_order_and_cursor(t: &Target) {
    let api = t.api();
    let me = api.register(&unique("me")).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let other = api.register(&unique(&format!("p{i}"))).await;
        ids.push(api.direct(&me, &other).await.to_string());
    }
    // Activity: a message in the first conversation makes it the most recent.
    post(&api, &format!("/v1/conversations/{}/messages", ids[0]), &me, json!({"body": "bump"})).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/conversations?limit=2&cursor={c}"),
            None => "/v1/conversations?limit=2".to_string(),
        };
        let (s, v) = get(&api, &q, &me).await;
        assert_eq!(s, 200, "{v}");
        seen.extend(v["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected = vec![ids[0].clone(), ids[4].clone(), ids[3].clone(), ids[2].clone(), ids[1].clone()];
    assert_eq!(seen, expected);
    assert_eq!(get(&api, "/v1/conversations?cursor=!!!", &me).await.0, 422);
    assert_eq!(get(&api, "/v1/conversations?limit=101", &me).await.0, 422);
}
both!(conversation_list_order_and_cursor);

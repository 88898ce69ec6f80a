//! Sends between an edge and the message-store travel in batches under load: the store's batch
//! route answers each send as if it came alone, and a burst over one edge really goes in batches.

use chat_e2e::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_route_answers_each_send_as_if_alone() {
    let c = Cluster::start(&require_redis().await, 1, &[]).await;
    let api = c.api();
    let (a, b, stranger) =
        (api.register(&unique("a")).await, api.register(&unique("b")).await, api.register(&unique("c")).await);
    let cid = api.direct(&a, &b).await;
    let store = c.store_internal_api();
    let cred = Some(c.internal_token.as_str());
    let send = |sender: &TestUser, body: &str, cmid: Option<&str>| json!({"conversation_id": cid, "sender_id": sender.id, "body": body, "client_msg_id": cmid});
    let batch = json!({"sends": [
        send(&a, "first", Some("k1")),
        send(&stranger, "let me in", None),
        send(&b, "", None),
        send(&a, "first", Some("k1")),
        send(&b, "second", None),
    ]});
    let (s, v) = store.call("POST", "/internal/v1/messages/batch", cred, Some(batch)).await;
    assert_eq!(s, 200, "{v}");
    let r = v["results"].as_array().expect("results");
    assert_eq!(r.len(), 5);
    assert_eq!(r[0]["message"]["body"], "first");
    assert_eq!(r[1]["error"]["status"], 404, "a non-member's send: {}", r[1]);
    assert_eq!(r[1]["error"]["code"], "not_found");
    assert_eq!(r[2]["error"]["status"], 422, "an empty body: {}", r[2]);
    assert_eq!(r[2]["error"]["code"], "validation_failed");
    assert_eq!(r[3]["message"]["id"], r[0]["message"]["id"], "a repeated client_msg_id gets the stored message");
    assert_eq!(r[4]["message"]["body"], "second");
    let seqs = [r[0]["message"]["seq"].as_i64().unwrap(), r[4]["message"]["seq"].as_i64().unwrap()];
    assert_eq!(
        {
            let mut s = seqs;
            s.sort();
            s
        },
        [1, 2],
        "two messages stored, gapless"
    );

    // Too many sends in one request is the caller's mistake.
    let many: Vec<_> = (0..33).map(|i| send(&a, &format!("m{i}"), None)).collect();
    let (s, v) = store.call("POST", "/internal/v1/messages/batch", cred, Some(json!({ "sends": many }))).await;
    assert_eq!(s, 422, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_one_edge_goes_in_batches_and_every_send_is_acked() {
    let c = Cluster::start(&require_redis().await, 1, &[]).await;
    let api = c.api();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (a, b) = (api.register(&unique("a")).await, api.register(&unique("b")).await);
        let cid = api.direct(&a, &b).await;
        let mut ws = Ws::connect(&c.edge_ws(0), &a.token, "").await;
        assert_eq!(ws.next(WAIT).await["type"], "hello");
        clients.push((ws, cid));
    }
    // Every client writes 8 sends without waiting: 64 at once against 4 requests in flight.
    for (ws, cid) in &mut clients {
        for i in 0..8 {
            ws.send(json!({"type": "send", "id": format!("s{i}"), "conversation_id": cid, "body": format!("m{i}"), "client_msg_id": format!("c{i}")}))
                .await;
        }
    }
    for (ws, _) in &mut clients {
        let mut seqs = Vec::new();
        for i in 0..8 {
            let ack = ws.wait_for(WAIT, |v| v["type"] == "ack" || v["type"] == "error").await;
            assert_eq!(ack["type"], "ack", "send {i}: {ack}");
            assert_eq!(ack["reply_to"], format!("s{i}"), "acks in send order");
            seqs.push(ack["message"]["seq"].as_i64().unwrap());
        }
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>(), "each connection's sends stored in order");
    }
    let m = reqwest::get(format!("http://{}/metrics", c.edge_admins[0])).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (value("store_send_batch_size_sum"), value("store_send_batch_size_count"));
    assert_eq!(sum, 64.0, "every send went to the store once");
    assert!(count < sum, "{count} requests for {sum} sends: some went together");
}

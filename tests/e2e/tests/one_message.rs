//! The foundation's promise: one message travels end to end through real parts, in both run modes.

use chat_e2e::*;
use serde_json::json;
use sqlx::Row;

/// A sends on edge 1; B, connected to edge 2, receives it; it is stored in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_crosses_two_edges_over_redis_and_lands_in_postgres() {
    let redis = require_redis().await;
    message_crosses_two_edges(&redis).await
}

/// The same over NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_crosses_two_edges_over_nats_and_lands_in_postgres() {
    let nats = require_nats().await;
    message_crosses_two_edges(&nats).await
}

async fn message_crosses_two_edges(bus_url: &str) {
    let c = Cluster::start(bus_url, 2, &[]).await;
    let auth = c.auth_api();
    let a = auth.register(&unique("alice")).await;
    let b = auth.register(&unique("bob")).await;
    let cid = c.store_api().direct(&a, &b).await;

    let mut wa = Ws::connect(&c.edge_ws(0), &a.token, "").await;
    let mut wb = Ws::connect(&c.edge_ws(1), &b.token, "").await;
    let hello = wa.next(WAIT).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["user_id"], a.id.to_string());
    assert_eq!(wb.next(WAIT).await["type"], "hello");

    wa.send(
        json!({"type": "send", "id": "s1", "conversation_id": cid, "body": "hi from edge 1", "client_msg_id": "c1"}),
    )
    .await;
    // The sender's own connection gets the event too (before or after the ack).
    let (ack, own) = wa.ack_and_own_message(WAIT, "s1").await;
    assert_eq!(ack["message"]["seq"], 1);
    assert_eq!(own["message"]["id"], ack["message"]["id"]);
    let got = wb.wait_for(WAIT, |v| v["type"] == "message").await;
    assert_eq!(got["message"]["body"], "hi from edge 1");
    assert_eq!(got["message"]["sender_id"], a.id.to_string());
    assert_eq!(got["message"]["id"], ack["message"]["id"]);

    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1);
    sqlx::any::install_default_drivers();
    let pool = pool.connect(&pg_url()).await.expect("connect to PostgreSQL");
    let sql = format!("SELECT body, seq FROM \"{}\".messages WHERE conversation_id = $1", c.store_schema);
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(cid.to_string()).fetch_one(&pool).await.expect("stored row");
    assert_eq!(row.get::<String, _>("body"), "hi from edge 1");
    assert_eq!(row.get::<i64, _>("seq"), 1);
}

/// The same flow through the all-in-one binary on its defaults (SQLite, in-process bus).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_flows_through_the_all_in_one_binary() {
    let app = AllInOne::start(&[]).await;
    let api = app.api();
    let a = api.register(&unique("alice")).await;
    let b = api.register(&unique("bob")).await;
    let cid = api.direct(&a, &b).await;
    let mut wa = Ws::connect(&app.ws(), &a.token, "").await;
    let mut wb = Ws::connect(&app.ws(), &b.token, "").await;
    assert_eq!(wa.next(WAIT).await["type"], "hello");
    assert_eq!(wb.next(WAIT).await["type"], "hello");
    wa.send(json!({"type": "send", "id": "s1", "conversation_id": cid, "body": "hi"})).await;
    let ack = wa.wait_for(WAIT, |v| v["type"] == "ack").await;
    let got = wb.wait_for(WAIT, |v| v["type"] == "message").await;
    assert_eq!(got["message"]["id"], ack["message"]["id"]);
    let (s, hist) = api.call("GET", &format!("/v1/conversations/{cid}/messages"), Some(&b.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(hist["messages"][0]["body"], "hi");
    assert!(app.data_dir.0.join("messages.db").exists(), "SQLite file in CHAT_DATA_DIR");
}

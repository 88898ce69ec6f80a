//! The operator's path: managed datastores over TLS, OTLP over https, the command line of every
//! binary, configuration errors, and the effective configuration printed with secrets redacted.

use chat_e2e::*;
use serde_json::json;
use std::time::Duration;

/// A managed PostgreSQL that requires TLS: the services connect with `sslmode=verify-full` and the
/// operator's CA file (`sslrootcert`), and a message sent through them is stored and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_use_postgres_over_tls() {
    let ca = TestCa::new();
    let pg = PgServer::start_tls(&ca);
    let plain = format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", pg.port);
    sqlx::any::install_default_drivers();
    let refused = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&plain).await;
    assert!(refused.is_err(), "the server must refuse a connection without TLS");
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        ca.file("ca.pem")
    );
    let redis = require_redis().await;
    let c = Cluster::start_on(&url, &redis, 1, &[]).await;
    let api = c.api();
    let (alice, bob) = (api.register(&unique("a")).await, api.register(&unique("b")).await);
    let cid = api.direct(&alice, &bob).await;
    let (s, m) = api
        .call("POST", &format!("/v1/conversations/{cid}/messages"), Some(&alice.token), Some(json!({"body": "tls"})))
        .await;
    assert_eq!(s, 201, "{m}");
    let (s, h) = api.call("GET", &format!("/v1/conversations/{cid}/messages"), Some(&bob.token), None).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["messages"][0]["body"], "tls", "stored and read back over TLS: {h}");
    // Every session in pg_stat_ssl from the services is encrypted.
    let check = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.expect("tls connection");
    use sqlx::Row;
    let row = sqlx::query("SELECT count(*) FILTER (WHERE NOT ssl), count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE client_addr IS NOT NULL")
        .fetch_one(&check)
        .await
        .unwrap();
    let (clear, total): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(clear, 0, "no client connection is in clear text");
    assert!(total >= 2, "the services hold connections ({total})");
}

/// A verify-full connection to a server whose certificate the service does not trust fails with a
/// clear error naming TLS, and never prints the password of the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_postgres_certificate_stops_the_service_without_leaking_the_password() {
    let ca = TestCa::new();
    let pg = PgServer::start_tls(&ca);
    let url = format!("postgres://postgres:hunter2secret@127.0.0.1:{}/postgres?sslmode=verify-full", pg.port);
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(binary("chat-auth"))
            .env("DATABASE_URL", &url)
            .env("AUTH_KEY_ENCRYPTION_KEY", KEY_ENCRYPTION_KEY)
            .env("CHAT_INTERNAL_TOKEN", internal_token())
            .env("AUTH_LISTEN", free_addr())
            .env("AUTH_ADMIN_LISTEN", free_addr())
            .env("AUTH_INTERNAL_LISTEN", free_addr())
            .output(),
    )
    .await
    .expect("chat-auth gives up in time")
    .unwrap();
    assert!(!out.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("hunter2secret"), "password printed: {all}");
    assert!(all.to_lowercase().contains("certificate") || all.to_lowercase().contains("tls"), "{all}");
}

/// OTLP over https: spans reach a collector behind TLS whose certificate comes from a private CA
/// (trusted through `SSL_CERT_FILE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_an_https_collector() {
    let ca = TestCa::new();
    let (plain, bodies) = otlp_collector().await;
    let tls = TlsTerminator::start(&ca, &plain).await;
    let chat = AllInOne::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://localhost:{}", tls.addr.rsplit(':').next().unwrap())),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ("SSL_CERT_FILE", ca.file("ca.pem")),
    ])
    .await;
    let api = chat.api();
    api.register(&unique("otlp")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = bodies.lock().unwrap().iter().filter(|b| b["resourceSpans"].is_array()).count();
        if n > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no spans arrived at the https collector");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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

const BINARIES: [&str; 5] = ["chat", "chat-auth", "chat-message-store", "chat-presence", "chat-ws-edge"];

/// Runs a binary with `args` in an empty directory (nothing else in its environment but `env`);
/// returns (exit code, stdout, stderr, whether it left files behind).
async fn run_in_empty_dir(name: &str, args: &[&str], env: &[(&str, String)]) -> (i32, String, String, bool) {
    let dir = tempdir::Dir::new("cli");
    let mut cmd = tokio::process::Command::new(binary(name));
    cmd.args(args).current_dir(&dir.0).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} did not exit: it started a server"))
        .unwrap();
    let left = std::fs::read_dir(&dir.0).unwrap().next().is_some();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        left,
    )
}

/// `--help`, `--version`, typos and unknown flags: each answered without starting anything
/// (no port, no migration, no `./data`), mistakes with one line and exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_has_a_command_line_that_never_starts_a_server_by_mistake() {
    for name in BINARIES {
        let (code, out, _, left) = run_in_empty_dir(name, &["--version"], &[]).await;
        assert_eq!(code, 0, "{name} --version");
        assert!(out.starts_with(&format!("{name} {}", env!("CARGO_PKG_VERSION"))), "{name} --version: {out}");
        assert!(!left, "{name} --version wrote files");

        let (code, help, _, left) = run_in_empty_dir(name, &["--help"], &[]).await;
        assert_eq!(code, 0, "{name} --help");
        assert!(!left, "{name} --help wrote files");
        for (flag, env) in [("--bus-url", "BUS_URL"), ("--log-format", "LOG_FORMAT"), ("--rust-log", "RUST_LOG")] {
            assert!(help.contains(flag) && help.contains(&format!("env: {env}")), "{name} --help lacks {flag}: {help}");
        }
        assert!(help.contains("[default: json]"), "{name} --help shows defaults");

        for bad in [&["migrat"][..], &["--bogus"], &["serve", "extra"], &["--log-format"]] {
            let (code, _, err, left) = run_in_empty_dir(name, bad, &[]).await;
            assert_eq!(code, 2, "{name} {bad:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{name} {bad:?}: one line: {err}");
            assert!(!left, "{name} {bad:?} wrote files");
        }
    }
    let (_, help, _, _) = run_in_empty_dir("chat-auth", &["--help"], &[]).await;
    for sub in ["migrate", "rotate-key", "openapi", "admin", "users", "serve", "config", "health-check"] {
        assert!(help.contains(&format!("\n  {sub} ")), "chat-auth {sub}: {help}");
    }
    let (_, help, _, _) = run_in_empty_dir("chat", &["--help"], &[]).await;
    for sub in
        ["migrate", "rotate-key", "openapi", "import-django", "admin", "users", "serve", "config", "health-check"]
    {
        assert!(help.contains(&format!("\n  {sub} ")), "chat {sub}: {help}");
    }
    // Every setting is a flag; a flag wins over its environment variable.
    let (code, out, err, _) = run_in_empty_dir(
        "chat-ws-edge",
        &["config", "--chat-outbound-queue", "77"],
        &[("CHAT_OUTBOUND_QUEUE", "5".to_string())],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CHAT_OUTBOUND_QUEUE=77  # flag"), "{out}");
}

/// Configuration mistakes name the variable and the reason and stop the process with code 2:
/// nothing falls back silently (an unknown database scheme is not SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_mistakes_stop_the_process_naming_the_variable() {
    let cases: [(&str, &str, String); 7] = [
        ("chat", "DATABASE_URL", "mysql://root:pw@db/chat".to_string()),
        ("chat", "HTTP_BODY_TIMEOUT_MS", "ten seconds".to_string()),
        ("chat-message-store", "HTTP_BODY_TIMEOUT_MS", "-1".to_string()),
        ("chat", "PRESENCE_STORE_URL", "memcached://cache".to_string()),
        ("chat-presence", "PRESENCE_STORE_URL", "memcached://cache".to_string()),
        ("chat-ws-edge", "CHAT_HEARTBEAT_INTERVAL_MS", "soon".to_string()),
        ("chat-auth", "CHAT_TRUSTED_PROXIES", "10.0.0.0/99".to_string()),
    ];
    for (name, var, value) in cases {
        let (code, _, err, left) = run_in_empty_dir(name, &[], &[(var, value.clone())]).await;
        assert_eq!(code, 2, "{name} with {var}={value}: {err}");
        assert!(err.contains(var), "{name}: the error names {var}: {err}");
        assert!(!err.contains(":pw@"), "{name}: no password in the error: {err}");
        assert!(!left, "{name} with a bad {var} wrote files");
    }
}

/// `config` prints the effective configuration: URLs without their passwords, secrets never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let env = [
        ("DATABASE_URL", "postgres://chat:db-pass-123@db:5432/chat?sslmode=require".to_string()),
        ("BUS_URL", "rediss://chat:bus-pass-456@redis:6380".to_string()),
        ("BUS_SIGNING_KEY", BUS_SIGNING_KEY.to_string()),
        ("CHAT_INTERNAL_TOKEN", "internal-token-that-is-long-enough-0123456789".to_string()),
        ("AUTH_KEY_ENCRYPTION_KEY", KEY_ENCRYPTION_KEY.to_string()),
    ];
    let (code, out, err, _) = run_in_empty_dir("chat-auth", &["config", "--auth-listen", "0.0.0.0:8081"], &env).await;
    assert_eq!(code, 0, "{err}");
    for secret in ["db-pass-123", "bus-pass-456", BUS_SIGNING_KEY, "internal-token-that", KEY_ENCRYPTION_KEY] {
        assert!(!out.contains(secret), "config printed a secret: {out}");
    }
    assert!(out.contains("DATABASE_URL=postgres://chat:***@db:5432/chat?sslmode=require  # env"), "{out}");
    assert!(out.contains("AUTH_LISTEN=0.0.0.0:8081  # flag"), "{out}");
    assert!(out.contains("BUS_SIGNING_KEY=<set, redacted>  # env"), "{out}");
    assert!(out.contains("AUTH_HASH_QUEUE=64  # default"), "{out}");
}

async fn login(api: &Api, username: &str, password: &str) -> (u16, serde_json::Value) {
    api.call("POST", "/v1/auth/login", None, Some(json!({"username": username, "password": password}))).await
}

/// Runs `chat-auth` against a cluster's auth database and bus, `stdin` on its standard input.
async fn auth_cli(c: &Cluster, pg: &str, redis: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(binary("chat-auth"))
        .args(args)
        .env("DATABASE_URL", pg)
        .env("DATABASE_SCHEMA", &c.auth_schema)
        .env("BUS_URL", redis)
        .env("BUS_TOPIC_PREFIX", &c.topic_prefix)
        .env("BUS_SIGNING_KEY", BUS_SIGNING_KEY)
        .env("AUTH_KEY_ENCRYPTION_KEY", KEY_ENCRYPTION_KEY)
        .env("LOG_FORMAT", "pretty")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("exits").unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Account controls from the command line against running services: disabling closes the user's
/// sockets (4001) and refuses logins (403 account_disabled), enabling lets them in again, a reset
/// password replaces the old one and ends every session, operator rights are granted by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_control_accounts_from_the_command_line() {
    let pg = require_postgres().await;
    let redis = require_redis().await;
    let c = Cluster::start_on(&pg, &redis, 1, &[]).await;
    let api = c.api();
    let mallory = api.register(&unique("mallory")).await;
    let mut ws = Ws::connect(&c.edge_ws(0), &mallory.token, "").await;
    assert_eq!(ws.next(WAIT).await["type"], "hello");

    let (code, out, err) = auth_cli(&c, &pg, &redis, &["users", "disable", &mallory.username], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("disabled; 1 sessions revoked"), "{out}");
    assert_eq!(ws.closed(WAIT).await, Some(4001), "the disabled user's socket closes");
    let (s, v) = login(&api, &mallory.username, "correct horse 1").await;
    assert_eq!((s, v["code"].as_str()), (403, Some("account_disabled")), "{v}");
    let (s, _) = api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": mallory.refresh}))).await;
    assert_eq!(s, 401, "the refresh token of a disabled account is dead");

    let (code, _, err) = auth_cli(&c, &pg, &redis, &["users", "enable", &mallory.username], "").await;
    assert_eq!(code, 0, "{err}");
    let (s, v) = login(&api, &mallory.username, "correct horse 1").await;
    assert_eq!(s, 200, "enabled again: {v}");
    let token = v["access_token"].as_str().unwrap().to_string();

    // A reset: the new password from standard input, the old one refused, sessions ended.
    let mut ws = Ws::connect(&c.edge_ws(0), &token, "").await;
    assert_eq!(ws.next(WAIT).await["type"], "hello");
    let (code, out, err) =
        auth_cli(&c, &pg, &redis, &["users", "reset-password", &mallory.username], "a new long password\n").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reset; 1 sessions revoked"), "{out}");
    assert_eq!(ws.closed(WAIT).await, Some(4001));
    assert_eq!(login(&api, &mallory.username, "correct horse 1").await.0, 401, "the old password is refused");
    assert_eq!(login(&api, &mallory.username, "a new long password").await.0, 200, "the new one works");
    let (code, _, err) = auth_cli(&c, &pg, &redis, &["users", "reset-password", &mallory.username], "short\n").await;
    assert_eq!(code, 2, "a too-short password is the operator's mistake: {err}");

    // revoke-sessions ends every session; refresh tokens die with them.
    let (_, v) = login(&api, &mallory.username, "a new long password").await;
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    let (code, out, err) = auth_cli(&c, &pg, &redis, &["users", "revoke-sessions", &mallory.username], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sessions of"), "{out}");
    let (s, _) = api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(s, 401);

    let (code, out, err) = auth_cli(&c, &pg, &redis, &["admin", "grant", &mallory.username], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is an operator admin"), "{out}");
    let admin_at = pg_scalar(format!(
        "SELECT count(*) FROM \"{}\".users WHERE username = '{}' AND admin_at IS NOT NULL",
        c.auth_schema, mallory.username
    ))
    .await;
    assert_eq!(admin_at, 1);
    let (code, _, _) = auth_cli(&c, &pg, &redis, &["admin", "revoke", &mallory.username], "").await;
    assert_eq!(code, 0);
    let (code, _, err) = auth_cli(&c, &pg, &redis, &["admin", "grant", "nobody-by-that-name"], "").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no user named"), "{err}");
}

/// The all-in-one on its in-process bus: the command runs in another process, and the running
/// binary still enforces it (it reads revocations from its database) and closes the sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_in_one_enforces_a_disable_done_from_its_command_line() {
    let chat = AllInOne::start(&[("AUTH_KEY_RELOAD_SECS", "1".to_string())]).await;
    let api = chat.api();
    let u = api.register(&unique("eve")).await;
    let mut ws = Ws::connect(&chat.ws(), &u.token, "").await;
    assert_eq!(ws.next(WAIT).await["type"], "hello");
    let out = tokio::process::Command::new(binary("chat"))
        .args(["users", "disable", &u.username])
        .env("CHAT_DATA_DIR", &chat.data_dir.0)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ws.closed(Duration::from_secs(10)).await, Some(4001), "closed within the reload interval");
    let (s, _) = api.call("GET", "/v1/users/me", Some(&u.token), None).await;
    assert_eq!(s, 401, "its access token is refused");
}

/// The version is logged at start and exported as `build_info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_is_exported() {
    let chat = AllInOne::start(&[]).await;
    let text = reqwest::get(format!("http://{}/metrics", chat.admin)).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("build_info{")).unwrap_or_else(|| panic!("no build_info: {text}"));
    assert!(line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{line}");
    assert!(line.contains("revision=") && line.contains("service=\"chat\"") && line.ends_with(" 1"), "{line}");
}

/// `MIGRATE_ON_START=false`: a service on a schema its migrations have not reached refuses to start
/// and says how to fix it; after `migrate` it serves. (Deployments whose application role may not
/// change the schema run DDL from the migration Job alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_on_start_false_waits_for_the_migrate_step() {
    let pg = require_postgres().await;
    let schema = unique("mig");
    let env = vec![
        ("DATABASE_URL", pg),
        ("DATABASE_SCHEMA", schema),
        ("MIGRATE_ON_START", "false".to_string()),
        ("AUTH_KEY_ENCRYPTION_KEY", KEY_ENCRYPTION_KEY.to_string()),
        ("CHAT_INTERNAL_TOKEN", "internal-token-that-is-long-enough-0123456789".to_string()),
        ("AUTH_LISTEN", free_addr()),
        ("AUTH_INTERNAL_LISTEN", free_addr()),
        ("AUTH_ADMIN_LISTEN", free_addr()),
    ];
    let (code, _, err, _) = run_in_empty_dir("chat-auth", &[], &env).await;
    assert_ne!(code, 0, "started on an unmigrated schema");
    assert!(err.contains("MIGRATE_ON_START") && err.contains("migrate"), "{err}");
    let (code, _, err, _) = run_in_empty_dir("chat-auth", &["migrate"], &env).await;
    assert_eq!(code, 0, "{err}");
    let admin = env.iter().find(|(k, _)| *k == "AUTH_ADMIN_LISTEN").unwrap().1.clone();
    let _auth = Proc::spawn("chat-auth", &env);
    wait_ready("chat-auth", &admin).await;
}

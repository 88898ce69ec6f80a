//! Migration from the Django Channels backend: a fixture database in Django's layout (real PBKDF2
//! hashes) imported into PostgreSQL (microservices) and SQLite (all-in-one) by `chat import-django`;
//! old passwords log in and are rehashed; an old-dialect client (`/ws/chat/<id>/?token=`) and a
//! `/v1/ws` client chat with each other.

use base64::Engine;
use chat_e2e::*;
use serde_json::{Value, json};
use sqlx::any::AnyPoolOptions;
use std::time::Duration;

const ITERATIONS: u32 = 600_000; // Django 4.2's default for pbkdf2_sha256

fn django_hash(password: &str, salt: &str) -> String {
    let mut out = [0u8; 32];
    let n = std::num::NonZeroU32::new(ITERATIONS).unwrap();
    aws_lc_rs::pbkdf2::derive(aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256, n, salt.as_bytes(), password.as_bytes(), &mut out);
    format!("pbkdf2_sha256${ITERATIONS}${salt}${}", base64::engine::general_purpose::STANDARD.encode(out))
}

/// Django's tables (as its migrations create them, trimmed to what matters) with three users who
/// talk in two direct conversations of the same pair and one group, message ids not in time order.
async fn create_fixture(url: &str, postgres: bool) {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(url).await.expect("fixture database");
    let (serial, bigserial, ts) = if postgres {
        ("serial PRIMARY KEY", "bigserial PRIMARY KEY", "timestamp with time zone")
    } else {
        ("integer NOT NULL PRIMARY KEY AUTOINCREMENT", "integer NOT NULL PRIMARY KEY AUTOINCREMENT", "datetime")
    };
    let ddl = [
        format!(
            "CREATE TABLE auth_user (id {serial}, password varchar(128) NOT NULL, last_login {ts} NULL, \
             is_superuser boolean NOT NULL, username varchar(150) NOT NULL UNIQUE, first_name varchar(150) NOT NULL, \
             last_name varchar(150) NOT NULL, email varchar(254) NOT NULL, is_staff boolean NOT NULL, \
             is_active boolean NOT NULL, date_joined {ts} NOT NULL)"
        ),
        format!("CREATE TABLE chatapp_conversation (id {bigserial})"),
        format!(
            "CREATE TABLE chatapp_conversation_participants (id {bigserial}, \
             conversation_id bigint NOT NULL REFERENCES chatapp_conversation (id), \
             user_id integer NOT NULL REFERENCES auth_user (id))"
        ),
        format!(
            "CREATE TABLE chatapp_message (id {bigserial}, conversation_id bigint NOT NULL REFERENCES chatapp_conversation (id), \
             sender_id integer NOT NULL REFERENCES auth_user (id), content text NOT NULL, timestamp {ts} NOT NULL)"
        ),
    ];
    for sql in ddl {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("fixture DDL");
    }
    let t = |s: &str| if postgres { format!("{s}+00") } else { format!("{s}.000000") };
    // PostgreSQL does not turn a text parameter into a timestamp by itself.
    let at = |n: usize| if postgres { format!("CAST(${n} AS timestamp with time zone)") } else { format!("${n}") };
    let users = [
        (1, "alice", "alice-old-pass", "Alice", "Liddell"),
        (2, "Bob.Smith@example", "bob-old-pass", "", ""),
        (3, "carol", "carol-old-pass", "Carol", ""),
    ];
    for (id, name, pass, first, last) in users {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff, \
             is_active, date_joined) VALUES ($1, $2, false, $3, $4, $5, '', false, true, {})",
            at(6)
        )))
        .bind(id)
        .bind(django_hash(pass, &format!("salt{id}xyz")))
        .bind(name)
        .bind(first)
        .bind(last)
        .bind(t(&format!("2024-01-0{id} 08:00:00")))
        .execute(&pool)
        .await
        .expect("user");
    }
    for (cid, members) in [(10, vec![1, 2]), (11, vec![1, 2, 3]), (12, vec![2, 1])] {
        sqlx::query("INSERT INTO chatapp_conversation (id) VALUES ($1)").bind(cid as i64).execute(&pool).await.unwrap();
        for u in members {
            sqlx::query("INSERT INTO chatapp_conversation_participants (conversation_id, user_id) VALUES ($1, $2)")
                .bind(cid as i64)
                .bind(u)
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    let messages = [
        (100, 10, 1, "hi bob", "2024-05-01 10:00:01"),
        (101, 10, 2, "hi alice", "2024-05-01 10:00:03"),
        (102, 12, 1, "from the other thread", "2024-05-01 10:00:02"),
        (103, 11, 3, "group hello", "2024-05-01 09:00:00"),
        (99, 11, 1, "lower id, later time", "2024-05-01 09:00:05"),
        (104, 11, 2, "same time, higher id", "2024-05-01 09:00:05"),
    ];
    for (id, cid, sender, content, when) in messages {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO chatapp_message (id, conversation_id, sender_id, content, timestamp) VALUES ($1, $2, $3, $4, {})",
            at(5)
        )))
        .bind(id as i64)
        .bind(cid as i64)
        .bind(sender)
        .bind(content)
        .bind(t(when))
        .execute(&pool)
        .await
        .expect("message");
    }
}

/// A message the old backend took after the first import (a second run appends it).
async fn add_fixture_message(url: &str) {
    let pool = AnyPoolOptions::new().max_connections(1).connect(url).await.expect("fixture database");
    let postgres = url.starts_with("postgres");
    let ts = if postgres { "CAST($1 AS timestamp with time zone)" } else { "$1" };
    let at = if postgres { "2024-05-02 12:00:00+00" } else { "2024-05-02 12:00:00.000000" };
    let sql = format!(
        "INSERT INTO chatapp_message (id, conversation_id, sender_id, content, timestamp) \
         VALUES (105, 12, 2, 'written after the first import', {ts})"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at).execute(&pool).await.expect("late message");
    // An account an operator deactivated in Django (audit finding 12: it must not become a login).
    let user = format!(
        "INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff, \
         is_active, date_joined) VALUES (4, $1, false, 'dave', '', '', '', false, false, {})",
        ts.replace("$1", "$2")
    );
    sqlx::query(sqlx::AssertSqlSafe(user))
        .bind(django_hash("dave-old-pass", "salt4xyz"))
        .bind(at)
        .execute(&pool)
        .await
        .expect("deactivated user");
}

fn import(source: &str, env: &[(&str, String)]) -> String {
    import_with(source, env, &[])
}

fn import_with(source: &str, env: &[(&str, String)], flags: &[&str]) -> String {
    let out = std::process::Command::new(binary("chat"))
        .arg("import-django")
        .arg(source)
        .args(flags)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LOG_FORMAT", "pretty")
        .output()
        .expect("run chat import-django");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "import failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Not a terminal here: plain progress lines (with the rate once there is one), then a summary.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("messages: 0/") && stderr.contains("messages: ") && stderr.contains(" done in "),
        "{stderr}"
    );
    assert!(!stderr.contains('\r'), "no terminal redraws into a log: {stderr}");
    stdout
}

async fn login(api: &Api, username: &str, password: &str) -> (u16, Value) {
    api.call("POST", "/v1/auth/login", None, Some(json!({"username": username, "password": password}))).await
}

/// A client of the old dialect: `/ws/chat/<conversation id>/?token=<access token>`.
async fn old_client(ws_base: &str, conversation: &str, token: Option<&str>) -> Ws {
    let q = token.map(|t| format!("?token={t}")).unwrap_or_default();
    let (stream, _) =
        tokio_tungstenite::connect_async(format!("{ws_base}/ws/chat/{conversation}/{q}")).await.expect("connect");
    Ws { stream }
}

async fn pg_exec(sql: String) {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(&pg_url()).await.expect("PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("statement");
}

async fn migrate_and_chat(api: &Api, ws_base: &str, source: &str, env: &[(&str, String)], users_sql: Option<String>) {
    let report = import(source, env);
    println!("{report}");
    assert!(report.contains("3 imported (1 renamed)"), "{report}");
    assert!(report.contains("renamed \"Bob.Smith@example\" -> \"bob.smith_example\""), "{report}");
    assert!(report.contains("1 direct, 1 group, 1 merged"), "{report}");
    assert!(report.contains("6 imported, 0 already imported, 0 skipped"), "{report}");
    // A second run imports nothing twice.
    let again = import(source, env);
    assert!(again.contains("0 imported (0 renamed), 3 already imported"), "{again}");
    assert!(again.contains("0 direct, 0 group, 0 merged"), "{again}");
    assert!(again.contains("0 imported, 6 already imported"), "{again}");

    // Old passwords work (and only they), then the hash is Argon2id.
    assert_eq!(login(api, "alice", "wrong").await.0, 401);
    let (s, v) = login(api, "alice", "alice-old-pass").await;
    assert_eq!(s, 200, "{v}");
    let alice_token = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(v["user"]["created_at"], "2024-01-01T08:00:00.000Z", "date_joined kept");
    assert_eq!(v["user"]["display_name"], "Alice Liddell");
    if let Some(sql) = users_sql {
        assert_eq!(pg_scalar(sql).await, 1, "alice's PBKDF2 hash was replaced by Argon2id");
    }
    assert_eq!(login(api, "alice", "alice-old-pass").await.0, 200, "and still logs in after the rehash");
    let (s, v) = login(api, "bob.smith_example", "bob-old-pass").await;
    assert_eq!(s, 200, "{v}");
    let bob_token = v["access_token"].as_str().unwrap().to_string();
    let carol_token = login(api, "carol", "carol-old-pass").await.1["access_token"].as_str().unwrap().to_string();

    // History: the two old direct conversations are one, in timestamp order, timestamps kept.
    let (_, list) = api.call("GET", "/v1/conversations", Some(&alice_token), None).await;
    let convs = list["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 2);
    let direct = convs.iter().find(|c| c["kind"] == "direct").unwrap();
    let group = convs.iter().find(|c| c["kind"] == "group").unwrap();
    assert_eq!(group["title"], "alice, bob.smith_example, carol");
    assert_eq!(direct["unread_count"], 0, "imported history counts as read");
    let bodies = |v: &Value| -> Vec<(i64, String)> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["seq"].as_i64().unwrap(), m["body"].as_str().unwrap().to_string()))
            .collect()
    };
    let (_, h) = api
        .call(
            "GET",
            &format!("/v1/conversations/{}/messages", direct["id"].as_str().unwrap()),
            Some(&alice_token),
            None,
        )
        .await;
    assert_eq!(
        bodies(&h),
        vec![(1, "hi bob".into()), (2, "from the other thread".into()), (3, "hi alice".into())],
        "seq in timestamp order across both old conversations"
    );
    assert_eq!(h["messages"][0]["created_at"], "2024-05-01T10:00:01.000Z", "timestamps kept");
    let (_, h) = api
        .call("GET", &format!("/v1/conversations/{}/messages", group["id"].as_str().unwrap()), Some(&alice_token), None)
        .await;
    assert_eq!(
        bodies(&h),
        vec![(1, "group hello".into()), (2, "lower id, later time".into()), (3, "same time, higher id".into())],
        "timestamp, then id"
    );

    // The old dialect: bob on /ws/chat/10/ (an old id), alice on /v1/ws.
    let mut old = old_client(ws_base, "10", Some(&bob_token)).await;
    let status = old.next(WAIT).await;
    assert_eq!(status["type"], "online_status");
    assert_eq!(status["status"], "online");
    let mut alice = Ws::connect(ws_base, &alice_token, "").await;
    assert_eq!(alice.next(WAIT).await["type"], "hello");
    // Bob (old) → alice (new). A `user` in the frame does not change who sends.
    let send = json!({"type": "chat_message", "message": "hello from the old app", "user": {"id": 1}});
    old.send(send).await;
    let got = alice.wait_for(WAIT, |v| v["type"] == "message").await;
    assert_eq!(got["message"]["body"], "hello from the old app");
    assert_eq!(got["message"]["seq"], 4);
    let echo = loop {
        let v = old.next(WAIT).await;
        if v["type"] == "chat_message" {
            break v;
        }
    };
    assert_eq!(echo["user"], json!({"id": 2, "username": "bob.smith_example"}), "old integer id of the sender");
    assert_eq!(echo["message"], "hello from the old app");
    // Alice (new) → bob (old), and typing both ways.
    let cid = direct["id"].as_str().unwrap();
    alice.send(json!({"type": "typing", "conversation_id": cid, "state": "start"})).await;
    let typing = loop {
        let v = old.next(WAIT).await;
        if v["type"] == "typing" {
            break v;
        }
    };
    assert_eq!(
        typing,
        json!({"type": "typing", "user": {"id": 1, "username": "alice"}, "receiver": 2, "is_typing": true})
    );
    alice.send(json!({"type": "send", "id": "a1", "conversation_id": cid, "body": "hello from the new app"})).await;
    let msg = loop {
        let v = old.next(WAIT).await;
        if v["type"] == "chat_message" {
            break v;
        }
    };
    assert_eq!(msg["message"], "hello from the new app");
    assert_eq!(msg["user"]["id"], 1);
    assert!(msg["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{msg}");
    old.send(json!({"type": "typing", "receiver": 1})).await;
    let t = alice.wait_for(WAIT, |v| v["type"] == "typing").await;
    assert_eq!(t["state"], "start");
    // Presence: alice leaves, bob's old client hears it.
    drop(alice);
    let off = loop {
        let v = old.next(WAIT).await;
        if v["type"] == "online_status" && v["status"] == "offline" {
            break v;
        }
    };
    assert_eq!(off["online_users"], json!([{"id": 2, "username": "bob.smith_example"}]));

    // Close codes: no token 4002, a bad token 4001, not a member (carol in the direct one) 4003.
    for (conv, token, code) in
        [("10", None, 4002), ("10", Some("garbage"), 4001), ("10", Some(carol_token.as_str()), 4003)]
    {
        let mut ws = old_client(ws_base, conv, token).await;
        assert_eq!(ws.closed(Duration::from_secs(10)).await, Some(code), "{conv} {token:?}");
    }
    // The group by its old id works for carol.
    let mut c = old_client(ws_base, "11", Some(&carol_token)).await;
    assert_eq!(c.next(WAIT).await["type"], "online_status");

    // What the old backend took after the import comes over with another run, after what is there.
    add_fixture_message(source).await;
    let third = import(source, env);
    assert!(third.contains("1 imported, 6 already imported"), "{third}");
    let (s, v) = login(api, "dave", "dave-old-pass").await;
    assert_eq!((s, v["code"].as_str()), (403, Some("account_disabled")), "a deactivated Django account logs in: {v}");
    assert_eq!(login(api, "dave", "wrong").await.0, 401, "and says nothing without the password");
    let (_, h) = api.call("GET", &format!("/v1/conversations/{cid}/messages"), Some(&alice_token), None).await;
    let last = h["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["seq"].as_i64(), last["body"].as_str()), (Some(6), Some("written after the first import")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_postgres_and_chat_across_dialects() {
    let c = Cluster::start(&require_redis().await, 1, &[]).await;
    let schema = unique("django");
    let pg = pg_url();
    pg_exec(format!("CREATE SCHEMA \"{schema}\"")).await;
    let source = format!("{pg}?options=-c%20search_path%3D{schema}");
    create_fixture(&source, true).await;
    let env = [
        ("IMPORT_AUTH_DATABASE_URL", pg.clone()),
        ("IMPORT_AUTH_DATABASE_SCHEMA", c.auth_schema.clone()),
        ("IMPORT_STORE_DATABASE_URL", pg.clone()),
        ("IMPORT_STORE_DATABASE_SCHEMA", c.store_schema.clone()),
    ];
    let check = format!(
        "SELECT COUNT(*) FROM \"{}\".users WHERE username = 'alice' AND password_hash LIKE '$argon2id$%'",
        c.auth_schema
    );
    migrate_and_chat(&c.api(), &c.edge_ws(0), &source, &env, Some(check)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_sqlite_and_chat_across_dialects() {
    let aio = AllInOne::start(&[]).await;
    let dir = tempdir::Dir::new("django");
    let source = format!("sqlite://{}?mode=rwc", dir.0.join("db.sqlite3").display());
    create_fixture(&source, false).await;
    let env = [("CHAT_DATA_DIR", aio.data_dir.0.display().to_string())];
    migrate_and_chat(&aio.api(), &aio.ws(), &source, &env, None).await;
}

/// `--dry-run` reads and checks everything and writes nothing; `--json` is the report for scripts; a
/// row whose timestamp cannot be read is counted and listed, and not imported with the import's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_json_report_and_unreadable_rows() {
    let dir = tempdir::Dir::new("django");
    let source = format!("sqlite://{}?mode=rwc", dir.0.join("db.sqlite3").display());
    create_fixture(&source, false).await;
    let pool = AnyPoolOptions::new().max_connections(1).connect(&source).await.unwrap();
    sqlx::query(
        "INSERT INTO chatapp_message (id, conversation_id, sender_id, content, timestamp) \
         VALUES (200, 11, 1, 'when was this?', 'yesterday-ish')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // A long history with many equal timestamps: read in pages by (timestamp, id), none lost or doubled.
    sqlx::query(
        "INSERT INTO chatapp_message (id, conversation_id, sender_id, content, timestamp) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
         SELECT 1000 + i, 11, 1 + (i % 3), 'bulk ' || i, '2024-06-01 00:00:' || printf('%02d', i % 60) || '.000000' FROM n",
    )
    .execute(&pool)
    .await
    .unwrap();
    let target = tempdir::Dir::new("target");
    let env = [("CHAT_DATA_DIR", target.0.display().to_string())];

    let dry: Value = serde_json::from_str(&import_with(&source, &env, &["--dry-run", "--json"])).expect("JSON report");
    assert_eq!(dry["dry_run"], true);
    assert_eq!((dry["users_imported"].as_u64(), dry["messages_imported"].as_u64()), (Some(3), Some(2506)), "{dry}");
    assert_eq!((dry["conversations_direct"].as_u64(), dry["conversations_merged"].as_u64()), (Some(1), Some(1)));
    assert_eq!(dry["unparseable_count"], 1, "{dry}");
    assert_eq!(dry["unparseable"][0]["id"], 200);
    assert_eq!(dry["unparseable"][0]["value"], "yesterday-ish");
    assert!(std::fs::read_dir(&target.0).unwrap().next().is_none(), "a dry run writes nothing");

    let real: Value = serde_json::from_str(&import_with(&source, &env, &["--json"])).expect("JSON report");
    assert_eq!((real["dry_run"].as_bool(), real["messages_imported"].as_u64()), (Some(false), Some(2506)), "{real}");
    assert_eq!(real["messages_orphaned"], 0, "the unreadable row is listed, not counted as orphaned");
    assert_eq!(real["unparseable"][0]["table"], "chatapp_message");
    let text = import(&source, &env);
    assert!(text.contains("unparseable:   1 rows") && text.contains("chatapp_message id 200"), "{text}");
}

//! Seq allocation + insert + outbox row, one transaction, against the real database:
//! PostgreSQL (`CHAT_TEST_PG_URL`, default postgres://postgres@127.0.0.1:5432/test, own schema) and SQLite;
//! and on PostgreSQL the group commit: 64 sends over 16 conversations in one transaction.

use chat_db::{Db, DbConfig};
use chat_message_store::store::{NewMessage, Store};
use chat_protocol::{ConversationKind, Role};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

static PG: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

fn insert(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pg = std::env::var("CHAT_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let dir = std::env::temp_dir().join(format!("bench-{}", Uuid::new_v4().simple()));
    let targets = [
        (
            "postgres",
            DbConfig { url: pg, schema: Some(format!("bench_{}", Uuid::new_v4().simple())), max_connections: 4 },
        ),
        ("sqlite", DbConfig { url: chat_db::sqlite_url_for(&dir.join("m.db")), schema: None, max_connections: 4 }),
    ];
    for (name, cfg) in targets {
        let (store, cid, sender) = rt.block_on(async {
            let db = Db::connect(&cfg).await.unwrap_or_else(|e| {
                panic!("{name} unreachable ({e}); start it (scripts/test.sh does) or set CHAT_TEST_PG_URL")
            });
            db.migrate(&PG, &SQLITE).await.unwrap();
            let store = Store::new(db);
            let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
            let (cid, _) = store
                .create_conversation(ConversationKind::Direct, None, &[(a, Role::Member), (b, Role::Member)])
                .await
                .unwrap();
            (store, cid, a)
        });
        c.bench_function(&format!("seq_allocate_insert_{name}"), |bch| {
            bch.iter(|| rt.block_on(store.insert_message(cid, sender, "hello there", None)).unwrap())
        });
        if name == "postgres" {
            let sends: Vec<NewMessage> = rt.block_on(async {
                let mut sends = Vec::new();
                for _ in 0..16 {
                    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
                    let members = [(a, Role::Member), (b, Role::Member)];
                    let (cid, _) = store.create_conversation(ConversationKind::Direct, None, &members).await.unwrap();
                    for sender in [a, b, a, b] {
                        let body = "hello there".to_string();
                        sends.push(NewMessage { cid, sender, body, client_msg_id: None, traceparent: None });
                    }
                }
                sends
            });
            let batch: Vec<&NewMessage> = sends.iter().collect();
            let mut g = c.benchmark_group("group_commit_postgres");
            g.throughput(Throughput::Elements(batch.len() as u64));
            g.bench_function("64_sends_16_conversations", |bch| {
                bch.iter(|| rt.block_on(store.insert_messages(&batch)).unwrap())
            });
            g.finish();
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, insert);
criterion_main!(benches);

//! The outbox relay under concurrent commits on PostgreSQL: every committed event is published,
//! exactly once. (Deleting the published range `id <= last` lost the events of transactions that
//! took a lower id and committed between the relay's SELECT and DELETE.)

use chat_bus::{Bus, Delivery};
use chat_db::{Db, DbConfig};
use chat_message_store::outbox::Outbox;
use chat_message_store::store::Store;
use chat_protocol::{ConversationKind, Role};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

static PG: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_is_published_once_under_concurrent_commits() {
    let url = std::env::var("CHAT_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let cfg = DbConfig { url, schema: Some(format!("relay_{}", Uuid::new_v4().simple())), max_connections: 16 };
    let db = Db::connect(&cfg).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL unreachable ({e}): start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set CHAT_TEST_PG_URL"
        )
    });
    db.migrate(&PG, &SQLITE).await.unwrap();
    let store = Store::new(db);
    let bus = Bus::connect(None, "").await.unwrap();
    const CONVS: usize = 12;
    const PER_CONV: i64 = 60;
    let mut convs = Vec::new();
    for _ in 0..CONVS {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let members = [(a, Role::Member), (b, Role::Member)];
        let (cid, _) = store.create_conversation(ConversationKind::Direct, None, &members).await.unwrap();
        convs.push((cid, a));
    }
    let (subs, mut rx) = bus.subscriber(100_000);
    subs.subscribe(convs.iter().map(|(c, _)| chat_protocol::bus::topics::conversation(*c)).collect()).await;
    let outbox = Outbox::start(store.clone(), bus.clone());
    // Many writers at once: ids are taken in insert order but committed in any order.
    let mut writers = Vec::new();
    for (cid, sender) in convs.clone() {
        let (store, outbox) = (store.clone(), outbox.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..PER_CONV {
                store.insert_message(cid, sender, &format!("m{i}"), None).await.unwrap();
                outbox.notify();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut seen: HashMap<Uuid, Vec<i64>> = HashMap::new();
    let want = CONVS * PER_CONV as usize;
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got < want {
        let Ok(Some(d)) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
        let Delivery::Message { payload, .. } = d else { continue };
        let env = chat_protocol::bus::Envelope::decode(payload).expect("envelope");
        if let (Some(cid), Some(seq)) = (env.header.conversation_id, env.header.seq) {
            seen.entry(cid).or_default().push(seq);
            got += 1;
        }
    }
    for (cid, _) in &convs {
        let mut seqs = seen.remove(cid).unwrap_or_default();
        seqs.sort();
        assert_eq!(seqs, (1..=PER_CONV).collect::<Vec<_>>(), "every message event of {cid} published once");
    }
    // The relay deletes a batch after publishing it: the last delete may still be on its way.
    let mut depth = store.outbox_depth().await.unwrap();
    for _ in 0..50 {
        if depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        depth = store.outbox_depth().await.unwrap();
    }
    assert_eq!(depth, 0, "the outbox drained");
}

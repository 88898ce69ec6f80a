//! Group commit on PostgreSQL: a burst of concurrent sends is stored in a few transactions with the
//! same outcomes as storing each alone: gapless seqs in each conversation, idempotent retries (in the
//! same batch, in a later one, and racing through another replica's writer), members only, read
//! positions moved, and outbox events in seq order.

use chat_db::{Db, DbConfig};
use chat_message_store::store::{Sent, Store};
use chat_message_store::writer::Writer;
use chat_protocol::{ConversationKind, Role};
use std::collections::HashMap;
use uuid::Uuid;

static PG: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

async fn store() -> Store {
    let url = std::env::var("CHAT_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    open(DbConfig { url, schema: Some(format!("batch_{}", Uuid::new_v4().simple())), max_connections: 16 }).await
}

/// A SQLite file of its own in the temporary directory.
async fn sqlite_store() -> Store {
    let path = std::env::temp_dir().join(format!("group-commit-{}", Uuid::new_v4().simple())).join("m.db");
    open(DbConfig { url: chat_db::sqlite_url_for(&path), schema: None, max_connections: 4 }).await
}

async fn open(cfg: DbConfig) -> Store {
    let db = Db::connect(&cfg).await.unwrap_or_else(|e| {
        panic!(
            "database {} unreachable ({e}); for PostgreSQL start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set CHAT_TEST_PG_URL",
            cfg.url
        )
    });
    db.migrate(&PG, &SQLITE).await.unwrap();
    Store::new(db)
}

fn created(r: &Sent) -> &chat_protocol::Message {
    match r {
        Sent::Created(m) => m,
        Sent::Existing(_) => panic!("expected a new message, got an existing one"),
        Sent::NotMember => panic!("expected a new message, got not-a-member"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_batched_with_the_outcomes_of_single_sends() {
    burst(store().await).await
}

/// The same on SQLite, where a batch is one transaction with a savepoint per send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_batched_with_the_outcomes_of_single_sends_sqlite() {
    burst(sqlite_store().await).await
}

async fn burst(store: Store) {
    let writer = Writer::start(store.clone(), 64);
    const CONVS: usize = 6;
    const PER_CONV: usize = 50;
    let stranger = Uuid::now_v7();
    let mut convs = Vec::new();
    for _ in 0..CONVS {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (cid, _) = store
            .create_conversation(ConversationKind::Group, None, &[(a, Role::Owner), (b, Role::Member)])
            .await
            .unwrap();
        convs.push((cid, [a, b]));
    }
    // Everything at once: each message, then a retry of every fifth (same client_msg_id), then a
    // stranger's attempt per conversation.
    let mut tasks = Vec::new();
    for (cid, members) in &convs {
        for i in 0..PER_CONV {
            let (w, cid, sender) = (writer.clone(), *cid, members[i % 2]);
            let cmid = format!("c{i}");
            tasks.push(tokio::spawn(async move {
                ("send", cid, sender, cmid.clone(), w.insert(cid, sender, "hi", Some(&cmid)).await)
            }));
            if i % 5 == 0 {
                let w = writer.clone();
                let cmid = format!("c{i}");
                tasks.push(tokio::spawn(async move {
                    ("retry", cid, sender, cmid.clone(), w.insert(cid, sender, "hi", Some(&cmid)).await)
                }));
            }
        }
        let (w, cid) = (writer.clone(), *cid);
        tasks.push(tokio::spawn(async move {
            ("stranger", cid, stranger, String::new(), w.insert(cid, stranger, "let me in", None).await)
        }));
    }
    let mut by_cmid: HashMap<(Uuid, String), Vec<(&'static str, Sent)>> = HashMap::new();
    let mut strangers = 0;
    for t in tasks {
        let (kind, cid, _, cmid, r) = t.await.unwrap();
        let r = r.expect("stored");
        if kind == "stranger" {
            assert!(matches!(r, Sent::NotMember), "a non-member's send is refused");
            strangers += 1;
        } else {
            by_cmid.entry((cid, cmid)).or_default().push((kind, r));
        }
    }
    assert_eq!(strangers, CONVS);
    let batches = writer.batches();
    assert!(batches < (CONVS * PER_CONV) as u64 / 4, "{batches} transactions for {} sends: batched", CONVS * PER_CONV);

    // Each client_msg_id stored once; its retry got that same message back.
    let mut ids: HashMap<(Uuid, String), Uuid> = HashMap::new();
    for ((cid, cmid), outcomes) in &by_cmid {
        let news: Vec<_> = outcomes.iter().filter(|(_, r)| matches!(r, Sent::Created(_))).collect();
        assert_eq!(news.len(), 1, "{cmid} in {cid} stored exactly once: {}", outcomes.len());
        let id = created(&news[0].1).id;
        for (_, r) in outcomes {
            match r {
                Sent::Created(m) | Sent::Existing(m) => assert_eq!(m.id, id, "a retry returns the stored message"),
                Sent::NotMember => panic!("a member's retry refused"),
            }
        }
        ids.insert((*cid, cmid.clone()), id);
    }
    for (cid, members) in &convs {
        let (page, _) = store.history(*cid, chat_message_store::store::Page::After(0), 500).await.unwrap();
        let seqs: Vec<i64> = page.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=PER_CONV as i64).collect::<Vec<_>>(), "gapless seqs in {cid}");
        for m in &page {
            assert_eq!(ids[&(*cid, m.client_msg_id.clone().unwrap())], m.id);
        }
        // Each sender has read up to their own latest message.
        let conv = store.user_conversations(members[0]).await.unwrap();
        let last_by = |u: Uuid| page.iter().filter(|m| m.sender_id == u).map(|m| m.seq).max().unwrap();
        for u in members {
            let mine = store.conversation(*cid, *u).await.unwrap().expect("member");
            assert_eq!(mine.last_read_seq, last_by(*u), "read position of the sender");
        }
        assert!(conv.iter().any(|c| c.id == *cid && c.last_seq == PER_CONV as i64));
    }

    // The outbox holds one event per message, in seq order within each conversation.
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, payload FROM outbox ORDER BY id").fetch_all(&store.db().pool).await.unwrap();
    let events: Vec<_> = rows
        .into_iter()
        .map(|(_, payload)| chat_protocol::bus::Envelope::decode(bytes::Bytes::from(payload)).expect("envelope"))
        .filter(|e| e.header.kind == chat_protocol::bus::EventKind::Message)
        .collect();
    assert_eq!(events.len(), CONVS * PER_CONV);
    let mut last: HashMap<Uuid, i64> = HashMap::new();
    for env in events {
        let (cid, seq) = (env.header.conversation_id.unwrap(), env.header.seq.unwrap());
        let prev = last.insert(cid, seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "outbox order is seq order in {cid}");
    }

    // A retry long after (a later batch) still finds its message.
    let (cid, members) = &convs[0];
    let again = writer.insert(*cid, members[0], "hi", Some("c0")).await.unwrap();
    assert!(matches!(&again, Sent::Existing(m) if m.id == ids[&(*cid, "c0".to_string())]));
}

/// Two replicas' writers store the same retries at once: one batch meets the other's unique index
/// entries, falls back to single sends, and those return the other's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_store_each_client_msg_id_once() {
    let store = store().await;
    let (w1, w2) = (Writer::start(store.clone(), 64), Writer::start(store.clone(), 64));
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let (cid, _) = store
        .create_conversation(ConversationKind::Direct, None, &[(a, Role::Member), (b, Role::Member)])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        for w in [w1.clone(), w2.clone()] {
            tasks.push(tokio::spawn(
                async move { (i, w.insert(cid, a, "twice", Some(&format!("r{i}"))).await.unwrap()) },
            ));
        }
    }
    let mut seen: HashMap<i32, Vec<Sent>> = HashMap::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        seen.entry(i).or_default().push(r);
    }
    for (i, rs) in seen {
        let news = rs.iter().filter(|r| matches!(r, Sent::Created(_))).count();
        assert_eq!(news, 1, "r{i} stored once");
        let ids: Vec<Uuid> = rs
            .iter()
            .map(|r| match r {
                Sent::Created(m) | Sent::Existing(m) => m.id,
                Sent::NotMember => panic!("member refused"),
            })
            .collect();
        assert_eq!(ids[0], ids[1], "both replicas answer with the one stored message");
    }
    let (page, _) = store.history(cid, chat_message_store::store::Page::After(0), 500).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
}

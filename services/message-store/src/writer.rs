//! Group commit of sends: concurrent sends share one transaction (and on PostgreSQL one fsync).
//!
//! Each send costs seven round trips and a commit when stored alone; a batch costs four round trips
//! and one commit however many messages it holds. Batches form by themselves: while a writer
//! commits, the sends that arrive queue up and become the next batch, so a lone send waits for
//! nobody and a burst is written in a few transactions. On SQLite (one writer, one file) a batch is
//! one transaction with a savepoint per send: one lock and one commit instead of a lock race per send.

use crate::store::{BatchError, NewMessage, Sent, Store};
use chat_db::Backend;
use chat_protocol::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

/// Batches in flight at once per process: one collects while another commits.
const WRITERS: usize = 2;

struct Job {
    msg: NewMessage,
    reply: oneshot::Sender<Result<Sent, sqlx::Error>>,
}

#[derive(Clone)]
pub struct Writer {
    store: Store,
    jobs: Option<mpsc::Sender<Job>>,
    batches: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writers unless `max_batch` is 1 (each send then stores alone).
    pub fn start(store: Store, max_batch: usize) -> Writer {
        let batches = Arc::new(AtomicU64::new(0));
        if max_batch <= 1 {
            return Writer { store, jobs: None, batches };
        }
        // SQLite has one writer at a time anyway: a second batch would only wait for the lock.
        let writers = if store.db().backend == Backend::Postgres { WRITERS } else { 1 };
        let (tx, rx) = mpsc::channel(max_batch * 8);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers {
            tokio::spawn(run(store.clone(), rx.clone(), max_batch, batches.clone()));
        }
        Writer { store, jobs: Some(tx), batches }
    }

    /// Batches written so far (each one transaction).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Stores a message (see `Store::insert_message` for the outcomes).
    pub async fn insert(
        &self,
        cid: Uuid,
        sender: Uuid,
        body: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Sent, sqlx::Error> {
        let Some(jobs) = &self.jobs else {
            return self.store.insert_message(cid, sender, body, client_msg_id).await;
        };
        // The send's span covers its wait for the batch; its event continues the trace from here.
        let span = tracing::info_span!("db.insert_message", conversation_id = %cid, batched = true);
        let (reply, rx) = oneshot::channel();
        let msg = NewMessage {
            cid,
            sender,
            body: body.to_owned(),
            client_msg_id: client_msg_id.map(str::to_owned),
            traceparent: span.in_scope(chat_telemetry::current_traceparent),
        };
        async {
            if jobs.send(Job { msg, reply }).await.is_err() {
                return self.store.insert_message(cid, sender, body, client_msg_id).await;
            }
            rx.await.unwrap_or(Err(sqlx::Error::WorkerCrashed))
        }
        .instrument(span)
        .await
    }
}

async fn run(store: Store, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max_batch: usize, batches: Arc<AtomicU64>) {
    let mut jobs = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, max_batch).await == 0 {
                return;
            }
        }
        batches.fetch_add(1, Ordering::Relaxed);
        commit(&store, std::mem::take(&mut jobs)).await;
    }
}

/// An error for each waiting send when the batch's outcome is shared: the database is unreachable or
/// the commit's fate unknown. Reported as 503 `unavailable`; clients retry with their `client_msg_id`.
fn shared_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(e.to_string()))
}

/// Where a job's outcome comes from: its own place in the batch, or the earlier job it repeats.
enum Slot {
    Own,
    Repeat(usize),
}

async fn commit(store: &Store, jobs: Vec<Job>) {
    // A repeat of a (conversation, sender, client_msg_id) earlier in the batch (a retry racing its
    // original) would break the batch's unique index: it gets the earlier one's message instead.
    let mut first: HashMap<(Uuid, Uuid, &str), usize> = HashMap::new();
    let mut slots: Vec<Slot> = Vec::with_capacity(jobs.len());
    let mut batch: Vec<&NewMessage> = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let m = &j.msg;
        let prior = m.client_msg_id.as_deref().and_then(|c| match first.get(&(m.cid, m.sender, c)) {
            Some(i) => Some(*i),
            None => {
                first.insert((m.cid, m.sender, c), batch.len());
                None
            }
        });
        match prior {
            Some(i) => slots.push(Slot::Repeat(i)),
            None => {
                batch.push(m);
                slots.push(Slot::Own);
            }
        }
    }
    metrics::histogram!("message_batch_size").record(batch.len() as f64);
    let stored = match store.db().backend {
        Backend::Postgres => match store.insert_messages(&batch).await {
            Ok(stored) => Ok(resolve(store, &batch, stored).await),
            Err(e) => Err(e),
        },
        Backend::Sqlite => store.insert_messages_each(&batch).await,
    };
    let outcomes = match stored {
        Ok(outcomes) => outcomes,
        Err(BatchError::BeforeCommit(e)) if !chat_db::is_unavailable(&e) => {
            // Nothing was stored: each send tries alone, and gets its own outcome (a unique violation
            // from another replica's concurrent retry becomes `Existing` there).
            tracing::warn!(error = %e, sends = jobs.len(), "batch failed; storing its sends one by one");
            for j in jobs {
                let store = store.clone();
                tokio::spawn(async move {
                    let m = &j.msg;
                    let r = store.insert_message(m.cid, m.sender, &m.body, m.client_msg_id.as_deref()).await;
                    let _ = j.reply.send(r);
                });
            }
            return;
        }
        Err(BatchError::BeforeCommit(e) | BatchError::Commit(e)) => {
            tracing::warn!(error = %e, sends = jobs.len(), "batch not stored");
            for j in jobs {
                let _ = j.reply.send(Err(shared_error(&e)));
            }
            return;
        }
    };
    let repeats: Vec<Option<Result<Sent, sqlx::Error>>> = slots
        .iter()
        .map(|s| match s {
            Slot::Own => None,
            Slot::Repeat(i) => Some(match &outcomes[*i] {
                Ok(Sent::Created(m) | Sent::Existing(m)) => Ok(Sent::Existing(m.clone())),
                Ok(Sent::NotMember) => Ok(Sent::NotMember),
                Err(e) => Err(shared_error(e)),
            }),
        })
        .collect();
    // Own outcomes are in job order.
    let mut own = outcomes.into_iter();
    for (j, repeat) in jobs.into_iter().zip(repeats) {
        let r = repeat.or_else(|| own.next()).unwrap_or(Err(sqlx::Error::WorkerCrashed));
        let _ = j.reply.send(r);
    }
}

/// The outcome of each send of a PostgreSQL batch: stored, or not stored because it was sent before
/// (its client_msg_id is stored) or because the sender is not a member.
async fn resolve(store: &Store, batch: &[&NewMessage], stored: Vec<Option<Message>>) -> Vec<Result<Sent, sqlx::Error>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for (m, s) in batch.iter().zip(stored) {
        outcomes.push(match (s, m.client_msg_id.as_deref()) {
            (Some(s), _) => Ok(Sent::Created(s)),
            (None, Some(c)) => match store.by_client_msg_id(m.cid, m.sender, c).await {
                Ok(Some(prev)) => Ok(Sent::Existing(prev)),
                Ok(None) => Ok(Sent::NotMember),
                Err(e) => Err(e),
            },
            (None, None) => Ok(Sent::NotMember),
        });
    }
    outcomes
}

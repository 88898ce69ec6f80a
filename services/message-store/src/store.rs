//! All SQL of the message-store (portable between PostgreSQL and SQLite; see `chat-db`).

use crate::events::{self, OutboxEvent};
use chat_db::{Backend, Db};
use chat_protocol::frames::ConversationChange;
use chat_protocol::internal::Membership;
use chat_protocol::{Conversation, ConversationKind, Member, Message, Role, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};
use uuid::Uuid;

#[derive(Clone)]
pub struct Store {
    db: Db,
}

/// A change to a conversation's title or members.
pub enum Change {
    Title(String),
    /// Add a user with a role, unless the conversation already has `cap` members.
    Add(Uuid, Role, usize),
    Role(Uuid, Role),
    Remove(Uuid),
}

pub enum Changed {
    Done,
    /// The conversation or the member does not exist.
    NotMember,
    Conflict,
    TooMany,
}

pub enum Sent {
    Created(Message),
    /// The same `client_msg_id` was sent before: the message stored then.
    Existing(Message),
    /// The sender is not a member (or there is no such conversation): nothing stored.
    NotMember,
}

/// A message to store with `insert_messages`.
pub struct NewMessage {
    pub cid: Uuid,
    pub sender: Uuid,
    pub body: String,
    pub client_msg_id: Option<String>,
    /// The trace of the request that sent it (the batch runs outside that request's span).
    pub traceparent: Option<String>,
}

impl NewMessage {
    /// The message as stored with this id and seq.
    fn stored(&self, id: Uuid, seq: i64, now: Timestamp) -> Message {
        Message {
            id,
            conversation_id: self.cid,
            seq,
            sender_id: self.sender,
            body: Some(self.body.clone()),
            client_msg_id: self.client_msg_id.clone(),
            created_at: now,
            edited_at: None,
            deleted_at: None,
        }
    }
}

/// Why a batch failed: before its commit nothing was stored and each message may be retried alone;
/// a failed commit leaves the outcome unknown (clients retry with their `client_msg_id`).
#[derive(Debug)]
pub enum BatchError {
    BeforeCommit(sqlx::Error),
    Commit(sqlx::Error),
}

/// The batch's one statement: members-only and not-yet-stored inputs get consecutive seqs per
/// conversation (in input order), are inserted, and move their sender's read position. The `locked`
/// CTE takes the conversation row locks in id order before the `UPDATE` needs them.
const GROUP_INSERT: &str = "\
WITH input AS (
    SELECT * FROM json_to_recordset($1::json)
        AS t(ord bigint, id text, cid text, sender text, body text, cmid text)
), ok AS (
    SELECT i.* FROM input i
    WHERE EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = i.cid AND m.user_id = i.sender)
      AND (i.cmid IS NULL OR NOT EXISTS (
          SELECT 1 FROM messages x
          WHERE x.conversation_id = i.cid AND x.sender_id = i.sender AND x.client_msg_id = i.cmid))
), counts AS (
    SELECT cid, count(*) AS n FROM ok GROUP BY cid
), locked AS (
    SELECT c.id FROM conversations c WHERE c.id IN (SELECT cid FROM counts) ORDER BY c.id FOR UPDATE
), bumped AS (
    UPDATE conversations c SET last_seq = c.last_seq + counts.n, last_activity = $2
    FROM counts WHERE c.id = counts.cid AND c.id IN (SELECT id FROM locked)
    RETURNING c.id, c.last_seq, counts.n
), numbered AS (
    SELECT ok.*, b.last_seq - b.n + row_number() OVER (PARTITION BY ok.cid ORDER BY ok.ord) AS seq
    FROM ok JOIN bumped b ON b.id = ok.cid
), inserted AS (
    INSERT INTO messages (id, conversation_id, seq, sender_id, body, client_msg_id, created_at)
    SELECT id, cid, seq, sender, body, cmid, $2 FROM numbered
), reads AS (
    UPDATE members m SET last_read_seq = r.seq
    FROM (SELECT cid, sender, max(seq) AS seq FROM numbered GROUP BY cid, sender) r
    WHERE m.conversation_id = r.cid AND m.user_id = r.sender AND m.last_read_seq < r.seq
)
SELECT ord, seq FROM numbered";

/// Which page of history.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    After(i64),
    Before(i64),
    Latest,
}

fn uuid_col(row: &AnyRow, col: &str) -> Result<Uuid, sqlx::Error> {
    let s: String = row.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

macro_rules! msg_cols {
    () => {
        "id, conversation_id, seq, sender_id, body, client_msg_id, created_at, edited_at, deleted_at"
    };
}

fn message_from(r: &AnyRow) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: uuid_col(r, "id")?,
        conversation_id: uuid_col(r, "conversation_id")?,
        seq: r.try_get("seq")?,
        sender_id: uuid_col(r, "sender_id")?,
        body: r.try_get("body")?,
        client_msg_id: r.try_get("client_msg_id")?,
        created_at: Timestamp(r.try_get("created_at")?),
        edited_at: r.try_get::<Option<i64>, _>("edited_at")?.map(Timestamp),
        deleted_at: r.try_get::<Option<i64>, _>("deleted_at")?.map(Timestamp),
    })
}

/// "<smaller uuid>:<larger uuid>" for a direct conversation: at most one per pair (unique index).
fn direct_key(kind: ConversationKind, members: &[(Uuid, Role)]) -> Option<String> {
    (kind == ConversationKind::Direct).then(|| {
        let (a, b) = (members[0].0.to_string(), members[1].0.to_string());
        if a < b { format!("{a}:{b}") } else { format!("{b}:{a}") }
    })
}

/// Inserts a conversation and its members; false when a direct conversation of the pair exists.
async fn insert_conversation(
    tx: &mut Transaction<'static, Any>,
    id: Uuid,
    kind: ConversationKind,
    title: Option<&str>,
    created_at: i64,
    direct_key: Option<&str>,
    members: &[(Uuid, Role)],
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO conversations (id, kind, title, created_at, last_seq, last_activity, direct_key) \
         VALUES ($1, $2, $3, $4, 0, $4, $5) ON CONFLICT (direct_key) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(kind.as_str())
    .bind(title)
    .bind(created_at)
    .bind(direct_key)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    for (uid, role) in members {
        sqlx::query("INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)")
            .bind(id.to_string())
            .bind(uid.to_string())
            .bind(role.as_str())
            .bind(created_at)
            .execute(&mut **tx)
            .await?;
    }
    Ok(true)
}

async fn insert_outbox(tx: &mut Transaction<'static, Any>, ev: &OutboxEvent) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (topic, payload, created_at) VALUES ($1, $2, $3)")
        .bind(&ev.topic)
        .bind(&ev.payload)
        .bind(Timestamp::now().0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The conversation as `viewer` sees it (None when not a member), on any connection or transaction.
async fn load_conversation(
    conn: &mut AnyConnection,
    cid: Uuid,
    viewer: Uuid,
) -> Result<Option<Conversation>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT c.id, c.kind, c.title, c.created_at, c.last_seq, m.last_read_seq \
         FROM conversations c JOIN members m ON m.conversation_id = c.id \
         WHERE c.id = $1 AND m.user_id = $2",
    )
    .bind(cid.to_string())
    .bind(viewer.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => Ok(Some(complete(conn, &r, viewer).await?)),
        None => Ok(None),
    }
}

/// Fills members, last message and unread count for a row of (id, kind, title, created_at,
/// last_seq, last_read_seq).
async fn complete(conn: &mut AnyConnection, r: &AnyRow, viewer: Uuid) -> Result<Conversation, sqlx::Error> {
    let id = uuid_col(r, "id")?;
    let last_seq: i64 = r.try_get("last_seq")?;
    let last_read_seq: i64 = r.try_get("last_read_seq")?;
    let kind: String = r.try_get("kind")?;
    let members = load_members(conn, id).await?;
    let last_message = if last_seq > 0 {
        sqlx::query(concat!("SELECT ", msg_cols!(), " FROM messages WHERE conversation_id = $1 AND seq = $2"))
            .bind(id.to_string())
            .bind(last_seq)
            .fetch_optional(&mut *conn)
            .await?
            .as_ref()
            .map(message_from)
            .transpose()?
    } else {
        None
    };
    let unread_count: i64 = if last_seq > last_read_seq {
        sqlx::query(
            "SELECT COUNT(*) AS n FROM messages WHERE conversation_id = $1 AND seq > $2 \
             AND sender_id <> $3 AND deleted_at IS NULL",
        )
        .bind(id.to_string())
        .bind(last_read_seq)
        .bind(viewer.to_string())
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?
    } else {
        0
    };
    Ok(Conversation {
        id,
        kind: ConversationKind::parse(&kind).unwrap_or(ConversationKind::Group),
        title: r.try_get("title")?,
        members,
        created_at: Timestamp(r.try_get("created_at")?),
        last_seq,
        last_message,
        unread_count,
        last_read_seq,
    })
}

async fn load_members(conn: &mut AnyConnection, cid: Uuid) -> Result<Vec<Member>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT user_id, role, joined_at FROM members WHERE conversation_id = $1 ORDER BY joined_at, user_id",
    )
    .bind(cid.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Member {
                user_id: uuid_col(r, "user_id")?,
                role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Member),
                joined_at: Timestamp(r.try_get("joined_at")?),
            })
        })
        .collect()
}

impl Store {
    pub fn new(db: Db) -> Self {
        Store { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    // --- conversations ---

    pub async fn role(&self, cid: Uuid, uid: Uuid) -> Result<Option<Role>, sqlx::Error> {
        let row = sqlx::query("SELECT role FROM members WHERE conversation_id = $1 AND user_id = $2")
            .bind(cid.to_string())
            .bind(uid.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.and_then(|r| r.try_get::<String, _>("role").ok()).and_then(|s| Role::parse(&s)))
    }

    /// The member's role and the conversation's kind in one query (permission checks).
    pub async fn membership(&self, cid: Uuid, uid: Uuid) -> Result<Option<(Role, ConversationKind)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT m.role, c.kind FROM members m JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.conversation_id = $1 AND m.user_id = $2",
        )
        .bind(cid.to_string())
        .bind(uid.to_string())
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.and_then(|r| {
            let role = Role::parse(&r.try_get::<String, _>("role").ok()?)?;
            let kind = ConversationKind::parse(&r.try_get::<String, _>("kind").ok()?)?;
            Some((role, kind))
        }))
    }

    /// The conversation as `viewer` sees it, or None when `viewer` is not a member.
    pub async fn conversation(&self, cid: Uuid, viewer: Uuid) -> Result<Option<Conversation>, sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        load_conversation(&mut conn, cid, viewer).await
    }

    pub async fn members(&self, cid: Uuid) -> Result<Vec<Member>, sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        load_members(&mut conn, cid).await
    }

    /// Creates a conversation with its members (first = creator) and its `created` event, atomically.
    /// For a direct conversation whose pair exists already, returns that one's id and `false`.
    pub async fn create_conversation(
        &self,
        kind: ConversationKind,
        title: Option<&str>,
        members: &[(Uuid, Role)],
    ) -> Result<(Uuid, bool), sqlx::Error> {
        let now = Timestamp::now();
        let id = Uuid::now_v7();
        let direct_key = direct_key(kind, members);
        let mut tx = self.db.pool.begin().await?;
        if !insert_conversation(&mut tx, id, kind, title, now.0, direct_key.as_deref(), members).await? {
            tx.rollback().await?;
            let row = sqlx::query("SELECT id FROM conversations WHERE direct_key = $1")
                .bind(direct_key.as_deref())
                .fetch_one(&self.db.pool)
                .await?;
            return Ok((uuid_col(&row, "id")?, false));
        }
        let conv = Conversation {
            id,
            kind,
            title: title.map(str::to_owned),
            members: members.iter().map(|(u, r)| Member { user_id: *u, role: *r, joined_at: now }).collect(),
            created_at: now,
            last_seq: 0,
            last_message: None,
            unread_count: 0,
            last_read_seq: 0,
        };
        let ev = events::conversation(chat_protocol::frames::ConversationChange::Created, &conv, None);
        insert_outbox(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok((id, true))
    }

    /// The viewer's conversations, most recent activity first, after the cursor (activity, id).
    pub async fn list(
        &self,
        viewer: Uuid,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<(Conversation, i64)>, sqlx::Error> {
        let (act, id) = after.unwrap_or((i64::MAX, String::new()));
        let unbounded = id.is_empty();
        let rows = sqlx::query(
            "SELECT c.id, c.kind, c.title, c.created_at, c.last_seq, c.last_activity, m.last_read_seq \
             FROM members m JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.user_id = $1 AND ($2 = 1 OR c.last_activity < $3 OR (c.last_activity = $3 AND c.id < $4)) \
             ORDER BY c.last_activity DESC, c.id DESC LIMIT $5",
        )
        .bind(viewer.to_string())
        .bind(i64::from(unbounded))
        .bind(act)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut conn = self.db.pool.acquire().await?;
        for r in &rows {
            out.push((complete(&mut conn, r, viewer).await?, r.try_get("last_activity")?));
        }
        Ok(out)
    }

    /// Every conversation of a user with its last seq and members (what an edge needs at connect).
    pub async fn user_conversations(&self, uid: Uuid) -> Result<Vec<Membership>, sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT c.id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.user_id = $1",
        )
        .bind(uid.to_string())
        .fetch_all(&mut *conn)
        .await?;
        let mut out: Vec<Membership> = rows
            .iter()
            .map(|r| Ok(Membership { id: uuid_col(r, "id")?, last_seq: r.try_get("last_seq")?, members: Vec::new() }))
            .collect::<Result<_, sqlx::Error>>()?;
        let index: std::collections::HashMap<Uuid, usize> = out.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        let rows = sqlx::query(
            "SELECT o.conversation_id, o.user_id FROM members m JOIN members o ON o.conversation_id = m.conversation_id \
             WHERE m.user_id = $1",
        )
        .bind(uid.to_string())
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            if let Some(i) = index.get(&uuid_col(r, "conversation_id")?) {
                out[*i].members.push(uuid_col(r, "user_id")?);
            }
        }
        Ok(out)
    }

    // --- messages ---

    pub async fn by_client_msg_id(
        &self,
        cid: Uuid,
        sender: Uuid,
        client_msg_id: &str,
    ) -> Result<Option<Message>, sqlx::Error> {
        find_by_client_msg_id(&self.db.pool, cid, sender, client_msg_id).await
    }

    /// Stores a message: seq allocation, insert, the sender's read position and the outbox event
    /// in one transaction. The first statement is the seq `UPDATE`, which takes the conversation's row
    /// lock (PostgreSQL) or the write lock (SQLite) before anything is read.
    #[tracing::instrument(name = "db.insert_message", skip_all, fields(conversation_id = %cid))]
    pub async fn insert_message(
        &self,
        cid: Uuid,
        sender: Uuid,
        body: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Sent, sqlx::Error> {
        if let Some(c) = client_msg_id
            && let Some(m) = self.by_client_msg_id(cid, sender, c).await?
        {
            return Ok(Sent::Existing(m));
        }
        let now = Timestamp::now();
        let mut tx = self.db.pool.begin().await?;
        let new = NewMessage {
            cid,
            sender,
            body: body.to_owned(),
            client_msg_id: client_msg_id.map(str::to_owned),
            traceparent: chat_telemetry::current_traceparent(),
        };
        match insert_in(&mut tx, &new, now).await {
            Ok(Some(m)) => {
                tx.commit().await?;
                Ok(Sent::Created(m))
            }
            Ok(None) => {
                tx.rollback().await?;
                Ok(Sent::NotMember)
            }
            Err(e) => {
                // A racing retry with the same client_msg_id committed first: give back the seq.
                tx.rollback().await?;
                if chat_db::is_unique_violation(&e)
                    && let Some(c) = client_msg_id
                    && let Some(m) = self.by_client_msg_id(cid, sender, c).await?
                {
                    return Ok(Sent::Existing(m));
                }
                Err(e)
            }
        }
    }

    /// Group commit on SQLite: a batch's sends in one transaction (one lock, one commit), each under
    /// a savepoint so that one send's failure undoes only that send. Same outcomes as
    /// `insert_message` for each; nothing is stored unless the commit succeeds.
    pub async fn insert_messages_each(
        &self,
        batch: &[&NewMessage],
    ) -> Result<Vec<Result<Sent, sqlx::Error>>, BatchError> {
        // Earlier sends of these client_msg_ids are looked up before the transaction: its first
        // statement must be a write, which takes SQLite's write lock before anything is read (a read
        // first would pin a snapshot, and the write would then fail with SQLITE_BUSY_SNAPSHOT).
        let mut earlier = Vec::with_capacity(batch.len());
        for n in batch {
            earlier.push(match n.client_msg_id.as_deref() {
                Some(c) => {
                    find_by_client_msg_id(&self.db.pool, n.cid, n.sender, c).await.map_err(BatchError::BeforeCommit)?
                }
                None => None,
            });
        }
        let now = Timestamp::now();
        let mut tx = self.db.pool.begin().await.map_err(BatchError::BeforeCommit)?;
        let mut out = Vec::with_capacity(batch.len());
        for (n, earlier) in batch.iter().zip(earlier) {
            out.push(match earlier {
                Some(m) => Ok(Sent::Existing(m)),
                None => insert_one_of_batch(&mut tx, n, now).await.map_err(BatchError::BeforeCommit)?,
            });
        }
        tx.commit().await.map_err(BatchError::Commit)?;
        Ok(out)
    }

    /// Group commit (PostgreSQL only): stores a batch of new messages in one transaction, in four
    /// round trips and one fsync however many there are. Returns, per input, the stored message, or
    /// None when nothing was stored for it (the sender is not a member, or its `client_msg_id` is
    /// already stored: the caller tells those apart with `by_client_msg_id`). Inputs must not repeat a
    /// (conversation, sender, client_msg_id). Conversation rows are locked in id order, so concurrent
    /// batches (other writers, other replicas) wait for each other instead of deadlocking.
    pub async fn insert_messages(&self, batch: &[&NewMessage]) -> Result<Vec<Option<Message>>, BatchError> {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            ord: usize,
            id: String,
            cid: String,
            sender: String,
            body: &'a str,
            cmid: Option<&'a str>,
        }
        let now = Timestamp::now();
        let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
        let input: Vec<Row<'_>> = batch
            .iter()
            .zip(&ids)
            .enumerate()
            .map(|(ord, (n, id))| Row {
                ord,
                id: id.to_string(),
                cid: n.cid.to_string(),
                sender: n.sender.to_string(),
                body: &n.body,
                cmid: n.client_msg_id.as_deref(),
            })
            .collect();
        let input =
            serde_json::to_string(&input).map_err(|e| BatchError::BeforeCommit(sqlx::Error::Encode(e.into())))?;
        let mut tx = self.db.pool.begin().await.map_err(BatchError::BeforeCommit)?;
        let rows = sqlx::query(GROUP_INSERT).bind(input).bind(now.0).fetch_all(&mut *tx).await;
        let rows = rows.map_err(BatchError::BeforeCommit)?;
        let mut out: Vec<Option<Message>> = batch.iter().map(|_| None).collect();
        for r in &rows {
            let ord = r.try_get::<i64, _>("ord").map_err(BatchError::BeforeCommit)? as usize;
            let seq: i64 = r.try_get("seq").map_err(BatchError::BeforeCommit)?;
            let (Some(n), Some(slot)) = (batch.get(ord), out.get_mut(ord)) else { continue };
            *slot = Some(n.stored(ids[ord], seq, now));
        }
        // The events, in input order: within a conversation that is seq order, so the outbox (and the
        // bus) carries them in seq order too.
        let events: Vec<OutboxEvent> = batch
            .iter()
            .zip(&out)
            .filter_map(|(n, m)| m.as_ref().map(|m| events::message_created(m, n.traceparent.clone())))
            .collect();
        if !events.is_empty() {
            let rows: Vec<serde_json::Value> = events
                .iter()
                .enumerate()
                .map(|(ord, e)| serde_json::json!({"ord": ord, "topic": e.topic, "payload": e.payload}))
                .collect();
            // Ids are taken in `ord` order: the relay publishes by id.
            sqlx::query(
                "INSERT INTO outbox (topic, payload, created_at) \
                 SELECT topic, payload, $2 FROM json_to_recordset($1::json) \
                 AS t(ord bigint, topic text, payload text) ORDER BY ord",
            )
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(now.0)
            .execute(&mut *tx)
            .await
            .map_err(BatchError::BeforeCommit)?;
        }
        tx.commit().await.map_err(BatchError::Commit)?;
        Ok(out)
    }

    /// A page of history, ascending, and whether more exist beyond it in the paging direction.
    pub async fn history(&self, cid: Uuid, page: Page, limit: i64) -> Result<(Vec<Message>, bool), sqlx::Error> {
        let fetch = limit + 1;
        let (sql, bound): (&'static str, Option<i64>) = match page {
            Page::After(s) => (
                concat!(
                    "SELECT ",
                    msg_cols!(),
                    " FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
                ),
                Some(s),
            ),
            Page::Before(s) => (
                concat!(
                    "SELECT ",
                    msg_cols!(),
                    " FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                ),
                Some(s),
            ),
            Page::Latest => (
                concat!("SELECT ", msg_cols!(), " FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2"),
                None,
            ),
        };
        let mut q = sqlx::query(sql).bind(cid.to_string());
        if let Some(b) = bound {
            q = q.bind(b);
        }
        let rows = q.bind(fetch).fetch_all(&self.db.pool).await?;
        let mut msgs: Vec<Message> = rows.iter().map(message_from).collect::<Result<_, _>>()?;
        let has_more = msgs.len() as i64 > limit;
        msgs.truncate(limit as usize);
        if !matches!(page, Page::After(_)) {
            msgs.reverse();
        }
        Ok((msgs, has_more))
    }

    /// Moves the reader's position forward (never back), clamped to last_seq. Returns the new
    /// position if it moved (and queues the `read` event).
    pub async fn mark_read(&self, cid: Uuid, uid: Uuid, seq: i64) -> Result<Option<i64>, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE members SET last_read_seq = \
               (SELECT CASE WHEN $1 < c.last_seq THEN $1 ELSE c.last_seq END FROM conversations c WHERE c.id = $2) \
             WHERE conversation_id = $2 AND user_id = $3 \
               AND last_read_seq < (SELECT CASE WHEN $1 < c.last_seq THEN $1 ELSE c.last_seq END FROM conversations c WHERE c.id = $2) \
             RETURNING last_read_seq",
        )
        .bind(seq)
        .bind(cid.to_string())
        .bind(uid.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let new: i64 = row.try_get("last_read_seq")?;
        insert_outbox(&mut tx, &events::read(cid, uid, new)).await?;
        tx.commit().await?;
        Ok(Some(new))
    }

    // --- conversation changes ---

    /// Applies one change to a conversation under its row lock, then queues the `conversation`
    /// event built from the state after the change, all in one transaction.
    pub async fn change(&self, cid: Uuid, op: Change) -> Result<Changed, sqlx::Error> {
        let now = Timestamp::now().0;
        let mut tx = self.db.pool.begin().await?;
        // First statement is a write: the row lock (PostgreSQL) or write lock (SQLite) comes first.
        let locked = sqlx::query("UPDATE conversations SET last_seq = last_seq WHERE id = $1")
            .bind(cid.to_string())
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Changed::NotMember);
        }
        let (change, removed) = match &op {
            Change::Title(t) => {
                sqlx::query("UPDATE conversations SET title = $1 WHERE id = $2")
                    .bind(t)
                    .bind(cid.to_string())
                    .execute(&mut *tx)
                    .await?;
                (ConversationChange::Updated, None)
            }
            Change::Add(uid, role, cap) => {
                let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM members WHERE conversation_id = $1")
                    .bind(cid.to_string())
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                if n as usize >= *cap {
                    tx.rollback().await?;
                    return Ok(Changed::TooMany);
                }
                // New members start with everything before their arrival read.
                let r = sqlx::query(
                    "INSERT INTO members (conversation_id, user_id, role, joined_at, last_read_seq) \
                     SELECT $1, $2, $3, $4, last_seq FROM conversations WHERE id = $1 \
                     ON CONFLICT (conversation_id, user_id) DO NOTHING",
                )
                .bind(cid.to_string())
                .bind(uid.to_string())
                .bind(role.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(Changed::Conflict);
                }
                (ConversationChange::MemberAdded, None)
            }
            Change::Role(uid, role) => {
                let r = sqlx::query("UPDATE members SET role = $1 WHERE conversation_id = $2 AND user_id = $3")
                    .bind(role.as_str())
                    .bind(cid.to_string())
                    .bind(uid.to_string())
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(Changed::NotMember);
                }
                (ConversationChange::Updated, None)
            }
            Change::Remove(uid) => {
                let row = sqlx::query("DELETE FROM members WHERE conversation_id = $1 AND user_id = $2 RETURNING role")
                    .bind(cid.to_string())
                    .bind(uid.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    tx.rollback().await?;
                    return Ok(Changed::NotMember);
                };
                if row.try_get::<String, _>("role")? == Role::Owner.as_str() {
                    // Succession: the longest-standing admin, else member (earliest joined_at, then user_id).
                    let heir = sqlx::query(
                        "SELECT user_id FROM members WHERE conversation_id = $1 \
                         ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1",
                    )
                    .bind(cid.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(h) = heir {
                        sqlx::query("UPDATE members SET role = 'owner' WHERE conversation_id = $1 AND user_id = $2")
                            .bind(cid.to_string())
                            .bind(h.try_get::<String, _>("user_id")?)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                (ConversationChange::MemberRemoved, Some(*uid))
            }
        };
        let row = sqlx::query(
            "SELECT id, kind, title, created_at, last_seq, last_seq AS last_read_seq FROM conversations WHERE id = $1",
        )
        .bind(cid.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let conv = complete(&mut tx, &row, Uuid::nil()).await?;
        insert_outbox(&mut tx, &events::conversation(change, &conv, removed)).await?;
        tx.commit().await?;
        Ok(Changed::Done)
    }

    // --- message edits ---

    pub async fn message(&self, cid: Uuid, mid: Uuid) -> Result<Option<Message>, sqlx::Error> {
        let row = sqlx::query(concat!("SELECT ", msg_cols!(), " FROM messages WHERE id = $1 AND conversation_id = $2"))
            .bind(mid.to_string())
            .bind(cid.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(message_from).transpose()
    }

    /// Edits (`Some(body)`) or tombstones (`None`) a live message and queues `message_updated`.
    /// Returns None when the message is already a tombstone.
    pub async fn update_message(
        &self,
        cid: Uuid,
        mid: Uuid,
        body: Option<&str>,
    ) -> Result<Option<Message>, sqlx::Error> {
        let now = Timestamp::now().0;
        let mut tx = self.db.pool.begin().await?;
        let sql = if body.is_some() {
            concat!(
                "UPDATE messages SET body = $1, edited_at = $2 WHERE id = $3 AND conversation_id = $4 ",
                "AND deleted_at IS NULL RETURNING ",
                msg_cols!()
            )
        } else {
            concat!(
                "UPDATE messages SET body = $1, deleted_at = $2 WHERE id = $3 AND conversation_id = $4 ",
                "AND deleted_at IS NULL RETURNING ",
                msg_cols!()
            )
        };
        let row = sqlx::query(sql)
            .bind(body)
            .bind(now)
            .bind(mid.to_string())
            .bind(cid.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let m = message_from(&row)?;
        insert_outbox(&mut tx, &events::message_updated(&m)).await?;
        tx.commit().await?;
        Ok(Some(m))
    }

    // --- outbox ---

    /// Publishes pending outbox rows in id order through `publish`, deleting what was published.
    /// On PostgreSQL a transaction-scoped advisory lock, keyed by the schema so that independent
    /// stores sharing a database do not wait on each other, lets only one replica relay at a time, which
    /// keeps the bus order equal to the commit order of seq allocation. Returns rows published, or
    /// None when another replica holds the lock.
    pub async fn relay_outbox<F, Fut>(&self, batch: i64, publish: F) -> Result<Option<usize>, RelayError>
    where
        F: Fn(Vec<(String, String)>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        const SELECT: &str = "SELECT id, topic, payload FROM outbox ORDER BY id LIMIT $1";
        match self.db.backend {
            Backend::Postgres => {
                let mut tx = self.db.pool.begin().await?;
                let locked: bool =
                    sqlx::query("SELECT pg_try_advisory_xact_lock(4242001, hashtext(current_schema())) AS l")
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("l")?;
                if !locked {
                    return Ok(None);
                }
                let rows = sqlx::query(SELECT).bind(batch).fetch_all(&mut *tx).await?;
                let (done, err) = publish_rows(&rows, &publish).await?;
                delete_published(&mut tx, &done).await?;
                tx.commit().await?;
                err.map_or(Ok(Some(rows.len())), |e| Err(RelayError::Publish(e)))
            }
            // One process owns a SQLite file, and its single relay task runs alone.
            Backend::Sqlite => {
                let rows = sqlx::query(SELECT).bind(batch).fetch_all(&self.db.pool).await?;
                let (done, err) = publish_rows(&rows, &publish).await?;
                let mut conn = self.db.pool.acquire().await?;
                delete_published(&mut conn, &done).await?;
                err.map_or(Ok(Some(rows.len())), |e| Err(RelayError::Publish(e)))
            }
        }
    }

    pub async fn outbox_depth(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT COUNT(*) AS n FROM outbox").fetch_one(&self.db.pool).await?.try_get("n")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publish: {0}")]
    Publish(String),
}

/// Publishes rows in order until one fails; returns the last published id and the failure.
/// Publishes the rows, in id order, as one batch; returns the ids published (all or none) and the failure.
async fn publish_rows<F, Fut>(rows: &[AnyRow], publish: &F) -> Result<(Vec<i64>, Option<String>), sqlx::Error>
where
    F: Fn(Vec<(String, String)>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    if rows.is_empty() {
        return Ok((Vec::new(), None));
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        ids.push(r.try_get::<i64, _>("id")?);
        items.push((r.try_get("topic")?, r.try_get("payload")?));
    }
    match publish(items).await {
        Ok(()) => Ok((ids, None)),
        Err(e) => Ok((Vec::new(), Some(e))),
    }
}

/// Deletes exactly the published rows. Never `id <= last`: on PostgreSQL a transaction that took a
/// lower id may commit between the relay's SELECT and DELETE, and a range would delete its row
/// unpublished (a lost event, found by the microservices benchmark).
async fn delete_published(conn: &mut AnyConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!("DELETE FROM outbox WHERE id IN ({})", list.join(", "));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    q.execute(conn).await?;
    Ok(())
}

/// The stored message of an earlier send with this `client_msg_id` (members only).
async fn find_by_client_msg_id<'e, E: sqlx::Executor<'e, Database = Any>>(
    ex: E,
    cid: Uuid,
    sender: Uuid,
    client_msg_id: &str,
) -> Result<Option<Message>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        msg_cols!(),
        " FROM messages WHERE conversation_id = $1 AND sender_id = $2 AND client_msg_id = $3 \
         AND EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2)"
    ))
    .bind(cid.to_string())
    .bind(sender.to_string())
    .bind(client_msg_id)
    .fetch_optional(ex)
    .await?;
    row.as_ref().map(message_from).transpose()
}

/// The statements of one send in `tx`: seq allocation (its membership check rides on it: one
/// statement instead of a separate query), insert, the sender's read position, the outbox event.
/// None: not a member. On an error the caller rolls back.
async fn insert_in(
    tx: &mut Transaction<'static, Any>,
    n: &NewMessage,
    now: Timestamp,
) -> Result<Option<Message>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE conversations SET last_seq = last_seq + 1, last_activity = $1 WHERE id = $2 \
         AND EXISTS (SELECT 1 FROM members WHERE conversation_id = $2 AND user_id = $3) RETURNING last_seq",
    )
    .bind(now.0)
    .bind(n.cid.to_string())
    .bind(n.sender.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let seq: i64 = row.try_get("last_seq")?;
    let m = n.stored(Uuid::now_v7(), seq, now);
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, seq, sender_id, body, client_msg_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(m.id.to_string())
    .bind(n.cid.to_string())
    .bind(seq)
    .bind(n.sender.to_string())
    .bind(&n.body)
    .bind(n.client_msg_id.as_deref())
    .bind(now.0)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE members SET last_read_seq = $1 WHERE conversation_id = $2 AND user_id = $3 AND last_read_seq < $1",
    )
    .bind(seq)
    .bind(n.cid.to_string())
    .bind(n.sender.to_string())
    .execute(&mut **tx)
    .await?;
    insert_outbox(tx, &events::message_created(&m, n.traceparent.clone())).await?;
    Ok(Some(m))
}

/// One send of a SQLite batch under its own savepoint. The outer error is the batch's (the
/// connection failed); the inner one is this send's alone.
async fn insert_one_of_batch(
    tx: &mut Transaction<'static, Any>,
    n: &NewMessage,
    now: Timestamp,
) -> Result<Result<Sent, sqlx::Error>, sqlx::Error> {
    sqlx::query("SAVEPOINT batch_send").execute(&mut **tx).await?;
    let r = insert_in(tx, n, now).await;
    if !matches!(r, Ok(Some(_))) {
        sqlx::query("ROLLBACK TO SAVEPOINT batch_send").execute(&mut **tx).await?;
    }
    sqlx::query("RELEASE SAVEPOINT batch_send").execute(&mut **tx).await?;
    Ok(match r {
        Ok(Some(m)) => Ok(Sent::Created(m)),
        Ok(None) => Ok(Sent::NotMember),
        // The same client_msg_id was stored meanwhile (a single send racing the batch): that message.
        Err(e) if chat_db::is_unique_violation(&e) => match n.client_msg_id.as_deref() {
            Some(c) => match find_by_client_msg_id(&mut **tx, n.cid, n.sender, c).await? {
                Some(m) => Ok(Sent::Existing(m)),
                None => Err(e),
            },
            None => Err(e),
        },
        Err(e) => Err(e),
    })
}

/// A conversation of the Django backend, ready to store (see `legacy`).
pub struct ImportConversation {
    pub legacy_id: i64,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub members: Vec<(Uuid, Role)>,
    pub created_at: i64,
}

/// A message of the Django backend, in the order it gets its seq.
pub struct ImportMessage {
    pub legacy_id: i64,
    pub sender: Uuid,
    pub body: String,
    pub created_at: i64,
}

// Imported history: written directly, without outbox events (nobody is live in the past).
impl Store {
    /// Every imported conversation: old integer id → new id.
    pub async fn legacy_conversation_map(&self) -> Result<std::collections::HashMap<i64, Uuid>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT legacy_id, conversation_id FROM legacy_conversations").fetch_all(&self.db.pool).await?;
        rows.iter().map(|r| Ok((r.try_get::<i64, _>("legacy_id")?, uuid_col(r, "conversation_id")?))).collect()
    }

    pub async fn legacy_conversation(&self, legacy_id: i64) -> Result<Option<Uuid>, sqlx::Error> {
        let row = sqlx::query("SELECT conversation_id FROM legacy_conversations WHERE legacy_id = $1")
            .bind(legacy_id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| uuid_col(&r, "conversation_id")).transpose()
    }

    /// Stores an imported conversation and its old id. A direct conversation whose pair already has
    /// one (two old conversations of the same two people) maps onto it: returns (id, false).
    pub async fn import_conversation(&self, c: &ImportConversation) -> Result<(Uuid, bool), sqlx::Error> {
        let id = Uuid::now_v7();
        let direct_key = direct_key(c.kind, &c.members);
        let mut tx = self.db.pool.begin().await?;
        let title = c.title.as_deref();
        let (cid, created) = if insert_conversation(
            &mut tx,
            id,
            c.kind,
            title,
            c.created_at,
            direct_key.as_deref(),
            &c.members,
        )
        .await?
        {
            (id, true)
        } else {
            let row = sqlx::query("SELECT id FROM conversations WHERE direct_key = $1")
                .bind(direct_key.as_deref())
                .fetch_one(&mut *tx)
                .await?;
            (uuid_col(&row, "id")?, false)
        };
        sqlx::query("INSERT INTO legacy_conversations (legacy_id, conversation_id) VALUES ($1, $2)")
            .bind(c.legacy_id)
            .bind(cid.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((cid, created))
    }

    /// Old ids of the messages already imported into `cid`.
    pub async fn imported_messages(&self, cid: Uuid) -> Result<std::collections::HashSet<i64>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT l.legacy_id FROM legacy_messages l JOIN messages m ON m.id = l.message_id \
             WHERE m.conversation_id = $1",
        )
        .bind(cid.to_string())
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| r.try_get::<i64, _>("legacy_id")).collect()
    }

    /// Appends a batch of imported messages with the next seqs, in one transaction, and marks the
    /// conversation read up to them for its members (the old backend kept no read state).
    pub async fn import_messages(&self, cid: Uuid, batch: &[ImportMessage]) -> Result<(), sqlx::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let newest = batch.iter().map(|m| m.created_at).max().unwrap_or(0);
        let mut tx = self.db.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE conversations SET last_seq = last_seq + $1, \
             last_activity = CASE WHEN last_activity > $2 THEN last_activity ELSE $2 END \
             WHERE id = $3 RETURNING last_seq",
        )
        .bind(batch.len() as i64)
        .bind(newest)
        .bind(cid.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let last: i64 = row.try_get("last_seq")?;
        let first = last - batch.len() as i64 + 1;
        for (i, m) in batch.iter().enumerate() {
            let ms = m.created_at.max(0) as u64;
            let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
            let mid = Uuid::new_v7(ts);
            sqlx::query(
                "INSERT INTO messages (id, conversation_id, seq, sender_id, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(mid.to_string())
            .bind(cid.to_string())
            .bind(first + i as i64)
            .bind(m.sender.to_string())
            .bind(&m.body)
            .bind(m.created_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO legacy_messages (legacy_id, message_id) VALUES ($1, $2)")
                .bind(m.legacy_id)
                .bind(mid.to_string())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE members SET last_read_seq = $1 WHERE conversation_id = $2")
            .bind(last)
            .bind(cid.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

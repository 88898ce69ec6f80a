//! `chat import-django <database url>`: users, conversations and messages of the Django Channels
//! backend (PostgreSQL or SQLite), imported idempotently and resumably, with progress and a report.
//! The old → new id mapping stays in the `legacy_*` tables (used again by `/ws/chat/...`).

use chat_auth::legacy::{DjangoUser, Imported};
use chat_db::DbConfig;
use chat_message_store::store::{ImportConversation, ImportMessage};
use chat_protocol::{ConversationKind, Role, Timestamp};
use sqlx::Row;
use sqlx::any::AnyPoolOptions;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// `chat import-django`: its arguments.
pub fn command() -> clap::Command {
    clap::Command::new("import-django")
        .about("Import users, conversations and messages from the Django Channels backend's database")
        .arg(
            clap::Arg::new("source")
                .required(true)
                .value_name("DATABASE_URL")
                .help("postgres://… or sqlite://… of the Django backend"),
        )
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const BATCH: usize = 500;

#[derive(Default, Debug)]
pub struct Report {
    pub users_imported: u64,
    pub users_renamed: Vec<(String, String)>,
    pub users_existing: u64,
    pub conversations_direct: u64,
    pub conversations_group: u64,
    pub conversations_merged: u64,
    pub conversations_existing: u64,
    pub messages_imported: u64,
    pub messages_existing: u64,
    pub messages_orphaned: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "import report")?;
        writeln!(
            f,
            "  users:         {} imported ({} renamed), {} already imported",
            self.users_imported,
            self.users_renamed.len(),
            self.users_existing
        )?;
        for (old, new) in &self.users_renamed {
            writeln!(f, "    renamed {old:?} -> {new:?}")?;
        }
        writeln!(
            f,
            "  conversations: {} direct, {} group, {} merged into an existing direct one, {} already imported",
            self.conversations_direct, self.conversations_group, self.conversations_merged, self.conversations_existing
        )?;
        write!(
            f,
            "  messages:      {} imported, {} already imported, {} skipped (sender or conversation not imported)",
            self.messages_imported, self.messages_existing, self.messages_orphaned
        )
    }
}

/// A one-line progress bar on stderr, redrawn at most ten times a second.
struct Progress {
    label: &'static str,
    total: u64,
    done: u64,
    drawn: Instant,
}

impl Progress {
    fn new(label: &'static str, total: u64) -> Self {
        let p = Progress { label, total, done: 0, drawn: Instant::now() - Duration::from_secs(1) };
        p.draw();
        p
    }
    fn add(&mut self, n: u64) {
        self.done += n;
        if self.drawn.elapsed() >= Duration::from_millis(100) {
            self.draw();
            self.drawn = Instant::now();
        }
    }
    fn draw(&self) {
        let width = 30;
        let filled = if self.total == 0 { width } else { (self.done * width / self.total.max(1)).min(width) } as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{:<14} [{}{}] {}/{}",
            self.label,
            "#".repeat(filled),
            ".".repeat(width as usize - filled),
            self.done,
            self.total
        );
        let _ = err.flush();
    }
    fn finish(self) {
        self.draw();
        eprintln!();
    }
}

/// Django keeps `timestamp with time zone` (PostgreSQL, read as text: `2024-05-01 10:00:00.123456+00`)
/// or naive UTC text (SQLite: `2024-05-01 10:00:00.123456`). Returns milliseconds since the epoch.
pub fn parse_django_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = (s.get(..10)?, s.get(10..)?);
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let rest = rest.strip_prefix([' ', 'T']).unwrap_or(rest);
    let (time, tz) = match rest.find(['+', '-', 'Z']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (hh, mm, ss): (i64, i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let millis: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let offset_min = match tz {
        "" | "Z" => 0,
        _ => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let digits: String = tz[1..].chars().filter(|c| c.is_ascii_digit()).collect();
            let (h, m) = (digits.get(..2)?.parse::<i64>().ok()?, digits.get(2..4).unwrap_or("0").parse::<i64>().ok()?);
            sign * (h * 60 + m)
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss - offset_min * 60) * 1000) + millis)
}

fn time_or_now(s: Option<String>) -> i64 {
    s.as_deref().and_then(parse_django_time).unwrap_or_else(|| Timestamp::now().0)
}

pub async fn run(source: &str, auth_db: &DbConfig, store_db: &DbConfig) -> Result<Report, BoxError> {
    sqlx::any::install_default_drivers();
    let src = AnyPoolOptions::new().max_connections(2).connect(source).await?;
    let auth = chat_auth::open_store(auth_db).await?;
    let store = chat_message_store::open_store(store_db).await?;
    let mut report = Report::default();

    // Users, in id order, a page at a time.
    let total: i64 =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM auth_user").fetch_one(&src).await?.try_get("n")?;
    let mut users = auth.legacy_user_map().await?;
    let mut names: HashMap<i64, String> = HashMap::new();
    let mut bar = Progress::new("users", total as u64);
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT CAST(id AS BIGINT) AS id, username, password, first_name, last_name, \
             CAST(date_joined AS TEXT) AS date_joined, \
             CAST(CASE WHEN is_active THEN 1 ELSE 0 END AS BIGINT) AS active \
             FROM auth_user WHERE id > $1 ORDER BY id LIMIT 1000",
        )
        .bind(after)
        .fetch_all(&src)
        .await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let u = DjangoUser {
                id: r.try_get("id")?,
                username: r.try_get("username")?,
                password: r.try_get("password")?,
                first_name: r.try_get::<Option<String>, _>("first_name")?.unwrap_or_default(),
                last_name: r.try_get::<Option<String>, _>("last_name")?.unwrap_or_default(),
                date_joined: Timestamp(time_or_now(r.try_get("date_joined")?)),
                is_active: r.try_get::<i64, _>("active")? != 0,
            };
            after = u.id;
            match chat_auth::legacy::import_user(&auth, &users, &u).await? {
                Imported::New { id, username, renamed } => {
                    report.users_imported += 1;
                    if renamed {
                        report.users_renamed.push((u.username.clone(), username.clone()));
                    }
                    users.insert(u.id, id);
                    names.insert(u.id, username);
                }
                Imported::Existing(_) => {
                    report.users_existing += 1;
                    names.insert(u.id, u.username.to_ascii_lowercase());
                }
            }
            bar.add(1);
        }
    }
    bar.finish();

    // Conversations: two participants make a direct conversation, any other number a group.
    let mut participants: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in
        sqlx::query("SELECT CAST(id AS BIGINT) AS id FROM chatapp_conversation ORDER BY id").fetch_all(&src).await?
    {
        participants.insert(r.try_get("id")?, Vec::new());
    }
    for r in sqlx::query(
        "SELECT CAST(conversation_id AS BIGINT) AS c, CAST(user_id AS BIGINT) AS u \
         FROM chatapp_conversation_participants ORDER BY conversation_id, user_id",
    )
    .fetch_all(&src)
    .await?
    {
        participants.entry(r.try_get("c")?).or_default().push(r.try_get("u")?);
    }
    let mut first_message: HashMap<i64, i64> = HashMap::new();
    for r in sqlx::query(
        "SELECT CAST(conversation_id AS BIGINT) AS c, CAST(MIN(timestamp) AS TEXT) AS t \
         FROM chatapp_message GROUP BY conversation_id",
    )
    .fetch_all(&src)
    .await?
    {
        first_message.insert(r.try_get("c")?, time_or_now(r.try_get("t")?));
    }
    let mut convs = store.legacy_conversation_map().await?;
    let mut bar = Progress::new("conversations", participants.len() as u64);
    for (old, people) in &participants {
        bar.add(1);
        if convs.contains_key(old) {
            report.conversations_existing += 1;
            continue;
        }
        let members: Vec<Uuid> = people.iter().filter_map(|p| users.get(p).copied()).collect();
        let kind = if members.len() == 2 { ConversationKind::Direct } else { ConversationKind::Group };
        let title = (kind == ConversationKind::Group).then(|| {
            let list: Vec<&str> = people.iter().filter_map(|p| names.get(p).map(String::as_str)).collect();
            let t = if list.is_empty() { format!("Conversation {old}") } else { list.join(", ") };
            t.chars().take(128).collect::<String>()
        });
        // Django's many-to-many has no roles: the earliest account owns a group.
        let members = members
            .iter()
            .enumerate()
            .map(|(i, u)| (*u, if i == 0 && kind == ConversationKind::Group { Role::Owner } else { Role::Member }))
            .collect();
        let c = ImportConversation {
            legacy_id: *old,
            kind,
            title,
            members,
            created_at: first_message.get(old).copied().unwrap_or_else(|| Timestamp::now().0),
        };
        let (cid, created) = store.import_conversation(&c).await?;
        match (created, kind) {
            (false, _) => report.conversations_merged += 1,
            (true, ConversationKind::Direct) => report.conversations_direct += 1,
            (true, ConversationKind::Group) => report.conversations_group += 1,
        }
        convs.insert(*old, cid);
    }
    bar.finish();

    // Messages, per new conversation, in (timestamp, id) order across every old conversation mapped
    // onto it. Only the ones not imported before get seqs, after those that were (resumable).
    let total: i64 =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM chatapp_message").fetch_one(&src).await?.try_get("n")?;
    let mut by_new: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
    for (old, new) in &convs {
        if participants.contains_key(old) {
            by_new.entry(*new).or_default().push(*old);
        }
    }
    let mut bar = Progress::new("messages", total as u64);
    for (cid, olds) in &by_new {
        let done = store.imported_messages(*cid).await?;
        let placeholders: Vec<String> = (1..=olds.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT CAST(id AS BIGINT) AS id, CAST(sender_id AS BIGINT) AS s, content, CAST(timestamp AS TEXT) AS t \
             FROM chatapp_message WHERE conversation_id IN ({}) ORDER BY timestamp, id",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for o in olds {
            q = q.bind(*o);
        }
        let rows = q.fetch_all(&src).await?;
        let mut batch = Vec::with_capacity(BATCH);
        for r in &rows {
            bar.add(1);
            let legacy_id: i64 = r.try_get("id")?;
            if done.contains(&legacy_id) {
                report.messages_existing += 1;
                continue;
            }
            let Some(sender) = users.get(&r.try_get::<i64, _>("s")?).copied() else {
                continue;
            };
            let content: Option<String> = r.try_get("content")?;
            batch.push(ImportMessage {
                legacy_id,
                sender,
                body: content.unwrap_or_default().replace('\0', "\u{fffd}"),
                created_at: time_or_now(r.try_get("t")?),
            });
            if batch.len() == BATCH {
                store.import_messages(*cid, &batch).await?;
                report.messages_imported += batch.len() as u64;
                batch.clear();
            }
        }
        store.import_messages(*cid, &batch).await?;
        report.messages_imported += batch.len() as u64;
    }
    // Whatever was neither imported nor there before: unknown senders, conversations not imported.
    report.messages_orphaned = (total as u64).saturating_sub(report.messages_imported + report.messages_existing);
    bar.finish();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::parse_django_time;

    #[test]
    fn django_times() {
        assert_eq!(parse_django_time("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_django_time("2024-05-01 10:00:00.123456+00"), Some(1_714_557_600_123));
        assert_eq!(parse_django_time("2024-05-01T12:00:00.5+02:00"), Some(1_714_557_600_500));
        assert_eq!(parse_django_time("2024-05-01 10:00:00Z"), Some(1_714_557_600_000));
        assert_eq!(parse_django_time("2024-02-29 00:00:00"), Some(1_709_164_800_000));
        assert_eq!(parse_django_time("not a time"), None);
        assert_eq!(parse_django_time("2024-13-01 00:00:00"), None);
    }
}

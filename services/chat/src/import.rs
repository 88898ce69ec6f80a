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
        .arg(
            clap::Arg::new("dry-run")
                .long("dry-run")
                .action(clap::ArgAction::SetTrue)
                .help("read and check every row, report what an import into empty databases would do; write nothing"),
        )
        .arg(
            clap::Arg::new("json")
                .long("json")
                .action(clap::ArgAction::SetTrue)
                .help("print the report as JSON (stdout) instead of text"),
        )
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const BATCH: usize = 500;
/// Messages read from the source per query: history is streamed, never a whole conversation at once.
const PAGE: i64 = 1000;
/// Rows listed by id in the report when they cannot be read (all are counted).
const LISTED: usize = 100;

#[derive(Default, Debug, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
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
    /// Rows with a value that cannot be read (a timestamp that is not one): counted, the first
    /// `LISTED` listed. Such messages are skipped (their place in the history is unknown); such users
    /// are imported with the import's time as their join date, and listed here.
    pub unparseable_count: u64,
    pub unparseable: Vec<Unparseable>,
}

#[derive(Debug, serde::Serialize)]
pub struct Unparseable {
    pub table: &'static str,
    pub id: i64,
    pub column: &'static str,
    pub value: String,
}

impl Report {
    fn unparseable(&mut self, table: &'static str, id: i64, column: &'static str, value: Option<String>) {
        self.unparseable_count += 1;
        if self.unparseable.len() < LISTED {
            self.unparseable.push(Unparseable { table, id, column, value: value.unwrap_or_else(|| "NULL".into()) });
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (verb, done) =
            if self.dry_run { ("would be imported", "dry run: nothing written") } else { ("imported", "") };
        writeln!(f, "import report{}", if done.is_empty() { String::new() } else { format!(" ({done})") })?;
        writeln!(
            f,
            "  users:         {} {verb} ({} renamed), {} already imported",
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
            "  messages:      {} {verb}, {} already imported, {} skipped (sender or conversation not imported)",
            self.messages_imported, self.messages_existing, self.messages_orphaned
        )?;
        if self.unparseable_count > 0 {
            write!(
                f,
                "\n  unparseable:   {} rows (messages skipped; users imported with the import time as join date)",
                self.unparseable_count
            )?;
            for u in &self.unparseable {
                write!(f, "\n    {} id {}: {} = {:?}", u.table, u.id, u.column, u.value)?;
            }
            if self.unparseable.len() < self.unparseable_count as usize {
                write!(f, "\n    … and {} more", self.unparseable_count as usize - self.unparseable.len())?;
            }
        }
        Ok(())
    }
}

/// Progress on stderr: on a terminal a bar redrawn at most ten times a second; otherwise (a log, a
/// pipe, CI) a plain line every 5 s. Both with the rate and the time left.
struct Progress {
    label: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    drawn: Instant,
    tty: bool,
}

impl Progress {
    fn new(label: &'static str, total: u64) -> Self {
        use std::io::IsTerminal;
        let now = Instant::now();
        let p = Progress { label, total, done: 0, started: now, drawn: now, tty: std::io::stderr().is_terminal() };
        p.draw();
        p
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        let every = if self.tty { Duration::from_millis(100) } else { Duration::from_secs(5) };
        if self.drawn.elapsed() >= every {
            self.draw();
            self.drawn = Instant::now();
        }
    }

    /// `1234/s, 0:42 left` (or nothing before there is a rate).
    fn pace(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        if self.done == 0 || secs < 0.05 {
            return String::new();
        }
        let rate = self.done as f64 / secs;
        let left = (self.total.saturating_sub(self.done) as f64 / rate).round() as u64;
        format!(", {rate:.0}/s, {}:{:02} left", left / 60, left % 60)
    }

    fn draw(&self) {
        let mut err = std::io::stderr().lock();
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100).min(100);
        if self.tty {
            let width = 30u64;
            let filled = (pct * width / 100) as usize;
            let _ = write!(
                err,
                "\r{:<14} [{}{}] {}/{} {pct}%{}\x1b[K",
                self.label,
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                self.done,
                self.total,
                self.pace()
            );
        } else {
            let _ = writeln!(err, "{}: {}/{} ({pct}%){}", self.label, self.done, self.total, self.pace());
        }
        let _ = err.flush();
    }

    fn finish(self) {
        let secs = self.started.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = writeln!(err, "{}: {} done in {secs:.1} s", self.label, self.done);
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

/// Where the import writes and what it is asked to do.
pub struct Options {
    pub dry_run: bool,
}

pub async fn run(source: &str, auth_db: &DbConfig, store_db: &DbConfig, opts: &Options) -> Result<Report, BoxError> {
    sqlx::any::install_default_drivers();
    let src = AnyPoolOptions::new().max_connections(2).connect(source).await?;
    let postgres = source.starts_with("postgres");
    // A dry run opens no target (opening one migrates it): it reports against empty databases.
    let (auth, store) = if opts.dry_run {
        (None, None)
    } else {
        (Some(chat_auth::open_store(auth_db).await?), Some(chat_message_store::open_store(store_db).await?))
    };
    let mut report = Report { dry_run: opts.dry_run, ..Report::default() };

    // Users, in id order, a page at a time.
    let total: i64 =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM auth_user").fetch_one(&src).await?.try_get("n")?;
    let mut users = match &auth {
        Some(a) => a.legacy_user_map().await?,
        None => HashMap::new(),
    };
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
            let id: i64 = r.try_get("id")?;
            let joined: Option<String> = r.try_get("date_joined")?;
            let date_joined = match joined.as_deref().and_then(parse_django_time) {
                Some(t) => t,
                None => {
                    report.unparseable("auth_user", id, "date_joined", joined);
                    Timestamp::now().0
                }
            };
            let u = DjangoUser {
                id,
                username: r.try_get("username")?,
                password: r.try_get("password")?,
                first_name: r.try_get::<Option<String>, _>("first_name")?.unwrap_or_default(),
                last_name: r.try_get::<Option<String>, _>("last_name")?.unwrap_or_default(),
                date_joined: Timestamp(date_joined),
                is_active: r.try_get::<i64, _>("active")? != 0,
            };
            after = u.id;
            let imported = match &auth {
                Some(a) => chat_auth::legacy::import_user(a, &users, &u).await?,
                None if users.contains_key(&u.id) => Imported::Existing(users[&u.id]),
                None => Imported::New { id: Uuid::nil(), username: u.username.to_ascii_lowercase(), renamed: false },
            };
            match imported {
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
        let t: Option<String> = r.try_get("t")?;
        if let Some(t) = t.as_deref().and_then(parse_django_time) {
            first_message.insert(r.try_get("c")?, t);
        }
    }
    let mut convs = match &store {
        Some(st) => st.legacy_conversation_map().await?,
        None => HashMap::new(),
    };
    // Dry run: the direct conversations a pair already has (merged, as the store would).
    let mut pairs: HashMap<(Uuid, Uuid), Uuid> = HashMap::new();
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
        let member_roles = members
            .iter()
            .enumerate()
            .map(|(i, u)| (*u, if i == 0 && kind == ConversationKind::Group { Role::Owner } else { Role::Member }))
            .collect();
        let c = ImportConversation {
            legacy_id: *old,
            kind,
            title,
            members: member_roles,
            created_at: first_message.get(old).copied().unwrap_or_else(|| Timestamp::now().0),
        };
        let (cid, created) = match &store {
            Some(st) => st.import_conversation(&c).await?,
            None if kind == ConversationKind::Direct => {
                // Users new in a dry run share the nil id: tell pairs apart by their old ids.
                let key =
                    |p: i64| users.get(&p).filter(|u| !u.is_nil()).copied().unwrap_or(Uuid::from_u64_pair(0, p as u64));
                let (a, b) = (key(people[0]), key(people[1]));
                let pair = if a < b { (a, b) } else { (b, a) };
                match pairs.get(&pair) {
                    Some(cid) => (*cid, false),
                    None => {
                        let cid = Uuid::from_u64_pair(1, *old as u64);
                        pairs.insert(pair, cid);
                        (cid, true)
                    }
                }
            }
            None => (Uuid::from_u64_pair(1, *old as u64), true),
        };
        match (created, kind) {
            (false, _) => report.conversations_merged += 1,
            (true, ConversationKind::Direct) => report.conversations_direct += 1,
            (true, ConversationKind::Group) => report.conversations_group += 1,
        }
        convs.insert(*old, cid);
    }
    bar.finish();

    // Messages, per new conversation, in (timestamp, id) order across every old conversation mapped
    // onto it, read a page at a time. Only the ones not imported before get seqs, after those that
    // were (resumable).
    let total: i64 =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM chatapp_message").fetch_one(&src).await?.try_get("n")?;
    let mut by_new: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
    for (old, new) in &convs {
        if participants.contains_key(old) {
            by_new.entry(*new).or_default().push(*old);
        }
    }
    // The cursor's timestamp is compared as the column's own type (PostgreSQL does not compare a
    // timestamp with text); SQLite keeps Django's fixed-width text, which sorts as time.
    let after_ts = if postgres { "CAST($2 AS timestamp with time zone)" } else { "$2" };
    let mut bar = Progress::new("messages", total as u64);
    for (cid, olds) in &by_new {
        let done = match &store {
            Some(st) => st.imported_messages(*cid).await?,
            None => Default::default(),
        };
        let placeholders: Vec<String> = (0..olds.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "SELECT CAST(id AS BIGINT) AS id, CAST(sender_id AS BIGINT) AS s, content, CAST(timestamp AS TEXT) AS t \
             FROM chatapp_message WHERE conversation_id IN ({}) \
             AND ($1 = 0 OR timestamp > {after_ts} OR (timestamp = {after_ts} AND id > $3)) \
             ORDER BY timestamp, id LIMIT {PAGE}",
            placeholders.join(", ")
        );
        let mut cursor: Option<(String, i64)> = None;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let (ts, last) = cursor.clone().unwrap_or_else(|| ("1970-01-01 00:00:00".to_string(), 0));
            let mut q =
                sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(cursor.is_some() as i64).bind(ts).bind(last);
            for o in olds {
                q = q.bind(*o);
            }
            let rows = q.fetch_all(&src).await?;
            for r in &rows {
                bar.add(1);
                let legacy_id: i64 = r.try_get("id")?;
                let raw_time: Option<String> = r.try_get("t")?;
                if let Some(t) = &raw_time {
                    cursor = Some((t.clone(), legacy_id));
                }
                if done.contains(&legacy_id) {
                    report.messages_existing += 1;
                    continue;
                }
                let Some(sender) = users.get(&r.try_get::<i64, _>("s")?).copied() else {
                    continue;
                };
                let Some(created_at) = raw_time.as_deref().and_then(parse_django_time) else {
                    report.unparseable("chatapp_message", legacy_id, "timestamp", raw_time);
                    continue;
                };
                let content: Option<String> = r.try_get("content")?;
                batch.push(ImportMessage {
                    legacy_id,
                    sender,
                    body: content.unwrap_or_default().replace('\0', "\u{fffd}"),
                    created_at,
                });
                if batch.len() == BATCH {
                    if let Some(st) = &store {
                        st.import_messages(*cid, &batch).await?;
                    }
                    report.messages_imported += batch.len() as u64;
                    batch.clear();
                }
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        if let Some(st) = &store {
            st.import_messages(*cid, &batch).await?;
        }
        report.messages_imported += batch.len() as u64;
    }
    // Whatever was neither imported nor there before nor unreadable: unknown senders, conversations
    // not imported.
    let unreadable = report.unparseable.iter().filter(|u| u.table == "chatapp_message").count() as u64;
    report.messages_orphaned =
        (total as u64).saturating_sub(report.messages_imported + report.messages_existing + unreadable);
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

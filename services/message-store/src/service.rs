//! The message-store's rules, independent of HTTP: used by the public routes, the internal routes
//! and, in the all-in-one binary, directly by ws-edge.

use crate::AppState;
use crate::store::{Page, Sent};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_common::{ApiError, ApiResult, validate};
use chat_protocol::{Conversation, ConversationKind, ConversationPage, Message, MessagePage, Role};
use serde::Deserialize;
use uuid::Uuid;

pub const MAX_MEMBERS: usize = 1000;

fn db(e: sqlx::Error) -> ApiError {
    crate::Error::from(e).into()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewConversation {
    /// `direct` (one other member) or `group`.
    #[schema(pattern = "^(direct|group)$")]
    pub kind: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub members: Vec<Uuid>,
}

/// Creates a conversation; `false` means an existing direct conversation was returned.
pub async fn create(s: &AppState, caller: Uuid, req: NewConversation) -> ApiResult<(Conversation, bool)> {
    let kind = ConversationKind::parse(&req.kind)
        .ok_or_else(|| ApiError::validation("`kind` must be \"direct\" or \"group\""))?;
    s.creations.take(caller).map_err(ApiError::rate_limited)?;
    let others = distinct_others(caller, req.members)?;
    let (title, members) = match kind {
        ConversationKind::Direct => {
            if others.len() != 1 {
                return Err(ApiError::validation("a direct conversation has exactly one other member"));
            }
            (None, vec![(caller, Role::Member), (others[0], Role::Member)])
        }
        ConversationKind::Group => {
            let title = req.title.ok_or_else(|| ApiError::validation("a group needs a `title`"))?;
            validate::text("title", &title, 1, 128)?;
            let mut m = vec![(caller, Role::Owner)];
            m.extend(others.iter().map(|u| (*u, Role::Member)));
            (Some(title), m)
        }
    };
    if !others.is_empty() {
        let found = s.directory.existing(&others).await.map_err(ApiError::unavailable)?;
        if let Some(missing) = others.iter().find(|u| !found.contains(u)) {
            return Err(ApiError::validation(format!("unknown user {missing}")));
        }
    }
    let (id, created) = s.store.create_conversation(kind, title.as_deref(), &members).await.map_err(db)?;
    if created {
        s.outbox.notify();
    }
    let conv = s.store.conversation(id, caller).await.map_err(db)?.ok_or_else(ApiError::not_found)?;
    Ok((conv, created))
}

/// The members named besides the caller, each once, in the order given: linear in the list's length,
/// and the cap is checked as the list is walked (a 26,000-id body costs microseconds, not seconds).
pub fn distinct_others(caller: Uuid, members: Vec<Uuid>) -> ApiResult<Vec<Uuid>> {
    let mut seen = std::collections::HashSet::with_capacity(members.len().min(MAX_MEMBERS + 1));
    let mut others = Vec::with_capacity(members.len().min(MAX_MEMBERS));
    for m in members {
        if m != caller && seen.insert(m) {
            if others.len() + 1 >= MAX_MEMBERS {
                return Err(ApiError::validation(format!("a group has at most {MAX_MEMBERS} members")));
            }
            others.push(m);
        }
    }
    Ok(others)
}

/// The conversation if `caller` is a member; 404 otherwise (no existence leak).
pub async fn get(s: &AppState, caller: Uuid, cid: Uuid) -> ApiResult<Conversation> {
    s.store.conversation(cid, caller).await.map_err(db)?.ok_or_else(ApiError::not_found)
}

pub async fn list(s: &AppState, caller: Uuid, limit: i64, cursor: Option<&str>) -> ApiResult<ConversationPage> {
    let after = cursor.map(decode_cursor).transpose()?;
    let mut rows = s.store.list(caller, after, limit + 1).await.map_err(db)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor =
        if more { rows.last().map(|(c, act)| URL_SAFE_NO_PAD.encode(format!("{act}:{}", c.id))) } else { None };
    Ok(ConversationPage { conversations: rows.into_iter().map(|(c, _)| c).collect(), next_cursor })
}

pub fn decode_cursor(c: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::validation("undecodable `cursor`");
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (act, id) = raw.split_once(':').ok_or_else(bad)?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((act.parse().map_err(|_| bad())?, id.to_string()))
}

async fn require_member(s: &AppState, caller: Uuid, cid: Uuid) -> ApiResult<Role> {
    s.store.role(cid, caller).await.map_err(db)?.ok_or_else(ApiError::not_found)
}

/// The rules of a new message that need no database.
pub fn check_new_message(body: &str, client_msg_id: Option<&str>) -> ApiResult<()> {
    validate::text("body", body, 1, 4000)?;
    if let Some(c) = client_msg_id {
        validate::text("client_msg_id", c, 1, 64)?;
    }
    Ok(())
}

/// Stores a message; `true` if new, `false` for an idempotent retry.
pub async fn send(
    s: &AppState,
    caller: Uuid,
    cid: Uuid,
    body: &str,
    client_msg_id: Option<&str>,
) -> ApiResult<(Message, bool)> {
    check_new_message(body, client_msg_id)?;
    // One budget for every way a user sends (REST, WebSocket through any edge, the old dialect).
    s.sends.take(caller).map_err(ApiError::rate_limited)?;
    // Membership is checked inside the insert's transaction (Sent::NotMember).
    let start = std::time::Instant::now();
    let r = s.writer.insert(cid, caller, body, client_msg_id).await;
    if !matches!(r, Ok(Sent::Created(_))) {
        // A retry, a refusal or a failure stored nothing: it does not use the budget.
        s.sends.refund(caller);
    }
    let r = r.map_err(db)?;
    metrics::histogram!("message_insert_duration_seconds").record(start.elapsed().as_secs_f64());
    match r {
        Sent::Created(m) => {
            s.outbox.notify();
            metrics::counter!("messages_stored_total").increment(1);
            Ok((m, true))
        }
        Sent::Existing(m) => Ok((m, false)),
        Sent::NotMember => Err(ApiError::not_found()),
    }
}

pub async fn history(
    s: &AppState,
    caller: Uuid,
    cid: Uuid,
    after: Option<i64>,
    before: Option<i64>,
    limit: i64,
) -> ApiResult<MessagePage> {
    require_member(s, caller, cid).await?;
    history_unchecked(s, cid, after, before, limit).await
}

/// History without a membership check (internal callers have checked already).
pub async fn history_unchecked(
    s: &AppState,
    cid: Uuid,
    after: Option<i64>,
    before: Option<i64>,
    limit: i64,
) -> ApiResult<MessagePage> {
    let page = match (after, before) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation("give `before_seq` or `after_seq`, not both"));
        }
        (Some(a), None) => Page::After(a),
        (None, Some(b)) => Page::Before(b),
        (None, None) => Page::Latest,
    };
    let (messages, has_more) = s.store.history(cid, page, limit).await.map_err(db)?;
    Ok(MessagePage { messages, has_more })
}

pub async fn read(s: &AppState, caller: Uuid, cid: Uuid, seq: i64) -> ApiResult<()> {
    require_member(s, caller, cid).await?;
    if s.store.mark_read(cid, caller, seq).await.map_err(db)?.is_some() {
        s.outbox.notify();
    }
    Ok(())
}

/// A user's conversations with their last seq (edges call this when a user connects).
pub async fn user_conversations(s: &AppState, uid: Uuid) -> ApiResult<Vec<chat_protocol::internal::Membership>> {
    s.store.user_conversations(uid).await.map_err(db)
}

fn changed(r: crate::store::Changed) -> ApiResult<()> {
    use crate::store::Changed;
    match r {
        Changed::Done => Ok(()),
        Changed::NotMember => Err(ApiError::not_found()),
        Changed::Conflict => Err(ApiError::conflict("conflict", "already a member")),
        Changed::TooMany => Err(ApiError::validation(format!("a group has at most {MAX_MEMBERS} members"))),
    }
}

/// The caller's role and whether the conversation is a group (404 for non-members).
async fn role_in_group(s: &AppState, caller: Uuid, cid: Uuid) -> ApiResult<(Role, bool)> {
    let (role, kind) = s.store.membership(cid, caller).await.map_err(db)?.ok_or_else(ApiError::not_found)?;
    Ok((role, kind == ConversationKind::Group))
}

async fn apply(s: &AppState, caller: Uuid, cid: Uuid, change: crate::store::Change) -> ApiResult<Option<Conversation>> {
    changed(s.store.change(cid, change).await.map_err(db)?)?;
    s.outbox.notify();
    s.store.conversation(cid, caller).await.map_err(db)
}

pub async fn rename(s: &AppState, caller: Uuid, cid: Uuid, title: &str) -> ApiResult<Conversation> {
    let (role, group) = role_in_group(s, caller, cid).await?;
    // Direct conversations come first: both members are plain members there, and the answer is 422.
    if !group {
        return Err(ApiError::validation("a direct conversation has no title"));
    }
    if role == Role::Member {
        return Err(ApiError::forbidden("only the owner or an admin may rename"));
    }
    validate::text("title", title, 1, 128)?;
    apply(s, caller, cid, crate::store::Change::Title(title.to_owned())).await?.ok_or_else(ApiError::not_found)
}

pub async fn add_member(
    s: &AppState,
    caller: Uuid,
    cid: Uuid,
    user: Uuid,
    role: Option<&str>,
) -> ApiResult<Conversation> {
    let (actor, group) = role_in_group(s, caller, cid).await?;
    let role = match role {
        None => Role::Member,
        Some(r) => match Role::parse(r) {
            Some(r @ (Role::Member | Role::Admin)) => r,
            _ => return Err(ApiError::validation("`role` must be \"member\" or \"admin\"")),
        },
    };
    if !group {
        return Err(ApiError::validation("a direct conversation has fixed members"));
    }
    // Within a group, permission checks come first.
    if actor == Role::Member {
        return Err(ApiError::forbidden("only the owner or an admin may add members"));
    }
    if role == Role::Admin && actor != Role::Owner {
        return Err(ApiError::forbidden("only the owner may add an admin"));
    }
    let found = s.directory.existing(&[user]).await.map_err(ApiError::unavailable)?;
    if !found.contains(&user) {
        return Err(ApiError::validation(format!("unknown user {user}")));
    }
    apply(s, caller, cid, crate::store::Change::Add(user, role, MAX_MEMBERS)).await?.ok_or_else(ApiError::not_found)
}

pub async fn set_role(s: &AppState, caller: Uuid, cid: Uuid, user: Uuid, role: &str) -> ApiResult<Conversation> {
    let (actor, group) = role_in_group(s, caller, cid).await?;
    let role = match Role::parse(role) {
        Some(r @ (Role::Member | Role::Admin)) => r,
        _ => return Err(ApiError::validation("`role` must be \"member\" or \"admin\"")),
    };
    if !group {
        return Err(ApiError::validation("roles of a direct conversation are fixed"));
    }
    if actor != Role::Owner {
        return Err(ApiError::forbidden("only the owner may change roles"));
    }
    if user == caller {
        return Err(ApiError::validation("the owner cannot change their own role"));
    }
    apply(s, caller, cid, crate::store::Change::Role(user, role)).await?.ok_or_else(ApiError::not_found)
}

pub async fn remove_member(s: &AppState, caller: Uuid, cid: Uuid, user: Uuid) -> ApiResult<()> {
    let (actor, group) = role_in_group(s, caller, cid).await?;
    if !group {
        return Err(ApiError::validation("members of a direct conversation cannot leave or be removed"));
    }
    if user != caller {
        let target = s.store.role(cid, user).await.map_err(db)?;
        let allowed =
            matches!((actor, target), (Role::Owner, _) | (Role::Admin, Some(Role::Member)) | (Role::Admin, None));
        if !allowed {
            return Err(ApiError::forbidden("not allowed to remove this member"));
        }
    }
    apply(s, caller, cid, crate::store::Change::Remove(user)).await?;
    Ok(())
}

pub async fn edit_message(s: &AppState, caller: Uuid, cid: Uuid, mid: Uuid, body: &str) -> ApiResult<Message> {
    require_member(s, caller, cid).await?;
    let m = s.store.message(cid, mid).await.map_err(db)?.ok_or_else(ApiError::not_found)?;
    if m.sender_id != caller {
        return Err(ApiError::forbidden("only the sender may edit a message"));
    }
    if m.deleted_at.is_some() {
        return Err(ApiError::conflict("conflict", "a deleted message cannot be edited"));
    }
    validate::text("body", body, 1, 4000)?;
    let m = s.store.update_message(cid, mid, Some(body)).await.map_err(db)?;
    let m = m.ok_or_else(|| ApiError::conflict("conflict", "a deleted message cannot be edited"))?;
    s.outbox.notify();
    Ok(m)
}

pub async fn delete_message(s: &AppState, caller: Uuid, cid: Uuid, mid: Uuid) -> ApiResult<()> {
    let (role, group) = role_in_group(s, caller, cid).await?;
    let m = s.store.message(cid, mid).await.map_err(db)?.ok_or_else(ApiError::not_found)?;
    let moderator = group && matches!(role, Role::Owner | Role::Admin);
    if m.sender_id != caller && !moderator {
        return Err(ApiError::forbidden("only the sender or a group owner/admin may delete"));
    }
    if m.deleted_at.is_none() && s.store.update_message(cid, mid, None).await.map_err(db)?.is_some() {
        s.outbox.notify();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Audit finding 16: the list was de-duplicated in O(n²) before the cap was checked.
    #[test]
    fn members_are_deduplicated_linearly_and_capped_while_walking() {
        let caller = Uuid::now_v7();
        let a = Uuid::now_v7();
        assert_eq!(distinct_others(caller, vec![a, caller, a, a]).unwrap(), vec![a]);
        let many: Vec<Uuid> = (0..26_000).map(|_| Uuid::new_v4()).collect();
        let e = distinct_others(caller, many).unwrap_err();
        assert_eq!(e.code, "validation_failed");
        // The walk stops at the cap: counted in ids looked at, not in time.
        let exactly: Vec<Uuid> = (0..MAX_MEMBERS - 1).map(|_| Uuid::new_v4()).collect();
        assert_eq!(distinct_others(caller, exactly).unwrap().len(), MAX_MEMBERS - 1);
        let dupes = vec![a; 26_000];
        assert_eq!(distinct_others(caller, dupes).unwrap(), vec![a]);
    }
}

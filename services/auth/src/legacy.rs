//! Users from the Django Channels backend: how an old account becomes a new one (`chat import-django`).

use crate::store::Store;
use chat_protocol::{Timestamp, User};
use uuid::Uuid;

/// One row of Django's `auth_user`.
pub struct DjangoUser {
    pub id: i64,
    pub username: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub date_joined: Timestamp,
    /// Django's `is_active`: a deactivated account is imported switched off (it cannot log in).
    pub is_active: bool,
}

pub enum Imported {
    /// Imported under this username (`renamed` when it differs from the old one, lower-cased).
    New { id: Uuid, username: String, renamed: bool },
    /// Imported by an earlier run.
    Existing(Uuid),
}

/// Django allows `@ + . - _` and mixed case; usernames here are `[a-z0-9_.-]{3,32}`. Other characters
/// become `_`, short names are padded, and a taken name gets a numeric suffix.
pub fn username_candidates(old: &str, legacy_id: i64) -> Vec<String> {
    let mut base: String = old
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c.to_ascii_lowercase() } else { '_' })
        .take(32)
        .collect();
    if base.len() < 3 {
        base = format!("user_{legacy_id}");
    }
    let mut out = vec![base.clone()];
    for n in 2..50 {
        let suffix = format!("_{n}");
        let keep = base.len().min(32 - suffix.len());
        out.push(format!("{}{suffix}", &base[..keep]));
    }
    out.push(format!("user_{legacy_id}"));
    out
}

/// Imports one user unless an earlier run did. Passwords stay in Django's PBKDF2 format until the
/// user's first login, which verifies it and stores an Argon2id hash instead.
pub async fn import_user(
    store: &Store,
    known: &std::collections::HashMap<i64, Uuid>,
    u: &DjangoUser,
) -> Result<Imported, crate::Error> {
    if let Some(id) = known.get(&u.id) {
        return Ok(Imported::Existing(*id));
    }
    let full = format!("{} {}", u.first_name.trim(), u.last_name.trim());
    let display: String = if full.trim().is_empty() { u.username.as_str() } else { full.trim() }
        .chars()
        .filter(|c| *c != '\0')
        .take(64)
        .collect();
    let candidates = username_candidates(&u.username, u.id);
    let user = User {
        id: Uuid::now_v7(),
        username: candidates[0].clone(),
        display_name: if display.is_empty() { candidates[0].clone() } else { display },
        created_at: u.date_joined,
    };
    let disabled_at = (!u.is_active).then(|| Timestamp::now().0);
    match store.import_user(u.id, &user, &candidates, &u.password, disabled_at).await? {
        Some(name) => {
            let renamed = name != u.username.to_ascii_lowercase();
            Ok(Imported::New { id: user.id, username: name, renamed })
        }
        None => Err(crate::Error::Internal(format!("no free username for Django user {}", u.id))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn usernames_follow_the_rules() {
        let c = super::username_candidates("Ann.Smith@example.com", 7);
        assert_eq!(c[0], "ann.smith_example.com");
        assert_eq!(c[1], "ann.smith_example.com_2");
        assert_eq!(super::username_candidates("b", 9)[0], "user_9");
        let long = super::username_candidates(&"x".repeat(40), 1);
        assert!(long.iter().all(|n| n.len() <= 32 && n.len() >= 3));
    }
}

//! All SQL of the auth service (portable between PostgreSQL and SQLite; see `chat-db`).

use chat_db::Db;
use chat_protocol::{Timestamp, User};
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

#[derive(Clone)]
pub struct Store {
    db: Db,
}

pub struct KeyRow {
    pub kid: String,
    pub private_der: String,
    pub public_x: String,
    pub created_at: i64,
}

pub struct RefreshRow {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: i64,
    pub used: bool,
    pub session_revoked: bool,
}

/// What a refresh-token rotation found.
#[derive(Debug, PartialEq)]
pub enum RotateOutcome {
    Rotated,
    /// `old` was used meanwhile (a racing reuse).
    AlreadyUsed,
    /// The session was revoked meanwhile (a racing logout).
    SessionRevoked,
}

fn uuid_col(row: &AnyRow, col: &str) -> Result<Uuid, sqlx::Error> {
    let s: String = row.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn user_from(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: uuid_col(row, "id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

macro_rules! user_cols {
    () => {
        "id, username, display_name, created_at"
    };
}

impl Store {
    pub fn new(db: Db) -> Self {
        Store { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    // --- signing keys ---

    pub async fn active_key(&self) -> Result<Option<KeyRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT kid, private_der, public_x, created_at FROM signing_keys \
             WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC LIMIT 1",
        )
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| key_from(&r)).transpose()
    }

    pub async fn insert_key(&self, k: &KeyRow) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO signing_keys (kid, private_der, public_x, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&k.kid)
            .bind(&k.private_der)
            .bind(&k.public_x)
            .bind(k.created_at)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Retires every key but `kid` (not yet retired ones; with `at` = 0 also those still published).
    pub async fn retire_keys_except(&self, kid: &str, at: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE kid <> $2 AND (retired_at IS NULL OR $1 = 0)")
            .bind(at)
            .bind(kid)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Every key, retired or not (to encrypt plain ones at rest).
    pub async fn all_keys(&self) -> Result<Vec<KeyRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT kid, private_der, public_x, created_at FROM signing_keys")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(key_from).collect()
    }

    /// Replaces a key's stored private half when it is still `old`.
    pub async fn replace_private_key(&self, kid: &str, old: &str, new: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE signing_keys SET private_der = $1 WHERE kid = $2 AND private_der = $3")
            .bind(new)
            .bind(kid)
            .bind(old)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Keys that may still verify a live token: active ones and those retired after `since_ms`.
    pub async fn published_keys(&self, since_ms: i64) -> Result<Vec<KeyRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kid, private_der, public_x, created_at FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC",
        )
        .bind(since_ms)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(key_from).collect()
    }

    // --- users ---

    /// Returns false when the username is taken.
    pub async fn create_user(&self, user: &User, password_hash: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "INSERT INTO users (id, username, display_name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(user.id.to_string())
        .bind(&user.username)
        .bind(&user.display_name)
        .bind(password_hash)
        .bind(user.created_at.0)
        .execute(&self.db.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A user by name with the stored hash and whether the account is switched off.
    pub async fn user_with_hash(&self, username: &str) -> Result<Option<(User, String, bool)>, sqlx::Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            ", password_hash, disabled_at FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| {
            Ok((user_from(&r)?, r.try_get("password_hash")?, r.try_get::<Option<i64>, _>("disabled_at")?.is_some()))
        })
        .transpose()
    }

    /// Swaps a user's hash when it is still `old` (a concurrent login may have upgraded it already).
    pub async fn replace_password_hash(&self, id: Uuid, old: &str, new: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(new)
            .bind(id.to_string())
            .bind(old)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn user(&self, id: Uuid) -> Result<Option<User>, sqlx::Error> {
        let row = sqlx::query(concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    /// A user whose account is switched on (`None` for a disabled one, as for an unknown id).
    pub async fn enabled_user(&self, id: Uuid) -> Result<Option<User>, sqlx::Error> {
        let row = sqlx::query(concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1 AND disabled_at IS NULL"))
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    /// Username prefix search in code-point order, served by the username index as a range scan.
    pub async fn search(&self, prefix: &str, limit: i64) -> Result<Vec<User>, sqlx::Error> {
        let rows = match upper_bound(prefix) {
            Some(upper) if !prefix.is_empty() => {
                sqlx::query(concat!(
                    "SELECT ",
                    user_cols!(),
                    " FROM users WHERE username >= $1 AND username < $2 ORDER BY username LIMIT $3"
                ))
                .bind(prefix)
                .bind(upper)
                .bind(limit)
                .fetch_all(&self.db.pool)
                .await?
            }
            _ => {
                sqlx::query(concat!(
                    "SELECT ",
                    user_cols!(),
                    " FROM users WHERE username >= $1 ORDER BY username LIMIT $2"
                ))
                .bind(prefix)
                .bind(limit)
                .fetch_all(&self.db.pool)
                .await?
            }
        };
        rows.iter().map(user_from).collect()
    }

    /// Which of `ids` are existing users.
    pub async fn existing(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
        let mut found = Vec::with_capacity(ids.len());
        // Chunked IN lists: portable and bounded in parameter count.
        for chunk in ids.chunks(200) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT id FROM users WHERE id IN ({})", params.join(", "));
            // Only generated placeholders are interpolated; values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for row in q.fetch_all(&self.db.pool).await? {
                found.push(uuid_col(&row, "id")?);
            }
        }
        Ok(found)
    }

    // --- sessions and refresh tokens ---

    pub async fn create_session(
        &self,
        sid: Uuid,
        user_id: Uuid,
        access_exp: i64,
        refresh_hash: &str,
        refresh_expires: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        sqlx::query("INSERT INTO sessions (id, user_id, created_at, access_exp) VALUES ($1, $2, $3, $4)")
            .bind(sid.to_string())
            .bind(user_id.to_string())
            .bind(Timestamp::now().0)
            .bind(access_exp)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)")
            .bind(refresh_hash)
            .bind(sid.to_string())
            .bind(refresh_expires)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    pub async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT r.session_id, s.user_id, r.expires_at, r.used_at, s.revoked_at \
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| {
            Ok(RefreshRow {
                session_id: uuid_col(&r, "session_id")?,
                user_id: uuid_col(&r, "user_id")?,
                expires_at: r.try_get("expires_at")?,
                used: r.try_get::<Option<i64>, _>("used_at")?.is_some(),
                session_revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
            })
        })
        .transpose()
    }

    /// Rotates a refresh token: marks `old` used, stores `new` and raises the session's access expiry
    /// to the new token's, atomically. Nothing changes unless the outcome is `Rotated`.
    pub async fn rotate_refresh(
        &self,
        old: &str,
        new: &str,
        sid: Uuid,
        new_expires: i64,
        access_exp: i64,
    ) -> Result<RotateOutcome, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        // The session row first (the order `revoke_session` locks in): a logout that committed
        // before this point leaves the session revoked and the rotation refused; one that commits
        // after reads the access expiry raised here and publishes a revocation covering the new token.
        let live = sqlx::query(
            "UPDATE sessions SET access_exp = CASE WHEN access_exp < $1 THEN $1 ELSE access_exp END \
             WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(access_exp)
        .bind(sid.to_string())
        .execute(&mut *tx)
        .await?;
        if live.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(RotateOutcome::SessionRevoked);
        }
        let r = sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
            .bind(Timestamp::now().0)
            .bind(old)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(RotateOutcome::AlreadyUsed);
        }
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)")
            .bind(new)
            .bind(sid.to_string())
            .bind(new_expires)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RotateOutcome::Rotated)
    }

    /// Revokes a session; returns the latest access-token expiry if it was live until now.
    pub async fn revoke_session(&self, sid: Uuid) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING access_exp",
        )
        .bind(Timestamp::now().0)
        .bind(sid.to_string())
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| r.try_get("access_exp")).transpose()
    }

    /// Sessions revoked whose access tokens may still be unexpired (for verifiers that start late).
    pub async fn revoked_sessions(&self, now_secs: i64) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        let rows = sqlx::query("SELECT id, access_exp FROM sessions WHERE revoked_at IS NOT NULL AND access_exp >= $1")
            .bind(now_secs)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(|r| Ok((uuid_col(r, "id")?, r.try_get("access_exp")?))).collect()
    }

    // --- throttling ---

    /// Counts one attempt of `key` in its fixed window (a new window starts when the current one
    /// began before `horizon_ms`), atomically: concurrent attempts each get a distinct count.
    /// Returns the count including this attempt and when the window started.
    pub async fn throttle_reserve(&self, key: &str, now_ms: i64, horizon_ms: i64) -> Result<(i64, i64), sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO throttle_counters (key, window_start, n) VALUES ($1, $2, 1) \
             ON CONFLICT (key) DO UPDATE SET \
               n = CASE WHEN throttle_counters.window_start < $3 THEN 1 ELSE throttle_counters.n + 1 END, \
               window_start = CASE WHEN throttle_counters.window_start < $3 THEN $2 \
                                   ELSE throttle_counters.window_start END \
             RETURNING n, window_start",
        )
        .bind(key)
        .bind(now_ms)
        .bind(horizon_ms)
        .fetch_one(&self.db.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("window_start")?))
    }

    /// Gives back one reserved attempt (it turned out not to count, e.g. a successful login).
    pub async fn throttle_release(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE throttle_counters SET n = n - 1 WHERE key = $1 AND n > 0")
            .bind(key)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn throttle_clear(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM throttle_counters WHERE key = $1").bind(key).execute(&self.db.pool).await?;
        Ok(())
    }

    /// Drops windows that began before `before_ms`, and what older versions left behind.
    pub async fn throttle_purge(&self, before_ms: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM throttle_counters WHERE window_start < $1")
            .bind(before_ms)
            .execute(&self.db.pool)
            .await?;
        sqlx::query("DELETE FROM throttle_events WHERE at < $1").bind(before_ms).execute(&self.db.pool).await?;
        Ok(())
    }

    /// Deletes refresh tokens expired before `before_ms` and sessions with no refresh token left
    /// whose access tokens expired before `before_secs` (revoked or not: nothing can use them).
    /// Returns how many sessions went.
    pub async fn purge_sessions(&self, before_ms: i64, before_secs: i64) -> Result<u64, sqlx::Error> {
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(before_ms).execute(&self.db.pool).await?;
        let r = sqlx::query(
            "DELETE FROM sessions WHERE access_exp < $1 \
             AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.session_id = sessions.id)",
        )
        .bind(before_secs)
        .execute(&self.db.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// One stored Django (PBKDF2) hash not yet upgraded, if any (to calibrate login timing).
    pub async fn sample_legacy_hash(&self) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE password_hash LIKE 'pbkdf2_sha256$%' LIMIT 1")
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| r.try_get("password_hash")).transpose()
    }

    /// A user's id by username (a taken name is found before hashing a password for it; the
    /// operator commands).
    pub async fn user_id_by_name(&self, username: &str) -> Result<Option<Uuid>, sqlx::Error> {
        let row = sqlx::query("SELECT id FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| uuid_col(&r, "id")).transpose()
    }

    /// Grants (`Some(now)`) or withdraws (`None`) operator rights.
    pub async fn set_admin(&self, id: Uuid, at: Option<i64>) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET admin_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id.to_string())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Sets a new password hash unconditionally (an operator's reset).
    pub async fn set_password_hash(&self, id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id.to_string())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Revokes every live session of a user; returns each with the last expiry of its access tokens.
    pub async fn revoke_user_sessions(&self, user: Uuid) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL RETURNING id, access_exp",
        )
        .bind(Timestamp::now().0)
        .bind(user.to_string())
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| Ok((uuid_col(r, "id")?, r.try_get("access_exp")?))).collect()
    }

    /// Sessions revoked at or after `since_ms` (by any process: an operator's command included).
    pub async fn revoked_since(&self, since_ms: i64) -> Result<Vec<(Uuid, i64, i64)>, sqlx::Error> {
        let rows = sqlx::query("SELECT id, access_exp, revoked_at FROM sessions WHERE revoked_at >= $1")
            .bind(since_ms)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(|r| Ok((uuid_col(r, "id")?, r.try_get("access_exp")?, r.try_get("revoked_at")?))).collect()
    }

    /// Switches an account off (or on again with `None`).
    pub async fn set_disabled(&self, id: Uuid, at: Option<i64>) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id.to_string())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}

fn key_from(r: &AnyRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        kid: r.try_get("kid")?,
        private_der: r.try_get("private_der")?,
        public_x: r.try_get("public_x")?,
        created_at: r.try_get("created_at")?,
    })
}

/// The smallest string greater than every string starting with `prefix` (None if there is none).
fn upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl Store {
    // --- users imported from the Django backend ---

    /// Every imported user: old integer id → new id.
    pub async fn legacy_user_map(&self) -> Result<std::collections::HashMap<i64, Uuid>, sqlx::Error> {
        let rows = sqlx::query("SELECT legacy_id, user_id FROM legacy_users").fetch_all(&self.db.pool).await?;
        rows.iter().map(|r| Ok((r.try_get::<i64, _>("legacy_id")?, uuid_col(r, "user_id")?))).collect()
    }

    /// Inserts an imported user under the first free name of `usernames`, with its old id, in one
    /// transaction. Returns the name used, or None when every candidate was taken.
    pub async fn import_user(
        &self,
        legacy_id: i64,
        user: &User,
        usernames: &[String],
        password_hash: &str,
        disabled_at: Option<i64>,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        for name in usernames {
            let r = sqlx::query(
                "INSERT INTO users (id, username, display_name, password_hash, created_at, disabled_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (username) DO NOTHING",
            )
            .bind(user.id.to_string())
            .bind(name)
            .bind(&user.display_name)
            .bind(password_hash)
            .bind(user.created_at.0)
            .bind(disabled_at)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 1 {
                sqlx::query("INSERT INTO legacy_users (legacy_id, user_id) VALUES ($1, $2)")
                    .bind(legacy_id)
                    .bind(user.id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(Some(name.clone()));
            }
        }
        tx.rollback().await?;
        Ok(None)
    }

    /// Usernames and old integer ids (None for users who were never imported) of `ids`.
    pub async fn legacy_users(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String, Option<i64>)>, sqlx::Error> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(
                "SELECT u.id, u.username, l.legacy_id FROM users u LEFT JOIN legacy_users l ON l.user_id = u.id \
                 WHERE u.id = $1",
            )
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
            if let Some(r) = row {
                out.push((uuid_col(&r, "id")?, r.try_get("username")?, r.try_get("legacy_id")?));
            }
        }
        Ok(out)
    }

    /// The new id of an imported user.
    pub async fn legacy_user(&self, legacy_id: i64) -> Result<Option<Uuid>, sqlx::Error> {
        let row = sqlx::query("SELECT user_id FROM legacy_users WHERE legacy_id = $1")
            .bind(legacy_id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| uuid_col(&r, "user_id")).transpose()
    }
}

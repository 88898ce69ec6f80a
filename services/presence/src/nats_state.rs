//! Presence state in NATS JetStream key-value buckets, for deployments whose bus is NATS: shared by
//! any number of presence replicas (and all-in-one instances) without a Redis.
//!
//! JetStream has no multi-key transactions, so every decision is a compare-and-set on one key:
//! - `<P>_users`, key `<uid>`: the edges holding the user (edge → epoch), when they were last seen,
//!   and whether an offline is pending. Each online/offline transition is the one successful update
//!   of this key that changes it, so it is announced exactly once across replicas.
//! - `<P>_edges`, key `<edge>`: the users an edge reported, until when it counts as alive, and its
//!   epoch. The edge entry is written before (as a superset) and after the user entries, so a crash
//!   in between leaves it listing every user that names the edge: the dead-edge sweep finds them all.
//! - `<P>_pending`, key `<uid>`: an index of users whose offline is pending (the grace period), written
//!   before and after the user entry so the sweeper finds every pending user even after a crash.
//!
//! The epoch settles a sweep racing a revived edge: a sweep removes an edge from a user only when the
//! user holds it from the dead epoch or an earlier one; a revived edge re-adds its users at a newer
//! epoch. Each replica mirrors the edges and pending buckets through a watch, so its 250 ms sweep
//! reads memory and talks to NATS only when something expired.

use crate::state::{GRACE, Transition};
use async_nats::jetstream::kv::{self, Operation, Store};
use bytes::Bytes;
use chat_protocol::{PresenceEntry, PresenceStatus, Timestamp};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Every call to NATS is bounded (a report is on an edge's path).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A compare-and-set loses only to a concurrent writer of the same key; this many losses in a row
/// means something is wrong.
const MAX_ATTEMPTS: usize = 32;
/// A pending-index entry whose user is not pending is left alone this long: its writer may be between
/// writing the index and the user entry.
const STALE_PENDING_MS: u64 = 10_000;

#[derive(Serialize, Deserialize, Default, Clone)]
struct UserRec {
    /// Edges holding the user, with the epoch of the edge when it added them.
    #[serde(default)]
    e: BTreeMap<String, u64>,
    /// Last seen (ms), when offline.
    #[serde(default)]
    s: Option<u64>,
    /// When the last connection closed, while the offline is pending.
    #[serde(default)]
    p: Option<u64>,
}

#[derive(Serialize, Deserialize, Default, Clone)]
struct EdgeRec {
    u: Vec<Uuid>,
    /// Alive until (ms).
    a: u64,
    /// Epoch: a new one each time the edge comes back from dead.
    n: u64,
}

/// What [`NatsPresence::modify`] does with a key.
enum Next<T> {
    Keep,
    Put(T),
}

#[derive(Default)]
struct Mirror {
    /// Edge key → (alive until, revision).
    edges: HashMap<String, (u64, u64)>,
    /// User key → (pending since, revision).
    pending: HashMap<String, (u64, u64)>,
}

#[derive(Clone)]
pub struct NatsPresence {
    users: Store,
    edges: Store,
    pending: Store,
    mirror: Arc<Mutex<Mirror>>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn bounded<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err("presence store (NATS) did not answer in time".into()),
    }
}

/// Bucket names take letters, digits, `-` and `_`: `chat:presence` becomes `chat_presence`.
fn bucket_name(prefix: &str, what: &str) -> String {
    let p: String = prefix.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{p}_{what}")
}

/// Keys take `[-_=/.A-Za-z0-9]`: edge ids made of those are used as they are, others hex-encoded
/// (with a prefix no plain id has).
fn edge_key(edge: &str) -> String {
    if !edge.is_empty() && edge.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)) {
        edge.to_string()
    } else {
        let mut k = String::from("x.");
        for b in edge.bytes() {
            k.push_str(&format!("{b:02x}"));
        }
        k
    }
}

fn now_ms() -> u64 {
    Timestamp::now().0.max(0) as u64
}

impl NatsPresence {
    pub async fn connect(url: &str, prefix: &str) -> Result<NatsPresence, String> {
        let client = chat_bus::nats_client(url).await.map_err(err)?;
        let js = async_nats::jetstream::new(client);
        let mut stores = Vec::new();
        for what in ["users", "edges", "pending"] {
            let config = kv::Config {
                bucket: bucket_name(prefix, what),
                description: format!("chat presence: {what}"),
                history: 1,
                ..Default::default()
            };
            // Buckets that exist are used as they are (an operator may have made them replicated).
            let store = match bounded(js.get_key_value(config.bucket.clone())).await {
                Ok(store) => store,
                Err(_) => match bounded(js.create_key_value(config)).await {
                    Ok(store) => store,
                    // Another replica made it meanwhile.
                    Err(_) => bounded(js.get_key_value(bucket_name(prefix, what))).await?,
                },
            };
            stores.push(store);
        }
        let pending = stores.pop().expect("three buckets");
        let edges = stores.pop().expect("three buckets");
        let users = stores.pop().expect("three buckets");
        let p = NatsPresence { users, edges, pending, mirror: Arc::default() };
        p.spawn_mirror(p.edges.clone(), |m| &mut m.edges, |v| serde_json::from_slice::<EdgeRec>(v).ok().map(|r| r.a));
        p.spawn_mirror(p.pending.clone(), |m| &mut m.pending, |v| std::str::from_utf8(v).ok()?.parse().ok());
        Ok(p)
    }

    /// Keeps one bucket's entries (a time each) in the mirror, re-watching after any failure.
    fn spawn_mirror(
        &self,
        store: Store,
        map: fn(&mut Mirror) -> &mut HashMap<String, (u64, u64)>,
        time_of: fn(&[u8]) -> Option<u64>,
    ) {
        let mirror = Arc::downgrade(&self.mirror);
        tokio::spawn(async move {
            loop {
                if let Ok(mut watch) = store.watch_all().await {
                    while let Some(Ok(entry)) = watch.next().await {
                        let Some(mirror) = mirror.upgrade() else { return };
                        let mut m = mirror.lock().unwrap_or_else(|p| p.into_inner());
                        match (entry.operation, time_of(&entry.value)) {
                            (Operation::Put, Some(t)) => {
                                map(&mut m).insert(entry.key, (t, entry.revision));
                            }
                            _ => {
                                map(&mut m).remove(&entry.key);
                            }
                        }
                    }
                }
                let Some(mirror) = mirror.upgrade() else { return };
                map(&mut mirror.lock().unwrap_or_else(|p| p.into_inner())).clear();
                drop(mirror);
                tracing::warn!("presence store (NATS) watch ended; watching again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Reads `key`, lets `f` decide its next value and writes that back if nobody wrote the key
    /// meanwhile, else tries again. Returns what `f` returned on the attempt that counted.
    async fn modify<T, R>(store: &Store, key: &str, mut f: impl FnMut(Option<T>) -> (Next<T>, R)) -> Result<R, String>
    where
        T: Serialize + DeserializeOwned,
    {
        for _ in 0..MAX_ATTEMPTS {
            let entry = bounded(store.entry(key)).await?;
            // A deleted key keeps a revision: the write must name it.
            let (current, revision) = match entry {
                Some(e) if e.operation == Operation::Put => {
                    (Some(serde_json::from_slice::<T>(&e.value).map_err(err)?), Some(e.revision))
                }
                Some(e) => (None, Some(e.revision)),
                None => (None, None),
            };
            let (next, out) = f(current);
            let written = match (next, revision) {
                (Next::Keep, _) => return Ok(out),
                (Next::Put(v), Some(rev)) => {
                    let bytes = Bytes::from(serde_json::to_vec(&v).map_err(err)?);
                    tokio::time::timeout(CALL_TIMEOUT, store.update(key, bytes, rev)).await.map(|r| r.is_ok())
                }
                (Next::Put(v), None) => {
                    let bytes = Bytes::from(serde_json::to_vec(&v).map_err(err)?);
                    tokio::time::timeout(CALL_TIMEOUT, store.create(key, bytes)).await.map(|r| r.is_ok())
                }
            };
            match written {
                Ok(true) => return Ok(out),
                Ok(false) => continue,
                Err(_) => return Err("presence store (NATS) did not answer in time".into()),
            }
        }
        Err(format!("presence store (NATS): {key} kept changing under {MAX_ATTEMPTS} attempts"))
    }

    /// Adds `edge` (at `epoch`) to the user; online if they were offline and not pending.
    async fn add(&self, user: Uuid, edge: &str, epoch: u64, out: &mut Vec<Transition>) -> Result<(), String> {
        let at = Timestamp::now();
        let online = Self::modify(&self.users, &user.to_string(), |rec: Option<UserRec>| {
            let mut r = rec.unwrap_or_default();
            if r.e.get(edge) == Some(&epoch) {
                return (Next::Keep, (false, false));
            }
            let was_empty = r.e.is_empty();
            r.e.insert(edge.to_string(), epoch);
            // Back within the grace period: the offline was never announced, so neither is this.
            let was_pending = r.p.take().is_some();
            if was_empty {
                r.s = None;
            }
            (Next::Put(r), (was_empty && !was_pending, was_pending))
        })
        .await?;
        match online {
            (true, _) => out.push(Transition { user, online: true, at }),
            // Its index entry is moot now (a remover racing this writes its own again afterwards).
            (_, true) => {
                let _ = tokio::time::timeout(CALL_TIMEOUT, self.pending.delete(user.to_string())).await;
            }
            _ => {}
        }
        Ok(())
    }

    /// Removes `edge` from the user when they hold it from `epoch` or before. The last edge gone: a
    /// pending offline (`now`: announced at once, for a dead edge).
    async fn remove(
        &self,
        user: Uuid,
        edge: &str,
        epoch: u64,
        now: bool,
        out: &mut Vec<Transition>,
    ) -> Result<(), String> {
        let key = user.to_string();
        let at = Timestamp::now();
        let t = at.0.max(0) as u64;
        // Indexed before the user entry changes, so a crash between the two cannot hide a pending
        // offline from the sweeper; withdrawn when the user turns out to stay online.
        let index = if now { None } else { Some(self.mark_pending(&key, t).await?) };
        let went_offline = Self::modify(&self.users, &key, |rec: Option<UserRec>| {
            let Some(mut r) = rec else { return (Next::Keep, false) };
            match r.e.get(edge) {
                Some(e) if *e <= epoch => {
                    r.e.remove(edge);
                }
                _ => return (Next::Keep, false),
            }
            if !r.e.is_empty() {
                return (Next::Put(r), false);
            }
            r.s = Some(t);
            r.p = if now { None } else { Some(t) };
            (Next::Put(r), true)
        })
        .await?;
        match (went_offline, index) {
            (true, None) => out.push(Transition { user, online: false, at }),
            // Written again after the user entry: the index holds even if the sweeper dropped the
            // first entry while this writer stalled.
            (true, Some(_)) => {
                self.mark_pending(&key, t).await?;
            }
            (false, Some(rev)) => {
                let _ = tokio::time::timeout(CALL_TIMEOUT, self.pending.delete_expect_revision(&key, Some(rev))).await;
            }
            (false, None) => {}
        }
        Ok(())
    }

    /// Indexes a pending offline; returns the index entry's revision.
    async fn mark_pending(&self, key: &str, t: u64) -> Result<u64, String> {
        bounded(self.pending.put(key, Bytes::from(t.to_string()))).await
    }

    pub async fn report(
        &self,
        edge: &str,
        online: &[Uuid],
        offline: &[Uuid],
        full: Option<&[Uuid]>,
        ttl: Duration,
    ) -> Result<Vec<Transition>, String> {
        let key = edge_key(edge);
        let now = now_ms();
        let alive = now + ttl.as_millis() as u64;
        // First write: the edge's users as a superset of old and new, alive, and its epoch.
        let (old, wanted, epoch, revived) = Self::modify(&self.edges, &key, |rec: Option<EdgeRec>| {
            let (old, epoch, revived) = match rec {
                Some(r) if r.a >= now => (r.u, r.n, false),
                // Dead (or never seen): a new epoch, and every user it reports is added again.
                Some(r) => (r.u, (r.n + 1).max(now), true),
                None => (Vec::new(), now, true),
            };
            // As the Redis store: connections, then disconnections, then the full list (if sent)
            // is the truth.
            let wanted: HashSet<Uuid> = match full {
                Some(f) => f.iter().copied().collect(),
                None => {
                    let mut w: HashSet<Uuid> = old.iter().chain(online).copied().collect();
                    for u in offline {
                        w.remove(u);
                    }
                    w
                }
            };
            let mut superset: Vec<Uuid> = old.clone();
            superset.extend(wanted.iter().filter(|u| !old.contains(u)));
            (Next::Put(EdgeRec { u: superset, a: alive, n: epoch }), (old, wanted, epoch, revived))
        })
        .await?;
        let old_set: HashSet<Uuid> = old.iter().copied().collect();
        let mut out = Vec::new();
        for u in &wanted {
            if revived || !old_set.contains(u) {
                self.add(*u, edge, epoch, &mut out).await?;
            }
        }
        let gone: Vec<Uuid> = old.iter().filter(|u| !wanted.contains(u)).copied().collect();
        for u in &gone {
            self.remove(*u, edge, epoch, false, &mut out).await?;
        }
        if !gone.is_empty() {
            // Second write: the users that left are no longer the edge's.
            Self::modify(&self.edges, &key, |rec: Option<EdgeRec>| {
                let mut r = rec.unwrap_or(EdgeRec { u: Vec::new(), a: alive, n: epoch });
                r.u.retain(|u| !gone.contains(u));
                (Next::Put(r), ())
            })
            .await?;
        }
        Ok(out)
    }

    /// Pending offlines past the grace period, and edges that stopped reporting.
    pub async fn expire_edges(&self) -> Result<Vec<Transition>, String> {
        let now = now_ms();
        let grace = GRACE.as_millis() as u64;
        let (due, dead): (Vec<_>, Vec<_>) = {
            let m = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
            (
                m.pending.iter().filter(|(_, (t, _))| *t + grace <= now).map(|(k, v)| (k.clone(), *v)).collect(),
                m.edges.iter().filter(|(_, (a, _))| *a < now).map(|(k, _)| k.clone()).collect(),
            )
        };
        let mut out = Vec::new();
        for (key, (since, revision)) in due {
            let Ok(user) = Uuid::parse_str(&key) else { continue };
            let at = Timestamp::now();
            let state = Self::modify(&self.users, &key, |rec: Option<UserRec>| match rec {
                Some(mut r) if r.p.is_some() && r.e.is_empty() => {
                    r.p = None;
                    (Next::Put(r), Some(true))
                }
                // Pending but back online is not a state the writers leave; keep it for a later look.
                Some(r) if r.p.is_some() => (Next::Keep, None),
                _ => (Next::Keep, Some(false)),
            })
            .await?;
            match state {
                Some(true) => out.push(Transition { user, online: false, at }),
                // Not pending (back online, or its writer has not reached the user entry yet).
                Some(false) if since + STALE_PENDING_MS > now => continue,
                Some(false) => {}
                None => continue,
            }
            // Only the index entry read: a newer one is a newer pending offline.
            let _ = tokio::time::timeout(CALL_TIMEOUT, self.pending.delete_expect_revision(&key, Some(revision))).await;
        }
        for key in dead {
            self.sweep_edge(&key, now, &mut out).await?;
        }
        Ok(out)
    }

    /// An edge that stopped reporting: its users leave it now (no grace), then its entry goes.
    async fn sweep_edge(&self, key: &str, now: u64, out: &mut Vec<Transition>) -> Result<(), String> {
        let Some(entry) = bounded(self.edges.entry(key)).await? else { return Ok(()) };
        if entry.operation != Operation::Put {
            return Ok(());
        }
        let rec: EdgeRec = serde_json::from_slice(&entry.value).map_err(err)?;
        if rec.a >= now {
            return Ok(());
        }
        // The user entries name the edge by its id; the key may be its hex encoding.
        let edge = decode_edge_key(key);
        for u in &rec.u {
            self.remove(*u, &edge, rec.n, true, out).await?;
        }
        // Revived meanwhile: the revision moved and the entry stays.
        let _ = tokio::time::timeout(CALL_TIMEOUT, self.edges.delete_expect_revision(key, Some(entry.revision))).await;
        Ok(())
    }

    pub async fn query(&self, users: &[Uuid]) -> Result<Vec<PresenceEntry>, String> {
        let gets = users.iter().map(|u| bounded(self.users.get(u.to_string())));
        let found = futures_util::future::join_all(gets).await;
        let mut out = Vec::with_capacity(users.len());
        for (u, got) in users.iter().zip(found) {
            let rec: UserRec = match got? {
                Some(v) => serde_json::from_slice(&v).map_err(err)?,
                None => UserRec::default(),
            };
            let online = !rec.e.is_empty();
            out.push(PresenceEntry {
                user_id: *u,
                status: if online { PresenceStatus::Online } else { PresenceStatus::Offline },
                last_seen_at: if online { None } else { rec.s.map(|s| Timestamp(s as i64)) },
            });
        }
        Ok(out)
    }

    pub async fn ping(&self) -> Result<(), String> {
        bounded(self.users.status()).await.map(|_| ())
    }
}

fn decode_edge_key(key: &str) -> String {
    let Some(hex) = key.strip_prefix("x.") else { return key.to_string() };
    let bytes: Option<Vec<u8>> =
        (0..hex.len() / 2).map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    bytes.and_then(|b| String::from_utf8(b).ok()).unwrap_or_else(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_buckets_are_valid_names() {
        assert_eq!(bucket_name("chat:presence", "users"), "chat_presence_users");
        assert_eq!(edge_key("edge-1_a"), "edge-1_a");
        let odd = "pod/ws edge:1";
        let k = edge_key(odd);
        assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'), "{k}");
        assert_eq!(decode_edge_key(&k), odd);
        assert_eq!(decode_edge_key("plain"), "plain");
    }
}

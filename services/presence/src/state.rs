//! Presence state: which edges hold which users, and when users were last seen.
//!
//! A user is online while any live edge reports them. Edges report deltas in batches and their full
//! list every heartbeat; an edge silent for two heartbeat intervals is dead and its users go offline.
//! Every online/offline transition is returned exactly once, for publishing. A user whose last
//! connection closed is announced offline only after `GRACE` (by the sweeper) unless they came back
//! meanwhile: a device switching edges or a page reload does not flicker offline and online.

use chat_protocol::{PresenceEntry, PresenceStatus, Timestamp};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub user: Uuid,
    pub online: bool,
    pub at: Timestamp,
}

struct EdgeState {
    users: HashSet<Uuid>,
    last_report: Instant,
    ttl: Duration,
}

/// How long a cleanly disconnected user stays "pending offline" before the transition is published.
pub const GRACE: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Inner {
    /// Users whose last connection closed, with when: offline is announced after `GRACE`.
    pending: HashMap<Uuid, Instant>,
    edges: HashMap<String, EdgeState>,
    /// For each online user, the edges holding them.
    online: HashMap<Uuid, HashSet<String>>,
    last_seen: HashMap<Uuid, Timestamp>,
}

/// In-memory presence (the all-in-one binary and a single presence replica).
#[derive(Default)]
pub struct MemoryPresence {
    inner: Mutex<Inner>,
}

impl Inner {
    fn add(&mut self, edge: &str, user: Uuid, out: &mut Vec<Transition>) {
        let edges = self.online.entry(user).or_default();
        // Back within the grace period: the offline was never announced, so neither is this.
        if edges.is_empty() && self.pending.remove(&user).is_none() {
            out.push(Transition { user, online: true, at: Timestamp::now() });
        }
        edges.insert(edge.to_string());
    }

    /// `now`: announce at once (a dead edge) instead of after the grace period.
    fn remove(&mut self, edge: &str, user: Uuid, now: bool, out: &mut Vec<Transition>) {
        if let Some(edges) = self.online.get_mut(&user) {
            edges.remove(edge);
            if edges.is_empty() {
                self.online.remove(&user);
                let at = Timestamp::now();
                self.last_seen.insert(user, at);
                if now {
                    self.pending.remove(&user);
                    out.push(Transition { user, online: false, at });
                } else {
                    self.pending.insert(user, Instant::now());
                }
            }
        }
    }
}

impl MemoryPresence {
    /// Applies an edge's report; returns the resulting transitions.
    pub fn report(
        &self,
        edge: &str,
        online: &[Uuid],
        offline: &[Uuid],
        full: Option<&[Uuid]>,
        ttl: Duration,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut g = self.inner.lock().expect("presence lock");
        let inner = &mut *g;
        let mut users = inner.edges.remove(edge).map(|e| e.users).unwrap_or_default();
        for u in online {
            if users.insert(*u) {
                inner.add(edge, *u, &mut out);
            }
        }
        for u in offline {
            if users.remove(u) {
                inner.remove(edge, *u, false, &mut out);
            }
        }
        if let Some(full) = full {
            let full: HashSet<Uuid> = full.iter().copied().collect();
            for u in users.difference(&full).copied().collect::<Vec<_>>() {
                users.remove(&u);
                inner.remove(edge, u, false, &mut out);
            }
            for u in full {
                if users.insert(u) {
                    inner.add(edge, u, &mut out);
                }
            }
        }
        inner.edges.insert(edge.to_string(), EdgeState { users, last_report: Instant::now(), ttl });
        out
    }

    /// Announces offline users whose grace period ended, and drops edges silent for longer than
    /// their ttl (their users go offline at once); returns the transitions.
    pub fn expire_edges(&self) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut g = self.inner.lock().expect("presence lock");
        let inner = &mut *g;
        let due: Vec<Uuid> = inner.pending.iter().filter(|(_, t)| t.elapsed() >= GRACE).map(|(u, _)| *u).collect();
        for u in due {
            inner.pending.remove(&u);
            let at = inner.last_seen.get(&u).copied().unwrap_or_else(Timestamp::now);
            out.push(Transition { user: u, online: false, at });
        }
        let dead: Vec<String> =
            inner.edges.iter().filter(|(_, e)| e.last_report.elapsed() > e.ttl).map(|(k, _)| k.clone()).collect();
        for edge in dead {
            tracing::warn!(%edge, "edge missed two heartbeats; its users go offline");
            if let Some(e) = inner.edges.remove(&edge) {
                for u in e.users {
                    inner.remove(&edge, u, true, &mut out);
                }
            }
        }
        out
    }

    pub fn query(&self, users: &[Uuid]) -> Vec<PresenceEntry> {
        let g = self.inner.lock().expect("presence lock");
        users
            .iter()
            .map(|u| {
                let online = g.online.contains_key(u);
                PresenceEntry {
                    user_id: *u,
                    status: if online { PresenceStatus::Online } else { PresenceStatus::Offline },
                    last_seen_at: if online { None } else { g.last_seen.get(u).copied() },
                }
            })
            .collect()
    }

    pub fn online_count(&self) -> usize {
        self.inner.lock().expect("presence lock").online.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_devices_on_two_edges_and_a_dead_edge() {
        let p = MemoryPresence::default();
        let u = Uuid::now_v7();
        let hb = Duration::from_millis(20);
        assert_eq!(p.report("e1", &[u], &[], None, hb).len(), 1);
        assert!(p.report("e2", &[u], &[], None, hb).is_empty());
        assert!(p.report("e1", &[], &[u], None, hb).is_empty());
        assert_eq!(p.query(&[u])[0].status, PresenceStatus::Online);
        std::thread::sleep(Duration::from_millis(50));
        p.report("e1", &[], &[], Some(&[]), hb);
        let t = p.expire_edges();
        assert_eq!(t.len(), 1);
        assert!(!t[0].online);
        let q = p.query(&[u]);
        assert_eq!(q[0].status, PresenceStatus::Offline);
        assert!(q[0].last_seen_at.is_some());
    }

    #[test]
    fn clean_close_is_announced_after_grace_unless_the_user_returns() {
        let p = MemoryPresence::default();
        let (v, w) = (Uuid::now_v7(), Uuid::now_v7());
        let ttl = Duration::from_secs(60);
        p.report("e1", &[v, w], &[], None, ttl);
        p.report("e1", &[], &[v, w], None, ttl);
        p.report("e2", &[v], &[], None, ttl);
        assert!(p.expire_edges().is_empty(), "nothing before the grace period");
        std::thread::sleep(GRACE);
        let t = p.expire_edges();
        assert_eq!(t, vec![Transition { user: w, online: false, at: t[0].at }], "v came back: no flicker");
    }
}

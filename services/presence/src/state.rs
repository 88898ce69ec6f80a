//! Presence state: which edges hold which users, and when users were last seen.
//!
//! A user is online while any live edge reports them. Edges report deltas in batches and their full
//! list every heartbeat; an edge silent for two heartbeat intervals is dead and its users go offline.
//! Every online/offline transition is returned exactly once, for publishing.

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
    heartbeat: Duration,
}

#[derive(Default)]
struct Inner {
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
        if edges.is_empty() {
            out.push(Transition { user, online: true, at: Timestamp::now() });
        }
        edges.insert(edge.to_string());
    }

    fn remove(&mut self, edge: &str, user: Uuid, out: &mut Vec<Transition>) {
        if let Some(edges) = self.online.get_mut(&user) {
            edges.remove(edge);
            if edges.is_empty() {
                self.online.remove(&user);
                let at = Timestamp::now();
                self.last_seen.insert(user, at);
                out.push(Transition { user, online: false, at });
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
        heartbeat: Duration,
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
                inner.remove(edge, *u, &mut out);
            }
        }
        if let Some(full) = full {
            let full: HashSet<Uuid> = full.iter().copied().collect();
            for u in users.difference(&full).copied().collect::<Vec<_>>() {
                users.remove(&u);
                inner.remove(edge, u, &mut out);
            }
            for u in full {
                if users.insert(u) {
                    inner.add(edge, u, &mut out);
                }
            }
        }
        inner.edges.insert(edge.to_string(), EdgeState { users, last_report: Instant::now(), heartbeat });
        out
    }

    /// Drops edges silent for two heartbeat intervals; returns the transitions.
    pub fn expire_edges(&self) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut g = self.inner.lock().expect("presence lock");
        let inner = &mut *g;
        let dead: Vec<String> = inner
            .edges
            .iter()
            .filter(|(_, e)| e.last_report.elapsed() > e.heartbeat * 2)
            .map(|(k, _)| k.clone())
            .collect();
        for edge in dead {
            tracing::warn!(%edge, "edge missed two heartbeats; its users go offline");
            if let Some(e) = inner.edges.remove(&edge) {
                for u in e.users {
                    inner.remove(&edge, u, &mut out);
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
}

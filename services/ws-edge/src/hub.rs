//! The edge's shared state: local connections, their users' conversations, one bus subscription per
//! conversation with local members, and in-order, gap-free fan-out of bus events to connections.
//!
//! Locking: one `std::sync::Mutex` guards the maps; it is never held across an await. Deliveries
//! are non-blocking pushes of pre-serialized frames (one `Utf8Bytes` shared by every receiving
//! connection) onto each connection's `OutQueue`.

use crate::outq::{OutQueue, Rejected};
use crate::upstream::MessageStore;
use axum::extract::ws::Utf8Bytes;
use chat_authn::Verifier;
use chat_bus::{Delivery, Subscriptions};
use chat_common::rate::TokenBucket;
use chat_protocol::bus::{Envelope, EventKind, topics};
use chat_protocol::frames::ServerEvent;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;
use uuid::Uuid;

pub type ConnId = u64;

/// Close codes of the protocol.
pub mod close {
    pub const GOING_AWAY_DRAIN: u16 = 1012;
    pub const TOO_BIG: u16 = 1009;
    pub const UNSUPPORTED: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const TOKEN_EXPIRED: u16 = 4000;
    pub const TOKEN_REVOKED: u16 = 4001;
    pub const ABUSE: u16 = 4008;
    pub const SLOW_READER: u16 = 4009;
}

/// Shared between a connection's tasks and the hub: a request to close with a code.
#[derive(Default)]
pub struct ConnSignal {
    close: Mutex<Option<u16>>,
    pub notify: Notify,
}

impl ConnSignal {
    /// Requests a close; true for the first request (later ones keep the first code). A slow
    /// reader's close (4009, whichever path decided it) is counted here, once per connection.
    pub fn close(&self, code: u16) -> bool {
        let mut c = self.close.lock().expect("signal lock");
        if c.is_some() {
            return false;
        }
        *c = Some(code);
        self.notify.notify_waiters();
        self.notify.notify_one();
        if code == close::SLOW_READER {
            metrics::counter!("ws_slow_consumer_closes_total").increment(1);
        }
        true
    }
    pub fn requested(&self) -> Option<u16> {
        *self.close.lock().expect("signal lock")
    }
}

struct ConnEntry {
    user: Uuid,
    session: Uuid,
    queue: Arc<OutQueue>,
    signal: Arc<ConnSignal>,
    /// `resume=1`: message events held until the first `sync` is answered.
    hold: Option<Vec<(Uuid, i64, Utf8Bytes)>>,
    /// After that sync: per conversation, the last seq the replay sent, where this edge had not yet
    /// delivered that far (it lags the store). Live messages up to it were already replayed.
    /// Boxed: rare, and 8 bytes instead of 48 in every connection's entry.
    #[allow(clippy::box_collection)]
    floor: Option<Box<HashMap<Uuid, i64>>>,
}

impl ConnEntry {
    /// True when `seq` of `cid` was already sent to this connection by its resume replay.
    fn replayed(&mut self, cid: Uuid, seq: i64) -> bool {
        let Some(floor) = &mut self.floor else { return false };
        let Some(&last) = floor.get(&cid) else { return false };
        if seq >= last {
            floor.remove(&cid);
            if floor.is_empty() {
                self.floor = None;
            }
        }
        seq <= last
    }
}

struct UserEntry {
    conns: Vec<ConnId>,
    conversations: HashSet<Uuid>,
    bucket: TokenBucket,
    typing: TokenBucket,
}

struct ConvEntry {
    /// Local users in the conversation.
    members: HashSet<Uuid>,
    /// Everyone in it (for presence fan-out to users who share a conversation with the subject).
    all_members: HashSet<Uuid>,
    last_seq: i64,
    /// Messages that arrived ahead of a gap, waiting for the gap to be filled.
    pending: BTreeMap<i64, Utf8Bytes>,
    filling: bool,
}

#[derive(Default)]
struct State {
    conns: HashMap<ConnId, ConnEntry>,
    users: HashMap<Uuid, UserEntry>,
    convs: HashMap<Uuid, ConvEntry>,
    /// For every member of a followed conversation: which followed conversations they are in.
    subjects: HashMap<Uuid, HashSet<Uuid>>,
    /// Presence changes not yet reported.
    went_online: Vec<Uuid>,
    went_offline: Vec<Uuid>,
}

/// Typing changes a user may publish: a burst of 6, then 2 per second (a person typing and pausing
/// produces far fewer; a flood of alternating start/stop is cut to this).
const TYPING_RATE: f64 = 2.0;
const TYPING_BURST: f64 = 6.0;

pub struct Hub {
    state: Mutex<State>,
    subs: Subscriptions,
    /// For typing events, which skip the store (ephemeral, never persisted).
    pub bus: chat_bus::Bus,
    pub store: Arc<dyn MessageStore>,
    pub verifier: Arc<Verifier>,
    pub limits: crate::config::Limits,
    next_id: AtomicU64,
    /// Set when the drain starts: new connections are refused and `/readyz` fails, so load
    /// balancers move new clients elsewhere while the open ones are closed in batches.
    pub draining: std::sync::atomic::AtomicBool,
}

pub struct Registration {
    pub id: ConnId,
    pub queue: Arc<OutQueue>,
    pub signal: Arc<ConnSignal>,
}

/// Failed store requests in a row after which a gap fill gives up (about 30 s with the backoff).
const FILL_ATTEMPTS: u32 = 18;

/// Cap on messages parked behind a gap per conversation; past it the edge stops waiting for the
/// store and closes the members' connections so their clients `sync`.
const MAX_PENDING: usize = 10_000;

fn frame_of(ev: &ServerEvent) -> Utf8Bytes {
    Utf8Bytes::from(ev.to_json())
}

impl Hub {
    pub fn new(
        bus: chat_bus::Bus,
        subs: Subscriptions,
        store: Arc<dyn MessageStore>,
        verifier: Arc<Verifier>,
        limits: crate::config::Limits,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::default(),
            bus,
            subs,
            store,
            verifier,
            limits,
            next_id: AtomicU64::new(1),
            draining: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("hub lock")
    }

    /// Adds a connection. The first connection of a user loads the user's conversations and
    /// subscribes the ones this edge did not follow yet.
    pub async fn register(
        self: &Arc<Self>,
        user: Uuid,
        session: Uuid,
        resume: bool,
    ) -> Result<Registration, chat_common::ApiError> {
        let known = self.lock().users.contains_key(&user);
        let convs = if known { Vec::new() } else { self.store.user_conversations(user).await? };
        let queue = Arc::new(OutQueue::new(self.limits.outbound_queue));
        let signal = Arc::new(ConnSignal::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let new_topics = {
            let mut st = self.lock();
            let State { conns, users, convs: cmap, subjects, went_online, .. } = &mut *st;
            conns.insert(
                id,
                ConnEntry {
                    user,
                    session,
                    queue: queue.clone(),
                    signal: signal.clone(),
                    hold: resume.then(Vec::new),
                    floor: None,
                },
            );
            let mut new_topics = Vec::new();
            let entry = users.entry(user).or_insert_with(|| {
                went_online.push(user);
                UserEntry {
                    conns: Vec::new(),
                    conversations: HashSet::new(),
                    bucket: TokenBucket::full(self.limits.send_burst),
                    typing: TokenBucket::full(TYPING_BURST),
                }
            });
            entry.conns.push(id);
            for m in convs {
                if entry.conversations.insert(m.id) {
                    join(cmap, subjects, m.id, user, m.last_seq, &m.members, &mut new_topics);
                }
            }
            new_topics
        };
        metrics::gauge!("ws_connections").increment(1.0);
        metrics::counter!("ws_connects_total").increment(1);
        self.subscribe(&new_topics).await;
        self.catch_up_moved(user, new_topics).await;
        Ok(Registration { id, queue, signal })
    }

    /// Asks for the conversations' topics now (in order with unsubscriptions); the future completes
    /// once they are live.
    fn subscribe(&self, cids: &[Uuid]) -> impl Future<Output = ()> + Send + 'static {
        let confirmed =
            (!cids.is_empty()).then(|| self.subs.subscribe(cids.iter().map(|c| topics::conversation(*c)).collect()));
        async move {
            if let Some(c) = confirmed {
                c.await
            }
        }
    }

    /// Messages committed between learning a conversation's position and the subscription taking
    /// effect were not seen. One request for the user's positions finds the conversations that moved
    /// (instead of one history request per conversation on every connect); only those catch up.
    async fn catch_up_moved(self: &Arc<Self>, user: Uuid, cids: Vec<Uuid>) {
        if cids.len() <= 1 {
            for cid in cids {
                self.start_catch_up(cid);
            }
            return;
        }
        let moved: Vec<Uuid> = match self.store.user_conversations(user).await {
            Ok(now) => {
                let wanted: HashSet<Uuid> = cids.into_iter().collect();
                let st = self.lock();
                now.into_iter()
                    .filter(|m| wanted.contains(&m.id))
                    .filter(|m| st.convs.get(&m.id).is_some_and(|c| m.last_seq > c.last_seq))
                    .map(|m| m.id)
                    .collect()
            }
            Err(_) => cids,
        };
        for cid in moved {
            self.start_catch_up(cid);
        }
    }

    pub fn unregister(&self, id: ConnId) {
        let gone = {
            let mut st = self.lock();
            let State { conns, users, convs, subjects, went_offline, .. } = &mut *st;
            let Some(c) = conns.remove(&id) else { return };
            c.queue.close();
            let mut gone = Vec::new();
            if let Some(u) = users.get_mut(&c.user) {
                u.conns.retain(|x| *x != id);
                if u.conns.is_empty() {
                    let u = users.remove(&c.user).expect("present");
                    went_offline.push(c.user);
                    for cid in u.conversations {
                        leave(convs, subjects, cid, c.user, &mut gone);
                    }
                }
            }
            gone
        };
        metrics::gauge!("ws_connections").decrement(1.0);
        if !gone.is_empty() {
            self.subs.unsubscribe(gone.iter().map(|c| topics::conversation(*c)).collect());
        }
    }

    /// Everyone in a conversation this edge follows.
    pub fn conversation_members(&self, cid: Uuid) -> Vec<Uuid> {
        self.lock().convs.get(&cid).map(|c| c.all_members.iter().copied().collect()).unwrap_or_default()
    }

    /// Typing goes straight to the bus: ephemeral, never stored.
    pub async fn publish_typing(&self, cid: Uuid, user: Uuid, state: chat_protocol::frames::TypingState) {
        use chat_protocol::bus::{Envelope, EventHeader, EventKind};
        let mut h = EventHeader::new(EventKind::Typing);
        h.conversation_id = Some(cid);
        h.user_id = Some(user);
        let ev = chat_protocol::frames::ServerEvent::Typing { conversation_id: cid, user_id: user, state };
        let payload = Envelope::encode(&h, &ev.to_json());
        if let Err(e) = self.bus.publish(&topics::conversation(cid), payload).await {
            tracing::debug!(error = %e, "typing not published");
        }
    }

    pub fn is_member(&self, user: Uuid, cid: Uuid) -> bool {
        self.lock().users.get(&user).is_some_and(|u| u.conversations.contains(&cid))
    }

    /// Takes one send token for `user`; false when over the rate.
    pub fn take_send_token(&self, user: Uuid) -> bool {
        let (rate, burst) = (self.limits.send_rate, self.limits.send_burst);
        self.lock().users.get_mut(&user).is_some_and(|u| u.bucket.take(rate, burst))
    }

    /// Takes one typing token for `user`; false when over the typing budget.
    pub fn take_typing_token(&self, user: Uuid) -> bool {
        self.lock().users.get_mut(&user).is_some_and(|u| u.typing.take(TYPING_RATE, TYPING_BURST))
    }

    /// Records a renewed token's session for the connection (revocation closes by session).
    pub fn set_session(&self, id: ConnId, session: Uuid) {
        if let Some(c) = self.lock().conns.get_mut(&id) {
            c.session = session;
        }
    }

    /// Ends `resume=1` holding after the first sync: held messages the replay did not cover are
    /// queued now, in order, behind everything the sync sent.
    pub fn release_hold(&self, id: ConnId, replayed: &HashMap<Uuid, i64>) {
        let mut st = self.lock();
        let State { conns, convs, .. } = &mut *st;
        let Some(c) = conns.get_mut(&id) else {
            return;
        };
        let Some(held) = c.hold.take() else { return };
        for (cid, seq, frame) in held {
            if replayed.get(&cid).is_some_and(|r| seq <= *r) {
                continue;
            }
            push(c, frame, true);
        }
        // The store may be ahead of this edge's delivery (a gap being filled, a bus hop in flight):
        // those messages will arrive live after the replay already sent them.
        let ahead: HashMap<Uuid, i64> = replayed
            .iter()
            .filter(|(cid, seq)| convs.get(cid).is_some_and(|conv| **seq > conv.last_seq))
            .map(|(cid, seq)| (*cid, *seq))
            .collect();
        if !ahead.is_empty() {
            c.floor = Some(Box::new(ahead));
        }
    }

    /// Conversation ids and users (for drain and presence heartbeats).
    pub fn connection_ids(&self) -> Vec<ConnId> {
        self.lock().conns.keys().copied().collect()
    }

    pub fn close_connection(&self, id: ConnId, code: u16) {
        if let Some(c) = self.lock().conns.get(&id) {
            c.signal.close(code);
        }
    }

    /// Closes (4001) every connection whose session the verifier now knows to be revoked; runs
    /// whenever the verifier learned a revocation by a path other than this edge's bus events.
    pub fn spawn_revocation_sweeper(self: &Arc<Self>) {
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(hub) = hub.upgrade() else { return };
                let v = hub.verifier.revocation_version();
                if v == seen {
                    continue;
                }
                seen = v;
                for c in hub.lock().conns.values() {
                    if hub.verifier.is_revoked(c.session) {
                        c.signal.close(close::TOKEN_REVOKED);
                    }
                }
            }
        });
    }

    pub fn online_users(&self) -> Vec<Uuid> {
        self.lock().users.keys().copied().collect()
    }

    /// Presence changes since the last call.
    pub fn take_presence_changes(&self) -> (Vec<Uuid>, Vec<Uuid>) {
        let mut st = self.lock();
        (std::mem::take(&mut st.went_online), std::mem::take(&mut st.went_offline))
    }

    // --- bus side ---

    /// Consumes the subscription stream until it ends.
    pub async fn dispatch(self: Arc<Self>, mut rx: mpsc::Receiver<Delivery>) {
        while let Some(d) = rx.recv().await {
            match d {
                Delivery::Message { payload, .. } => {
                    if let Some(env) = Envelope::decode(payload) {
                        self.handle(env).await;
                    }
                }
                Delivery::Resubscribed => {
                    let cids: Vec<Uuid> = self.lock().convs.keys().copied().collect();
                    tracing::info!(conversations = cids.len(), "bus reconnected: catching up from the store");
                    for cid in cids {
                        self.start_catch_up(cid);
                    }
                    // Membership changes published while the subscription was down were missed too.
                    tokio::spawn(self.clone().reconcile_memberships());
                }
            }
        }
    }

    /// Handles one bus event as the dispatcher does (public for benchmarks and tests).
    pub async fn handle_event(self: &Arc<Self>, env: Envelope) {
        self.handle(env).await
    }

    async fn handle(self: &Arc<Self>, env: Envelope) {
        let Ok(frame) = Utf8Bytes::try_from(env.frame) else {
            return;
        };
        let h = env.header;
        metrics::counter!("bus_events_received_total").increment(1);
        let span = tracing::info_span!("bus.deliver", kind = ?h.kind);
        if let Some(tp) = &h.traceparent {
            chat_telemetry::set_remote_parent(&span, tp);
        }
        self.deliver(h, frame).instrument(span).await
    }

    async fn deliver(self: &Arc<Self>, h: chat_protocol::bus::EventHeader, frame: Utf8Bytes) {
        match h.kind {
            EventKind::Message => {
                if let Some(at) = h.at {
                    let lag = (chat_protocol::Timestamp::now().0 - at).max(0) as f64 / 1000.0;
                    metrics::histogram!("bus_delivery_lag_seconds").record(lag);
                }
                if let (Some(cid), Some(seq)) = (h.conversation_id, h.seq) {
                    self.on_message(cid, seq, frame);
                }
            }
            EventKind::MessageUpdated | EventKind::Read | EventKind::Typing => {
                let Some(cid) = h.conversation_id else { return };
                let typing = h.kind == EventKind::Typing;
                let skip = if typing { h.user_id } else { None };
                let st = self.lock();
                if let Some(conv) = st.convs.get(&cid) {
                    for u in conv.members.iter().filter(|u| Some(**u) != skip) {
                        for c in st.users.get(u).map(|u| u.conns.as_slice()).unwrap_or(&[]) {
                            if let Some(c) = st.conns.get(c) {
                                push(c, frame.clone(), !typing);
                            }
                        }
                    }
                }
            }
            EventKind::Conversation => self.on_conversation(h, frame),
            EventKind::SessionRevoked => {
                if let Some(sid) = h.session_id {
                    self.verifier.revoke(sid, h.until.unwrap_or(chat_authn::now_secs() + 86_400));
                    for c in self.lock().conns.values().filter(|c| c.session == sid) {
                        c.signal.close(close::TOKEN_REVOKED);
                    }
                }
            }
            EventKind::Presence => {
                let Some(subject) = h.user_id else { return };
                let st = self.lock();
                let Some(cids) = st.subjects.get(&subject) else { return };
                let mut recipients: HashSet<Uuid> = HashSet::new();
                for cid in cids {
                    if let Some(conv) = st.convs.get(cid) {
                        recipients.extend(conv.members.iter().filter(|u| **u != subject));
                    }
                }
                for u in recipients {
                    for c in st.users.get(&u).map(|u| u.conns.as_slice()).unwrap_or(&[]) {
                        if let Some(c) = st.conns.get(c) {
                            push(c, frame.clone(), false);
                        }
                    }
                }
            }
        }
    }

    fn on_message(self: &Arc<Self>, cid: Uuid, seq: i64, frame: Utf8Bytes) {
        let mut st = self.lock();
        let State { conns, users, convs, .. } = &mut *st;
        let Some(conv) = convs.get_mut(&cid) else {
            return;
        };
        if seq <= conv.last_seq {
            metrics::counter!("ws_duplicate_events_dropped_total").increment(1);
            return;
        }
        if seq > conv.last_seq + 1 {
            conv.pending.insert(seq, frame);
            if conv.pending.len() > MAX_PENDING {
                tracing::error!(%cid, "gap not fillable; closing members' connections so they resync");
                for c in member_conns(conv, users) {
                    if let Some(c) = conns.get(&c) {
                        c.signal.close(close::SLOW_READER);
                    }
                }
                conv.pending.clear();
                conv.last_seq = seq;
                return;
            }
            if !conv.filling {
                conv.filling = true;
                metrics::counter!("ws_gaps_detected_total").increment(1);
                drop(st);
                self.clone().spawn_fill(cid);
            }
            return;
        }
        deliver_in_order(conv, users, conns, cid, seq, frame);
    }

    fn start_catch_up(self: &Arc<Self>, cid: Uuid) {
        {
            let mut st = self.lock();
            let Some(conv) = st.convs.get_mut(&cid) else {
                return;
            };
            if conv.filling {
                return;
            }
            conv.filling = true;
        }
        self.clone().spawn_fill(cid);
    }

    /// Fetches from the store everything after the conversation's last delivered seq, delivers it
    /// in order with whatever was parked, and repeats until nothing is missing. Asked on behalf of a
    /// local member; one the store no longer counts as a member is reconciled and another asked.
    /// Bounded: after `FILL_ATTEMPTS` failures in a row the members' connections are closed (4009)
    /// so their clients reconnect and `sync`, instead of waiting behind the gap for ever.
    fn spawn_fill(self: Arc<Self>, cid: Uuid) {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut failures = 0u32;
            let mut refused: HashSet<Uuid> = HashSet::new();
            loop {
                let (after, via) = {
                    let mut st = self.lock();
                    let Some(conv) = st.convs.get_mut(&cid) else {
                        return;
                    };
                    match conv.members.iter().find(|u| !refused.contains(u)) {
                        Some(u) => (conv.last_seq, *u),
                        None => {
                            conv.filling = false;
                            return;
                        }
                    }
                };
                match self.store.history(via, cid, Some(after), 200).await {
                    Ok(page) => {
                        backoff = Duration::from_millis(100);
                        failures = 0;
                        let mut st = self.lock();
                        let State { conns, users, convs, .. } = &mut *st;
                        let Some(conv) = convs.get_mut(&cid) else {
                            return;
                        };
                        for m in page.messages {
                            if m.seq == conv.last_seq + 1 {
                                let seq = m.seq;
                                let frame = conv
                                    .pending
                                    .remove(&seq)
                                    .unwrap_or_else(|| frame_of(&ServerEvent::Message { message: m }));
                                deliver_in_order(conv, users, conns, cid, seq, frame);
                            }
                        }
                        let gap_remains = conv.pending.keys().next().is_some_and(|s| *s > conv.last_seq + 1);
                        if !page.has_more && !gap_remains {
                            conv.filling = false;
                            return;
                        }
                    }
                    Err(e) if e.code == "not_found" => {
                        // The store says `via` is not in it: a removal this edge missed.
                        refused.insert(via);
                        self.reconcile_user(via).await;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures >= FILL_ATTEMPTS {
                            tracing::error!(%cid, error = %e.detail, "gap fill keeps failing; closing members' connections so they resync");
                            self.give_up_fill(cid);
                            return;
                        }
                        tracing::warn!(%cid, error = %e.detail, "gap fill failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    }

    /// Ends a gap fill that cannot finish: members' connections close with 4009 (their clients
    /// reconnect and `sync` from the store), and the conversation starts over from the newest parked
    /// message.
    fn give_up_fill(&self, cid: Uuid) {
        let mut st = self.lock();
        let State { conns, users, convs, .. } = &mut *st;
        let Some(conv) = convs.get_mut(&cid) else { return };
        for c in member_conns(conv, users) {
            if let Some(c) = conns.get(&c) {
                c.signal.close(close::SLOW_READER);
            }
        }
        if let Some((&last, _)) = conv.pending.last_key_value() {
            conv.last_seq = last;
        }
        conv.pending.clear();
        conv.filling = false;
    }

    /// Brings every local user's memberships in line with the store, after the bus was down: a user
    /// removed meanwhile stops receiving the conversation, one added starts. Bounded: a few users at a
    /// time, each one request.
    pub async fn reconcile_memberships(self: Arc<Self>) {
        let users: Vec<Uuid> = self.lock().users.keys().copied().collect();
        let limit = Arc::new(tokio::sync::Semaphore::new(8));
        let mut tasks = Vec::with_capacity(users.len());
        for user in users {
            let (hub, limit) = (self.clone(), limit.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire().await;
                hub.reconcile_user(user).await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        metrics::counter!("ws_membership_reconciles_total").increment(1);
    }

    /// One user's memberships from the store, applied: joins and leaves as the bus events would have.
    pub async fn reconcile_user(self: &Arc<Self>, user: Uuid) {
        let list = match self.store.user_conversations(user).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%user, error = %e.detail, "membership reconcile failed; the user keeps their view");
                return;
            }
        };
        let (new_topics, gone) = {
            let mut st = self.lock();
            let State { users, convs, subjects, .. } = &mut *st;
            let Some(entry) = users.get_mut(&user) else { return };
            let now: HashSet<Uuid> = list.iter().map(|m| m.id).collect();
            let mut new_topics = Vec::new();
            let mut gone = Vec::new();
            for m in &list {
                if let Some(conv) = convs.get_mut(&m.id) {
                    set_all_members(conv, subjects, m.id, &m.members);
                }
                if entry.conversations.insert(m.id) {
                    join(convs, subjects, m.id, user, m.last_seq, &m.members, &mut new_topics);
                }
            }
            let lost: Vec<Uuid> = entry.conversations.iter().filter(|c| !now.contains(c)).copied().collect();
            for cid in lost {
                entry.conversations.remove(&cid);
                leave(convs, subjects, cid, user, &mut gone);
                metrics::counter!("ws_membership_repairs_total").increment(1);
            }
            (new_topics, gone)
        };
        if !gone.is_empty() {
            self.subs.unsubscribe(gone.iter().map(|c| topics::conversation(*c)).collect());
        }
        if !new_topics.is_empty() {
            self.subscribe(&new_topics).await;
            for cid in new_topics {
                self.start_catch_up(cid);
            }
        }
    }

    fn on_conversation(self: &Arc<Self>, h: chat_protocol::bus::EventHeader, frame: Utf8Bytes) {
        let Some(cid) = h.conversation_id else { return };
        let last_seq = h.seq.unwrap_or(0);
        let (new_topics, gone) = {
            let mut st = self.lock();
            let State { conns, users, convs, subjects, .. } = &mut *st;
            let mut new_topics = Vec::new();
            let mut gone = Vec::new();
            if let Some(conv) = convs.get_mut(&cid) {
                set_all_members(conv, subjects, cid, &h.members);
            }
            for u in &h.members {
                let Some(entry) = users.get_mut(u) else {
                    continue;
                };
                if entry.conversations.insert(cid) {
                    join(convs, subjects, cid, *u, last_seq, &h.members, &mut new_topics);
                }
                for c in &entry.conns {
                    if let Some(c) = conns.get(c) {
                        push(c, frame.clone(), true);
                    }
                }
            }
            if let Some(r) = h.removed
                && let Some(entry) = users.get_mut(&r)
            {
                for c in &entry.conns {
                    if let Some(c) = conns.get(c) {
                        push(c, frame.clone(), true);
                    }
                }
                if entry.conversations.remove(&cid) {
                    leave(convs, subjects, cid, r, &mut gone);
                }
            }
            (new_topics, gone)
        };
        if !gone.is_empty() {
            self.subs.unsubscribe(gone.iter().map(|c| topics::conversation(*c)).collect());
        }
        if new_topics.is_empty() {
            return;
        }
        // The dispatcher must not wait for the subscription: the stream feeding it may be blocked
        // on the dispatcher's full channel. The catch-up starts once the topics are live.
        let confirmed = self.subscribe(&new_topics);
        let hub = self.clone();
        tokio::spawn(async move {
            confirmed.await;
            for cid in new_topics {
                hub.start_catch_up(cid);
            }
        });
    }
}

fn join(
    convs: &mut HashMap<Uuid, ConvEntry>,
    subjects: &mut HashMap<Uuid, HashSet<Uuid>>,
    cid: Uuid,
    user: Uuid,
    last_seq: i64,
    all_members: &[Uuid],
    new_topics: &mut Vec<Uuid>,
) {
    let conv = convs.entry(cid).or_insert_with(|| {
        new_topics.push(cid);
        ConvEntry {
            members: HashSet::new(),
            all_members: HashSet::new(),
            last_seq,
            pending: BTreeMap::new(),
            filling: false,
        }
    });
    if conv.all_members.is_empty() {
        set_all_members(conv, subjects, cid, all_members);
    }
    conv.members.insert(user);
}

/// Replaces a followed conversation's member list, keeping the subject index in step.
fn set_all_members(conv: &mut ConvEntry, subjects: &mut HashMap<Uuid, HashSet<Uuid>>, cid: Uuid, members: &[Uuid]) {
    let new: HashSet<Uuid> = members.iter().copied().collect();
    for gone in conv.all_members.difference(&new) {
        if let Some(set) = subjects.get_mut(gone) {
            set.remove(&cid);
            if set.is_empty() {
                subjects.remove(gone);
            }
        }
    }
    for added in new.difference(&conv.all_members) {
        subjects.entry(*added).or_default().insert(cid);
    }
    conv.all_members = new;
}

fn leave(
    convs: &mut HashMap<Uuid, ConvEntry>,
    subjects: &mut HashMap<Uuid, HashSet<Uuid>>,
    cid: Uuid,
    user: Uuid,
    gone: &mut Vec<Uuid>,
) {
    if let Some(conv) = convs.get_mut(&cid) {
        conv.members.remove(&user);
        if conv.members.is_empty() {
            set_all_members(conv, subjects, cid, &[]);
            convs.remove(&cid);
            gone.push(cid);
        }
    }
}

fn member_conns(conv: &ConvEntry, users: &HashMap<Uuid, UserEntry>) -> Vec<ConnId> {
    conv.members.iter().filter_map(|u| users.get(u)).flat_map(|u| u.conns.iter().copied()).collect()
}

/// Delivers message `seq` (which must be `last_seq + 1`), then any parked successors.
fn deliver_in_order(
    conv: &mut ConvEntry,
    users: &HashMap<Uuid, UserEntry>,
    conns: &mut HashMap<ConnId, ConnEntry>,
    cid: Uuid,
    seq: i64,
    frame: Utf8Bytes,
) {
    let mut next = Some((seq, frame));
    while let Some((seq, frame)) = next {
        for u in &conv.members {
            let Some(u) = users.get(u) else { continue };
            for id in &u.conns {
                let Some(c) = conns.get_mut(id) else { continue };
                if let Some(held) = &mut c.hold {
                    // Bounded like the outbound queue the held messages will go to: a `resume=1`
                    // client that never syncs is a slow reader.
                    if held.len() >= c.queue.capacity() {
                        held.clear();
                        held.shrink_to_fit();
                        c.signal.close(close::SLOW_READER);
                    } else {
                        held.push((cid, seq, frame.clone()));
                    }
                } else if !c.replayed(cid, seq) {
                    push(c, frame.clone(), true);
                }
            }
        }
        metrics::counter!("ws_messages_delivered_total").increment(1);
        conv.last_seq = seq;
        next = conv.pending.remove(&(seq + 1)).map(|f| (seq + 1, f));
    }
    // Anything parked at or below the new position is a duplicate.
    while let Some((&s, _)) = conv.pending.first_key_value() {
        if s > conv.last_seq {
            break;
        }
        conv.pending.pop_first();
    }
}

/// Queues a frame without waiting. Inessential frames (typing, presence) are dropped once the queue
/// is three quarters full, keeping room for messages; an essential frame that finds the queue full
/// closes the connection (4009): the client must reconnect and `sync`.
fn push(c: &ConnEntry, frame: Utf8Bytes, essential: bool) {
    let limit = if essential { usize::MAX } else { c.queue.inessential_limit() };
    match c.queue.try_push_below(frame, limit) {
        Ok(()) => {}
        Err(Rejected::Full(_)) => {
            if essential {
                // Counted once per connection, however many frames find its queue full meanwhile.
                c.signal.close(close::SLOW_READER);
            } else {
                metrics::counter!("ws_frames_dropped_total").increment(1);
            }
        }
        Err(Rejected::Closed) => {}
    }
}

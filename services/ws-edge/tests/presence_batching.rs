//! A reconnect storm becomes a handful of presence requests, not one per connection: 10,000 sessions
//! registered on one edge reach presence in batches.

use chat_authn::{KeySource, Verifier};
use chat_common::ApiError;
use chat_protocol::internal::Membership;
use chat_protocol::{Message, MessagePage};
use chat_ws_edge::upstream::{MessageStore, Presence, PresenceReport};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

struct NoConversations;

#[async_trait::async_trait]
impl MessageStore for NoConversations {
    async fn user_conversations(&self, _: Uuid) -> Result<Vec<Membership>, ApiError> {
        Ok(Vec::new())
    }
    async fn send(&self, _: Uuid, _: Uuid, _: &str, _: Option<&str>) -> Result<Message, ApiError> {
        Err(ApiError::not_found())
    }
    async fn history(&self, _: Uuid, _: Uuid, _: Option<i64>, _: i64) -> Result<MessagePage, ApiError> {
        Err(ApiError::not_found())
    }
    async fn read(&self, _: Uuid, _: Uuid, _: i64) -> Result<(), ApiError> {
        Err(ApiError::not_found())
    }
}

#[derive(Default)]
struct Counting {
    reports: Mutex<Vec<PresenceReport>>,
}

#[async_trait::async_trait]
impl Presence for Counting {
    async fn report(&self, _edge: &str, r: &PresenceReport) -> Result<(), ApiError> {
        self.reports.lock().unwrap().push(r.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sessions_are_reported_in_batches() {
    let bus = chat_bus::Bus::connect(None, "").await.unwrap();
    let presence = Arc::new(Counting::default());
    let limits = chat_ws_edge::Limits {
        heartbeat: Duration::from_secs(60),
        send_rate: 20.0,
        send_burst: 40.0,
        outbound_queue: 16,
        drain_window: Duration::from_millis(100),
        socket_send_buffer: 0,
    };
    let verifier = Verifier::new(KeySource::Url("http://127.0.0.1:9/unused".into()));
    let edge =
        chat_ws_edge::build("edge-test", limits, bus, verifier, Arc::new(NoConversations), presence.clone()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start_reports = presence.reports.lock().unwrap().len();

    let users: Vec<Uuid> = (0..10_000).map(|_| Uuid::now_v7()).collect();
    let mut regs = Vec::new();
    for u in &users {
        regs.push(edge.hub.register(*u, Uuid::now_v7(), false).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reports = presence.reports.lock().unwrap().clone();
    let storm: Vec<&PresenceReport> = reports[start_reports..].iter().collect();
    let online: HashSet<Uuid> = storm.iter().flat_map(|r| r.online.iter().copied()).collect();
    assert_eq!(online.len(), 10_000, "every session reported");
    assert!(storm.len() <= 20, "10,000 connects became {} requests", storm.len());
    println!("10000 connects -> {} presence requests", storm.len());

    for r in &regs {
        edge.hub.unregister(r.id);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reports = presence.reports.lock().unwrap().clone();
    let after: Vec<&PresenceReport> = reports[start_reports + storm.len()..].iter().collect();
    let offline: HashSet<Uuid> = after.iter().flat_map(|r| r.offline.iter().copied()).collect();
    assert_eq!(offline.len(), 10_000);
    assert!(after.len() <= 20, "10,000 disconnects became {} requests", after.len());
}

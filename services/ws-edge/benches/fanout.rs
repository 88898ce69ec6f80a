//! Fan-out of one message event to K local connections of one conversation: decode the routing
//! header once, push the same pre-serialized frame to every connection's queue.

use chat_authn::{KeySource, Verifier};
use chat_common::ApiError;
use chat_protocol::bus::{Envelope, EventHeader, EventKind};
use chat_protocol::internal::Membership;
use chat_protocol::{Message, MessagePage};
use chat_ws_edge::upstream::{MessageStore, Presence, PresenceReport};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

struct OneConversation(Uuid, Vec<Uuid>);

#[async_trait::async_trait]
impl MessageStore for OneConversation {
    async fn user_conversations(&self, _: Uuid) -> Result<Vec<Membership>, ApiError> {
        Ok(vec![Membership { id: self.0, last_seq: 0, members: self.1.clone() }])
    }
    async fn send(&self, _: Uuid, _: Uuid, _: &str, _: Option<&str>) -> Result<Message, ApiError> {
        Err(ApiError::not_found())
    }
    async fn history(&self, _: Uuid, _: Uuid, _: Option<i64>, _: i64) -> Result<MessagePage, ApiError> {
        Ok(MessagePage { messages: Vec::new(), has_more: false })
    }
    async fn read(&self, _: Uuid, _: Uuid, _: i64) -> Result<(), ApiError> {
        Ok(())
    }
}

struct NoPresence;

#[async_trait::async_trait]
impl Presence for NoPresence {
    async fn report(&self, _: &str, _: &PresenceReport) -> Result<(), ApiError> {
        Ok(())
    }
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut group = c.benchmark_group("fanout_one_event");
    for k in [10usize, 100, 1000] {
        let cid = Uuid::now_v7();
        let users: Vec<Uuid> = (0..k).map(|_| Uuid::now_v7()).collect();
        let limits = chat_ws_edge::Limits {
            heartbeat: Duration::from_secs(60),
            send_rate: 20.0,
            send_burst: 40.0,
            outbound_queue: 1024,
            drain_window: Duration::from_millis(100),
            socket_send_buffer: 0,
        };
        let (edge, mut regs) = rt.block_on(async {
            let bus = chat_bus::Bus::connect(None, "").await.unwrap();
            let verifier = Verifier::new(KeySource::Url("http://127.0.0.1:9/unused".into()));
            let store = Arc::new(OneConversation(cid, users.clone()));
            let edge = chat_ws_edge::build("bench", limits, bus, verifier, store, Arc::new(NoPresence)).await;
            let mut regs = Vec::new();
            for u in &users {
                regs.push(edge.hub.register(*u, Uuid::now_v7(), false).await.unwrap());
            }
            // Let the catch-up of the newly followed conversation finish.
            tokio::time::sleep(Duration::from_millis(200)).await;
            (edge, regs)
        });
        let frame = r#"{"type":"message","message":{"id":"x","seq":1,"body":"hello there"}}"#;
        let mut seq = 0i64;
        group.bench_with_input(BenchmarkId::from_parameter(k), &k, |b, _| {
            b.iter(|| {
                seq += 1;
                let mut h = EventHeader::new(EventKind::Message);
                h.conversation_id = Some(cid);
                h.seq = Some(seq);
                let env = Envelope::decode(Envelope::encode(&h, frame)).unwrap();
                rt.block_on(edge.hub.handle_event(env));
                for r in regs.iter_mut() {
                    while r.queue.try_pop().is_some() {}
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);

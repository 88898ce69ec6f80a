//! Hot paths of every frame: decoding a client frame, encoding an event once for all receivers.

use chat_protocol::bus::{Envelope, EventHeader, EventKind};
use chat_protocol::frames::{ClientFrame, ServerEvent};
use chat_protocol::{Message, Timestamp};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use uuid::Uuid;

fn frames(c: &mut Criterion) {
    let cid = Uuid::now_v7();
    let send = format!(
        r#"{{"type":"send","id":"c-123","conversation_id":"{cid}","body":"hello there, how are you?","client_msg_id":"k-1"}}"#
    );
    c.bench_function("client_frame_decode_send", |b| b.iter(|| ClientFrame::decode(black_box(&send)).unwrap()));
    let m = Message {
        id: Uuid::now_v7(),
        conversation_id: cid,
        seq: 42,
        sender_id: Uuid::now_v7(),
        body: Some("hello there, how are you?".into()),
        client_msg_id: Some("k-1".into()),
        created_at: Timestamp::now(),
        edited_at: None,
        deleted_at: None,
    };
    let mut h = EventHeader::new(EventKind::Message);
    h.conversation_id = Some(cid);
    h.seq = Some(42);
    c.bench_function("event_encode_message", |b| {
        b.iter(|| Envelope::encode(black_box(&h), &ServerEvent::Message { message: m.clone() }.to_json()))
    });
    let payload = Envelope::encode(&h, &ServerEvent::Message { message: m.clone() }.to_json());
    c.bench_function("envelope_decode", |b| b.iter(|| Envelope::decode(black_box(payload.clone())).unwrap()));
}

criterion_group!(benches, frames);
criterion_main!(benches);

//! Everything the message-store puts on the bus, built as (topic, payload) for the outbox.

use chat_protocol::bus::{Envelope, EventHeader, EventKind, topics};
use chat_protocol::frames::{ConversationChange, ServerEvent};
use chat_protocol::{Conversation, Message};
use uuid::Uuid;

/// One outbox row: published after the commit that wrote it.
pub struct OutboxEvent {
    pub topic: String,
    pub payload: String,
}

/// The event carries the trace of the change that produced it, so delivery joins that trace.
fn event(topic: String, header: &EventHeader, frame: &ServerEvent) -> OutboxEvent {
    event_in(topic, header, frame, chat_telemetry::current_traceparent())
}

fn event_in(topic: String, header: &EventHeader, frame: &ServerEvent, traceparent: Option<String>) -> OutboxEvent {
    let mut header = header.clone();
    header.traceparent = traceparent;
    header.at = Some(chat_protocol::Timestamp::now().0);
    let bytes = Envelope::encode(&header, &frame.to_json());
    // Header and frame are both JSON, hence UTF-8.
    OutboxEvent { topic, payload: String::from_utf8(bytes.to_vec()).expect("JSON is UTF-8") }
}

/// A new message's event. The trace is passed in: group commit stores it outside its request's span.
pub fn message_created(m: &Message, traceparent: Option<String>) -> OutboxEvent {
    let mut h = EventHeader::new(EventKind::Message);
    h.conversation_id = Some(m.conversation_id);
    h.seq = Some(m.seq);
    h.user_id = Some(m.sender_id);
    event_in(topics::conversation(m.conversation_id), &h, &ServerEvent::Message { message: m.clone() }, traceparent)
}

pub fn message_updated(m: &Message) -> OutboxEvent {
    let mut h = EventHeader::new(EventKind::MessageUpdated);
    h.conversation_id = Some(m.conversation_id);
    h.user_id = Some(m.sender_id);
    event(topics::conversation(m.conversation_id), &h, &ServerEvent::MessageUpdated { message: m.clone() })
}

pub fn read(conversation_id: Uuid, user_id: Uuid, seq: i64) -> OutboxEvent {
    let mut h = EventHeader::new(EventKind::Read);
    h.conversation_id = Some(conversation_id);
    h.user_id = Some(user_id);
    event(topics::conversation(conversation_id), &h, &ServerEvent::Read { conversation_id, user_id, seq })
}

/// A conversation change for every member (and the removed user, if any). `unread_count` and
/// `last_read_seq` in the frame are zero: they are per-user, and one frame serves every member.
pub fn conversation(change: ConversationChange, c: &Conversation, removed: Option<Uuid>) -> OutboxEvent {
    let mut h = EventHeader::new(EventKind::Conversation);
    h.conversation_id = Some(c.id);
    h.seq = Some(c.last_seq);
    h.members = c.members.iter().map(|m| m.user_id).collect();
    h.removed = removed;
    let mut c = c.clone();
    c.unread_count = 0;
    c.last_read_seq = 0;
    event(topics::CONVERSATIONS.to_string(), &h, &ServerEvent::Conversation { change, conversation: c })
}

//! What services put on the bus: a small routing header plus the exact client frame, pre-serialized.
//!
//! Payload layout: `<header JSON>\n<frame JSON>`. Edges read the header to route and forward the frame
//! bytes untouched, so an event is serialized once by its producer and never again per receiver.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Topic names. The same strings are Redis channels and NATS subjects.
pub mod topics {
    use uuid::Uuid;

    /// Events of one conversation: message, message_updated, read, typing.
    pub fn conversation(cid: Uuid) -> String {
        format!("chat.conv.{cid}")
    }
    /// Conversation changes (created, updated, member_added, member_removed), to every edge: the header
    /// lists the recipients, so one publish serves a 1000-member group and edges learn memberships.
    pub const CONVERSATIONS: &str = "chat.conversations";
    /// Presence transitions (online/offline), fanned out by each edge to users who share a conversation.
    pub const PRESENCE: &str = "chat.presence";
    /// Revoked login sessions: every verifier refuses their tokens; edges close with 4001.
    pub const SESSIONS_REVOKED: &str = "chat.sessions.revoked";
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Message,
    MessageUpdated,
    Read,
    Typing,
    Conversation,
    Presence,
    SessionRevoked,
}

/// Routing facts an edge needs without parsing the frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventHeader {
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Uuid>,
    /// `message`: its seq (ordering and gap detection). `conversation`: the conversation's last_seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The acting user (typing is not echoed to them) or the subject (presence, session owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// `session_revoked`: the revoked login session; `exp` bounds how long verifiers must remember it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    /// `session_revoked`: Unix seconds until which the session's access tokens could still be valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// `conversation` events: the members after the change (they receive the frame).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Uuid>,
    /// `conversation` `member_removed`: the removed user (receives the frame, then nothing more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Uuid>,
    /// When the event was produced (Unix ms): edges measure commit-to-delivery lag from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    /// W3C trace context of the producing span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl EventHeader {
    pub fn new(kind: EventKind) -> Self {
        EventHeader {
            kind,
            conversation_id: None,
            seq: None,
            user_id: None,
            session_id: None,
            until: None,
            members: Vec::new(),
            removed: None,
            at: None,
            traceparent: None,
        }
    }
}

/// A decoded bus payload: the header and the frame bytes (a zero-copy slice of the payload, not
/// checked for UTF-8).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub header: EventHeader,
    pub frame: Bytes,
}

impl Envelope {
    pub fn encode(header: &EventHeader, frame: &str) -> Bytes {
        let mut out = serde_json::to_vec(header).expect("headers always serialize");
        out.reserve(frame.len() + 1);
        out.push(b'\n');
        out.extend_from_slice(frame.as_bytes());
        Bytes::from(out)
    }

    pub fn decode(payload: Bytes) -> Option<Envelope> {
        let nl = payload.iter().position(|b| *b == b'\n')?;
        let header = serde_json::from_slice(&payload[..nl]).ok()?;
        // The frame stays opaque bytes here: the edge checks UTF-8 once, when it makes the text frame.
        Some(Envelope { header, frame: payload.slice(nl + 1..) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip() {
        let mut h = EventHeader::new(EventKind::Message);
        h.seq = Some(7);
        let p = Envelope::encode(&h, r#"{"type":"x"}"#);
        let e = Envelope::decode(p).unwrap();
        assert_eq!(e.header, h);
        assert_eq!(&e.frame[..], br#"{"type":"x"}"#);
    }
}

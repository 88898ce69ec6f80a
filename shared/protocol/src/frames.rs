//! WebSocket frames: what the server sends (`ServerEvent`) and how client frames are decoded.

use crate::{Conversation, Message, PresenceStatus, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TypingState {
    Start,
    Stop,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConversationChange {
    Created,
    Updated,
    MemberAdded,
    MemberRemoved,
}

/// Every frame the server sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    Hello {
        user_id: Uuid,
        connection_id: Uuid,
        heartbeat_interval_ms: u64,
    },
    Message {
        message: Message,
    },
    MessageUpdated {
        message: Message,
    },
    Typing {
        conversation_id: Uuid,
        user_id: Uuid,
        state: TypingState,
    },
    Read {
        conversation_id: Uuid,
        user_id: Uuid,
        seq: i64,
    },
    Presence {
        user_id: Uuid,
        status: PresenceStatus,
        last_seen_at: Option<Timestamp>,
    },
    Conversation {
        change: ConversationChange,
        conversation: Conversation,
    },
    Ack {
        reply_to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Message>,
    },
    Pong {
        reply_to: String,
    },
    SyncDone {
        reply_to: String,
        truncated: HashMap<Uuid, bool>,
        not_found: Vec<Uuid>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
        code: String,
        message: String,
    },
}

impl ServerEvent {
    /// Serializes once; the bytes are then shared by every receiving connection.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server events always serialize")
    }
}

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Send { id: String, conversation_id: Uuid, body: String, client_msg_id: Option<String> },
    Typing { id: Option<String>, conversation_id: Uuid, state: TypingState },
    Read { id: Option<String>, conversation_id: Uuid, seq: i64 },
    Sync { id: String, positions: HashMap<Uuid, i64> },
    Auth { id: String, access_token: String },
    Ping { id: String },
}

/// Why a client frame was refused; `reply_to` is the frame's `id` when one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub reply_to: Option<String>,
    pub message: String,
}

// One flat shape for every frame type: a single parse, and the `id` survives even when the rest is wrong.
#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    ty: Option<String>,
    id: Option<serde_json::Value>,
    conversation_id: Option<serde_json::Value>,
    body: Option<serde_json::Value>,
    client_msg_id: Option<serde_json::Value>,
    state: Option<serde_json::Value>,
    seq: Option<serde_json::Value>,
    positions: Option<serde_json::Value>,
    access_token: Option<serde_json::Value>,
}

fn field_err(reply_to: &Option<String>, message: impl Into<String>) -> FrameError {
    FrameError { reply_to: reply_to.clone(), message: message.into() }
}

impl ClientFrame {
    /// Decodes one text frame. Errors carry a message fit to show the client.
    pub fn decode(text: &str) -> Result<ClientFrame, FrameError> {
        let raw: RawFrame = serde_json::from_str(text)
            .map_err(|e| FrameError { reply_to: None, message: format!("invalid JSON frame: {e}") })?;
        // An `id` that is not a 1–64 character string is itself an error, reported without reply_to.
        let id = match raw.id {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if (1..=64).contains(&s.chars().count()) => Some(s),
            Some(_) => return Err(field_err(&None, "`id` must be a string of 1-64 characters")),
        };
        let ty = raw.ty.ok_or_else(|| field_err(&id, "missing `type`"))?;
        let need_id = |id: &Option<String>| id.clone().ok_or_else(|| field_err(id, format!("`{ty}` needs an `id`")));
        let conv = |v: Option<serde_json::Value>| -> Result<Uuid, FrameError> {
            match v {
                Some(serde_json::Value::String(s)) => {
                    Uuid::parse_str(&s).map_err(|_| field_err(&id, "`conversation_id` must be a UUID"))
                }
                _ => Err(field_err(&id, "`conversation_id` must be a UUID string")),
            }
        };
        let string = |v: Option<serde_json::Value>, name: &str| -> Result<String, FrameError> {
            match v {
                Some(serde_json::Value::String(s)) => Ok(s),
                _ => Err(field_err(&id, format!("`{name}` must be a string"))),
            }
        };
        let opt_string = |v: Option<serde_json::Value>, name: &str| -> Result<Option<String>, FrameError> {
            match v {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                _ => Err(field_err(&id, format!("`{name}` must be a string"))),
            }
        };
        let int = |v: Option<serde_json::Value>, name: &str| -> Result<i64, FrameError> {
            v.as_ref().and_then(|v| v.as_i64()).ok_or_else(|| field_err(&id, format!("`{name}` must be an integer")))
        };
        match ty.as_str() {
            "send" => Ok(ClientFrame::Send {
                id: need_id(&id)?,
                conversation_id: conv(raw.conversation_id)?,
                body: string(raw.body, "body")?,
                client_msg_id: opt_string(raw.client_msg_id, "client_msg_id")?,
            }),
            "typing" => {
                let state = match raw.state.as_ref().and_then(|v| v.as_str()) {
                    Some("start") => TypingState::Start,
                    Some("stop") => TypingState::Stop,
                    _ => return Err(field_err(&id, "`state` must be \"start\" or \"stop\"")),
                };
                Ok(ClientFrame::Typing { conversation_id: conv(raw.conversation_id)?, state, id })
            }
            "read" => {
                Ok(ClientFrame::Read { conversation_id: conv(raw.conversation_id)?, seq: int(raw.seq, "seq")?, id })
            }
            "sync" => {
                let id = need_id(&id)?;
                let positions = match raw.positions {
                    Some(serde_json::Value::Object(map)) => {
                        let mut out = HashMap::with_capacity(map.len());
                        for (k, v) in map {
                            let cid = Uuid::parse_str(&k)
                                .map_err(|_| field_err(&Some(id.clone()), "`positions` keys must be UUIDs"))?;
                            let seq = v.as_i64().filter(|s| *s >= 0).ok_or_else(|| {
                                field_err(&Some(id.clone()), "`positions` values must be integers >= 0")
                            })?;
                            out.insert(cid, seq);
                        }
                        out
                    }
                    _ => return Err(field_err(&Some(id), "`positions` must be an object")),
                };
                Ok(ClientFrame::Sync { id, positions })
            }
            "auth" => {
                Ok(ClientFrame::Auth { id: need_id(&id)?, access_token: string(raw.access_token, "access_token")? })
            }
            "ping" => Ok(ClientFrame::Ping { id: need_id(&id)? }),
            other => Err(field_err(&id, format!("unknown frame type `{other}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_send_and_keeps_id_on_errors() {
        let cid = Uuid::now_v7();
        let f = ClientFrame::decode(&format!(
            r#"{{"type":"send","id":"a1","conversation_id":"{cid}","body":"hi","extra":1}}"#
        ))
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::Send { id: "a1".into(), conversation_id: cid, body: "hi".into(), client_msg_id: None }
        );
        let e = ClientFrame::decode(r#"{"type":"send","id":"a2","conversation_id":"x","body":"hi"}"#).unwrap_err();
        assert_eq!(e.reply_to.as_deref(), Some("a2"));
        let e = ClientFrame::decode(r#"{"type":"nope","id":"a3"}"#).unwrap_err();
        assert_eq!(e.reply_to.as_deref(), Some("a3"));
        assert!(ClientFrame::decode("not json").unwrap_err().reply_to.is_none());
        assert!(ClientFrame::decode(r#"{"type":"ping"}"#).is_err());
    }

    #[test]
    fn server_events_are_tagged() {
        let j = ServerEvent::Pong { reply_to: "p".into() }.to_json();
        assert_eq!(j, r#"{"type":"pong","reply_to":"p"}"#);
    }
}

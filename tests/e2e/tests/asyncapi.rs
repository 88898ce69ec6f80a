//! The AsyncAPI 3 document of the WebSocket protocol (docs/asyncapi.json) against the code: one
//! message per frame type in each direction, no more, and every field a frame carries described.
//! The matches below are exhaustive: a new frame type does not compile until it is listed here, and
//! this test then fails until the document describes it.

use chat_protocol::frames::{ClientFrame, ServerEvent};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn server_type(e: &ServerEvent) -> &'static str {
    match e {
        ServerEvent::Hello { .. } => "hello",
        ServerEvent::Message { .. } => "message",
        ServerEvent::MessageUpdated { .. } => "message_updated",
        ServerEvent::Typing { .. } => "typing",
        ServerEvent::Read { .. } => "read",
        ServerEvent::Presence { .. } => "presence",
        ServerEvent::Conversation { .. } => "conversation",
        ServerEvent::Ack { .. } => "ack",
        ServerEvent::Pong { .. } => "pong",
        ServerEvent::SyncDone { .. } => "sync_done",
        ServerEvent::Error { .. } => "error",
    }
}

fn client_type(f: &ClientFrame) -> &'static str {
    match f {
        ClientFrame::Send { .. } => "send",
        ClientFrame::Typing { .. } => "typing",
        ClientFrame::Read { .. } => "read",
        ClientFrame::Sync { .. } => "sync",
        ClientFrame::Auth { .. } => "auth",
        ClientFrame::Ping { .. } => "ping",
    }
}

const U: &str = "0190a0a0-0000-7000-8000-000000000001";

fn message() -> Value {
    json!({"id": U, "conversation_id": U, "seq": 3, "sender_id": U, "body": "hi", "client_msg_id": "c1",
        "created_at": "2026-01-01T00:00:00.000Z", "edited_at": null, "deleted_at": null})
}

/// One frame of each server type, every optional field present.
fn server_samples() -> Vec<Value> {
    let conversation = json!({"id": U, "kind": "direct", "title": null, "members": [], "created_at":
        "2026-01-01T00:00:00.000Z", "last_seq": 3, "last_message": null, "unread_count": 0, "last_read_seq": 0});
    vec![
        json!({"type": "hello", "user_id": U, "connection_id": U, "heartbeat_interval_ms": 25000}),
        json!({"type": "message", "message": message()}),
        json!({"type": "message_updated", "message": message()}),
        json!({"type": "typing", "conversation_id": U, "user_id": U, "state": "start"}),
        json!({"type": "read", "conversation_id": U, "user_id": U, "seq": 3}),
        json!({"type": "presence", "user_id": U, "status": "offline", "last_seen_at": "2026-01-01T00:00:00.000Z"}),
        json!({"type": "conversation", "change": "member_added", "conversation": conversation}),
        json!({"type": "ack", "reply_to": "s1", "message": message()}),
        json!({"type": "pong", "reply_to": "p1"}),
        json!({"type": "sync_done", "reply_to": "y1", "truncated": {U: false}, "not_found": [U]}),
        json!({"type": "error", "reply_to": "s1", "code": "not_found", "message": "no such conversation"}),
    ]
}

/// One frame of each client type, every optional field present.
fn client_samples() -> Vec<Value> {
    vec![
        json!({"type": "send", "id": "s1", "conversation_id": U, "body": "hi", "client_msg_id": "c1"}),
        json!({"type": "typing", "id": "t1", "conversation_id": U, "state": "stop"}),
        json!({"type": "read", "id": "r1", "conversation_id": U, "seq": 3}),
        json!({"type": "sync", "id": "y1", "positions": {U: 0}}),
        json!({"type": "auth", "id": "a1", "access_token": "token"}),
        json!({"type": "ping", "id": "p1"}),
    ]
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

/// The sample's fields are all described, and it has every field the document requires.
fn check(doc: &Value, name: &str, sample: &Value) {
    let m = &doc["components"]["messages"][name];
    assert!(m.is_object(), "docs/asyncapi.json has no message {name}");
    let payload = &m["payload"];
    assert_eq!(payload["properties"]["type"]["const"], sample["type"], "{name}: type");
    let described = keys(&payload["properties"]);
    let required: BTreeSet<String> =
        payload["required"].as_array().expect("required").iter().map(|r| r.as_str().unwrap().to_string()).collect();
    let fields = keys(sample);
    assert!(fields.is_subset(&described), "{name}: fields {fields:?} not all described in {described:?}");
    assert!(required.is_subset(&fields), "{name}: requires {required:?}, the code's frame has {fields:?}");
}

#[test]
fn asyncapi_document_matches_the_frame_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/asyncapi.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("docs/asyncapi.json")).expect("JSON");
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["channels"]["connection"]["address"], "/v1/ws");

    let mut listed = BTreeSet::new();
    for sample in server_samples() {
        // What the server really sends: parsed into the code's type and written back by it.
        let event: ServerEvent = serde_json::from_value(sample.clone()).expect("a server frame the code reads");
        let written: Value = serde_json::from_str(&event.to_json()).unwrap();
        let name = format!("server_{}", server_type(&event));
        check(&doc, &name, &written);
        listed.insert(name);
    }
    for sample in client_samples() {
        let frame = ClientFrame::decode(&sample.to_string()).expect("a client frame the code accepts");
        let name = format!("client_{}", client_type(&frame));
        check(&doc, &name, &sample);
        listed.insert(name);
    }
    let documented = keys(&doc["components"]["messages"]);
    assert_eq!(documented, listed, "the document describes exactly the code's frame types");

    // Each direction's operation lists its own messages.
    for (op, prefix) in [("receiveClientFrames", "client_"), ("sendServerEvents", "server_")] {
        let refs: BTreeSet<String> = doc["operations"][op]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|r| r["$ref"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
            .collect();
        let expected: BTreeSet<String> = listed.iter().filter(|n| n.starts_with(prefix)).cloned().collect();
        assert_eq!(refs, expected, "{op}");
    }
}

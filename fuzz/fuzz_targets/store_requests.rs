//! Conversation, member, role, message and read bodies, history and list queries and cursors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chat_message_store::routes::check_request_bodies(data));

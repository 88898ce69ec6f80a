//! Every text frame a WebSocket client can send goes through this decoder first.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The edge only decodes text frames, which the WebSocket layer has checked to be UTF-8.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = chat_protocol::frames::ClientFrame::decode(text);
    }
});

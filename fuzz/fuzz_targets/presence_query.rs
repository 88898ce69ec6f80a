//! The `user_ids` list of a presence query.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = chat_presence::parse_user_ids(s);
    }
});

//! Bus messages (header line + frame) as every edge decodes them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = chat_protocol::bus::Envelope::decode(bytes::Bytes::copy_from_slice(data));
});

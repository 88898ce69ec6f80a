//! Register, login, refresh and logout bodies, search queries and path ids of the auth service.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chat_auth::routes::check_request_bodies(data));

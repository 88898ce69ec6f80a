//! The fuzzers' seed corpus and every input a fuzzer crashed on (fuzz/corpus, fuzz/regressions),
//! replayed through the same functions the fuzz targets drive, on every test run.

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        for e in std::fs::read_dir(root.join(dir).join(target)).into_iter().flatten().flatten() {
            out.push(std::fs::read(e.path()).expect("corpus file"));
        }
    }
    assert!(!out.is_empty(), "no inputs for {target} under fuzz/corpus");
    out
}

/// How many inputs of `target` are UTF-8 and accepted by `ok`.
fn accepted(target: &str, ok: impl Fn(&str) -> bool) -> usize {
    inputs(target).iter().filter_map(|i| std::str::from_utf8(i).ok()).filter(|s| ok(s)).count()
}

#[test]
fn client_frame_corpus() {
    assert!(accepted("client_frame", |s| chat_protocol::frames::ClientFrame::decode(s).is_ok()) > 0, "valid seeds");
}

#[test]
fn bus_envelope_corpus() {
    let decoded = inputs("bus_envelope")
        .into_iter()
        .filter(|i| chat_protocol::bus::Envelope::decode(bytes::Bytes::from(i.clone())).is_some())
        .count();
    assert!(decoded > 0, "the seeds include valid envelopes");
}

#[test]
fn auth_requests_corpus() {
    for input in inputs("auth_requests") {
        chat_auth::routes::check_request_bodies(&input);
    }
}

#[test]
fn store_requests_corpus() {
    for input in inputs("store_requests") {
        chat_message_store::routes::check_request_bodies(&input);
    }
}

#[test]
fn presence_query_corpus() {
    assert!(accepted("presence_query", |s| chat_presence::parse_user_ids(s).is_ok()) > 0, "valid seeds");
}

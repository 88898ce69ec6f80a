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

#[test]
fn client_frame_corpus() {
    let mut decoded = 0;
    for input in inputs("client_frame") {
        if let Ok(text) = std::str::from_utf8(&input) {
            decoded += chat_protocol::frames::ClientFrame::decode(text).is_ok() as usize;
        }
    }
    assert!(decoded > 0, "the seeds include valid frames");
}

#[test]
fn bus_envelope_corpus() {
    let mut decoded = 0;
    for input in inputs("bus_envelope") {
        decoded += chat_protocol::bus::Envelope::decode(bytes::Bytes::from(input)).is_some() as usize;
    }
    assert!(decoded > 0, "the seeds include valid envelopes");
}

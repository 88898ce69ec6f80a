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
fn store_requests_corpus() {
    for input in inputs("store_requests") {
        chat_message_store::routes::check_request_bodies(&input);
    }
}

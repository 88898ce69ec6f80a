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
fn presence_query_corpus() {
    let mut valid = 0;
    for input in inputs("presence_query") {
        if let Ok(s) = std::str::from_utf8(&input) {
            valid += chat_presence::parse_user_ids(s).is_ok() as usize;
        }
    }
    assert!(valid > 0, "the seeds include valid lists");
}

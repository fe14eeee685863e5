//! Replays the committed fuzz corpora (`tests/fuzz/corpus/<target>/`) and the
//! inputs of fixed crashes (`tests/fuzz/regressions/<target>/`) through the
//! fuzz targets' library functions, so a stable `cargo test` keeps what the
//! nightly fuzzer found.

use std::fs;
use std::path::{Path, PathBuf};

use hookrelay::fuzzing;

fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let corpus = inputs("corpus", target);
    assert!(!corpus.is_empty(), "no corpus for {target}");
    for path in corpus.iter().chain(&inputs("regressions", target)) {
        let data = fs::read(path).expect("readable corpus file");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target} panics on {}", path.display());
    }
}

#[test]
fn record_decoder_corpus() {
    replay("record_decoder", fuzzing::record_decoder);
}

#[test]
fn config_parser_corpus() {
    replay("config_parser", fuzzing::config_parser);
}

#[test]
fn signature_headers_corpus() {
    replay("signature_headers", fuzzing::signature_headers);
}

//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) and the seeds
//! (`fuzz/seeds/<target>/`) through the same functions the fuzz targets
//! call, so a plain `cargo test` guards every input fuzzing ever kept,
//! without a fuzzer. A panic in any of them fails the test and names the
//! file (replay it with `cargo fuzz run -s none TARGET FILE`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use exoservice::bus::fuzz;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/corpus/<target>` and `fuzz/seeds/<target>`.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["corpus", "seeds"] {
        let dir = fuzz_dir().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

/// Runs every input of `target` through `run`; fails naming each input
/// that panicked. Expects at least `min` inputs (so a lost corpus fails
/// instead of passing on nothing).
fn replay(target: &str, min: usize, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        files.len() >= min,
        "{target}: only {} inputs in fuzz/corpus/{target} and fuzz/seeds/{target} (expected at least {min})",
        files.len()
    );
    // The panics are reported below, once each, with the file. One replay
    // at a time swaps the process's panic hook.
    static HOOK: Mutex<()> = Mutex::new(());
    let _one = HOOK.lock().unwrap_or_else(PoisonError::into_inner);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failed.push(format!("{}: {text}", file.display()));
        }
    }
    std::panic::set_hook(hook);
    println!(
        "{target}: replayed {} inputs in {:?}",
        files.len(),
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{target}: {} inputs panicked:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{target}: the replay took {:?}; minimize the corpus (cargo fuzz cmin)",
        started.elapsed()
    );
}

#[test]
fn frame_reader_corpus() {
    replay("frame_reader", 40, fuzz::read_frame);
}

#[test]
fn config_reader_corpus() {
    replay("config_reader", 20, fuzz::read_config);
}

#[test]
fn bus_frames_corpus() {
    replay("bus_frames", 30, fuzz::route_frames);
}

/// The harness itself finds what it is meant to find: a frame the bus's
/// reader and `Message::parse` disagree on would fail; the seeds hold the
/// conformance vectors.
#[test]
fn seeds_hold_the_conformance_frames() {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance/frames.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let seeds: Vec<Vec<u8>> = inputs("frame_reader")
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    for case in doc["frames"].as_array().unwrap() {
        let frame = case["frame"].as_str().unwrap().as_bytes();
        assert!(
            seeds.iter().any(|s| s == frame),
            "frames.json vector missing from fuzz/seeds/frame_reader (run fuzz/make-seeds): {}",
            case["why"]
        );
        fuzz::read_frame(frame);
    }
}

//! Replays the fuzzers' kept inputs on stable: every file of
//! `fuzz/seeds/TARGET/` (the hand-made seeds), `fuzz/corpus/TARGET/` (the
//! minimised corpus `scripts/fuzz.sh` keeps) and `fuzz/regressions/TARGET/`
//! (inputs that once crashed a fuzz build, see its README) goes
//! through the same `wasm_sup::fuzzing` function the `cargo fuzz` target
//! calls, so CI guards every input the fuzzers ever found. Each must return
//! (`Ok` or `Err`); a panic fails the test, naming the file.
//!
//! A target whose corpus is missing or empty fails too, so this cannot
//! silently test nothing, and the whole corpus stays within DESIGN.md's
//! budget of about 300 inputs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The fuzz crate, beside the workspace.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the repository")
        .join("fuzz")
}

/// The files directly inside `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every kept input of `target`: seeds, corpus and regressions, failing
/// when the seeds or the corpus are missing or empty.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut inputs = Vec::new();
    for kind in ["seeds", "corpus"] {
        let dir = fuzz_dir().join(kind).join(target);
        let files = files_in(&dir);
        assert!(
            !files.is_empty(),
            "{} is missing or empty: the fuzz {kind} are kept in the repository (see scripts/fuzz.sh)",
            dir.display()
        );
        inputs.extend(files);
    }
    inputs.extend(files_in(&fuzz_dir().join("regressions").join(target)));
    inputs
}

/// Runs every kept input of `target` through `run`; fails naming each input
/// on which it panicked. Each outcome is printed (shown with `--nocapture`,
/// or when the test fails).
fn replay<T: std::fmt::Debug>(target: &str, run: impl Fn(&[u8]) -> T) {
    let inputs = inputs(target);
    let mut panicked = Vec::new();
    for input in &inputs {
        let data = std::fs::read(input).expect("a readable corpus file");
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(outcome) => println!("{}: {outcome:?}", input.display()),
            Err(_) => panicked.push(input.display().to_string()),
        }
    }
    assert!(
        panicked.is_empty(),
        "{} of {} {target} inputs panicked (see the panics above): {panicked:#?}",
        panicked.len(),
        inputs.len()
    );
}

#[test]
fn config_corpus_replays() {
    replay("config", wasm_sup::fuzzing::config);
}

#[test]
fn component_corpus_replays() {
    replay("component", wasm_sup::fuzzing::component);
}

#[test]
fn admin_corpus_replays() {
    replay("admin", wasm_sup::fuzzing::admin);
}

/// DESIGN.md ("Baselines and noise"): CI replays at most ~300 minimised inputs.
#[test]
fn the_kept_corpus_stays_small() {
    let total: usize = ["config", "component", "admin"]
        .iter()
        .map(|t| inputs(t).len())
        .sum();
    assert!(
        total <= 300,
        "the fuzz corpus holds {total} inputs, over the ~300 CI replays: minimise it with scripts/fuzz.sh"
    );
}

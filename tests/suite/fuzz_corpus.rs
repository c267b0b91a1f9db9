//! The committed fuzz corpus, replayed under plain `cargo test` (stable Rust, no libFuzzer):
//! every file of `fuzz/corpus/TARGET/` goes through the same harness function the fuzz target
//! calls (`fuzz/src/lib.rs`) and must not panic; the seeds made by `examples/fuzz_corpus.rs`
//! (`valid-*`) must also be accepted. Inputs a fuzzer found, crashes included once fixed, stay in
//! the corpus as regression tests.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn names_in(dir: &Path, suffix: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(suffix).map(str::to_string)
        })
        .collect()
}

#[test]
fn every_fuzz_target_has_a_harness_function_and_a_corpus() {
    let harness: BTreeSet<String> = harness::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let targets = names_in(&fuzz_dir().join("fuzz_targets"), ".rs");
    assert_eq!(
        harness, targets,
        "fuzz/fuzz_targets/*.rs and harness::TARGETS differ"
    );
    let corpora = names_in(&fuzz_dir().join("corpus"), "");
    assert_eq!(
        harness, corpora,
        "fuzz/corpus/* and harness::TARGETS differ"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in &harness {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
    }
}

#[test]
fn every_committed_fuzz_input_runs_without_panic_and_every_seed_parses() {
    let mut problems = Vec::new();
    let mut count = 0;
    for (target, run) in harness::TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let mut seeds = 0;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let valid = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("valid-"));
            count += 1;
            match std::panic::catch_unwind(|| run(&data)) {
                Err(_) => problems.push(format!("{}: panicked", path.display())),
                Ok(Err(e)) if valid => {
                    problems.push(format!("{}: a valid seed was refused: {e}", path.display()))
                }
                Ok(_) => {}
            }
            seeds += usize::from(valid);
        }
        if seeds == 0 {
            problems.push(format!("{}: no valid-* seed", dir.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {count} inputs failed:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

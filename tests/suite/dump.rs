//! `lifeboat dump` (issue 21): one file of a snapshot to standard output, every chunk verified
//! before it is written; damage stops it with an error, never wrong bytes.

use std::fs;

use crate::common::*;

/// A file of one job's snapshot goes to a pipe byte for byte: chosen by `--job`, or by the
/// path alone (the only snapshots that hold it are the db job's), and the command says which
/// snapshot it read. A directory, a missing path and a relative path are refused, naming why.
#[test]
fn dump_writes_one_file_of_the_chosen_snapshot() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let (db, etc) = (scratch.join("db"), scratch.join("etc"));
    let dump = db.join("backups/db.sql");
    let content = random_bytes(5 * MIB as usize + 12345, 7);
    write_file(&dump, &content);
    write_file(&etc.join("hosts"), b"127.0.0.1 localhost\n");
    repo.backup(args!["--job", "db", &db]);
    repo.backup(args!["--job", "etc", &etc]);

    for extra in [args!["--job", "db"], args![]] {
        let mut all = extra.clone();
        all.extend(args!["latest", &dump]);
        let out = repo.run("dump", all).success();
        assert!(
            out.stdout == content,
            "{extra:?}: the bytes differ from the source"
        );
        assert!(
            out.stderr().contains("job db"),
            "{extra:?}\n{}",
            out.stderr()
        );
    }
    let out = repo
        .run("dump", args!["--job", "etc", "latest", etc.join("hosts")])
        .success();
    assert_eq!(out.stdout, b"127.0.0.1 localhost\n");

    let out = repo
        .run("dump", args!["--job", "db", "latest", db.join("backups")])
        .expect_code(1);
    assert!(out.stderr().contains("is a directory"), "{out}");
    assert!(out.stdout.is_empty());
    let out = repo
        .run("dump", args!["--job", "db", "latest", db.join("nope.sql")])
        .expect_code(1);
    assert!(out.stderr().contains("is not in snapshot"), "{out}");
    let out = repo
        .run("dump", args!["latest", "backups/db.sql"])
        .expect_code(1);
    assert!(out.stderr().contains("absolute"), "{out}");
}

/// A damaged chunk in the middle of the file stops the dump with an error and a non-zero exit:
/// what went out is the file's beginning, exactly, and the error says how much it was.
#[test]
fn a_damaged_chunk_stops_the_dump_after_the_intact_beginning() {
    let (repo, _scratch, src, _) = repo_with_big_file();
    corrupt_largest_pack(&repo);
    let source = fs::read(src.join("big.bin")).expect("source");
    let out = repo
        .run("dump", args!["latest", src.join("big.bin")])
        .expect_code(1);
    assert!(
        out.stdout.len() < source.len() && source.starts_with(&out.stdout),
        "{} of {} bytes written, and they must be the file's beginning",
        out.stdout.len(),
        source.len()
    );
    assert!(
        out.stderr()
            .contains(&format!("stopped after {} bytes", out.stdout.len())),
        "{out}"
    );
}

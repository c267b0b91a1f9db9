//! Makes the golden damaged repositories of `tests/fixtures/damaged/` (see the README there).
//!
//! ```sh
//! cargo run --example make-damaged-fixtures            # writes tests/fixtures/damaged/<case>/
//! LIFEBOAT_BLESS=1 cargo test --test suite repair::            # pins what check says about each
//! ```
//!
//! One small repository is built from the deterministic source of
//! `tests/suite/common/damaged_source.rs` (written to `/tmp/lifeboat-fixture-source`): snapshot 1 of
//! `alpha/`, snapshot 2 of `beta/`, then stage 2 and snapshot 3 of `alpha/` (incremental). Each
//! case is a copy of it with one kind of damage, and `damage.json` beside it: what was damaged
//! and, worked out here from the undamaged repository (not by the code under test), which files
//! and directories of which snapshot the damage costs. Objects are encrypted with random nonces,
//! so every run gives new bytes; the tests compare against the committed copies.

#[path = "../tests/suite/common/damaged_source.rs"]
mod damaged_source;

use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat::id::{BlobId, PackId, SnapshotId};
use lifeboat::ops::backup::{backup, BackupOptions};
use lifeboat::repo::pack::{EncodedBlob, PackBuilder};
use lifeboat::repo::{
    BlobKind, Credentials, Index, InitOptions, KdfSetting, NodeKind, PackEntry, Repository,
};
use lifeboat::storage::{FileKind, LocalStorage};
use serde_json::json;

type Res<T> = Result<T, Box<dyn Error>>;

/// The password of every fixture (the test suite's).
const PASSWORD: &str = "correct horse battery staple";

/// What one backup wrote.
struct Run {
    snapshot: SnapshotId,
    index: String,
    data_pack: Option<PackId>,
    tree_pack: Option<PackId>,
}

fn open(dir: &Path) -> Res<Repository> {
    let storage = Arc::new(LocalStorage::new(dir));
    Ok(Repository::open(storage, || {
        Ok(Credentials::Password(zeroize::Zeroizing::new(
            PASSWORD.as_bytes().to_vec(),
        )))
    })?)
}

fn names(repo: &Repository, kind: FileKind) -> Res<HashSet<String>> {
    Ok(repo
        .storage()
        .list(kind)?
        .into_iter()
        .map(|(n, _)| n)
        .collect())
}

fn run_backup(repo: &Repository, path: PathBuf) -> Res<Run> {
    let before = names(repo, FileKind::Index)?;
    let opts = BackupOptions {
        paths: vec![path],
        host: "fixture-host".into(),
        threads: 1,
        ..Default::default()
    };
    let done = backup(repo, &opts, Arc::default())?;
    let mut new: Vec<String> = names(repo, FileKind::Index)?
        .difference(&before)
        .cloned()
        .collect();
    if new.len() != 1 {
        return Err(format!("a backup wrote {} index objects, expected 1", new.len()).into());
    }
    let index = new.remove(0);
    let (mut data_pack, mut tree_pack) = (None, None);
    for (pack, entries) in repo.load_index_file(&index)? {
        match entries.first().map(|e| e.kind) {
            Some(BlobKind::Data) => data_pack = Some(pack),
            Some(BlobKind::Tree) => tree_pack = Some(pack),
            None => {}
        }
    }
    Ok(Run {
        snapshot: done.id,
        index,
        data_pack,
        tree_pack,
    })
}

fn copy_dir(from: &Path, to: &Path) -> Res<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Removes the empty directories of a repository's layout (git keeps none; the tests make
/// them again).
fn remove_empty_dirs(dir: &Path) -> Res<bool> {
    let mut empty = true;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && remove_empty_dirs(&entry.path())? {
            fs::remove_dir(entry.path())?;
        } else {
            empty = false;
        }
    }
    Ok(empty)
}

fn pack_path(repo_dir: &Path, pack: &PackId) -> PathBuf {
    repo_dir.join(FileKind::Pack.path(&pack.to_hex()))
}

/// The listing at `rel` (components below the root listing) of a snapshot.
fn listing_at(repo: &Repository, index: &Index, root: BlobId, rel: &[&str]) -> Res<BlobId> {
    let mut id = root;
    for name in rel {
        let tree = repo.load_tree(index, &id)?;
        id = tree
            .find(name.as_bytes())
            .and_then(|n| n.subtree)
            .ok_or_else(|| format!("no directory {name} in the listing"))?;
    }
    Ok(id)
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// What a snapshot loses to damaged blobs: files removed, directories emptied, and every file
/// no longer restored (removed, or beneath an emptied directory).
#[derive(Default)]
struct Loss {
    removed_files: Vec<String>,
    emptied_dirs: Vec<String>,
    lost_files: Vec<String>,
}

fn files_beneath(
    repo: &Repository,
    index: &Index,
    tree: BlobId,
    dir: &str,
    out: &mut Vec<String>,
) -> Res<()> {
    for node in repo.load_tree(index, &tree)?.nodes {
        let path = format!("{dir}/{}", String::from_utf8_lossy(&node.name));
        match node.kind {
            NodeKind::Dir => {
                if let Some(sub) = node.subtree {
                    files_beneath(repo, index, sub, &path, out)?;
                }
            }
            NodeKind::File => out.push(path),
            _ => {}
        }
    }
    Ok(())
}

fn walk_loss(
    repo: &Repository,
    index: &Index,
    tree: BlobId,
    dir: &str,
    bad: &HashSet<BlobId>,
    loss: &mut Loss,
) -> Res<()> {
    for node in repo.load_tree(index, &tree)?.nodes {
        let path = format!("{dir}/{}", String::from_utf8_lossy(&node.name));
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) if bad.contains(&sub) => {
                loss.emptied_dirs.push(path.clone());
                files_beneath(repo, index, sub, &path, &mut loss.lost_files)?;
            }
            (NodeKind::Dir, Some(sub)) => walk_loss(repo, index, sub, &path, bad, loss)?,
            (NodeKind::File, _) if node.content.iter().any(|c| bad.contains(c)) => {
                loss.removed_files.push(path.clone());
                loss.lost_files.push(path);
            }
            _ => {}
        }
    }
    Ok(())
}

struct Base {
    dir: PathBuf,
    repo: Repository,
    index: Index,
    runs: Vec<Run>,
    /// (snapshot, backed-up path, stage of the source)
    snapshots: Vec<(SnapshotId, String, u32)>,
}

impl Base {
    fn root_of(&self, s: &SnapshotId) -> Res<BlobId> {
        Ok(self.repo.load_snapshot(s)?.tree)
    }

    /// The losses of every snapshot to these damaged blobs, as JSON keyed by snapshot id.
    fn losses(&self, bad: &HashSet<BlobId>) -> Res<serde_json::Value> {
        let mut out = BTreeMap::new();
        for (id, _, _) in &self.snapshots {
            let mut loss = Loss::default();
            walk_loss(
                &self.repo,
                &self.index,
                self.root_of(id)?,
                "",
                bad,
                &mut loss,
            )?;
            if loss.lost_files.is_empty() && loss.emptied_dirs.is_empty() {
                continue;
            }
            for v in [
                &mut loss.removed_files,
                &mut loss.emptied_dirs,
                &mut loss.lost_files,
            ] {
                v.sort();
            }
            out.insert(
                id.to_hex(),
                json!({
                    "removed_files": loss.removed_files,
                    "emptied_dirs": loss.emptied_dirs,
                    "lost_files": loss.lost_files,
                }),
            );
        }
        Ok(serde_json::to_value(out)?)
    }

    fn data_entries(&self, pack: &PackId) -> Vec<PackEntry> {
        let mut entries: Vec<PackEntry> = self
            .index
            .by_pack()
            .into_iter()
            .find(|(p, _)| p == pack)
            .map(|(_, e)| e)
            .unwrap_or_default();
        entries.sort_by_key(|e| e.offset);
        entries
    }
}

/// One fixture: its name, what was done, the damaged object, whether only reading data finds
/// the damage, and what each snapshot loses.
struct Case<'a> {
    name: &'a str,
    description: &'a str,
    object: Option<String>,
    read_data: bool,
    lost: serde_json::Value,
}

fn write_case(
    out: &Path,
    base: &Base,
    case: Case<'_>,
    damage: impl FnOnce(&Path) -> Res<()>,
) -> Res<()> {
    let Case {
        name: case,
        description,
        object,
        read_data,
        lost,
    } = case;
    let dir = out.join(case);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let repo_dir = dir.join("repo");
    copy_dir(&base.dir, &repo_dir)?;
    damage(&repo_dir)?;
    remove_empty_dirs(&repo_dir)?;
    let snapshots: Vec<_> = base
        .snapshots
        .iter()
        .map(|(id, path, stage)| json!({"id": id.to_hex(), "path": path, "stage": stage}))
        .collect();
    let manifest = json!({
        "case": case,
        "description": description,
        "source_root": damaged_source::SOURCE_ROOT,
        "snapshots": snapshots,
        "damaged_object": object,
        "needs_read_data": read_data,
        "lost": lost,
    });
    fs::write(
        dir.join("damage.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    println!("wrote {}", dir.display());
    Ok(())
}

fn flip(path: &Path, offset: u64) -> Res<()> {
    let mut bytes = fs::read(path)?;
    let b = bytes
        .get_mut(offset as usize)
        .ok_or("flip: offset beyond the end")?;
    *b ^= 0xff;
    fs::write(path, bytes)?;
    Ok(())
}

fn main() -> Res<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "tests/fixtures/damaged".into()),
    );
    let src = Path::new(damaged_source::SOURCE_ROOT);
    if src.exists() {
        fs::remove_dir_all(src)?;
    }
    fs::create_dir_all(src)?;
    damaged_source::write_stage1(src)?;

    let work = tempfile::tempdir()?;
    let dir = work.path().join("base");
    let opts = InitOptions {
        kdf: KdfSetting::CHEAPEST,
        ..InitOptions::default()
    };
    let repo = Repository::init(
        Arc::new(LocalStorage::new(&dir)),
        &opts,
        Some(PASSWORD.as_bytes()),
    )?;
    let alpha = src.join("alpha");
    let beta = src.join("beta");
    let s1 = run_backup(&repo, alpha.clone())?;
    let s2 = run_backup(&repo, beta.clone())?;
    damaged_source::write_stage2(src)?;
    let s3 = run_backup(&repo, alpha.clone())?;
    let index = repo.load_index()?;
    let alpha_str = alpha.to_string_lossy().into_owned();
    let base = Base {
        snapshots: vec![
            (s1.snapshot, alpha_str.clone(), 1),
            (s2.snapshot, beta.to_string_lossy().into_owned(), 1),
            (s3.snapshot, alpha_str.clone(), 2),
        ],
        dir,
        repo,
        index,
        runs: vec![s1, s2, s3],
    };
    let none = json!({});
    let pack = |run: usize, data: bool| -> Res<PackId> {
        let r = &base.runs[run];
        if data { r.data_pack } else { r.tree_pack }
            .ok_or_else(|| "a backup wrote no such pack".into())
    };

    write_case(
        &out,
        &base,
        Case {
            name: "healthy",
            description: "no damage (the control case)",
            object: None,
            read_data: false,
            lost: none.clone(),
        },
        |_| Ok(()),
    )?;

    // Snapshot 3's new data (alpha/b.bin changed, alpha/new.bin) is gone.
    let d3 = pack(2, true)?;
    let bad: HashSet<BlobId> = base.data_entries(&d3).iter().map(|e| e.id).collect();
    write_case(
        &out,
        &base,
        Case {
            name: "pack-missing",
            description: "the data pack of snapshot 3 was deleted",
            object: Some(FileKind::Pack.path(&d3.to_hex())),
            read_data: false,
            lost: base.losses(&bad)?,
        },
        |r| Ok(fs::remove_file(pack_path(r, &d3))?),
    )?;

    // Snapshot 3's index object is gone: its packs are unindexed, nothing is lost.
    let i3 = base.runs[2].index.clone();
    write_case(
        &out,
        &base,
        Case {
            name: "index-missing",
            description: "the index object of snapshot 3 was deleted",
            object: Some(FileKind::Index.path(&i3)),
            read_data: false,
            lost: none.clone(),
        },
        |r| Ok(fs::remove_file(r.join(FileKind::Index.path(&i3)))?),
    )?;

    // Snapshot 1's data pack cut in the middle of a blob: the blobs before the cut survive.
    let d1 = pack(0, true)?;
    let entries = base.data_entries(&d1);
    let middle = entries[entries.len() / 2];
    let cut = u64::from(middle.offset) + u64::from(middle.stored_len) / 2;
    let bad: HashSet<BlobId> = entries
        .iter()
        .filter(|e| u64::from(e.offset) + u64::from(e.stored_len) > cut)
        .map(|e| e.id)
        .collect();
    write_case(
        &out,
        &base,
        Case {
            name: "truncated-pack",
            description: &format!("the data pack of snapshot 1 was truncated to {cut} bytes (its header and {} of its {} chunks are lost)", bad.len(), entries.len()),
            object: Some(FileKind::Pack.path(&d1.to_hex())),
            read_data: false,
            lost: base.losses(&bad)?,
        },
        |r| {
            let f = fs::OpenOptions::new().write(true).open(pack_path(r, &d1))?;
            Ok(f.set_len(cut)?)
        },
    )?;

    // One byte of snapshot 1's listing of alpha/sub flipped (snapshot 3 has its own: the
    // access times in it differ).
    let root1 = base.root_of(&base.runs[0].snapshot)?;
    let mut rel = components(&alpha_str);
    rel.push("sub");
    let sub = listing_at(&base.repo, &base.index, root1, &rel)?;
    let e = *base.index.get(&sub).ok_or("alpha/sub is not indexed")?;
    let t1 = base.index.pack_id(e.pack);
    write_case(
        &out,
        &base,
        Case {
            name: "tree-flipped-byte",
            description: "one byte flipped in the directory listing of alpha/sub in snapshot 1",
            object: Some(FileKind::Pack.path(&t1.to_hex())),
            read_data: false,
            lost: base.losses(&HashSet::from([sub]))?,
        },
        |r| {
            flip(
                &pack_path(r, &t1),
                u64::from(e.offset) + u64::from(e.stored_len) / 2,
            )
        },
    )?;

    // One byte of alpha/a.bin's content flipped (found only by reading the data).
    let alpha1 = listing_at(&base.repo, &base.index, root1, &components(&alpha_str))?;
    let a_chunk = base
        .repo
        .load_tree(&base.index, &alpha1)?
        .find(b"a.bin")
        .and_then(|n| n.content.first().copied())
        .ok_or("alpha/a.bin has no chunk")?;
    let ea = *base
        .index
        .get(&a_chunk)
        .ok_or("a.bin's chunk is not indexed")?;
    write_case(
        &out,
        &base,
        Case {
            name: "data-flipped-byte",
            description:
                "one byte flipped in the content of alpha/a.bin (shared by snapshots 1 and 3)",
            object: Some(FileKind::Pack.path(&base.index.pack_id(ea.pack).to_hex())),
            read_data: true,
            lost: base.losses(&HashSet::from([a_chunk]))?,
        },
        |r| {
            flip(
                &pack_path(r, &base.index.pack_id(ea.pack)),
                u64::from(ea.offset) + u64::from(ea.stored_len) / 2,
            )
        },
    )?;

    // The packs of a backup whose index and snapshot never got written (as an interrupted
    // backup leaves them).
    write_case(
        &out,
        &base,
        Case {
            name: "unreferenced-pack",
            description:
                "the packs of a backup of gamma/ that no index names (an interrupted backup)",
            object: None,
            read_data: false,
            lost: none.clone(),
        },
        |r| {
            let repo = open(r)?;
            damaged_source::write_gamma(src)?;
            let snapshots = names(&repo, FileKind::Snapshot)?;
            let run = run_backup(&repo, src.join("gamma"))?;
            fs::remove_dir_all(src.join("gamma"))?;
            repo.storage().remove(FileKind::Index, &run.index)?;
            for s in names(&repo, FileKind::Snapshot)?.difference(&snapshots) {
                repo.storage().remove(FileKind::Snapshot, s)?;
            }
            Ok(())
        },
    )?;

    // alpha/a.bin's chunk stored a second time, in a pack of its own with its own index object
    // (as two hosts backing up the same file at once leave it).
    write_case(
        &out,
        &base,
        Case {
            name: "duplicate-blob",
            description: "the chunk of alpha/a.bin is stored in two packs, each indexed",
            object: None,
            read_data: false,
            lost: none.clone(),
        },
        |r| {
            let repo = open(r)?;
            let pack = base.index.pack_id(ea.pack);
            let stored = repo.storage().read_range(
                FileKind::Pack,
                &pack.to_hex(),
                u64::from(ea.offset),
                ea.stored_len,
            )?;
            let mut b = PackBuilder::default();
            b.add(&EncodedBlob {
                kind: ea.kind,
                id: a_chunk,
                compressed: ea.compressed,
                raw_len: ea.raw_len,
                stored,
            });
            let (bytes, entries) = b.finish_verified(repo.sealer())?;
            let id = repo.save_pack(&bytes)?;
            repo.save_index(&[(id, entries)])?;
            Ok(())
        },
    )?;

    // Snapshot 1's index object written twice (as a prune killed after writing its new index
    // and before removing the old ones leaves packs named by two index objects).
    let i1 = base.runs[0].index.clone();
    write_case(
        &out,
        &base,
        Case {
            name: "duplicate-index",
            description: "the packs of snapshot 1 are named by two index objects",
            object: None,
            read_data: false,
            lost: none,
        },
        |r| {
            let repo = open(r)?;
            let packs = repo.load_index_file(&i1)?;
            repo.save_index(&packs)?;
            Ok(())
        },
    )?;
    fs::remove_dir_all(src)?;
    println!("now pin what check says: LIFEBOAT_BLESS=1 cargo test --test suite repair::");
    Ok(())
}

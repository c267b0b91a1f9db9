//! `check`: proves that every snapshot can be restored.
//!
//! Structure check (always): every index object is readable; every pack the index names exists
//! in storage; every snapshot is readable; every directory listing of every snapshot is in the
//! index (as a listing), reads back and verifies; every file chunk is in the index (as file
//! data) and its pack exists.
//!
//! With `read_data`, every pack is then read whole: its bytes must match its name, its header
//! must parse and agree with the index, and every blob must decompress and match its hash.
//! Damaged chunks are traced to the snapshots and files that use them.
//!
//! `check` only reads; it never changes the repository.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::progress::Progress;
use crate::repo::pack::{pack_len, read_pack_header};
use crate::repo::{BlobKind, Index, NodeKind, Repository, Step, TreeWalk};
use crate::storage::FileKind;

/// Options of `check`.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Read and verify every pack.
    pub read_data: bool,
    /// With `read_data`, read only subset `n` of `t` (1-based): the packs whose id falls in
    /// bucket `n` when ids are spread over `t` buckets. Checks 1/t, 2/t, ... t/t together read
    /// every pack once.
    pub read_data_subset: Option<(u64, u64)>,
    /// Pack reads in flight at once, each verifying what it read (0: as
    /// [`crate::storage::default_readers`] says for the repository's storage).
    pub threads: usize,
}

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The damaged or missing object (its path in the repository), or the snapshot.
    pub object: String,
    /// What is wrong.
    pub message: String,
    /// Files affected, as "snapshot <id>: <path>".
    pub affects: Vec<String>,
}

/// What `check` found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub blobs: usize,
    pub bytes_read: u64,
    /// Pack reads kept in flight with `--read-data` (0 without).
    pub readers: usize,
    pub errors: Vec<Problem>,
    /// Harmless findings (unreferenced packs).
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Whether no error was found.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

#[derive(Debug, Clone)]
enum BlobProblem {
    Missing,
    PackMissing(PackId),
    Damaged(PackId, String),
}

impl BlobProblem {
    fn object(&self, id: &BlobId) -> String {
        match self {
            BlobProblem::Missing => format!("chunk {id}"),
            BlobProblem::PackMissing(p) | BlobProblem::Damaged(p, _) => {
                FileKind::Pack.path(&p.to_hex())
            }
        }
    }
}

/// Runs the check.
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: Arc<Progress>,
) -> Result<CheckReport> {
    // A shared lock keeps prune from deleting packs while they are being checked.
    let _lock = repo.lock_for_reading("check")?;
    let mut report = CheckReport::default();
    let stored: HashMap<String, u64> = repo.storage().list(FileKind::Pack)?.into_iter().collect();

    // Key objects other users can read let them guess passwords offline (local repositories).
    if let Some(root) = repo.storage().local_path() {
        let local = crate::storage::LocalStorage::new(&root);
        for (object, mode) in local.exposed(FileKind::Key)? {
            report.warnings.push(format!(
                "{object} can be read by other users (mode {mode:04o}): whoever can read it can try passwords against it offline; make it private: chmod 600 {}",
                root.join(&object).display()
            ));
        }
    }

    // Index objects.
    let mut index = Index::builder();
    let mut indexed_packs: HashSet<PackId> = HashSet::new();
    for (name, _) in repo.storage().list(FileKind::Index)? {
        match repo.load_index_file(&name) {
            Ok(packs) => {
                for (pack, entries) in packs {
                    indexed_packs.insert(pack);
                    index.add_pack(pack, &entries);
                }
            }
            Err(e) => report.errors.push(Problem {
                object: FileKind::Index.path(&name),
                message: e.to_string(),
                affects: Vec::new(),
            }),
        }
    }
    let index = index.finish();
    report.blobs = index.len();
    report.packs = stored.len();
    let mut bad_packs: HashMap<PackId, String> = HashMap::new();
    for pack in &indexed_packs {
        if !stored.contains_key(&pack.to_hex()) {
            bad_packs.insert(*pack, "missing from storage".into());
        }
    }
    // A pack shorter than its index entries need was truncated: its header is gone, and so
    // are the chunks the index places beyond its end.
    let mut extent: HashMap<u32, (u64, usize)> = HashMap::new();
    for (_, e) in index.iter() {
        let x = extent.entry(e.pack).or_default();
        x.0 = x.0.max(u64::from(e.offset) + u64::from(e.stored_len));
        x.1 += 1;
    }
    let mut short_packs: HashMap<PackId, (u64, u64)> = HashMap::new();
    for (pos, (end, blobs)) in extent {
        let pack = index.pack_id(pos);
        let Some(&size) = stored.get(&pack.to_hex()) else {
            continue;
        };
        let least = pack_len(repo.sealer(), end, blobs);
        if size < least {
            short_packs.insert(pack, (size, least));
        }
    }
    for name in stored.keys() {
        match PackId::from_hex(name) {
            Ok(id) if indexed_packs.contains(&id) => {}
            _ => report.warnings.push(format!(
                "{} is not named by any index (left by an interrupted backup, or set aside by `repair index`; prune removes it)",
                FileKind::Pack.path(name)
            )),
        }
    }

    // Pack data.
    let mut bad_blobs: HashMap<BlobId, BlobProblem> = HashMap::new();
    if opts.read_data {
        report.readers = crate::storage::readers(repo.storage().as_ref(), opts.threads);
        let damaged = read_all_packs(
            repo,
            &index,
            &stored,
            opts.read_data_subset,
            report.readers,
            &progress,
        )?;
        crate::interrupt::check()?;
        report.bytes_read = Progress::get(&progress.bytes_read);
        for (pack, problem) in damaged {
            if !indexed_packs.contains(&pack) {
                // Nothing reads a pack no index names (a leftover, or a pack `repair index`
                // salvaged and left out): harmless, and prune removes it.
                let what = match problem {
                    PackProblem::Whole(msg) => msg,
                    PackProblem::Blobs(blobs) => format!("{} damaged chunks", blobs.len()),
                };
                report.warnings.push(format!(
                    "{} is damaged ({what}), but no index names it: nothing depends on it; prune removes it",
                    FileKind::Pack.path(&pack.to_hex())
                ));
                continue;
            }
            match problem {
                PackProblem::Whole(msg) => {
                    bad_packs.insert(pack, msg);
                }
                PackProblem::Blobs(blobs) => {
                    for (blob, msg) in blobs {
                        bad_blobs.insert(blob, BlobProblem::Damaged(pack, msg));
                    }
                }
            }
        }
    }
    for (id, e) in index.iter() {
        let pack = index.pack_id(e.pack);
        if let Some((size, _)) = short_packs.get(&pack) {
            if u64::from(e.offset) + u64::from(e.stored_len) > *size {
                bad_blobs.entry(*id).or_insert_with(|| {
                    BlobProblem::Damaged(
                        pack,
                        format!(
                            "is truncated to {size} bytes: the chunks the index places beyond that are lost"
                        ),
                    )
                });
            }
        }
    }
    let mut pack_messages: Vec<(PackId, String)> =
        bad_packs.iter().map(|(p, m)| (*p, m.clone())).collect();
    pack_messages.sort();
    for (id, entry) in index.iter() {
        let pack = index.pack_id(entry.pack);
        if let Some(msg) = bad_packs.get(&pack) {
            bad_blobs
                .entry(*id)
                .or_insert_with(|| BlobProblem::Damaged(pack, msg.clone()));
            if msg.starts_with("missing") {
                bad_blobs.insert(*id, BlobProblem::PackMissing(pack));
            }
        }
    }

    // Snapshots and their trees.
    let mut affects: HashMap<String, (String, Vec<String>)> = HashMap::new();
    let mut snapshot_names = repo.storage().list(FileKind::Snapshot)?;
    snapshot_names.sort();
    let mut roots: Vec<(String, BlobId)> = Vec::new();
    for (name, _) in snapshot_names {
        let damaged = |error: String| Problem {
            object: FileKind::Snapshot.path(&name),
            message: format!("{error}; {}", crate::repo::snapshot::DAMAGED_SNAPSHOT_HINT),
            affects: Vec::new(),
        };
        let Ok(id) = crate::id::SnapshotId::from_hex(&name) else {
            report.errors.push(damaged(
                "the name is not a snapshot id (a stray or damaged file)".into(),
            ));
            continue;
        };
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            Err(Error::Corrupt { reason, .. }) => {
                report.errors.push(damaged(reason));
                continue;
            }
            // Removed since the listing (a concurrent forget).
            Err(Error::NotFound { .. }) => continue,
            // A storage fault says nothing about the snapshot: the check cannot go on.
            Err(e) => return Err(e),
        };
        report.snapshots += 1;
        let label = format!("snapshot {}", id.short());
        roots.push((label, snap.tree));
    }
    walk_trees(repo, &index, &bad_blobs, &roots, &mut affects, &mut report)?;

    let mut problems: Vec<Problem> = affects
        .into_iter()
        .map(|(object, (message, mut files))| {
            files.sort();
            files.dedup();
            Problem {
                object,
                message,
                affects: files,
            }
        })
        .collect();
    // Damaged packs that no snapshot uses are still errors: the index names them.
    for (pack, msg) in pack_messages {
        let object = FileKind::Pack.path(&pack.to_hex());
        if !problems.iter().any(|p| p.object == object) {
            problems.push(Problem {
                object,
                message: msg,
                affects: Vec::new(),
            });
        }
    }
    for (blob, p) in &bad_blobs {
        let object = p.object(blob);
        if !problems.iter().any(|q| q.object == object) {
            if let BlobProblem::Damaged(_, msg) = p {
                problems.push(Problem {
                    object,
                    message: msg.clone(),
                    affects: Vec::new(),
                });
            }
        }
    }
    // Truncated packs that lost only their header: every chunk is still there, but the pack
    // cannot describe itself any more.
    let mut short: Vec<(PackId, (u64, u64))> = short_packs.into_iter().collect();
    short.sort();
    for (pack, (size, least)) in short {
        let object = FileKind::Pack.path(&pack.to_hex());
        if !problems.iter().any(|p| p.object == object) && !bad_packs.contains_key(&pack) {
            problems.push(Problem {
                object,
                message: format!(
                    "is truncated to {size} bytes, shorter than the {least} its index entries need: its header is lost"
                ),
                affects: Vec::new(),
            });
        }
    }
    problems.sort_by(|a, b| a.object.cmp(&b.object));
    report.errors.extend(problems);
    report.warnings.sort();
    Ok(report)
}

/// Every directory entry leading to a listing: listing → (the listing holding the entry, its
/// name).
type Parents = HashMap<BlobId, Vec<(BlobId, Box<[u8]>)>>;

/// The (snapshot label, directory path) pairs of a listing, and whether some were left out.
type DirPaths = Arc<(Vec<(String, String)>, bool)>;

/// Where a problem was found in the snapshots' trees.
enum At {
    /// A directory listing itself (damaged, or holding an unsafe name).
    Listing(BlobId),
    /// Entry `name` of a listing.
    Entry(BlobId, Box<[u8]>),
}

/// The problem of listing `id` that the index and the packs read show, if any.
fn listing_problem(
    index: &Index,
    bad_blobs: &HashMap<BlobId, BlobProblem>,
    id: &BlobId,
) -> Option<BlobProblem> {
    match index.get(id) {
        None => Some(BlobProblem::Missing),
        Some(e) if e.kind != BlobKind::Tree => Some(BlobProblem::Damaged(
            index.pack_id(e.pack),
            "file data where a directory listing is expected".into(),
        )),
        Some(_) => bad_blobs.get(id).cloned(),
    }
}

/// Walks the trees of every snapshot (`roots`: label and root listing), each listing once
/// however many snapshots and directories share it, verifying every listing and every chunk
/// it names. Each problem is then attributed to every snapshot path that leads to it (see
/// [`Paths`]), so a damaged listing shared by 10,000 directories is read once, and reported
/// with its paths.
fn walk_trees(
    repo: &Repository,
    index: &Index,
    bad_blobs: &HashMap<BlobId, BlobProblem>,
    roots: &[(String, BlobId)],
    affects: &mut HashMap<String, (String, Vec<String>)>,
    report: &mut CheckReport,
) -> Result<()> {
    // Every directory entry leading to a listing: (the listing holding it, its name).
    let mut parents: Parents = HashMap::new();
    // Damaged objects: (the blob, its problem, where it was found).
    let mut found: Vec<(BlobId, BlobProblem, At)> = Vec::new();
    // Problems of single entries: (object, message, where).
    let mut entry_errors: Vec<(String, String, At)> = Vec::new();
    // Listings found damaged before they were entered (reported once).
    let mut bad_listings: HashSet<BlobId> = HashSet::new();
    let mut walk = TreeWalk::new(repo, index).once();
    for (_, root) in roots {
        if walk.seen(root) {
            continue;
        }
        if let Some(p) = listing_problem(index, bad_blobs, root) {
            if bad_listings.insert(*root) {
                found.push((*root, p, At::Listing(*root)));
            }
            continue;
        }
        walk.start(*root);
        while let Some(step) = walk.next()? {
            let (tree, node) = match step {
                Step::Entry { tree, node, .. } => (tree, node),
                Step::Leave { .. } => continue,
                Step::Damaged { tree, damage, .. } => {
                    let p = match index.get(&tree) {
                        Some(e) => BlobProblem::Damaged(index.pack_id(e.pack), damage.reason),
                        None => BlobProblem::Missing,
                    };
                    found.push((tree, p, At::Listing(tree)));
                    continue;
                }
            };
            if !node.name_is_safe() {
                entry_errors.push((
                    format!("directory listing {tree}"),
                    format!(
                        "unsafe entry name {:?} (corrupt or tampered)",
                        String::from_utf8_lossy(&node.name)
                    ),
                    At::Listing(tree),
                ));
                continue;
            }
            match node.kind {
                NodeKind::Dir => match node.subtree {
                    Some(sub) => {
                        parents
                            .entry(sub)
                            .or_default()
                            .push((tree, node.name.clone().into_boxed_slice()));
                        if walk.seen(&sub) {
                            continue;
                        }
                        match listing_problem(index, bad_blobs, &sub) {
                            Some(p) => {
                                if bad_listings.insert(sub) {
                                    found.push((sub, p, At::Listing(sub)));
                                }
                            }
                            None => {
                                walk.enter(&node.name, sub);
                            }
                        }
                    }
                    None => entry_errors.push((
                        format!("directory listing {tree}"),
                        "directory without a listing".into(),
                        At::Entry(tree, node.name.into_boxed_slice()),
                    )),
                },
                NodeKind::File => {
                    let mut name = None;
                    for chunk in &node.content {
                        let problem = match index.get(chunk) {
                            None => Some(BlobProblem::Missing),
                            Some(e) if e.kind != BlobKind::Data => Some(BlobProblem::Damaged(
                                index.pack_id(e.pack),
                                "a directory listing where file data is expected".into(),
                            )),
                            Some(_) => bad_blobs.get(chunk).cloned(),
                        };
                        if let Some(p) = problem {
                            let name = name
                                .get_or_insert_with(|| node.name.clone().into_boxed_slice())
                                .clone();
                            found.push((*chunk, p, At::Entry(tree, name)));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if found.is_empty() && entry_errors.is_empty() {
        return Ok(());
    }
    let mut paths = Paths {
        parents: &parents,
        roots: HashMap::new(),
        memo: HashMap::new(),
    };
    for (label, root) in roots {
        paths.roots.entry(*root).or_default().push(label.clone());
    }
    for (blob, problem, at) in &found {
        for what in paths.of(at, " (directory listing)")? {
            note(affects, blob, problem, what);
        }
    }
    for (object, message, at) in entry_errors {
        report.errors.push(Problem {
            object,
            message,
            affects: paths.of(&at, "")?,
        });
    }
    Ok(())
}

/// The paths of the directories (or entries) where a problem was found, in every snapshot
/// that leads there, found by going up from the listing to the snapshots' roots: "snapshot
/// <id>: /a/b". At most [`MAX_PATHS`] per listing (a listing shared by many directories has
/// as many paths); the rest are counted in one line.
struct Paths<'a> {
    parents: &'a Parents,
    /// Root listing → the labels of its snapshots.
    roots: HashMap<BlobId, Vec<String>>,
    /// Listing → its (snapshot label, directory path) pairs, and whether some were left out.
    memo: HashMap<BlobId, DirPaths>,
}

/// The most paths listed for one damaged listing or entry.
const MAX_PATHS: usize = 1000;

impl Paths<'_> {
    /// "snapshot <id>: <path><suffix>" for listing problems, "…: <path>/<name>" for entries.
    fn of(&mut self, at: &At, suffix: &str) -> Result<Vec<String>> {
        let (listing, name) = match at {
            At::Listing(l) => (l, None),
            At::Entry(l, n) => (l, Some(n)),
        };
        let dirs = self.dirs(listing)?;
        let mut out: Vec<String> = dirs
            .0
            .iter()
            .map(|(label, dir)| match name {
                None => format!("{label}: {dir}{suffix}"),
                Some(n) => format!(
                    "{label}: {}/{}",
                    dir.trim_end_matches('/'),
                    String::from_utf8_lossy(n)
                ),
            })
            .collect();
        if dirs.1 {
            out.push(format!(
                "(and more: only the first {MAX_PATHS} paths to this directory are listed; its listing is shared by more directories)"
            ));
        }
        Ok(out)
    }

    /// Every (snapshot label, path) of directory listing `listing`, up to [`MAX_PATHS`].
    fn dirs(&mut self, listing: &BlobId) -> Result<DirPaths> {
        if let Some(d) = self.memo.get(listing) {
            return Ok(d.clone());
        }
        // Going up: each step is a listing and the chain of names below it (an index into
        // `names`, whose entries are a name and the index of the next one down).
        let mut names: Vec<(&[u8], usize)> = Vec::new();
        const END: usize = usize::MAX;
        let mut stack = vec![(*listing, END)];
        let mut out = Vec::new();
        let mut more = false;
        while let Some((l, chain)) = stack.pop() {
            crate::interrupt::check()?;
            if let Some(labels) = self.roots.get(&l) {
                let mut path = String::new();
                let mut at = chain;
                while at != END {
                    path.push('/');
                    path.push_str(&String::from_utf8_lossy(names[at].0));
                    at = names[at].1;
                }
                if path.is_empty() {
                    path.push('/');
                }
                for label in labels {
                    if out.len() == MAX_PATHS {
                        more = true;
                        break;
                    }
                    out.push((label.clone(), path.clone()));
                }
                if more {
                    break;
                }
            }
            for (parent, name) in self.parents.get(&l).into_iter().flatten() {
                names.push((name, chain));
                stack.push((*parent, names.len() - 1));
            }
        }
        let d = Arc::new((out, more));
        self.memo.insert(*listing, d.clone());
        Ok(d)
    }
}

fn note(
    affects: &mut HashMap<String, (String, Vec<String>)>,
    blob: &BlobId,
    problem: &BlobProblem,
    what: String,
) {
    let message = match problem {
        BlobProblem::Missing => "is not in the index (missing)".to_string(),
        BlobProblem::PackMissing(_) => "is missing from storage".to_string(),
        BlobProblem::Damaged(_, msg) => msg.clone(),
    };
    let entry = affects
        .entry(problem.object(blob))
        .or_insert_with(|| (message, Vec::new()));
    entry.1.push(what);
}

enum PackProblem {
    Whole(String),
    Blobs(Vec<(BlobId, String)>),
}

/// The bucket (0-based, of `t`) of a pack name: its first 16 hex digits modulo `t`.
pub fn subset_bucket(name: &str, t: u64) -> u64 {
    let head = name.get(..16).unwrap_or(name);
    u64::from_str_radix(head, 16).unwrap_or(0) % t.max(1)
}

/// Parses a subset: "n/t" (1 ≤ n ≤ t), or "P%" (a random bucket of about P percent).
pub fn parse_subset(s: &str) -> Result<(u64, u64)> {
    let bad = || {
        Error::Invalid(format!(
            "{s:?} is not a subset: give \"n/t\" (like \"2/5\") or a percentage (like \"10%\")"
        ))
    };
    if let Some((n, t)) = s.split_once('/') {
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        let t: u64 = t.trim().parse().map_err(|_| bad())?;
        if n == 0 || t == 0 || n > t {
            return Err(bad());
        }
        return Ok((n, t));
    }
    let p = crate::units::parse_percent(s, 0.001).map_err(|_| bad())?;
    let t = (100.0 / p).round().max(1.0) as u64;
    Ok((rand::random::<u64>() % t + 1, t))
}

fn read_all_packs(
    repo: &Repository,
    index: &Index,
    stored: &HashMap<String, u64>,
    subset: Option<(u64, u64)>,
    readers: usize,
    progress: &Progress,
) -> Result<Vec<(PackId, PackProblem)>> {
    // Blobs the index expects in each pack.
    let mut expected: HashMap<PackId, Vec<(BlobId, crate::repo::IndexEntry)>> = HashMap::new();
    for (id, e) in index.iter() {
        expected
            .entry(index.pack_id(e.pack))
            .or_default()
            .push((*id, *e));
    }
    let mut names: Vec<&String> = stored
        .keys()
        .filter(|name| match subset {
            Some((n, t)) => subset_bucket(name, t) == n - 1,
            None => true,
        })
        .collect();
    names.sort();
    Progress::add(
        &progress.bytes_total,
        names.iter().filter_map(|n| stored.get(*n)).sum(),
    );
    // Storage that cannot be reached stops the check (the first error stops the pool): every
    // further pack would wait out the retry budget too, and none of it is damage.
    let packs = names.into_iter().filter_map(|n| PackId::from_hex(n).ok());
    let mut found = Vec::new();
    crate::pool::run(
        readers,
        packs,
        || Ok(()),
        |(), pack| {
            let problem = verify_pack(repo, &pack, expected.get(&pack), progress)?;
            Ok(problem.map(|p| (pack, p)))
        },
        |problem| {
            found.extend(problem);
            Ok(())
        },
    )?;
    Ok(found)
}

fn verify_pack(
    repo: &Repository,
    pack: &PackId,
    expected: Option<&Vec<(BlobId, crate::repo::IndexEntry)>>,
    progress: &Progress,
) -> Result<Option<PackProblem>> {
    let bytes = match repo.read_pack(pack) {
        Ok(b) => b,
        // Damage (missing, truncated, corrupt) is a finding; anything else (unreachable
        // storage, a refusal, a permission, a signal) is a fault of the storage or the run,
        // which stops the check instead of being reported as a damaged pack.
        Err(e) if e.is_damage() => {
            return Ok(Some(PackProblem::Whole(format!("cannot be read: {e}"))))
        }
        Err(e) => return Err(e),
    };
    Progress::add(&progress.bytes_read, bytes.bytes().len() as u64);
    let hash_ok = bytes.matches_name();
    let header = read_pack_header(repo.sealer(), bytes.bytes(), bytes.what());
    let mut bad = Vec::new();
    match &header {
        Ok(entries) => {
            for e in entries {
                if let Err(err) = bytes.blob(e) {
                    bad.push((e.id, format!("damaged: {}", err.reason())));
                }
            }
            // The index must agree with the pack about every blob it places here.
            for (id, ie) in expected.into_iter().flatten() {
                let found = entries.iter().find(|e| e.id == *id);
                match found {
                    Some(e)
                        if e.offset == ie.offset
                            && e.stored_len == ie.stored_len
                            && e.kind == ie.kind => {}
                    Some(_) => bad.push((
                        *id,
                        "the index places this chunk at a wrong offset (corrupt or tampered)"
                            .into(),
                    )),
                    None => bad.push((*id, "named by the index but not in the pack".into())),
                }
            }
        }
        Err(e) => {
            // Without a header, verify each blob the index places here on its own.
            for (id, ie) in expected.into_iter().flatten() {
                if let Err(err) = bytes.blob(&ie.to_pack_entry(*id)) {
                    bad.push((*id, format!("damaged: {}", err.reason())));
                }
            }
            if bad.is_empty() {
                return Ok(Some(PackProblem::Whole(format!(
                    "damaged pack header: {}",
                    e.reason()
                ))));
            }
        }
    }
    if !hash_ok && bad.is_empty() {
        return Ok(Some(PackProblem::Whole(
            "content does not match its name (damaged)".into(),
        )));
    }
    if bad.is_empty() {
        Ok(None)
    } else {
        Ok(Some(PackProblem::Blobs(bad)))
    }
}

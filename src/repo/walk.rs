//! The one walk over a snapshot's tree of directory listings.
//!
//! Every command that reads a snapshot's directories (restore planning, `check`, `prune`,
//! `repair snapshots`, `ls`, drills) walks them with [`TreeWalk`], so the properties a tree of
//! untrusted shape needs hold everywhere at once:
//!
//! - **No recursion.** An explicit stack holds one frame per open directory (its listing's
//!   remaining entries), so a chain of 10,000 or 1,000,000 levels costs heap, never the call
//!   stack; there is no depth limit to refuse a tree at.
//! - **Shared listings walked once, when asked** ([`TreeWalk::once`]). An unchanged directory
//!   is stored once and referenced from everywhere it occurs, so a 1 MB repository can hold a
//!   tree of 10⁹ entries (a listing of 100,000 entries referenced by 10,000 directories). A walk
//!   that only needs each listing (check, prune, the inventory of a drill) enters each one once;
//!   a walk that needs every path (restore planning, `ls`) bounds what it keeps itself.
//! - **Interruptible.** Every step polls [`crate::interrupt::check`], so SIGINT/SIGTERM stop any
//!   walk within one entry.
//! - **Typed damage.** A listing that cannot be read because the repository is damaged is a
//!   [`Step::Damaged`] carrying a [`Damage`] (the object and what is wrong), and the walk goes
//!   on with the rest; a storage fault (unreachable storage, as opposed to a damaged or missing
//!   object) is an `Err` that ends the walk, never mistaken for damage.
//!
//! The walk is depth first, in name order (each listing is sorted), parents before children;
//! the caller decides which directories to enter ([`TreeWalk::enter`], right after their
//! entry), and [`Step::Leave`] marks the end of each entered listing for callers that work
//! bottom up.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::storage::FileKind;

use super::{Index, Node, Repository};

pub use crate::error::Damage;

impl Damage {
    /// Why listing `id` cannot be read, from the error its loading gave (which must be damage:
    /// see [`Error::is_damage`]), named by the pack the index places it in.
    pub fn listing(index: &Index, id: &BlobId, err: &Error) -> Self {
        let reason = match err.damage() {
            Some(d) => d.reason,
            None => format!("damaged: {err}"),
        };
        let pack = index
            .get(id)
            .map(|e| FileKind::Pack.path(&index.pack_id(e.pack).to_hex()));
        let object = pack
            .clone()
            .unwrap_or_else(|| format!("directory listing {id}"));
        Damage {
            object,
            reason,
            pack,
        }
    }
}

/// One step of a [`TreeWalk`].
// An entry's node moves through once per step; boxing it would cost an allocation per entry.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step<'w> {
    /// An entry of the directory `dir` (its path relative to the snapshot's root, empty for
    /// the root), whose listing is `tree`. The name may be unsafe (`..`, `a/b`): callers
    /// check [`Node::name_is_safe`].
    Entry {
        dir: &'w Path,
        tree: BlobId,
        node: Node,
    },
    /// Every entry of listing `tree`, the listing of directory `dir`, has been given (and
    /// everything beneath those that were entered).
    Leave { dir: &'w Path, tree: BlobId },
    /// The listing `tree` of directory `dir`, just entered, cannot be read: the repository is
    /// damaged. Nothing beneath it is given, and no [`Step::Leave`] follows.
    Damaged {
        dir: &'w Path,
        tree: BlobId,
        damage: Damage,
    },
}

/// An entered listing: the entries still to give.
struct Frame {
    tree: BlobId,
    nodes: std::vec::IntoIter<Node>,
}

/// A depth-first walk over snapshot trees; see the module documentation.
///
/// Not an [`Iterator`]: each step borrows the walk (the directory path is kept once, not
/// copied into every step), so it is driven with `while let Some(step) = walk.next()? {…}`.
pub struct TreeWalk<'a> {
    repo: &'a Repository,
    index: &'a Index,
    frames: Vec<Frame>,
    /// The path of the directory whose entries are being given (relative, empty at the root).
    dir: PathBuf,
    /// A listing entered (its name pushed onto `dir` already), loaded by the next step.
    pending: Option<BlobId>,
    /// The last step left or failed to enter a directory: its name comes off `dir` first.
    unwind: bool,
    /// With [`TreeWalk::once`]: every listing entered so far.
    seen: Option<HashSet<BlobId>>,
}

impl<'a> TreeWalk<'a> {
    /// A walk that has nothing to do yet: give it a root with [`TreeWalk::start`].
    pub fn new(repo: &'a Repository, index: &'a Index) -> Self {
        TreeWalk {
            repo,
            index,
            frames: Vec::new(),
            dir: PathBuf::new(),
            pending: None,
            unwind: false,
            seen: None,
        }
    }

    /// A walk of the tree beneath root listing `root`.
    pub fn of(repo: &'a Repository, index: &'a Index, root: BlobId) -> Self {
        let mut walk = TreeWalk::new(repo, index);
        walk.start(root);
        walk
    }

    /// Enters every listing at most once (over all roots this walk is given): a listing
    /// referenced again is not entered, and [`TreeWalk::enter`] and [`TreeWalk::start`] say
    /// so.
    pub fn once(mut self) -> Self {
        self.seen = Some(HashSet::new());
        self
    }

    /// Starts on the tree beneath `root` (once the previous one is done: [`TreeWalk::next`]
    /// gave `None`). Returns `false`, and walks nothing, for a listing entered before by a
    /// [`TreeWalk::once`] walk.
    pub fn start(&mut self, root: BlobId) -> bool {
        debug_assert!(self.frames.is_empty() && self.pending.is_none());
        if let Some(seen) = &mut self.seen {
            if !seen.insert(root) {
                return false;
            }
        }
        self.dir.clear();
        self.unwind = false;
        self.pending = Some(root);
        true
    }

    /// Enters directory `name`, whose listing is `tree`: its entries are the next steps. Call
    /// it right after the [`Step::Entry`] of that directory, at most once. Returns `false`,
    /// and enters nothing, when (with [`TreeWalk::once`]) the listing was entered before.
    ///
    /// Callers that restore or show paths refuse unsafe names before they get here; one that
    /// must see everything (prune marking what is used) enters them too, and the path then
    /// gets one placeholder component for the name (`�` and the name, `/` and NUL replaced).
    pub fn enter(&mut self, name: &[u8], tree: BlobId) -> bool {
        debug_assert!(self.pending.is_none(), "one directory entered per step");
        if self.pending.is_some() {
            return false;
        }
        if let Some(seen) = &mut self.seen {
            if !seen.insert(tree) {
                return false;
            }
        }
        if super::tree::name_is_safe(name) {
            self.dir.push(OsStr::from_bytes(name));
        } else {
            let shown = String::from_utf8_lossy(name).replace(['/', '\0'], "\u{fffd}");
            self.dir.push(format!("\u{fffd}{shown}"));
        }
        self.pending = Some(tree);
        true
    }

    /// Whether listing `tree` was entered before (always `false` unless [`TreeWalk::once`]).
    pub fn seen(&self, tree: &BlobId) -> bool {
        self.seen.as_ref().is_some_and(|s| s.contains(tree))
    }

    /// How many directories are open (1 while the root's entries are given).
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// The next step, `None` when the tree is done. `Err` on an interruption or a storage
    /// fault; damage is a [`Step::Damaged`].
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Step<'_>>> {
        if std::mem::take(&mut self.unwind) {
            self.dir.pop();
        }
        crate::interrupt::check()?;
        if let Some(tree) = self.pending.take() {
            match self.repo.load_tree(self.index, &tree) {
                Ok(t) => self.frames.push(Frame {
                    tree,
                    nodes: t.nodes.into_iter(),
                }),
                Err(e) if e.is_damage() => {
                    // The root has no name to take off.
                    self.unwind = !self.frames.is_empty();
                    return Ok(Some(Step::Damaged {
                        dir: &self.dir,
                        tree,
                        damage: Damage::listing(self.index, &tree, &e),
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        let Some(frame) = self.frames.last_mut() else {
            return Ok(None);
        };
        match frame.nodes.next() {
            Some(node) => Ok(Some(Step::Entry {
                dir: &self.dir,
                tree: frame.tree,
                node,
            })),
            None => {
                let tree = frame.tree;
                self.frames.pop();
                self.unwind = !self.frames.is_empty();
                Ok(Some(Step::Leave {
                    dir: &self.dir,
                    tree,
                }))
            }
        }
    }
}

/// Test support: directory listings written straight into a fresh repository.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::sync::Arc;

    use crate::id::BlobId;
    use crate::repo::pack::{encode_blob, PackBuilder};
    use crate::repo::{BlobKind, Index, InitOptions, KdfSetting, Node, NodeKind, Repository, Tree};
    use crate::storage::LocalStorage;

    /// Listings written into a fresh repository.
    pub(crate) struct Listings {
        pub(crate) repo: Repository,
        pack: PackBuilder,
    }

    impl Listings {
        pub(crate) fn new(dir: &Path) -> Self {
            let opts = InitOptions {
                kdf: KdfSetting::CHEAPEST,
                ..InitOptions::default()
            };
            let storage = Arc::new(LocalStorage::new(dir.join("repo")));
            let repo = Repository::init(storage, &opts, Some(b"pw")).expect("init");
            Listings {
                repo,
                pack: PackBuilder::default(),
            }
        }

        /// A listing of `dirs` (name, listing) and files `files`.
        pub(crate) fn tree(&mut self, dirs: &[(&str, BlobId)], files: &[&str]) -> BlobId {
            let mut nodes: Vec<Node> = dirs
                .iter()
                .map(|(n, id)| {
                    let mut d = Node::new(n.as_bytes().to_vec(), NodeKind::Dir);
                    d.subtree = Some(*id);
                    d
                })
                .chain(
                    files
                        .iter()
                        .map(|n| Node::new(n.as_bytes().to_vec(), NodeKind::File)),
                )
                .collect();
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            let bytes = Tree { nodes }.to_bytes();
            let sealer = self.repo.sealer().clone();
            let id = sealer.blob_id(&bytes);
            self.pack
                .add(&encode_blob(&sealer, BlobKind::Tree, id, &bytes, 3).expect("encode"));
            id
        }

        pub(crate) fn store(&mut self) -> Index {
            let (bytes, entries) = std::mem::take(&mut self.pack).finish(self.repo.sealer());
            let pack = self.repo.save_pack(&bytes).expect("save pack");
            self.repo
                .save_index(&[(pack, entries)])
                .expect("save index");
            self.repo.load_index().expect("index")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Listings;
    use super::*;

    /// Every step as a line: "+dir/name", "<dir" (leave), "!dir" (damaged).
    fn steps(walk: &mut TreeWalk<'_>, enter: bool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(step) = walk.next().expect("step") {
            match step {
                Step::Entry { dir, node, .. } => {
                    let path = dir.join(OsStr::from_bytes(&node.name));
                    out.push(format!("+{}", path.display()));
                    if let (true, Some(sub)) = (enter, node.subtree) {
                        walk.enter(&node.name, sub);
                    }
                }
                Step::Leave { dir, .. } => out.push(format!("<{}", dir.display())),
                Step::Damaged { dir, damage, .. } => {
                    assert!(damage.reason.contains("missing"), "{damage}");
                    out.push(format!("!{}", dir.display()));
                }
            }
        }
        out
    }

    #[test]
    fn walks_depth_first_in_name_order_and_goes_on_past_damage() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut l = Listings::new(tmp.path());
        let leaf = l.tree(&[], &["x"]);
        let missing = BlobId([7; 32]);
        let sub = l.tree(&[("deep", leaf)], &["f"]);
        let root = l.tree(&[("a", sub), ("b", missing), ("c", leaf)], &["z"]);
        let index = l.store();
        let mut walk = TreeWalk::of(&l.repo, &index, root);
        assert_eq!(
            steps(&mut walk, true),
            [
                "+a",
                "+a/deep",
                "+a/deep/x",
                "<a/deep",
                "+a/f",
                "<a",
                "+b",
                "!b",
                "+c",
                "+c/x",
                "<c",
                "+z",
                "<"
            ]
        );
        // Not entered: the root's entries only.
        let mut walk = TreeWalk::of(&l.repo, &index, root);
        assert_eq!(steps(&mut walk, false), ["+a", "+b", "+c", "+z", "<"]);
        // Once: the shared leaf listing is entered the first time only, over two roots.
        let mut walk = TreeWalk::new(&l.repo, &index).once();
        assert!(walk.start(sub));
        assert_eq!(
            steps(&mut walk, true),
            ["+deep", "+deep/x", "<deep", "+f", "<"]
        );
        assert!(walk.seen(&leaf));
        assert!(walk.start(root));
        assert_eq!(steps(&mut walk, true), ["+a", "+b", "!b", "+c", "+z", "<"]);
        assert!(!walk.start(root), "a root walked before");
        // An unreadable root is damage too.
        let mut walk = TreeWalk::of(&l.repo, &index, missing);
        assert_eq!(steps(&mut walk, true), ["!"]);
    }

    /// RELIABILITY case 5: a pack of listings cut short is damage the walk reports (naming
    /// the pack) and goes on past, not a storage fault that ends the walk: a range read past
    /// the end of the pack fails as a truncated object.
    #[test]
    fn a_listing_in_a_truncated_pack_is_damage_not_a_storage_fault() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut l = Listings::new(tmp.path());
        let root = l.tree(&[], &["x"]);
        let index = l.store();
        let e = *index.get(&root).expect("indexed");
        let pack = index.pack_id(e.pack).to_hex();
        let file = tmp.path().join("repo").join(FileKind::Pack.path(&pack));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open pack")
            .set_len(u64::from(e.offset) + 1)
            .expect("truncate");
        let mut walk = TreeWalk::of(&l.repo, &index, root);
        match walk.next().expect("damage is a step, not an error") {
            Some(Step::Damaged { damage, .. }) => {
                assert!(damage.object.contains(&pack), "{damage}");
                assert!(damage.reason.contains("truncated"), "{damage}");
            }
            other => panic!("{other:?}"),
        }
        assert!(walk.next().expect("step").is_none());
    }

    #[test]
    fn a_chain_of_a_hundred_thousand_levels_walks_without_recursion() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut l = Listings::new(tmp.path());
        let mut below = l.tree(&[], &["bottom"]);
        const DEPTH: usize = 100_000;
        for _ in 0..DEPTH {
            below = l.tree(&[("d", below)], &[]);
        }
        let index = l.store();
        let mut walk = TreeWalk::of(&l.repo, &index, below);
        let (mut entries, mut leaves, mut deepest) = (0, 0, 0);
        while let Some(step) = walk.next().expect("step") {
            match step {
                Step::Entry { dir, node, .. } => {
                    entries += 1;
                    if node.name == b"bottom" {
                        assert_eq!(dir.components().count(), DEPTH);
                    }
                    if let Some(sub) = node.subtree {
                        walk.enter(&node.name, sub);
                    }
                }
                Step::Leave { .. } => leaves += 1,
                Step::Damaged { damage, .. } => panic!("{damage}"),
            }
            deepest = deepest.max(walk.depth());
        }
        assert_eq!(
            (entries, leaves, deepest),
            (DEPTH + 1, DEPTH + 1, DEPTH + 1)
        );
    }
}

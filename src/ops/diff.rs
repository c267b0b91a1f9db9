//! `diff`: what changed between two snapshots, from their directory listings alone.
//!
//! The two trees are merged listing by listing: each listing is sorted by name, so the
//! entries of one directory in both snapshots are compared in one pass, as a merge of two
//! sorted lists. A name in the second snapshot only is added, in the first only removed, in
//! both compared field by field ([`What`]); content counts as changed when the chunk lists
//! differ (nothing of the files is read). A subdirectory whose listing has the same id in both
//! is unchanged all the way down and is skipped whole, so a diff of two snapshots of a big,
//! mostly unchanged tree reads the changed directories only.
//!
//! The pairs of listings being merged are an explicit stack, never the call stack, so a tree
//! of any depth is fine; an added or removed subtree is listed by [`TreeWalk`]. A listing that
//! cannot be read is reported ([`Change::Damaged`], naming the object) and what is beneath it
//! left out; the diff goes on. Interruptible at every entry.

use std::cmp::Ordering;
use std::iter::Peekable;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::{Damage, Index, Node, NodeKind, Repository, Step, TreeWalk};

/// A field of an entry that differs between the two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// A file's data (its chunk list).
    Content,
    Size,
    /// File, directory, symlink, ...
    Type,
    /// Permission bits.
    Mode,
    /// User (uid or name).
    Owner,
    /// Group (gid or name).
    Group,
    Mtime,
    LinkTarget,
    Xattrs,
    /// A device node's device number.
    Device,
}

impl What {
    /// The name `--json` gives it.
    pub fn name(self) -> &'static str {
        match self {
            What::Content => "content",
            What::Size => "size",
            What::Type => "type",
            What::Mode => "mode",
            What::Owner => "owner",
            What::Group => "group",
            What::Mtime => "mtime",
            What::LinkTarget => "link_target",
            What::Xattrs => "xattrs",
            What::Device => "device",
        }
    }
}

/// Which snapshot of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Before,
    After,
}

/// One difference, in walk order (depth first, names sorted). `path` is absolute, bytes as the
/// snapshots have them.
#[derive(Debug)]
pub enum Change<'c> {
    /// In the second snapshot only.
    Added { path: &'c [u8], node: &'c Node },
    /// In the first snapshot only.
    Removed { path: &'c [u8], node: &'c Node },
    /// In both, with `what` differing.
    Changed {
        path: &'c [u8],
        before: &'c Node,
        after: &'c Node,
        what: &'c [What],
    },
    /// The listing of directory `path` in snapshot `side` cannot be read: what is beneath it
    /// is left out.
    Damaged {
        path: &'c [u8],
        side: Side,
        damage: &'c Damage,
    },
}

/// The counts of a diff.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    /// Entries added (directories and everything beneath them included).
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
    /// The sizes of the files added.
    pub added_bytes: u64,
    /// The sizes of the files removed.
    pub removed_bytes: u64,
    /// Listings that could not be read.
    pub damaged: u64,
}

/// The fields that differ between `a` and `b` (the same name in both snapshots).
pub fn compare(a: &Node, b: &Node) -> Vec<What> {
    let mut what = Vec::new();
    let same_kind = a.kind == b.kind;
    if !same_kind {
        what.push(What::Type);
    }
    if same_kind && a.kind == NodeKind::File && a.content != b.content {
        what.push(What::Content);
    }
    if a.size != b.size {
        what.push(What::Size);
    }
    if a.mode != b.mode {
        what.push(What::Mode);
    }
    if a.uid != b.uid || a.user != b.user {
        what.push(What::Owner);
    }
    if a.gid != b.gid || a.group != b.group {
        what.push(What::Group);
    }
    if a.mtime != b.mtime {
        what.push(What::Mtime);
    }
    if same_kind && a.link_target != b.link_target {
        what.push(What::LinkTarget);
    }
    if a.xattrs != b.xattrs {
        what.push(What::Xattrs);
    }
    if same_kind
        && matches!(a.kind, NodeKind::CharDevice | NodeKind::BlockDevice)
        && a.rdev != b.rdev
    {
        what.push(What::Device);
    }
    what
}

/// Two listings of the same directory being merged.
struct Pair {
    /// The directory's absolute path ("" for the root).
    path: Vec<u8>,
    before: Peekable<std::vec::IntoIter<Node>>,
    after: Peekable<std::vec::IntoIter<Node>>,
}

/// The diff of two snapshots of `repo`, whose root listings are `before` and `after`: every
/// difference goes to `on`, in walk order. With `at` (an absolute path), only that entry and
/// what is beneath it. `Err` on an interruption, a storage fault (not damage), a damaged
/// listing on the way to `at`, or an error of `on`.
pub fn diff(
    repo: &Repository,
    index: &Index,
    before: BlobId,
    after: BlobId,
    at: Option<&Path>,
    on: &mut dyn FnMut(Change<'_>) -> Result<()>,
) -> Result<DiffSummary> {
    let mut d = Differ {
        repo,
        index,
        on,
        sum: DiffSummary::default(),
    };
    let first = match at {
        None if before == after => return Ok(d.sum),
        None => d.load_pair(b"", before, after)?,
        Some(at) => {
            use std::os::unix::ffi::OsStrExt;
            let a = crate::ops::dump::find_node(repo, index, before, at)?;
            let b = crate::ops::dump::find_node(repo, index, after, at)?;
            if a.is_none() && b.is_none() {
                return Err(Error::Invalid(format!(
                    "{} is in neither snapshot",
                    crate::display::path(at)
                )));
            }
            let parent = at
                .parent()
                .map(|p| p.as_os_str().as_bytes())
                .unwrap_or_default();
            Some(Pair {
                path: if parent == b"/" {
                    Vec::new()
                } else {
                    parent.to_vec()
                },
                before: a.into_iter().collect::<Vec<_>>().into_iter().peekable(),
                after: b.into_iter().collect::<Vec<_>>().into_iter().peekable(),
            })
        }
    };
    let mut stack: Vec<Pair> = first.into_iter().collect();
    while let Some(top) = stack.last_mut() {
        crate::interrupt::check()?;
        let order = match (top.before.peek(), top.after.peek()) {
            (None, None) => {
                stack.pop();
                continue;
            }
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
        };
        let (x, y) = match order {
            Ordering::Less => (top.before.next(), None),
            Ordering::Greater => (None, top.after.next()),
            Ordering::Equal => (top.before.next(), top.after.next()),
        };
        let name = x.as_ref().or(y.as_ref()).map(|n| n.name.clone());
        let mut path = top.path.clone();
        path.push(b'/');
        path.extend_from_slice(&name.unwrap_or_default());
        if let Some(pair) = d.entry(&path, x, y)? {
            stack.push(pair);
        }
    }
    Ok(d.sum)
}

struct Differ<'a, 'o> {
    repo: &'a Repository,
    index: &'a Index,
    on: &'o mut dyn FnMut(Change<'_>) -> Result<()>,
    sum: DiffSummary,
}

impl Differ<'_, '_> {
    /// Reports entry `path` as it is in the two snapshots (at least one of them); returns the
    /// pair of listings to merge next when it is a directory whose listing changed.
    fn entry(&mut self, path: &[u8], x: Option<Node>, y: Option<Node>) -> Result<Option<Pair>> {
        let dir = |n: &Option<Node>| {
            n.as_ref()
                .filter(|n| n.kind == NodeKind::Dir)
                .and_then(|n| n.subtree)
        };
        let (sa, sb) = (dir(&x), dir(&y));
        match (&x, &y) {
            (Some(a), Some(b)) => {
                let what = compare(a, b);
                if !what.is_empty() {
                    self.sum.changed += 1;
                    (self.on)(Change::Changed {
                        path,
                        before: a,
                        after: b,
                        what: &what,
                    })?;
                }
            }
            (Some(a), None) => self.one(path, a, Side::Before)?,
            (None, Some(b)) => self.one(path, b, Side::After)?,
            (None, None) => {}
        }
        match (sa, sb) {
            (Some(a), Some(b)) if a == b => Ok(None),
            (Some(a), Some(b)) => self.load_pair(path, a, b),
            (Some(a), None) => self.subtree(path, a, Side::Before).map(|_| None),
            (None, Some(b)) => self.subtree(path, b, Side::After).map(|_| None),
            (None, None) => Ok(None),
        }
    }

    /// Reports `node`, at `path` in snapshot `side` only, as removed or added.
    fn one(&mut self, path: &[u8], node: &Node, side: Side) -> Result<()> {
        let bytes = if node.kind == NodeKind::File {
            node.size
        } else {
            0
        };
        match side {
            Side::Before => {
                self.sum.removed += 1;
                self.sum.removed_bytes += bytes;
                (self.on)(Change::Removed { path, node })
            }
            Side::After => {
                self.sum.added += 1;
                self.sum.added_bytes += bytes;
                (self.on)(Change::Added { path, node })
            }
        }
    }

    /// Reports everything beneath directory `path`, whose listing is `tree` in snapshot
    /// `side` only, as removed or added.
    fn subtree(&mut self, path: &[u8], tree: BlobId, side: Side) -> Result<()> {
        let mut walk = TreeWalk::of(self.repo, self.index, tree);
        let mut path = path.to_vec();
        // Where the path of each entered directory's parent ends.
        let mut ends: Vec<usize> = Vec::new();
        while let Some(step) = walk.next()? {
            match step {
                Step::Entry { node, .. } => {
                    let end = path.len();
                    path.push(b'/');
                    path.extend_from_slice(&node.name);
                    self.one(&path, &node, side)?;
                    match node.subtree.filter(|_| node.kind == NodeKind::Dir) {
                        Some(sub) => {
                            walk.enter(&node.name, sub);
                            ends.push(end);
                        }
                        None => path.truncate(end),
                    }
                }
                Step::Leave { .. } => {
                    if let Some(end) = ends.pop() {
                        path.truncate(end);
                    }
                }
                Step::Damaged { damage, .. } => {
                    self.damaged(&path, side, &damage)?;
                    if let Some(end) = ends.pop() {
                        path.truncate(end);
                    }
                }
            }
        }
        Ok(())
    }

    /// The two listings of directory `path` (`""` for the root), to merge; `None`, each
    /// damaged one reported, when either cannot be read.
    fn load_pair(&mut self, path: &[u8], a: BlobId, b: BlobId) -> Result<Option<Pair>> {
        let mut load = |id: BlobId, side: Side| -> Result<Option<Vec<Node>>> {
            match self.repo.load_tree(self.index, &id) {
                Ok(t) => Ok(Some(t.nodes)),
                Err(e) if e.is_damage() => {
                    let damage = Damage::listing(self.index, &id, &e);
                    let shown: &[u8] = if path.is_empty() { b"/" } else { path };
                    self.damaged(shown, side, &damage)?;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        };
        let before = load(a, Side::Before)?;
        let after = load(b, Side::After)?;
        Ok(match (before, after) {
            (Some(before), Some(after)) => Some(Pair {
                path: path.to_vec(),
                before: before.into_iter().peekable(),
                after: after.into_iter().peekable(),
            }),
            _ => None,
        })
    }

    fn damaged(&mut self, path: &[u8], side: Side, damage: &Damage) -> Result<()> {
        self.sum.damaged += 1;
        (self.on)(Change::Damaged { path, side, damage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each field is told apart; content only for files of the same type, and a type change
    /// is not also a content or link target change.
    #[test]
    fn compare_names_each_field_that_differs() {
        let file = |f: &dyn Fn(&mut Node)| {
            let mut n = Node::new(b"x".to_vec(), NodeKind::File);
            n.size = 10;
            n.mode = 0o644;
            n.content = vec![BlobId([1; 32])];
            f(&mut n);
            n
        };
        let base = file(&|_| {});
        assert!(compare(&base, &base).is_empty());
        let cases: Vec<(Node, Vec<What>)> = vec![
            (
                file(&|n| n.content = vec![BlobId([2; 32])]),
                vec![What::Content],
            ),
            (file(&|n| n.size = 11), vec![What::Size]),
            (file(&|n| n.mode = 0o600), vec![What::Mode]),
            (file(&|n| n.uid = 7), vec![What::Owner]),
            (file(&|n| n.group = Some("g".into())), vec![What::Group]),
            (file(&|n| n.mtime.nsec = 1), vec![What::Mtime]),
            (
                file(&|n| {
                    n.xattrs = vec![crate::repo::Xattr {
                        name: b"user.a".to_vec(),
                        value: b"1".to_vec(),
                    }]
                }),
                vec![What::Xattrs],
            ),
            (
                file(&|n| {
                    n.kind = NodeKind::Symlink;
                    n.content.clear();
                    n.link_target = Some(b"/etc".to_vec());
                }),
                vec![What::Type],
            ),
        ];
        for (other, want) in cases {
            assert_eq!(compare(&base, &other), want, "{other:?}");
        }
        let dev = |rdev| {
            let mut n = Node::new(b"d".to_vec(), NodeKind::CharDevice);
            n.rdev = rdev;
            n
        };
        assert_eq!(compare(&dev(1), &dev(2)), vec![What::Device]);
        let link = |t: &[u8]| {
            let mut n = Node::new(b"l".to_vec(), NodeKind::Symlink);
            n.link_target = Some(t.to_vec());
            n
        };
        assert_eq!(compare(&link(b"a"), &link(b"b")), vec![What::LinkTarget]);
    }
}

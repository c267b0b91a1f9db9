//! `find`: the entries of snapshots whose name or path matches a glob, across many snapshots
//! ("in which snapshot is the version of /etc/nginx/nginx.conf from before Tuesday?").
//!
//! Patterns are those of `backup --exclude` ([`Excludes`]): without `/` a pattern matches an
//! entry's name anywhere (`*.conf`), with `/` the entry's absolute path (`/etc/**/nginx.conf`,
//! `/home/*/.ssh/authorized_keys`). A path pattern must start with `/` or `*`: a relative
//! one (`etc/hosts`) could never match and is refused as the typo it is.
//!
//! **Each listing is searched once.** An unchanged directory is the same listing in every
//! snapshot, so the search remembers, per listing, what it found beneath it: the matching
//! entries and the subdirectories with something beneath them (a small [`Listing`] each, not
//! the matches copied into every ancestor). For name patterns what lies beneath a listing does
//! not depend on where it is, so the listing's id is the key; with a path pattern the key is
//! the listing and a hash of its path (chained from its parent's, so a deep tree costs no
//! more per level). The second and later snapshots of a mostly unchanged tree read only their
//! changed directories. A path pattern whose beginning is literal (`/etc/` in
//! `/etc/**/nginx.conf`) also keeps the search out of directories that cannot hold a match.
//!
//! Matches are given as they are found (nothing waits for a whole snapshot), and what is
//! remembered is bounded ([`MEMO_BOUND`]): past it the search goes on without remembering
//! more. The walk is [`TreeWalk`] (no recursion, interruptible, damage typed); the replay of
//! what was remembered is an explicit stack too. A listing that cannot be read is reported, with
//! its path in the snapshot and the damaged object, and the search goes on; it is remembered
//! as damaged, so every snapshot that holds it reports it at its own path.

use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::ops::backup::exclude::Excludes;
use crate::repo::{Damage, Index, Node, NodeKind, Repository, Step, TreeWalk};

/// What a search looks for.
#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    /// Globs; an entry matching any of them is found.
    pub patterns: Vec<String>,
    /// Letters match regardless of case.
    pub ignore_case: bool,
}

impl FindOptions {
    /// Refuses what cannot be meant: no pattern, an invalid one, or a path pattern that is
    /// not absolute (it could never match), naming it and what to give instead.
    pub fn check(&self) -> Result<()> {
        if self.patterns.is_empty() {
            return Err(Error::Invalid("give at least one pattern".into()));
        }
        for p in &self.patterns {
            let t = p.trim_end_matches('/');
            if t.is_empty() {
                return Err(Error::Invalid(format!(
                    "pattern {p:?} matches nothing: give a name (*.conf) or an absolute path \
                     (/etc/**/nginx.conf)"
                )));
            }
            if t.contains('/') && !t.starts_with('/') && !t.starts_with('*') {
                return Err(Error::Invalid(format!(
                    "pattern {p:?} has a / but is not an absolute path, so it can match nothing: \
                     give /{t} or /**/{t} (patterns without / match names anywhere)"
                )));
            }
        }
        Excludes::build(&self.patterns, "pattern", self.ignore_case).map(|_| ())
    }
}

/// One thing a search reports, in walk order (depth first, names sorted).
#[derive(Debug)]
pub enum Found<'f> {
    /// An entry that matches, at absolute `path` (bytes, as the snapshot has them). Its
    /// `content` and `xattrs` are left out.
    Match { path: &'f [u8], node: &'f Node },
    /// The listing of the directory at `path` cannot be read: nothing beneath it was searched.
    Damaged { path: &'f [u8], damage: &'f Damage },
}

/// What was found beneath one listing (see the module documentation).
#[derive(Debug, Default)]
struct Listing {
    items: Vec<Item>,
    /// The listing itself cannot be read.
    damage: Option<Damage>,
}

impl Listing {
    fn holds_something(&self) -> bool {
        !self.items.is_empty() || self.damage.is_some()
    }
}

#[derive(Debug)]
enum Item {
    /// An entry of this listing that matches.
    Match(Box<Node>),
    /// A subdirectory with a match or damage beneath it: its listing's [`Listing`] says what.
    Below { name: Vec<u8>, tree: BlobId },
}

/// A listing and, for path patterns, where it is (a chained hash of its path).
type Key = (BlobId, [u8; 32]);

/// The key part of the root ("/").
const ROOT: [u8; 32] = [0; 32];

/// A search over any number of snapshots of one repository, remembering what it found beneath
/// each listing (see the module documentation). Give it the snapshots' roots one by one.
pub struct Finder<'a> {
    repo: &'a Repository,
    index: &'a Index,
    patterns: Excludes,
    /// Matches depend on where a listing is (some pattern has a `/`).
    by_path: bool,
    /// The literal beginnings of the path patterns (`/etc` of `/etc/**/x`): only directories on
    /// the way to one or beneath one can hold a match. `None`: any directory can.
    prefixes: Option<Vec<Vec<u8>>>,
    ignore_case: bool,
    memo: HashMap<Key, Rc<Listing>>,
    /// How many entries the memo holds (matches, subdirectories, listings).
    remembered: usize,
    /// At most this many ([`MEMO_BOUND`]).
    bound: usize,
    listings_read: u64,
}

/// At most this many entries (matches, subdirectories, listings) are remembered, some 50-80 MB
/// (a match is kept as its listing entry without content, about 350 bytes): a search past it (`find '*'` over millions of files) goes on streaming, and what it
/// finds from then on is read again in each snapshot instead of remembered.
pub const MEMO_BOUND: usize = 200_000;

impl<'a> Finder<'a> {
    /// A search for `opts` in `repo`; refuses an invalid pattern or a relative path pattern,
    /// naming it.
    pub fn new(repo: &'a Repository, index: &'a Index, opts: &FindOptions) -> Result<Self> {
        opts.check()?;
        let patterns = Excludes::build(&opts.patterns, "pattern", opts.ignore_case)?;
        let by_path = patterns.has_path_patterns();
        let prefixes = if opts.patterns.iter().all(|p| p.contains('/')) {
            let list: Vec<Vec<u8>> = opts.patterns.iter().map(|p| literal_prefix(p)).collect();
            // Case folding beyond ASCII is the glob crate's; the prefix test folds ASCII only.
            let usable = list.iter().all(|l| !l.is_empty())
                && !(opts.ignore_case && list.iter().any(|l| !l.is_ascii()));
            usable.then_some(list)
        } else {
            None
        };
        Ok(Finder {
            repo,
            index,
            patterns,
            by_path,
            prefixes,
            ignore_case: opts.ignore_case,
            memo: HashMap::new(),
            remembered: 0,
            bound: MEMO_BOUND,
            listings_read: 0,
        })
    }

    /// Remembers at most `bound` entries instead of [`MEMO_BOUND`].
    pub fn with_memo_bound(mut self, bound: usize) -> Self {
        self.bound = bound;
        self
    }

    /// How many listings the search has read so far (each at most once per place, see the
    /// module documentation).
    pub fn listings_read(&self) -> u64 {
        self.listings_read
    }

    /// Searches the tree whose root listing is `root`, giving each match and each damaged
    /// listing to `on` as it is found, in walk order. `Err` on an interruption, a storage
    /// fault (not damage) or an error of `on`.
    pub fn search(
        &mut self,
        root: BlobId,
        on: &mut dyn FnMut(Found<'_>) -> Result<()>,
    ) -> Result<()> {
        if let Some(known) = self.memo.get(&(root, ROOT)).cloned() {
            return self.replay(&known, Vec::new(), ROOT, on);
        }
        /// A listing being searched.
        struct Open {
            key: Key,
            name: Vec<u8>,
            /// Its absolute path ("" for the root).
            path: Vec<u8>,
            items: Vec<Item>,
            /// What is found beneath it is remembered (within [`MEMO_BOUND`], and only when
            /// everything beneath it is).
            recording: bool,
        }
        let mut open = vec![Open {
            key: (root, ROOT),
            name: Vec::new(),
            path: Vec::new(),
            items: Vec::new(),
            recording: self.remembered < self.bound,
        }];
        let mut walk = TreeWalk::of(self.repo, self.index, root);
        self.listings_read += 1;
        let mut path = Vec::new();
        while let Some(step) = walk.next()? {
            let (closed, damage) = match step {
                Step::Entry { mut node, .. } => {
                    let Some(top) = open.last_mut() else {
                        continue;
                    };
                    if top.recording && self.remembered >= self.bound {
                        top.recording = false;
                        top.items = Vec::new();
                    }
                    path.clear();
                    path.extend_from_slice(&top.path);
                    path.push(b'/');
                    path.extend_from_slice(&node.name);
                    let sub = node.subtree.filter(|_| node.kind == NodeKind::Dir);
                    if self.matches(&node.name, &path) {
                        let mut hit = node.clone();
                        hit.content = Vec::new();
                        hit.xattrs = Vec::new();
                        on(Found::Match {
                            path: &path,
                            node: &hit,
                        })?;
                        if top.recording {
                            top.items.push(Item::Match(Box::new(hit)));
                            self.remembered += 1;
                        }
                    }
                    if let Some(sub) = sub {
                        let key = (sub, self.child_key(&top.key.1, &node.name));
                        match self.memo.get(&key).cloned() {
                            Some(known) if known.holds_something() => {
                                self.replay(&known, path.clone(), key.1, on)?;
                                if top.recording {
                                    top.items.push(Item::Below {
                                        name: std::mem::take(&mut node.name),
                                        tree: sub,
                                    });
                                    self.remembered += 1;
                                }
                            }
                            Some(_) => {}
                            None if self.may_hold_matches(&path) => {
                                let recording = top.recording;
                                walk.enter(&node.name, sub);
                                self.listings_read += 1;
                                open.push(Open {
                                    key,
                                    name: std::mem::take(&mut node.name),
                                    path: path.clone(),
                                    items: Vec::new(),
                                    recording,
                                });
                            }
                            None => {}
                        }
                    }
                    continue;
                }
                Step::Leave { .. } => (open.pop(), None),
                Step::Damaged { damage, .. } => (open.pop(), Some(damage)),
            };
            let Some(closed) = closed else {
                continue;
            };
            if let Some(damage) = &damage {
                let at: &[u8] = if closed.path.is_empty() {
                    b"/"
                } else {
                    &closed.path
                };
                on(Found::Damaged { path: at, damage })?;
            }
            let listing = Listing {
                items: closed.items,
                damage,
            };
            if let Some(parent) = open.last_mut() {
                if !closed.recording {
                    // The parent's record would miss what is beneath this one.
                    parent.recording = false;
                    parent.items = Vec::new();
                } else if parent.recording && listing.holds_something() {
                    parent.items.push(Item::Below {
                        name: closed.name,
                        tree: closed.key.0,
                    });
                    self.remembered += 1;
                }
            }
            if closed.recording {
                self.remembered += 1;
                self.memo.insert(closed.key, Rc::new(listing));
            }
        }
        Ok(())
    }

    /// Gives what is remembered beneath `top`, the listing of the directory at absolute
    /// `path` ("" for the root) whose key part is `hash`, to `on`, in walk order.
    fn replay(
        &self,
        top: &Rc<Listing>,
        mut path: Vec<u8>,
        hash: [u8; 32],
        on: &mut dyn FnMut(Found<'_>) -> Result<()>,
    ) -> Result<()> {
        if let Some(damage) = &top.damage {
            let at: &[u8] = if path.is_empty() { b"/" } else { &path };
            return on(Found::Damaged { path: at, damage });
        }
        /// A remembered listing being replayed: the next item, where its path ends.
        struct Frame {
            listing: Rc<Listing>,
            next: usize,
            path_len: usize,
            hash: [u8; 32],
        }
        let mut stack = vec![Frame {
            listing: Rc::clone(top),
            next: 0,
            path_len: path.len(),
            hash,
        }];
        while let Some(frame) = stack.last_mut() {
            crate::interrupt::check()?;
            let Some(item) = frame.listing.items.get(frame.next) else {
                path.truncate(frame.path_len);
                stack.pop();
                continue;
            };
            frame.next += 1;
            let len = path.len();
            match item {
                Item::Match(node) => {
                    path.push(b'/');
                    path.extend_from_slice(&node.name);
                    on(Found::Match { path: &path, node })?;
                    path.truncate(len);
                }
                Item::Below { name, tree } => {
                    let hash = self.child_key(&frame.hash, name);
                    let listing = self.memo.get(&(*tree, hash)).cloned().ok_or_else(|| {
                        Error::Invalid(format!("find: listing {tree} was not searched"))
                    })?;
                    path.push(b'/');
                    path.extend_from_slice(name);
                    if let Some(damage) = &listing.damage {
                        on(Found::Damaged {
                            path: &path,
                            damage,
                        })?;
                        path.truncate(len);
                    } else {
                        stack.push(Frame {
                            listing,
                            next: 0,
                            path_len: len,
                            hash,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the entry `name` at absolute `path` matches a pattern.
    fn matches(&self, name: &[u8], path: &[u8]) -> bool {
        self.patterns.matches_name(name) || (self.by_path && self.patterns.matches_path(path))
    }

    /// The key part of subdirectory `name` of the listing whose key part is `parent`: its
    /// place, chained, when matches depend on it; the same for every place otherwise.
    fn child_key(&self, parent: &[u8; 32], name: &[u8]) -> [u8; 32] {
        if !self.by_path {
            return ROOT;
        }
        let mut h = blake3::Hasher::new();
        h.update(parent);
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name);
        *h.finalize().as_bytes()
    }

    /// Whether anything beneath the directory at absolute `path` can match.
    fn may_hold_matches(&self, path: &[u8]) -> bool {
        let Some(prefixes) = &self.prefixes else {
            return true;
        };
        let eq = |a: &[u8], b: &[u8]| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        // On the way to a prefix, or beneath one.
        let within = |inner: &[u8], outer: &[u8]| {
            inner.len() >= outer.len()
                && eq(&inner[..outer.len()], outer)
                && (inner.len() == outer.len() || outer == b"/" || inner[outer.len()] == b'/')
        };
        prefixes.iter().any(|p| within(path, p) || within(p, path))
    }
}

/// The literal beginning of path pattern `p`, up to the last `/` before its first glob
/// character: `/etc` of `/etc/**/nginx.conf`, `/etc/nginx/nginx.conf` itself, `/` of
/// `/*/x`; empty when it has none (`**/x`).
fn literal_prefix(p: &str) -> Vec<u8> {
    let p = p.trim_end_matches('/');
    let Some(first) = p.find(['*', '?', '[', '{', '\\']) else {
        return p.as_bytes().to_vec();
    };
    match p[..first].rfind('/') {
        Some(0) => b"/".to_vec(),
        Some(i) => p.as_bytes()[..i].to_vec(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::walk::testing::Listings;

    fn found(f: &mut Finder<'_>, root: BlobId) -> Vec<String> {
        let mut out = Vec::new();
        f.search(root, &mut |x| {
            out.push(match x {
                Found::Match { path, .. } => String::from_utf8_lossy(path).into_owned(),
                Found::Damaged { path, .. } => format!("!{}", String::from_utf8_lossy(path)),
            });
            Ok(())
        })
        .expect("search");
        out
    }

    fn finder<'a>(l: &'a Listings, index: &'a Index, patterns: &[&str], ic: bool) -> Finder<'a> {
        let opts = FindOptions {
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            ignore_case: ic,
        };
        Finder::new(&l.repo, index, &opts).expect("finder")
    }

    /// A listing shared by two places and two snapshots is read once for a name pattern, and
    /// its matches are reported at each place; a path pattern tells the places apart and
    /// reads it once per place; a second snapshot differing in one directory costs that
    /// directory and the root only. Damage is reported at every place that holds it.
    #[test]
    fn each_listing_is_read_once_per_place_and_its_matches_reported_everywhere() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut l = Listings::new(tmp.path());
        let conf = l.tree(&[], &["a.conf", "b.txt"]);
        let missing = BlobId([9; 32]);
        let etc = l.tree(&[("nginx", conf), ("broken", missing)], &["hosts"]);
        let root1 = l.tree(&[("etc", etc), ("srv", conf)], &["x.conf"]);
        let other = l.tree(&[], &["c.conf"]);
        let root2 = l.tree(&[("etc", etc), ("srv", other)], &["x.conf"]);
        let index = l.store();

        let mut f = finder(&l, &index, &["*.conf"], false);
        let want1 = [
            "!/etc/broken",
            "/etc/nginx/a.conf",
            "/srv/a.conf",
            "/x.conf",
        ];
        assert_eq!(found(&mut f, root1), want1);
        // root, etc, conf (once for both places), and the missing one tried.
        assert_eq!(f.listings_read(), 4);
        assert_eq!(
            found(&mut f, root2),
            [
                "!/etc/broken",
                "/etc/nginx/a.conf",
                "/srv/c.conf",
                "/x.conf"
            ]
        );
        assert_eq!(f.listings_read(), 6, "root2 and its one new directory");
        assert_eq!(found(&mut f, root1), want1, "replayed, nothing read");
        assert_eq!(f.listings_read(), 6);

        let mut f = finder(&l, &index, &["/**/A.CONF"], true);
        assert_eq!(
            found(&mut f, root1),
            ["!/etc/broken", "/etc/nginx/a.conf", "/srv/a.conf"]
        );
        assert_eq!(f.listings_read(), 5, "conf read at each of its two places");

        // A literal beginning keeps the search out of /srv.
        let mut f = finder(&l, &index, &["/etc/*/a.conf"], false);
        assert_eq!(found(&mut f, root1), ["!/etc/broken", "/etc/nginx/a.conf"]);
        assert_eq!(f.listings_read(), 4, "root, etc, nginx and broken");
    }

    /// Past the bound of what is remembered, the search finds the same, reading listings
    /// again instead: a listing is remembered only with everything beneath it.
    #[test]
    fn past_the_memo_bound_the_search_finds_the_same() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut l = Listings::new(tmp.path());
        let leaf = l.tree(&[], &["a.conf", "b.conf", "c.conf"]);
        let mid = l.tree(&[("x", leaf), ("y", leaf)], &["m.conf"]);
        let root = l.tree(&[("p", mid), ("q", mid)], &["r.conf"]);
        let index = l.store();
        let mut all = finder(&l, &index, &["*.conf"], false);
        let want = found(&mut all, root);
        assert_eq!(want.len(), 2 * (1 + 2 * 3) + 1);
        assert_eq!(all.listings_read(), 3);
        for bound in [0, 1, 4, 8] {
            let mut f = finder(&l, &index, &["*.conf"], false).with_memo_bound(bound);
            assert_eq!(found(&mut f, root), want, "bound {bound}");
            assert_eq!(found(&mut f, root), want, "bound {bound}, again");
            assert!(
                f.listings_read() > 3,
                "bound {bound}: {}",
                f.listings_read()
            );
        }
    }

    #[test]
    fn literal_prefixes_and_refused_patterns() {
        assert_eq!(literal_prefix("/etc/**/nginx.conf"), b"/etc");
        assert_eq!(
            literal_prefix("/etc/nginx/nginx.conf"),
            b"/etc/nginx/nginx.conf"
        );
        assert_eq!(literal_prefix("/*/x"), b"/");
        assert_eq!(literal_prefix("**/x"), b"");
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut l = Listings::new(tmp.path());
        let index = l.store();
        for bad in ["etc/hosts", "a[", "/", ""] {
            let opts = FindOptions {
                patterns: vec![bad.into()],
                ignore_case: false,
            };
            let err = Finder::new(&l.repo, &index, &opts).err().expect(bad);
            assert!(err.to_string().contains("pattern"), "{bad}: {err}");
        }
    }
}

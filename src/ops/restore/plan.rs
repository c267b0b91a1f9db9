//! Restore planning: which entries to create where, and which chunks each file needs.
//!
//! The snapshot's tree is walked once with [`TreeWalk`] (no recursion: any depth plans;
//! interruptible at every entry), and the plan is bounded: see [`build_within`].

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::{BlobKind, Index, Node, NodeKind, Repository, Step, Timestamp, TreeWalk, Xattr};

/// One entry to create, in depth-first order (parents before children).
#[derive(Debug)]
pub struct PlannedEntry {
    /// Path relative to the target (the snapshot's absolute path without the leading `/`).
    pub rel: Box<Path>,
    pub node: EntryMeta,
    /// For a hard link: the plan position of the file it links to.
    pub link_to: Option<u32>,
}

/// What restore needs of a snapshot entry: a [`Node`] without what planning has used up
/// (its name, which `rel` ends with; its chunk list, now in [`Plan::chunks`]; owner names,
/// identity and link count). A third of a `Node`'s size: a plan holds one per restored
/// entry, millions for a large tree.
#[derive(Debug, Clone)]
pub struct EntryMeta {
    pub kind: NodeKind,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size in bytes (files: their length once restored, trailing holes included).
    pub size: u64,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    /// Device number of character and block devices.
    pub rdev: u64,
    /// Target of a symlink.
    pub link_target: Option<Box<[u8]>>,
    /// Extended attributes, without the inode flags (those are in `flags`).
    pub xattrs: Box<[Xattr]>,
    /// Inode flags (`chattr`), set once everything is in place: an immutable or append-only
    /// entry could not be placed, nor get its times, after them.
    pub flags: u32,
}

impl EntryMeta {
    fn of(node: Node) -> Self {
        let (xattrs, flags) = crate::repo::tree::split_inode_flags(node.xattrs);
        EntryMeta {
            kind: node.kind,
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            size: node.size,
            mtime: node.mtime,
            atime: node.atime,
            rdev: node.rdev,
            link_target: node.link_target.map(Vec::into_boxed_slice),
            xattrs: xattrs.into_boxed_slice(),
            flags,
        }
    }
}

/// A chunk use: which file (plan position) at which offset.
#[derive(Debug, Clone, Copy)]
pub struct ChunkUse {
    pub entry: u32,
    pub offset: u64,
}

/// Every use of every chunk, grouped by chunk: flat sorted lists (about 36 bytes a distinct
/// chunk and 16 a use) where a map of lists cost several times that.
#[derive(Debug, Default)]
pub struct ChunkUses {
    /// Distinct chunks, sorted.
    ids: Vec<BlobId>,
    /// `uses[starts[i]..starts[i + 1]]` are the uses of `ids[i]` (one more start than ids).
    starts: Vec<u32>,
    uses: Vec<ChunkUse>,
}

impl ChunkUses {
    /// Groups `(chunk, use)` pairs by chunk.
    fn from_pairs(mut pairs: Vec<(BlobId, ChunkUse)>) -> Self {
        pairs.sort_unstable_by_key(|p| p.0);
        let mut out = ChunkUses {
            uses: Vec::with_capacity(pairs.len()),
            ..ChunkUses::default()
        };
        for (id, u) in pairs {
            if out.ids.last() != Some(&id) {
                out.ids.push(id);
                out.starts.push(out.uses.len() as u32);
            }
            out.uses.push(u);
        }
        out.starts.push(out.uses.len() as u32);
        out.ids.shrink_to_fit();
        out.starts.shrink_to_fit();
        out
    }

    /// The uses of chunk `id` (none if the plan does not use it).
    pub fn get(&self, id: &BlobId) -> &[ChunkUse] {
        match self.ids.binary_search(id) {
            Ok(i) => self.group(i),
            Err(_) => &[],
        }
    }

    /// Each distinct chunk with its uses, in chunk order.
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &[ChunkUse])> + '_ {
        self.ids
            .iter()
            .enumerate()
            .map(move |(i, id)| (id, self.group(i)))
    }

    /// The distinct chunks, in order.
    pub fn ids(&self) -> &[BlobId] {
        &self.ids
    }

    fn group(&self, i: usize) -> &[ChunkUse] {
        &self.uses[self.starts[i] as usize..self.starts[i + 1] as usize]
    }
}

/// Everything restore will do.
/// An entry of the plan that cannot be restored.
#[derive(Debug, Clone)]
pub struct Broken {
    /// Its plan position.
    pub pos: usize,
    /// Why, as the report says it.
    pub reason: String,
    /// The damaged pack in storage it depends on, when one is known.
    pub pack: Option<String>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub entries: Vec<PlannedEntry>,
    /// Chunk → its uses.
    pub chunks: ChunkUses,
    /// Entries that cannot be restored, with the reason (missing chunks, unsafe names...).
    pub broken: Vec<Broken>,
    /// Unsafe names found (never restored).
    pub unsafe_names: Vec<String>,
    /// Total bytes of file content.
    pub bytes: u64,
}

impl Plan {
    /// The display path of a planned entry (absolute, as in the snapshot).
    pub fn display(&self, i: usize) -> String {
        display_path(&self.entries[i].rel)
    }
}

/// `/` + the relative path, lossily for display.
pub fn display_path(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// The include list, as sets: a path is wanted when it or one of its ancestors is included
/// (restored whole), or when it is an ancestor of an included path (created, and descended
/// into). Lookups cost the path's depth, not the number of includes, so a long list (a
/// restore drill's sample of thousands of files) plans as fast as a short one.
struct Includes {
    /// Empty: everything is wanted.
    included: HashSet<PathBuf>,
    /// Every proper ancestor of an included path.
    ancestors: HashSet<PathBuf>,
}

impl Includes {
    fn new(includes: &[PathBuf]) -> Self {
        let included: HashSet<PathBuf> = includes.iter().cloned().collect();
        let mut ancestors = HashSet::new();
        for inc in includes {
            for a in inc.ancestors().skip(1) {
                if !ancestors.insert(a.to_path_buf()) {
                    // Its own ancestors are in the set already.
                    break;
                }
            }
        }
        Includes {
            included,
            ancestors,
        }
    }

    /// Whether `path` (absolute in the snapshot) is wanted.
    fn wanted(&self, path: &Path) -> bool {
        self.included.is_empty()
            || self.ancestors.contains(path)
            || path.ancestors().any(|a| self.included.contains(a))
    }
}

/// Builds the plan from a snapshot's root tree, within the memory this process can spare (see
/// [`memory_budget`]).
pub fn build(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    includes: &[PathBuf],
) -> Result<Plan> {
    build_within(repo, index, root, includes, memory_budget())
}

/// Builds the plan, refusing once it would hold more than about `budget` bytes.
///
/// The snapshot's tree is walked with [`TreeWalk`]: no recursion (a chain of any depth plans),
/// interruptible at every entry. A plan holds every path to restore, and a directory listing
/// shared by many directories is planned once per directory, so a small repository can ask for
/// 10⁹ entries; what the plan holds is counted as it grows and the restore is refused, naming
/// the count and suggesting `--include`, before it takes more memory than the budget.
pub fn build_within(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    includes: &[PathBuf],
    budget: u64,
) -> Result<Plan> {
    let mut root_node = Node::new(Vec::new(), NodeKind::Dir);
    root_node.subtree = Some(*root);
    let mut planner = Planner {
        index,
        includes: Includes::new(includes),
        plan: Plan::default(),
        uses: Vec::new(),
        hardlinks: HashMap::new(),
        held: 0,
        budget,
    };
    planner.plan.entries.push(PlannedEntry {
        rel: PathBuf::new().into_boxed_path(),
        node: EntryMeta::of(root_node),
        link_to: None,
    });
    planner.walk(&mut TreeWalk::of(repo, index, *root))?;
    let Planner { mut plan, uses, .. } = planner;
    if !includes.is_empty() && plan.entries.len() == 1 {
        return Err(Error::Invalid(format!(
            "nothing in the snapshot matches --include {}",
            includes
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    plan.entries.shrink_to_fit();
    plan.chunks = ChunkUses::from_pairs(uses);
    Ok(plan)
}

/// The most memory a restore plan may take: half of what this process can still get (the
/// least of the system's available memory, its cgroup's remaining allowance and its
/// address-space and data limits), at least 64 MiB.
pub fn memory_budget() -> u64 {
    let mut room = meminfo_available().unwrap_or(u64::MAX);
    if let Some(c) = cgroup_room() {
        room = room.min(c);
    }
    for (resource, used) in [
        (rustix::process::Resource::As, "VmSize:"),
        (rustix::process::Resource::Data, "VmData:"),
    ] {
        if let Some(limit) = rustix::process::getrlimit(resource).current {
            room = room.min(limit.saturating_sub(status_bytes(used).unwrap_or(0)));
        }
    }
    if room == u64::MAX {
        // Nothing could be read: a fixed ceiling of about 100 million entries.
        return 16 << 30;
    }
    (room / 2).max(64 << 20)
}

/// A `<field>: <n> kB` line of a /proc file, in bytes.
fn kb_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn meminfo_available() -> Option<u64> {
    kb_field(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable:",
    )
}

fn status_bytes(field: &str) -> Option<u64> {
    kb_field(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

/// What this process's cgroup (v2) still allows: `memory.max` less `memory.current`.
fn cgroup_room() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let max: u64 = std::fs::read_to_string(dir.join("memory.max"))
        .ok()?
        .trim()
        .parse()
        .ok()?; // "max": no limit
    let current: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(max.saturating_sub(current))
}

/// The state of one planning walk.
struct Planner<'a> {
    index: &'a Index,
    includes: Includes,
    plan: Plan,
    /// Every chunk use, grouped into [`Plan::chunks`] at the end.
    uses: Vec<(BlobId, ChunkUse)>,
    /// Files with more than one link, by (device, inode): the first one's plan position and
    /// chunks (a later one is a hard link to it only if its content is the same).
    hardlinks: HashMap<(u64, u64), (u32, Vec<BlobId>)>,
    /// About how many bytes the plan holds so far, and the most it may.
    held: u64,
    budget: u64,
}

/// What a chunk use costs a plan: its pair while planning, then its place in [`ChunkUses`].
const USE_COST: u64 = (std::mem::size_of::<(BlobId, ChunkUse)>() + 16) as u64;
/// What an entry costs besides its path and metadata: its [`PlannedEntry`] and allocations.
const ENTRY_COST: u64 = (std::mem::size_of::<PlannedEntry>() + 32) as u64;

impl Planner<'_> {
    fn walk(&mut self, walk: &mut TreeWalk<'_>) -> Result<()> {
        while let Some(step) = walk.next()? {
            let (dir, tree, mut node) = match step {
                Step::Entry { dir, tree, node } => (dir, tree, node),
                Step::Leave { .. } => continue,
                Step::Damaged { dir, damage, .. } => {
                    if dir.as_os_str().is_empty() {
                        return Err(Error::corrupt(
                            damage.object,
                            format!("the snapshot's root directory listing {}", damage.reason),
                        ));
                    }
                    // Its content is unknown: the directory (just planned) is damaged, the
                    // rest can still restore.
                    let pos = self.plan.entries.len() - 1;
                    self.plan.broken.push(Broken {
                        pos,
                        reason: format!("its directory listing cannot be read: {damage}"),
                        pack: damage.pack,
                    });
                    continue;
                }
            };
            if !node.name_is_safe() {
                self.plan.unsafe_names.push(format!(
                    "{}/{:?} in directory listing {tree}",
                    display_path(dir).trim_end_matches('/'),
                    String::from_utf8_lossy(&node.name)
                ));
                continue;
            }
            let rel = dir.join(OsStr::from_bytes(&node.name));
            if !self.includes.included.is_empty()
                && !self.includes.wanted(&Path::new("/").join(&rel))
            {
                continue;
            }
            let pos = u32::try_from(self.plan.entries.len()).map_err(|_| {
                Error::Invalid(format!(
                    "the snapshot has more than {} entries to restore; restore it in parts \
                     with --include",
                    u32::MAX
                ))
            })?;
            self.held += ENTRY_COST
                + rel.as_os_str().len() as u64
                + node.link_target.as_ref().map_or(0, |t| t.len() as u64)
                + node
                    .xattrs
                    .iter()
                    .map(|x| (x.name.len() + x.value.len() + 64) as u64)
                    .sum::<u64>()
                + node.content.len() as u64 * USE_COST;
            if self.held > self.budget {
                return Err(Error::Invalid(format!(
                    "the snapshot is too large to restore in one go: its plan passed {} \
                     ({} entries so far; directory listings shared by many directories count \
                     once for each); restore it in parts with --include PATH (see `lifeboat \
                     ls`), or where more memory is free",
                    crate::units::human_bytes(self.budget),
                    self.plan.entries.len()
                )));
            }
            let mut link_to = None;
            if node.kind == NodeKind::File && node.links > 1 {
                match self.hardlinks.get(&(node.device, node.inode)) {
                    Some((first, content)) if *content == node.content => link_to = Some(*first),
                    Some(_) => {}
                    None => {
                        self.hardlinks
                            .insert((node.device, node.inode), (pos, node.content.clone()));
                    }
                }
            }
            let mut size = node.size;
            if node.kind == NodeKind::File && link_to.is_none() {
                // A broken file is staged no larger than its chunks (it is never placed):
                // a forged size must not fail the whole restore.
                size = self.add_chunks(pos, &node);
            }
            let subtree = node.subtree;
            let is_dir = node.kind == NodeKind::Dir;
            let name = std::mem::take(&mut node.name);
            let mut meta = EntryMeta::of(node);
            meta.size = size;
            self.plan.entries.push(PlannedEntry {
                rel: rel.into_boxed_path(),
                node: meta,
                link_to,
            });
            if is_dir {
                match subtree {
                    Some(sub) => {
                        walk.enter(&name, sub);
                    }
                    None => self.plan.broken.push(Broken {
                        pos: pos as usize,
                        reason: "directory without a listing (corrupt)".into(),
                        pack: None,
                    }),
                }
            }
        }
        Ok(())
    }

    /// Records the chunk uses of file `node` at plan position `pos`, or why it is broken.
    /// Returns the size to stage: the declared one, or for a broken file what its chunks hold.
    fn add_chunks(&mut self, pos: u32, node: &Node) -> u64 {
        let mut offset = 0u64;
        let mut missing = None;
        for chunk in &node.content {
            match self.index.get(chunk) {
                Some(e) if e.kind == BlobKind::Data => {
                    self.uses.push((*chunk, ChunkUse { entry: pos, offset }));
                    offset += u64::from(e.raw_len);
                }
                Some(_) => {
                    missing = Some(format!(
                        "chunk {chunk} is a directory listing, not file data (corrupt or tampered)"
                    ))
                }
                None => missing = Some(format!("chunk {chunk} is not in the index (missing)")),
            }
        }
        if offset != node.size && missing.is_none() {
            missing = Some(format!(
                "its chunks hold {offset} bytes but the snapshot says {}",
                node.size
            ));
        }
        self.plan.bytes += offset;
        match missing {
            Some(reason) => {
                self.plan.broken.push(Broken {
                    pos: pos as usize,
                    reason,
                    pack: None,
                });
                offset
            }
            None => node.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_uses_are_grouped_by_chunk_and_found_by_id() {
        let id = |b: u8| BlobId([b; 32]);
        let at = |entry: u32, offset: u64| ChunkUse { entry, offset };
        let uses = ChunkUses::from_pairs(vec![
            (id(9), at(1, 0)),
            (id(3), at(2, 0)),
            (id(9), at(4, 100)),
            (id(5), at(3, 7)),
            (id(3), at(5, 64)),
        ]);
        assert_eq!(uses.ids(), &[id(3), id(5), id(9)]);
        let entries = |id: BlobId| {
            let mut e: Vec<(u32, u64)> =
                uses.get(&id).iter().map(|u| (u.entry, u.offset)).collect();
            e.sort_unstable();
            e
        };
        assert_eq!(entries(id(3)), vec![(2, 0), (5, 64)]);
        assert_eq!(entries(id(5)), vec![(3, 7)]);
        assert_eq!(entries(id(9)), vec![(1, 0), (4, 100)]);
        assert!(uses.get(&id(4)).is_empty(), "an unused chunk has no uses");
        let grouped: Vec<(BlobId, usize)> = uses.iter().map(|(i, u)| (*i, u.len())).collect();
        assert_eq!(grouped, vec![(id(3), 2), (id(5), 1), (id(9), 2)]);

        let empty = ChunkUses::from_pairs(Vec::new());
        assert!(empty.ids().is_empty() && empty.iter().next().is_none());
        assert!(empty.get(&id(1)).is_empty());
    }

    #[test]
    fn includes_want_included_paths_what_is_beneath_and_their_ancestors() {
        let inc = Includes::new(&[PathBuf::from("/srv/www/a.txt"), PathBuf::from("/etc/nginx")]);
        for yes in [
            "/",
            "/srv",
            "/srv/www",
            "/srv/www/a.txt",
            "/etc",
            "/etc/nginx",
            "/etc/nginx/sites/default",
        ] {
            assert!(inc.wanted(Path::new(yes)), "{yes}");
        }
        for no in [
            "/srv/www/b.txt",
            "/srv/other",
            "/etc/ssh",
            "/etc/nginx2",
            "/var",
        ] {
            assert!(!inc.wanted(Path::new(no)), "{no}");
        }
        assert!(Includes::new(&[]).wanted(Path::new("/anything")));
    }
}

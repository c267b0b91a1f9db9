//! Restore planning: which entries to create where, and which chunks each file needs.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::{BlobKind, Index, Node, NodeKind, Repository};

/// One entry to create, in depth-first order (parents before children).
#[derive(Debug)]
pub struct PlannedEntry {
    /// Path relative to the target (the snapshot's absolute path without the leading `/`).
    pub rel: PathBuf,
    pub node: Node,
    /// For a hard link: the plan position of the file it links to.
    pub link_to: Option<usize>,
}

/// A chunk use: which file (plan position) at which offset.
#[derive(Debug, Clone, Copy)]
pub struct ChunkUse {
    pub entry: u32,
    pub offset: u64,
}

/// Everything restore will do.
#[derive(Debug, Default)]
pub struct Plan {
    pub entries: Vec<PlannedEntry>,
    /// Chunk → its uses.
    pub chunks: HashMap<BlobId, Vec<ChunkUse>>,
    /// Entries that cannot be restored, with the reason (missing chunks, unsafe names...).
    pub broken: Vec<(usize, String)>,
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

/// Builds the plan from a snapshot's root tree.
pub fn build(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    includes: &[PathBuf],
) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut root_node = Node::new(Vec::new(), NodeKind::Dir);
    root_node.subtree = Some(*root);
    plan.entries.push(PlannedEntry {
        rel: PathBuf::new(),
        node: root_node,
        link_to: None,
    });
    let mut hardlinks: HashMap<(u64, u64), usize> = HashMap::new();
    let wanted = Includes::new(includes);
    let tree = repo.load_tree(index, root)?;
    walk(
        repo,
        index,
        tree,
        root,
        Path::new(""),
        &wanted,
        &mut plan,
        &mut hardlinks,
        0,
    )?;
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
    Ok(plan)
}

const MAX_DEPTH: usize = 4096;

#[allow(clippy::too_many_arguments)]
fn walk(
    repo: &Repository,
    index: &Index,
    tree: crate::repo::Tree,
    tree_id: &BlobId,
    dir: &Path,
    includes: &Includes,
    plan: &mut Plan,
    hardlinks: &mut HashMap<(u64, u64), usize>,
    depth: usize,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::corrupt(
            format!("directory listing {tree_id}"),
            "directories nested too deeply (corrupt or tampered)",
        ));
    }
    for node in tree.nodes {
        if !node.name_is_safe() {
            plan.unsafe_names.push(format!(
                "{}/{:?} in directory listing {tree_id}",
                display_path(dir).trim_end_matches('/'),
                String::from_utf8_lossy(&node.name)
            ));
            continue;
        }
        let rel = dir.join(OsStr::from_bytes(&node.name));
        let abs = Path::new("/").join(&rel);
        if !includes.wanted(&abs) {
            continue;
        }
        let pos = plan.entries.len();
        let mut link_to = None;
        if node.kind == NodeKind::File && node.links > 1 {
            match hardlinks.get(&(node.device, node.inode)) {
                Some(&first) if plan.entries[first].node.content == node.content => {
                    link_to = Some(first)
                }
                Some(_) => {}
                None => {
                    hardlinks.insert((node.device, node.inode), pos);
                }
            }
        }
        if node.kind == NodeKind::File && link_to.is_none() {
            let mut offset = 0u64;
            let mut missing = None;
            for chunk in &node.content {
                match index.get(chunk) {
                    Some(e) if e.kind == BlobKind::Data => {
                        plan.chunks.entry(*chunk).or_default().push(ChunkUse {
                            entry: pos as u32,
                            offset,
                        });
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
            if let Some(reason) = missing {
                plan.broken.push((pos, reason));
            }
            plan.bytes += offset;
        }
        let subtree = node.subtree;
        let is_dir = node.kind == NodeKind::Dir;
        plan.entries.push(PlannedEntry {
            rel: rel.clone(),
            node,
            link_to,
        });
        if is_dir {
            let Some(sub) = subtree else {
                plan.broken
                    .push((pos, "directory without a listing (corrupt)".into()));
                continue;
            };
            match repo.load_tree(index, &sub) {
                Ok(t) => walk(
                    repo,
                    index,
                    t,
                    &sub,
                    &rel,
                    includes,
                    plan,
                    hardlinks,
                    depth + 1,
                )?,
                // Its content is unknown: the directory is damaged, the rest can still restore.
                Err(e) => plan
                    .broken
                    .push((pos, format!("its directory listing cannot be read: {e}"))),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! `dump`: one file of a snapshot, written to a stream (a pipe into `psql`, a file), each
//! chunk verified before it is written.
//!
//! A chunk that is missing or damaged stops the dump with its error: what was written before
//! it is the file's beginning, intact, and the error says where it stopped, so that a reader
//! at the other end of the pipe is never handed wrong bytes as the rest.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::{Index, Node, NodeKind, Repository};

/// The entry at absolute `path` in the snapshot whose root listing is `root`, if there is one.
/// Reads only the listings on the way (one per component).
pub fn find_node(
    repo: &Repository,
    index: &Index,
    root: BlobId,
    path: &Path,
) -> Result<Option<Node>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if !bytes.starts_with(b"/") {
        return Err(Error::Invalid(format!(
            "{}: give an absolute path, as the snapshot has it",
            crate::display::path(path)
        )));
    }
    let parts: Vec<&[u8]> = bytes
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    let mut listing = root;
    for (i, part) in parts.iter().enumerate() {
        let tree = repo.load_tree(index, &listing)?;
        let Some(node) = tree.nodes.into_iter().find(|n| n.name == *part) else {
            return Ok(None);
        };
        if i + 1 == parts.len() {
            return Ok(Some(node));
        }
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => listing = sub,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Refuses an entry that is not a regular file (`what` names it), saying what it is.
pub fn require_file(node: &Node, what: &str) -> Result<()> {
    if node.kind != NodeKind::File {
        let kind = match node.kind {
            NodeKind::Dir => "directory",
            NodeKind::Symlink => "symbolic link",
            NodeKind::Fifo => "fifo",
            NodeKind::CharDevice | NodeKind::BlockDevice => "device node",
            NodeKind::Socket => "socket",
            NodeKind::File => "file",
        };
        Err(Error::Invalid(format!(
            "{what} is a {kind} in the snapshot, not a file: dump writes the content of one file \
             (`lifeboat ls` shows what is there)"
        )))
    } else {
        Ok(())
    }
}

/// Writes the content of file `node` (`what` names it in errors) to `out`, verifying each
/// chunk before writing it. `written` counts the bytes written, also when it fails: a chunk
/// that cannot be read or verified stops it with that error, and `written` then says how much
/// of the file's beginning, intact, went out.
pub fn dump_file(
    repo: &Repository,
    index: &Index,
    node: &Node,
    what: &str,
    out: &mut dyn Write,
    written: &mut u64,
) -> Result<()> {
    require_file(node, what)?;
    for id in &node.content {
        crate::interrupt::check()?;
        let chunk = repo.read_blob(index, id)?;
        out.write_all(&chunk)
            .map_err(|e| Error::io("write the output", Path::new("-"), e))?;
        *written += chunk.len() as u64;
    }
    out.flush()
        .map_err(|e| Error::io("write the output", Path::new("-"), e))?;
    if *written != node.size {
        return Err(Error::corrupt(
            what,
            format!(
                "its chunks hold {written} bytes, its directory listing says {}",
                node.size
            ),
        ));
    }
    Ok(())
}

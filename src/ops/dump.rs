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
        let hint = if node.kind == NodeKind::Dir {
            "; `--archive tar` writes a directory, with everything beneath it, as a tar stream"
        } else {
            ""
        };
        Err(Error::Invalid(format!(
            "{what} is a {kind} in the snapshot, not a file: dump writes the content of one file \
             (`lifeboat ls` shows what is there){hint}"
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

/// What [`dump_tar`] wrote, also when it stopped: the entries and file bytes that went out
/// whole, the last entry written whole, and the entries left out (each with why).
#[derive(Debug, Default)]
pub struct TarReport {
    /// Entries written whole.
    pub entries: u64,
    /// File content bytes written (of whole entries and of the one it stopped in).
    pub bytes: u64,
    /// The archive path of the last entry written whole.
    pub last: Option<Vec<u8>>,
    /// The archive path of the entry being written when it stopped.
    pub stopped_in: Option<Vec<u8>>,
    /// Entries left out, each as a message (its path escaped, and why).
    pub left_out: Vec<String>,
}

/// Where a tar dump starts: the whole snapshot (its root listing), or one entry of it and
/// everything beneath it, under its archive path (relative: `etc/ssh` for `/etc/ssh`).
pub enum TarTop<'a> {
    Root(BlobId),
    Entry { node: &'a Node, path: &'a [u8] },
}

/// A writer that refuses everything once closed: after a failed entry nothing more may reach
/// the stream (the tar builder writes its end-of-archive blocks when dropped, which would
/// make a truncated entry look complete, its missing bytes read as zeros).
struct Gate<'a> {
    out: &'a mut dyn Write,
    closed: bool,
}

impl Write for Gate<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Err(std::io::Error::other("the archive was stopped"));
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.out.flush()
    }
}

/// The content of one file as a reader for the tar builder: each chunk read and verified
/// before any of its bytes are handed out, and exactly the size the entry's header declares
/// (the builder itself does not check it); a failure is kept in `error`.
struct Content<'a> {
    repo: &'a Repository,
    index: &'a Index,
    ids: std::slice::Iter<'a, BlobId>,
    what: &'a str,
    size: u64,
    chunk: Vec<u8>,
    at: usize,
    produced: u64,
    handed: &'a mut u64,
    error: Option<Error>,
}

impl Content<'_> {
    fn fail(&mut self, e: Error) -> std::io::Error {
        let io = std::io::Error::other(e.to_string());
        self.error = Some(e);
        io
    }
}

impl std::io::Read for Content<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            let Some(id) = self.ids.next() else {
                if self.produced != self.size {
                    let e = Error::corrupt(
                        self.what,
                        format!(
                            "its chunks hold {} bytes, its directory listing says {}",
                            self.produced, self.size
                        ),
                    );
                    return Err(self.fail(e));
                }
                return Ok(0);
            };
            if let Err(e) = crate::interrupt::check() {
                return Err(self.fail(e));
            }
            let chunk = match self.repo.read_blob(self.index, id) {
                Ok(c) => c,
                Err(e) => return Err(self.fail(e)),
            };
            self.produced += chunk.len() as u64;
            if self.produced > self.size {
                let e = Error::corrupt(
                    self.what,
                    format!(
                        "its chunks hold more bytes than its directory listing says ({})",
                        self.size
                    ),
                );
                return Err(self.fail(e));
            }
            self.chunk = chunk;
            self.at = 0;
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        *self.handed += n as u64;
        Ok(n)
    }
}

/// `major` and `minor` of a Linux device number (glibc's encoding).
fn major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// A time that the header's whole, non-negative seconds cannot hold, as a pax record's decimal
/// value (`sec + nsec / 10⁹`, so -0.9999995 for sec -1 and nsec 500); `None` when the header
/// holds it exactly.
fn pax_time(sec: i64, nsec: u32) -> Option<String> {
    let nsec = nsec.min(999_999_999);
    match (sec >= 0, nsec) {
        (true, 0) => None,
        (true, n) => Some(format!("{sec}.{n:09}")),
        (false, 0) => Some(format!("{sec}")),
        (false, n) => Some(format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - n)),
    }
}

/// A pax extended header's record `key=value` (its length counts itself; the value may be
/// any bytes).
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while format!("{len}").len() + body_len != len {
        len = format!("{len}").len() + body_len;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Writes a snapshot's entry `top` (and everything beneath it) to `out` as a tar stream (GNU
/// format: long names and link targets of any bytes; pax records for sub-second and pre-1970 mtimes and xattrs),
/// walking its listings with [`TreeWalk`]. Files, directories, symlinks, hard links (as tar
/// links, when the snapshot recorded them and their content is the same), fifos and device
/// nodes are entries, with mode, owner (ids, and names when stored), mtime and extended
/// attributes (pax `SCHILY.xattr.*`). An entry whose
/// name is unsafe (`..`, `/`, see [`Node::name_is_safe`]) is never written: it is left out,
/// with everything beneath it, and named in `report.left_out`, as are sockets and symlinks
/// without a target.
///
/// Every chunk is verified before any of its bytes are written. A chunk or listing that cannot
/// be read or verified, a write that fails, or an interruption stops the stream at once with
/// that error, leaving the archive truncated (no end-of-archive blocks: `tar -x` reports an
/// unexpected end), never complete-looking with wrong bytes; `report` then says after which
/// entry it stopped. A write error is [`Error::Io`] (a broken pipe keeps its kind).
pub fn dump_tar(
    repo: &Repository,
    index: &Index,
    top: TarTop,
    out: &mut dyn Write,
    report: &mut TarReport,
) -> Result<()> {
    let mut builder = tar::Builder::new(Gate { out, closed: false });
    let result = write_tar(repo, index, top, &mut builder, report);
    match result {
        Ok(()) => {
            let done = builder.finish().and_then(|()| builder.get_mut().flush());
            done.map_err(|e| Error::io("write the output", Path::new("-"), e))
        }
        Err(e) => {
            // Stopped between entries (a damaged listing, an interruption), the stream would
            // end like a complete archive whose end marker is missing, which tar accepts in
            // silence: a block that is no header makes it fail. Inside an entry the missing
            // bytes do that already, and nothing may be added there (it would be read as the
            // entry's data).
            let between = report.stopped_in.is_none() && !matches!(e, Error::Io { .. });
            if between {
                let _ = builder.get_mut().write_all(&stop_block(&e));
            }
            // What went out before is intact: let it reach the reader, then nothing more.
            let _ = builder.get_mut().flush();
            builder.get_mut().closed = true;
            Err(e)
        }
    }
}

/// A 512-byte block that no tar reader takes for a header or for the end of the archive (its
/// checksum field holds no number), saying in words why the archive stops there.
fn stop_block(e: &Error) -> [u8; 512] {
    let mut block = [b'#'; 512];
    let text = format!("\nlifeboat: the archive stopped here, incomplete: {e}\n");
    let n = text.len().min(140);
    block[..n].copy_from_slice(&text.as_bytes()[..n]);
    // The checksum field (bytes 148..156).
    block[148..156].copy_from_slice(b"STOPPED!");
    block[511] = b'\n';
    block
}

/// The archive path `prefix/dir/name` (no leading `/`).
fn archive_path(prefix: &[u8], dir: &Path, name: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = prefix.to_vec();
    for part in [dir.as_os_str().as_bytes(), name] {
        if part.is_empty() {
            continue;
        }
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(part);
    }
    p
}

fn write_tar(
    repo: &Repository,
    index: &Index,
    top: TarTop,
    builder: &mut tar::Builder<Gate>,
    report: &mut TarReport,
) -> Result<()> {
    // Hard links: the first path of each (device, inode) recorded with more than one link,
    // and a digest of its content, so that a link is written only to the same content.
    let mut links: std::collections::HashMap<(u64, u64), (Vec<u8>, blake3::Hash)> =
        std::collections::HashMap::new();
    let (root, prefix) = match top {
        TarTop::Root(tree) => (Some(tree), Vec::new()),
        TarTop::Entry { node, path } => {
            write_entry(repo, index, builder, node, path, &mut links, report)?;
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => (Some(sub), path.to_vec()),
                _ => (None, Vec::new()),
            }
        }
    };
    let Some(root) = root else {
        return Ok(());
    };
    let mut walk = super::super::repo::TreeWalk::of(repo, index, root);
    while let Some(step) = walk.next()? {
        let (dir, node) = match step {
            super::super::repo::Step::Entry { dir, node, .. } => (dir, node),
            super::super::repo::Step::Leave { .. } => continue,
            super::super::repo::Step::Damaged { dir, damage, .. } => {
                let path = archive_path(&prefix, dir, b"");
                return Err(Error::corrupt(
                    format!(
                        "the directory listing of {}",
                        crate::display::bytes(if path.is_empty() { b"/" } else { &path })
                    ),
                    damage.to_string(),
                ));
            }
        };
        let path = archive_path(&prefix, dir, &node.name);
        if !node.name_is_safe() {
            report.left_out.push(format!(
                "{}: a name that cannot be extracted safely{}",
                crate::display::bytes(&path),
                if node.kind == NodeKind::Dir {
                    " (with everything beneath it)"
                } else {
                    ""
                }
            ));
            continue;
        }
        write_entry(repo, index, builder, &node, &path, &mut links, report)?;
        if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
            walk.enter(&node.name, sub);
        }
    }
    Ok(())
}

/// Writes one entry at archive path `path` (safe: its components checked by the caller).
fn write_entry(
    repo: &Repository,
    index: &Index,
    builder: &mut tar::Builder<Gate>,
    node: &Node,
    path: &[u8],
    links: &mut std::collections::HashMap<(u64, u64), (Vec<u8>, blake3::Hash)>,
    report: &mut TarReport,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use tar::EntryType;
    let name = Path::new(std::ffi::OsStr::from_bytes(path));
    let shown = crate::display::bytes(path).to_string();
    let werr = |e: std::io::Error| Error::io("write the output", Path::new("-"), e);
    let mut h = tar::Header::new_gnu();
    h.set_mode(node.mode & 0o7777);
    h.set_uid(u64::from(node.uid));
    h.set_gid(u64::from(node.gid));
    h.set_mtime(node.mtime.sec.max(0) as u64);
    // Names that do not fit the header (31 bytes) are left to the ids.
    if let Some(u) = &node.user {
        let _ = h.set_username(u);
    }
    if let Some(g) = &node.group {
        let _ = h.set_groupname(g);
    }
    h.set_size(0);
    // Left out before anything of the entry goes out (a pax header applies to what follows).
    let skip = match node.kind {
        NodeKind::Socket => Some("a socket (tar has no entry for one)"),
        NodeKind::Symlink
            if node
                .link_target
                .as_deref()
                .is_none_or(|t| t.is_empty() || t.contains(&0)) =>
        {
            Some("a symbolic link without a valid target")
        }
        _ => None,
    };
    if let Some(why) = skip {
        report.left_out.push(format!("{shown}: {why}"));
        return Ok(());
    }
    report.stopped_in = Some(path.to_vec());
    // A pax header for what the GNU header cannot hold: the mtime's fraction (or a time
    // before 1970) and extended attributes (as GNU tar and star write them; `tar --xattrs -x`
    // restores them). The inode flags lifeboat keeps among them are no attribute.
    let mut records = Vec::new();
    if let Some(mtime) = pax_time(node.mtime.sec, node.mtime.nsec) {
        records.extend(pax_record(b"mtime", mtime.as_bytes()));
    }
    for x in &node.xattrs {
        if x.name != crate::repo::tree::INODE_FLAGS_XATTR && !x.name.contains(&b'=') {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(&x.name);
            records.extend(pax_record(&key, &x.value));
        }
    }
    if !records.is_empty() {
        let record = records;
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(EntryType::XHeader);
        x.set_mode(0o644);
        x.set_size(record.len() as u64);
        builder
            .append_data(&mut x, "PaxHeader", record.as_slice())
            .map_err(werr)?;
    }
    match node.kind {
        NodeKind::Dir => {
            h.set_entry_type(EntryType::Directory);
            builder
                .append_data(&mut h, name, std::io::empty())
                .map_err(werr)?;
        }
        NodeKind::File => {
            if node.links > 1 {
                let mut digest = blake3::Hasher::new();
                digest.update(&node.size.to_le_bytes());
                for id in &node.content {
                    digest.update(&id.0);
                }
                let digest = digest.finalize();
                match links.get(&(node.device, node.inode)) {
                    Some((first, d)) if *d == digest => {
                        h.set_entry_type(EntryType::Link);
                        let target = Path::new(std::ffi::OsStr::from_bytes(first));
                        builder.append_link(&mut h, name, target).map_err(werr)?;
                        report.entries += 1;
                        report.last = Some(path.to_vec());
                        return Ok(());
                    }
                    Some(_) => {}
                    None => {
                        links.insert((node.device, node.inode), (path.to_vec(), digest));
                    }
                }
            }
            h.set_entry_type(EntryType::Regular);
            h.set_size(node.size);
            let mut content = Content {
                repo,
                index,
                ids: node.content.iter(),
                what: &shown,
                size: node.size,
                chunk: Vec::new(),
                at: 0,
                produced: 0,
                handed: &mut report.bytes,
                error: None,
            };
            let r = builder.append_data(&mut h, name, &mut content);
            if let Some(e) = content.error.take() {
                return Err(e);
            }
            r.map_err(werr)?;
        }
        NodeKind::Symlink => {
            h.set_entry_type(EntryType::Symlink);
            let target = node.link_target.as_deref().unwrap_or_default();
            let target = Path::new(std::ffi::OsStr::from_bytes(target));
            builder.append_link(&mut h, name, target).map_err(werr)?;
        }
        NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
            h.set_entry_type(match node.kind {
                NodeKind::Fifo => EntryType::Fifo,
                NodeKind::CharDevice => EntryType::Char,
                _ => EntryType::Block,
            });
            if node.kind != NodeKind::Fifo {
                let (major, minor) = major_minor(node.rdev);
                h.set_device_major(major).map_err(werr)?;
                h.set_device_minor(minor).map_err(werr)?;
            }
            builder
                .append_data(&mut h, name, std::io::empty())
                .map_err(werr)?;
        }
        // Left out above.
        NodeKind::Socket => return Ok(()),
    }
    report.entries += 1;
    report.last = Some(path.to_vec());
    report.stopped_in = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pax records count their own length, also where adding the length's digits adds one.
    #[test]
    fn pax_records_count_their_own_length() {
        for value in ["1", &"x".repeat(85), &"x".repeat(86), &"x".repeat(995)] {
            let r = pax_record(b"mtime", value.as_bytes());
            let (len, _) = std::str::from_utf8(&r)
                .expect("ascii")
                .split_once(' ')
                .expect("length");
            assert_eq!(len.parse::<usize>().expect("number"), r.len(), "{value}");
            assert!(r.ends_with(b"\n"));
        }
    }

    /// Times the header cannot hold get a pax value: fractions, and times before 1970 as
    /// `sec + nsec/10⁹`.
    #[test]
    fn pax_times() {
        assert_eq!(pax_time(1_600_000_000, 0), None);
        assert_eq!(pax_time(5, 7).as_deref(), Some("5.000000007"));
        assert_eq!(pax_time(-3, 0).as_deref(), Some("-3"));
        assert_eq!(pax_time(-1, 500).as_deref(), Some("-0.999999500"));
        assert_eq!(
            pax_time(-31_536_000, 999_999_999).as_deref(),
            Some("-31535999.000000001")
        );
    }

    /// Linux device numbers, small and large.
    #[test]
    fn device_numbers() {
        assert_eq!(major_minor(0x0103), (1, 3));
        // glibc's makedev.
        let makedev = |major: u64, minor: u64| {
            ((major & 0xfff) << 8)
                | ((major & !0xfff) << 32)
                | (minor & 0xff)
                | ((minor & !0xff) << 12)
        };
        let dev = makedev(259, 65536);
        assert_eq!(major_minor(dev), (259, 65536));
    }

    /// The block written where an archive stops between entries is no header (its checksum
    /// is no number) and no end marker.
    #[test]
    fn the_stop_block_is_no_header() {
        let b = stop_block(&Error::Invalid("x".into()));
        assert!(b.iter().any(|c| *c != 0));
        assert!(tar::Header::from_byte_slice(&b).cksum().is_err());
    }
}

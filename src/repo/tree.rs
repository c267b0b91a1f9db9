//! Directory listings ("trees"): one per directory, stored as blobs like file content.
//!
//! A tree is the sorted list of a directory's entries with their metadata; a directory entry
//! points at its subdirectory's tree by id, a file entry lists its content chunks in order.
//! Because a tree's id is the hash of its bytes, an unchanged directory is stored once.
//! Encoding: postcard (see docs/FORMAT.md).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::BlobId;

/// A second and nanosecond timestamp (as in `struct timespec`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// The type of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl NodeKind {
    /// A one-letter type code as in `ls -l`.
    pub fn letter(self) -> char {
        match self {
            NodeKind::File => '-',
            NodeKind::Dir => 'd',
            NodeKind::Symlink => 'l',
            NodeKind::Fifo => 'p',
            NodeKind::CharDevice => 'c',
            NodeKind::BlockDevice => 'b',
            NodeKind::Socket => 's',
        }
    }
}

/// An extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// The name under which a node keeps its inode flags (`chattr`, `FS_IOC_GETFLAGS`) among its
/// extended attributes: 4 bytes, little-endian, only the bits of [`INODE_FLAGS_KEPT`], present
/// only when one of them is set. Linux accepts no extended attribute outside the `security.`,
/// `system.`, `trusted.` and `user.` namespaces, so no file can carry one of this name, and
/// listings without flags encode exactly as before.
pub const INODE_FLAGS_XATTR: &[u8] = b"lifeboat.inode_flags";

/// The inode flags kept (`chattr` letters in brackets): secure deletion (s), undeletable (u),
/// compress (c), synchronous updates (S), immutable (i), append only (a), no dump (d), no atime
/// (A), data journaling (j), no tail merging (t), synchronous directory updates (D), top of a
/// directory hierarchy (T), no copy on write (C), project inheritance (P). Flags the file
/// system manages itself (extents, inline data, encryption, verity, ...) are not.
pub const INODE_FLAGS_KEPT: u32 = 0x2083_c0ff;

/// The `chattr` letters of the kept flags set in `flags`, in bit order (`ia` for immutable and
/// append only).
pub fn inode_flag_letters(flags: u32) -> String {
    const LETTERS: [(u32, char); 14] = [
        (0x0000_0001, 's'),
        (0x0000_0002, 'u'),
        (0x0000_0004, 'c'),
        (0x0000_0008, 'S'),
        (0x0000_0010, 'i'),
        (0x0000_0020, 'a'),
        (0x0000_0040, 'd'),
        (0x0000_0080, 'A'),
        (0x0000_4000, 'j'),
        (0x0000_8000, 't'),
        (0x0001_0000, 'D'),
        (0x0002_0000, 'T'),
        (0x0080_0000, 'C'),
        (0x2000_0000, 'P'),
    ];
    LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|&(_, c)| c)
        .collect()
}

impl Xattr {
    /// The entry that keeps `flags` (see [`INODE_FLAGS_XATTR`]); `None` when none of the kept
    /// flags is set.
    pub fn inode_flags(flags: u32) -> Option<Xattr> {
        let kept = flags & INODE_FLAGS_KEPT;
        (kept != 0).then(|| Xattr {
            name: INODE_FLAGS_XATTR.to_vec(),
            value: kept.to_le_bytes().to_vec(),
        })
    }
}

/// Splits the inode flags kept among `xattrs` off: the real extended attributes and the
/// flags (0 when none; a malformed entry counts as none).
pub fn split_inode_flags(xattrs: Vec<Xattr>) -> (Vec<Xattr>, u32) {
    let mut flags = 0;
    let rest = xattrs
        .into_iter()
        .filter(|x| {
            if x.name != INODE_FLAGS_XATTR {
                return true;
            }
            if let Ok(b) = <[u8; 4]>::try_from(x.value.as_slice()) {
                flags = u32::from_le_bytes(b) & INODE_FLAGS_KEPT;
            }
            false
        })
        .collect();
    (rest, flags)
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The entry's name, byte for byte (need not be UTF-8).
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits, setuid/setgid/sticky included (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Size in bytes (files: the bytes stored).
    pub size: u64,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// Device number of character and block devices.
    pub rdev: u64,
    /// Target of a symlink, byte for byte.
    pub link_target: Option<Vec<u8>>,
    /// Content chunks of a file, in order.
    pub content: Vec<BlobId>,
    /// Listing of a directory.
    pub subtree: Option<BlobId>,
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// An entry of `kind` with `name` and everything else empty.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            size: 0,
            mtime: Timestamp::default(),
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            inode: 0,
            device: 0,
            links: 0,
            rdev: 0,
            link_target: None,
            content: Vec::new(),
            subtree: None,
            xattrs: Vec::new(),
        }
    }

    /// Whether the name is safe to create inside a directory: not empty, `.` or `..`, and free
    /// of `/` and NUL.
    pub fn name_is_safe(&self) -> bool {
        name_is_safe(&self.name)
    }
}

/// See [`Node::name_is_safe`].
pub fn name_is_safe(name: &[u8]) -> bool {
    !(name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0))
}

/// A directory listing, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        // postcard cannot fail on these plain types when writing to a Vec.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Parses a tree; `what` names it in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        postcard::from_bytes(bytes)
            .map_err(|e| Error::corrupt(what, format!("unreadable directory listing: {e}")))
    }

    /// The entry called `name`, found by binary search.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(!name_is_safe(bad), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b"a\\b", b"\xff\xfe", b"new\nline"] {
            assert!(name_is_safe(good), "{good:?}");
        }
    }

    #[test]
    fn round_trip_and_find() {
        let mut t = Tree::default();
        for n in ["a", "b", "c"] {
            t.nodes
                .push(Node::new(n.as_bytes().to_vec(), NodeKind::File));
        }
        let back = Tree::from_bytes(&t.to_bytes(), "t").expect("parse");
        assert_eq!(back, t);
        assert!(back.find(b"b").is_some());
        assert!(back.find(b"d").is_none());
        assert!(Tree::from_bytes(&[0xff, 0xff, 0xff], "t").is_err());
    }

    #[test]
    fn inode_flags_travel_among_the_xattrs() {
        // Extents (0x80000) is the file system's own: not kept.
        assert!(Xattr::inode_flags(0x80000).is_none());
        let kept = Xattr::inode_flags(0x80000 | 0x10 | 0x20).expect("immutable, append");
        let user = Xattr {
            name: b"user.a".to_vec(),
            value: b"1".to_vec(),
        };
        let (rest, flags) = split_inode_flags(vec![kept, user.clone()]);
        assert_eq!((rest, flags), (vec![user.clone()], 0x30));
        // A hostile repository's malformed or out-of-range value sets nothing unexpected.
        let odd = |value: &[u8]| Xattr {
            name: INODE_FLAGS_XATTR.to_vec(),
            value: value.to_vec(),
        };
        assert_eq!(split_inode_flags(vec![odd(b"xx")]).1, 0);
        assert_eq!(
            split_inode_flags(vec![odd(&u32::MAX.to_le_bytes())]).1,
            INODE_FLAGS_KEPT
        );
        assert_eq!(inode_flag_letters(0x30), "ia");
        assert_eq!(inode_flag_letters(INODE_FLAGS_KEPT), "sucSiadAjtDTCP");
    }
}

//! Crafted repositories: listings, chunks and snapshots written straight into a repository,
//! as a hostile repository (or one written by a buggy version) could hold them, for the tests
//! of what restore, check and the walks do with them.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use lifeboat::id::BlobId;
use lifeboat::repo::pack::{encode_blob, PackBuilder};
use lifeboat::repo::{
    BackupKind, BlobKind, Credentials, Node, Repository, Snapshot, Summary, Tree,
};
use lifeboat::storage::LocalStorage;

use super::PASSWORD;

/// A directory entry (mode 755) whose listing is `subtree`.
pub fn dir(name: &str, subtree: BlobId) -> Node {
    let mut n = Node::new(name.as_bytes().to_vec(), lifeboat::repo::NodeKind::Dir);
    n.mode = 0o755;
    n.subtree = Some(subtree);
    n
}

/// A file entry (mode 644) of `size` bytes in chunks `content`.
pub fn file(name: &str, content: Vec<BlobId>, size: u64) -> Node {
    let mut n = Node::new(name.as_bytes().to_vec(), lifeboat::repo::NodeKind::File);
    n.mode = 0o644;
    n.content = content;
    n.size = size;
    n
}

/// Writes listings and chunks straight into a repository, then one snapshot of them.
pub struct Crafter {
    pub repo: Repository,
    pack: PackBuilder,
    seen: HashSet<BlobId>,
}

impl Crafter {
    pub fn new(repo_dir: &Path) -> Self {
        let repo = Repository::open(Arc::new(LocalStorage::new(repo_dir)), || {
            Ok(Credentials::Password(PASSWORD.as_bytes().to_vec().into()))
        })
        .expect("open");
        Crafter {
            repo,
            pack: PackBuilder::default(),
            seen: HashSet::new(),
        }
    }

    pub fn blob(&mut self, kind: BlobKind, bytes: &[u8]) -> BlobId {
        let sealer = self.repo.sealer().clone();
        let id = sealer.blob_id(bytes);
        if self.seen.insert(id) {
            self.pack
                .add(&encode_blob(&sealer, kind, id, bytes, 3).expect("encode"));
        }
        id
    }

    pub fn tree(&mut self, mut nodes: Vec<Node>) -> BlobId {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        self.blob(BlobKind::Tree, &Tree { nodes }.to_bytes())
    }

    /// Stores what was crafted and a snapshot of `root`; returns the snapshot id.
    pub fn snapshot(mut self, root: BlobId) -> String {
        let (bytes, entries) = std::mem::take(&mut self.pack).finish(self.repo.sealer());
        let pack = self.repo.save_pack(&bytes).expect("save pack");
        self.repo
            .save_index(&[(pack, entries)])
            .expect("save index");
        let id = self
            .repo
            .save_snapshot(&Snapshot {
                time: Utc::now(),
                host: "crafted".into(),
                username: "x".into(),
                paths: vec!["/".into()],
                tags: vec![],
                job: None,
                kind: BackupKind::Full,
                parent: None,
                tree: root,
                summary: Summary::default(),
                program: "test".into(),
                original: None,
            })
            .expect("save snapshot");
        id.to_hex()
    }
}

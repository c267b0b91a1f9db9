//! Staged files: verified chunks are written into files in the staging tree (the snapshot's
//! tree beneath its staging area, see [`super::staging`] and [`super::place`]).
//!
//! Each staged file is created when its first chunk arrives (by whichever pack reader holds
//! it), stays open while chunks remain, and is written with positioned writes through that one
//! descriptor. When its last chunk is written, its owner, mode, extended attributes and times
//! are set through the same descriptor and it is closed, so placing it later is a single
//! rename. At most [`MAX_OPEN`] staged files are kept open; beyond that a file is closed after
//! each chunk and reopened for the next (a file whose chunks lie in packs read far apart).

use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::NodeKind;

use super::plan::{ChunkUse, EntryMeta, Plan};
use super::staging::Staging;

/// Staged files kept open at once, at most (well under the usual limit of 1024 descriptors).
const MAX_OPEN: usize = 256;

/// Block size below which zero runs are written rather than left as holes.
const HOLE_BLOCK: u64 = 4096;

/// The write state of one staged file.
#[derive(Default)]
struct StagedFile {
    /// Open while chunks remain to be written (unless too many files are open).
    file: Option<File>,
    /// Whether the file exists in the staging directory.
    created: bool,
    /// Chunk uses not yet written.
    remaining: u32,
    /// The end of the last byte written (the file's length so far).
    len: u64,
}

/// Writes verified chunks into the staged files of a plan.
pub(super) struct Stager<'a> {
    staging: &'a Staging,
    target: &'a Path,
    plan: &'a Plan,
    is_root: bool,
    /// One per plan entry (only regular files other than hard links are ever touched).
    files: Vec<Mutex<StagedFile>>,
    open: AtomicUsize,
    /// Metadata that could not be applied, by plan entry.
    warnings: Mutex<Vec<(usize, String)>>,
}

impl<'a> Stager<'a> {
    /// Counts every file's chunk uses; creates (with their metadata) the files that have none.
    pub(super) fn new(
        plan: &'a Plan,
        staging: &'a Staging,
        target: &'a Path,
        is_root: bool,
    ) -> Result<Self> {
        let mut files: Vec<Mutex<StagedFile>> = Vec::with_capacity(plan.entries.len());
        files.resize_with(plan.entries.len(), Default::default);
        for (_, uses) in plan.chunks.iter() {
            for u in uses {
                files[u.entry as usize].get_mut().remaining += 1;
            }
        }
        let stager = Stager {
            staging,
            target,
            plan,
            is_root,
            files,
            open: AtomicUsize::new(0),
            warnings: Mutex::new(Vec::new()),
        };
        for (i, e) in plan.entries.iter().enumerate() {
            if e.node.kind == NodeKind::File && e.link_to.is_none() {
                let mut state = stager.files[i].lock();
                if state.remaining == 0 {
                    stager.finish(i, &mut state)?;
                }
            }
        }
        Ok(stager)
    }

    /// Writes a verified chunk at each of its uses.
    pub(super) fn write_chunk(
        &self,
        uses: &[ChunkUse],
        raw: &[u8],
        progress: &Progress,
    ) -> Result<()> {
        for u in uses {
            let i = u.entry as usize;
            let mut state = self.files[i].lock();
            let runs = data_runs(raw, u.offset);
            if !runs.is_empty() {
                let rel = &self.plan.entries[i].rel;
                let p = self.staging.path(rel);
                let f = self.open(rel, &mut state)?;
                for &(start, end) in &runs {
                    f.write_all_at(&raw[start..end], u.offset + start as u64)
                        .map_err(|e| Error::io("write staged file", &p, e))?;
                }
                if let Some(&(_, end)) = runs.last() {
                    state.len = state.len.max(u.offset + end as u64);
                }
                Progress::add(&progress.bytes_written, raw.len() as u64);
            }
            state.remaining = state.remaining.saturating_sub(1);
            if state.remaining == 0 {
                self.finish(i, &mut state)?;
                Progress::add(&progress.files, 1);
            } else if self.open.load(Ordering::Relaxed) > MAX_OPEN {
                self.close(&mut state);
            }
        }
        Ok(())
    }

    /// The metadata warnings by plan entry; closes the files whose chunks did not all arrive
    /// (damaged or missing ones).
    pub(super) fn into_warnings(self) -> Vec<(usize, String)> {
        let mut warnings = self.warnings.into_inner();
        warnings.sort_by_key(|(i, _)| *i);
        warnings
    }

    /// The open staged file, created (create-only, never through a symlink) if it is new.
    fn open<'s>(&self, rel: &Path, state: &'s mut StagedFile) -> Result<&'s File> {
        let f = match state.file.take() {
            Some(f) => f,
            None => {
                let mut opts = OpenOptions::new();
                opts.write(true).custom_flags(libc::O_NOFOLLOW);
                let op = if state.created {
                    "open staged file"
                } else {
                    opts.create_new(true).mode(0o600);
                    "create staged file"
                };
                let f = open_staged(self.staging.area(rel), rel, &opts)
                    .map_err(|e| Error::io(op, self.staging.path(rel), e))?;
                state.created = true;
                self.open.fetch_add(1, Ordering::Relaxed);
                f
            }
        };
        Ok(state.file.insert(f))
    }

    fn close(&self, state: &mut StagedFile) {
        if state.file.take().is_some() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every chunk is written: the file gets its full length (a trailing hole) and its
    /// metadata, and is closed.
    fn finish(&self, i: usize, state: &mut StagedFile) -> Result<()> {
        let node = &self.plan.entries[i].node;
        let rel = &self.plan.entries[i].rel;
        let p = self.staging.path(rel);
        let len = state.len;
        let f = self.open(rel, state)?;
        if len < node.size {
            f.set_len(node.size)
                .map_err(|e| Error::io("size staged file", &p, e))?;
        }
        let shown = self.target.join(&self.plan.entries[i].rel);
        let mut warnings = Vec::new();
        set_file_metadata(f, node, self.is_root, &shown, &mut warnings);
        self.close(state);
        if !warnings.is_empty() {
            self.warnings
                .lock()
                .extend(warnings.into_iter().map(|w| (i, w)));
        }
        Ok(())
    }
}

/// Paths up to this long are opened as they are; longer ones (up to any depth) through the
/// descriptors of the directories above them ([`super::at`]).
const SHORT_PATH: usize = 3000;

/// Opens the staged file `rel` in the staging area `area` (which only this restore writes
/// to).
fn open_staged(area: &Path, rel: &Path, opts: &OpenOptions) -> std::io::Result<File> {
    let p = area.join(rel);
    if p.as_os_str().len() <= SHORT_PATH || !super::at::have_proc() {
        return opts.open(p);
    }
    // Through a cursor of its own (files are opened in pack order, not in tree order).
    let mut cur =
        super::at::DirCursor::open(area).map_err(|e| std::io::Error::other(e.to_string()))?;
    opts.open(cur.at(rel)?)
}

/// Ownership (as root), mode, xattrs and times, through an open file; `shown` names it in
/// warnings. Ownership comes first (a change of owner clears setuid and setgid bits), times
/// last.
fn set_file_metadata(
    f: &File,
    node: &EntryMeta,
    is_root: bool,
    shown: &Path,
    out: &mut Vec<String>,
) {
    if is_root {
        if let Err(e) = std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid)) {
            out.push(format!(
                "{}: cannot set owner: {e}",
                crate::display::path(shown)
            ));
        }
    }
    if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(node.mode)) {
        out.push(format!(
            "{}: cannot set mode: {e}",
            crate::display::path(shown)
        ));
    }
    for x in &node.xattrs {
        if let Err(e) = xattr::FileExt::set_xattr(f, std::ffi::OsStr::from_bytes(&x.name), &x.value)
        {
            out.push(format!(
                "{}: cannot set extended attribute {}: {e}",
                crate::display::path(shown),
                crate::display::bytes(&x.name)
            ));
        }
    }
    let atime = filetime::FileTime::from_unix_time(node.atime.sec, node.atime.nsec);
    let mtime = filetime::FileTime::from_unix_time(node.mtime.sec, node.mtime.nsec);
    if let Err(e) = filetime::set_file_handle_times(f, Some(atime), Some(mtime)) {
        out.push(format!(
            "{}: cannot set times: {e}",
            crate::display::path(shown)
        ));
    }
}

/// The non-zero runs of `raw` placed at file offset `offset`, as (start, end) within `raw`,
/// at a granularity of file-aligned blocks: all-zero blocks stay holes in the staged file
/// (which reads as zeros there already), so sparse files stay sparse.
fn data_runs(raw: &[u8], offset: u64) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0usize;
    while start < raw.len() {
        let to_boundary = (HOLE_BLOCK - (offset + start as u64) % HOLE_BLOCK) as usize;
        let end = (start + to_boundary).min(raw.len());
        if raw[start..end].iter().any(|&b| b != 0) {
            match runs.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => runs.push((start, end)),
            }
        }
        start = end;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_become_holes_at_file_aligned_blocks() {
        let mut raw = vec![0u8; 5 * 4096];
        raw[4096 + 7] = 1; // second block
        raw[4 * 4096] = 2; // fifth block
        assert_eq!(data_runs(&raw, 0), vec![(4096, 8192), (4 * 4096, 5 * 4096)]);
        // Placed at an unaligned offset, blocks follow the file's alignment.
        assert_eq!(data_runs(&raw, 100), vec![(3996, 8092), (16284, 20380)]);
        assert!(data_runs(&[0u8; 10_000], 0).is_empty());
        assert_eq!(data_runs(&[1u8; 10], 5), vec![(0, 10)]);
    }
}

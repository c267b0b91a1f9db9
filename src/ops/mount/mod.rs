//! `mount`: a read-only FUSE view of the repository, served until it is unmounted or the
//! process is interrupted.
//!
//! Layout (see [`layout`]): `ids/<snapshot id>/`, `hosts/<host>/<time>/`, `jobs/<job>/<time>/`
//! and `snapshots/<time>/`, each the snapshot's root ("/") with its absolute paths beneath;
//! `latest` in each host's and job's directory links to its newest. Only the snapshots that
//! pass the filters are shown. Reads verify every chunk before any of its bytes is returned
//! ([`fs`]); damage is EIO for the read that needs it, and the mount stays up.
//!
//! The repository's shared lock is held (and refreshed) while mounted, so that a prune cannot
//! remove packs under a reader; it is released when the mount ends.

mod cache;
mod fs;
pub mod layout;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::repo::{Repository, SnapshotFilter};

pub use fs::MountFs;
pub use layout::{component, Layout};

/// What to mount where.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The empty directory to mount on.
    pub dir: PathBuf,
    /// Which snapshots to show.
    pub filter: SnapshotFilter,
    /// Reread the snapshot list, when the top directory is looked at, at most this often
    /// (`None`: show the list read at mount time).
    pub refresh: Option<Duration>,
}

/// The mount, once it is in place.
#[derive(Debug, Clone)]
pub struct Mounted {
    /// Snapshots shown.
    pub snapshots: usize,
    /// Where.
    pub dir: PathBuf,
}

/// How a mount ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Someone unmounted it (`umount DIR`, `fusermount3 -u DIR`).
    Unmounted,
    /// SIGINT or SIGTERM: it unmounted itself.
    Interrupted,
    /// SIGINT or SIGTERM while a process used the mount: it was detached (lazily unmounted);
    /// the processes in it get errors from now on.
    Detached,
}

/// The FUSE device.
const DEV_FUSE: &str = "/dev/fuse";

/// Whether `name` is an executable file in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(d.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Refuses, saying what to do, a mount point that cannot take the mount (missing, not a
/// directory, not empty, a dead mount) and a machine that cannot mount (no /dev/fuse, no
/// permission to open it, no fusermount3 for a user other than root). Cheap: run it before
/// opening the repository.
pub fn check_mountpoint(dir: &Path) -> Result<()> {
    let shown = crate::display::path(dir);
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Invalid(format!(
                "{shown} does not exist: create an empty directory to mount on (mkdir {shown})"
            )))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(Error::Invalid(format!(
                "{shown} is a mount whose process is gone (transport endpoint is not \
                 connected): unmount it first (umount {shown}), then mount again"
            )))
        }
        Err(e) => return Err(Error::io("look at the mount point", dir, e)),
    };
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{shown} is not a directory: mount needs an empty directory to mount on"
        )));
    }
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| Error::io("read the mount point", dir, e))?;
    if entries.next().is_some() {
        return Err(Error::Invalid(format!(
            "{shown} is not empty: mount on an empty directory (the mount would hide what is \
             in it, and an operator could mistake one for the other)"
        )));
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEV_FUSE)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Invalid(format!(
                "{DEV_FUSE} does not exist: load the kernel's FUSE module (modprobe fuse), or in \
                 a container pass the device in (docker run --device /dev/fuse --cap-add \
                 SYS_ADMIN); `lifeboat restore` and `lifeboat dump` need no FUSE"
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Error::Invalid(format!(
                "cannot open {DEV_FUSE}: permission denied; run mount as root, or give this user \
                 access to {DEV_FUSE}"
            )))
        }
        Err(e) => return Err(Error::io("open", DEV_FUSE, e)),
    }
    if !rustix::process::geteuid().is_root() && !on_path("fusermount3") && !on_path("fusermount") {
        return Err(Error::Invalid(
            "mounting as a user other than root needs fusermount3 (Debian and Ubuntu: apt \
             install fuse3); install it, or run mount as root"
                .to_string(),
        ));
    }
    Ok(())
}

/// The error of a failed mount(2) or fusermount3 at `dir`, saying what to do.
fn mount_error(dir: &Path, e: std::io::Error) -> Error {
    let shown = crate::display::path(dir);
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "; mounting needs root (CAP_SYS_ADMIN), or fusermount3 (package fuse3) for other users"
        }
        std::io::ErrorKind::NotFound => {
            "; mounting as a user other than root needs fusermount3 (package fuse3)"
        }
        _ => "",
    };
    Error::Invalid(format!("cannot mount the repository at {shown}: {e}{hint}"))
}

/// Mounts the snapshots of `repo` that pass the filter on `opts.dir` and serves them until
/// the mount is unmounted or SIGINT/SIGTERM arrives (then it unmounts itself). `on_mounted`
/// is told once the view is in place. Holds the repository's shared lock throughout.
pub fn mount(
    repo: &Repository,
    opts: &MountOptions,
    on_mounted: impl FnOnce(&Mounted),
) -> Result<Ended> {
    check_mountpoint(&opts.dir)?;
    opts.filter.validate()?;
    let lock = repo.lock_for_reading("mount")?;
    let list = repo.list_snapshots()?;
    list.warn();
    let shown: Vec<_> = list
        .snapshots
        .into_iter()
        .filter(|(_, s)| opts.filter.matches(s))
        .collect();
    let count = shown.len();
    let index = repo.load_index()?;
    let view = MountFs::new(
        repo.clone(),
        opts.filter.clone(),
        Layout::new(shown),
        index,
        opts.refresh,
    );
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::FSName("lifeboat".into()),
        fuser::MountOption::Subtype("lifeboat".into()),
    ];
    // Reads wait on storage: a few at once keep a slow (cloud) repository busy.
    config.n_threads = Some(4);
    let session =
        fuser::Session::new(view, &opts.dir, &config).map_err(|e| mount_error(&opts.dir, e))?;
    let running = session.spawn().map_err(|e| mount_error(&opts.dir, e))?;
    on_mounted(&Mounted {
        snapshots: count,
        dir: opts.dir.clone(),
    });
    let ended = loop {
        if crate::interrupt::requested() {
            break Ended::Interrupted;
        }
        if running.guard.is_finished() {
            break Ended::Unmounted;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ended = match ended {
        Ended::Interrupted => match running.umount_and_join() {
            Ok(()) => Ended::Interrupted,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                nix::mount::umount2(&opts.dir, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                    Error::io("unmount (lazily)", &opts.dir, std::io::Error::from(e))
                })?;
                Ended::Detached
            }
            Err(e) => return Err(Error::io("unmount", &opts.dir, e)),
        },
        other => {
            if let Err(e) = running.join() {
                tracing::warn!(error = %e, "the mount's session ended with an error");
            }
            other
        }
    };
    drop(lock);
    Ok(ended)
}

//! `lifeboat ls`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use lifeboat::repo::{Node, NodeKind, Step, TreeWalk};

use super::RepoArgs;

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Snapshot id, unique id prefix, or "latest" (the newest of the snapshots the filters
    /// and PATH leave, when they are all of one job, host and set of paths).
    snapshot: String,
    /// List only this absolute path and what is beneath it; with "latest", the newest
    /// snapshot that holds it (unless --path says otherwise).
    #[arg(value_name = "PATH")]
    at: Option<String>,
    /// Show type, mode, owner, size and modification time.
    #[arg(long, short)]
    long: bool,
    #[command(flatten)]
    which: super::SnapshotArgs,
    /// Print one JSON object per entry.
    #[arg(long)]
    json: bool,
}

pub fn run(a: LsArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let prefix =
        a.at.as_deref()
            .map(|p| p.trim_end_matches('/'))
            .unwrap_or("");
    if !prefix.is_empty() && !prefix.starts_with('/') {
        bail!("{prefix:?}: give an absolute path as it is in the snapshot");
    }
    let paths: Vec<String> = a.at.iter().cloned().collect();
    let read = repo.read_snapshot("ls", &a.snapshot, &a.which.filter(&paths))?;
    super::announce(&read.id, &read.snapshot);
    let (index, snap) = (&read.index, &read.snapshot);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut found = prefix.is_empty();
    // Streamed as the walk goes (depth first, in name order): nothing but the open
    // directories' listings is held, however many entries the snapshot has.
    let mut walk = TreeWalk::of(&repo, index, snap.tree);
    // The path as the snapshot has it: bytes, which need not be UTF-8.
    let prefix = prefix.as_bytes();
    let mut path: Vec<u8> = Vec::new();
    while let Some(step) = walk.next()? {
        let (dir, node) = match step {
            Step::Entry { dir, node, .. } => (dir, node),
            Step::Leave { .. } => continue,
            Step::Damaged { dir, damage, .. } => {
                bail!(
                    "/{}: its directory listing cannot be read: {damage}; run `lifeboat check` to see what is affected",
                    lifeboat::display::path(dir)
                )
            }
        };
        path.clear();
        if !dir.as_os_str().is_empty() {
            path.push(b'/');
            path.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()));
        }
        path.push(b'/');
        path.extend_from_slice(&node.name);
        let inside = prefix.is_empty()
            || path == prefix
            || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'));
        let ancestor = prefix.starts_with(&path) && prefix.get(path.len()) == Some(&b'/');
        if inside {
            found = true;
            print_node(&mut out, &path, &node, a.long, a.json)?;
        }
        if node.kind == NodeKind::Dir && (inside || ancestor) {
            if let Some(sub) = node.subtree {
                walk.enter(&node.name, sub);
            }
        }
    }
    out.flush().map_err(super::stdout_error)?;
    if !found {
        bail!(
            "{} is not in the snapshot",
            lifeboat::display::bytes(prefix)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one entry. For people, names are escaped ([`lifeboat::display`]: `\n`, `\x1b`,
/// `\xff` for a byte that is not UTF-8, `\\`). In JSON, see [`node_json`].
fn print_node(out: &mut impl Write, path: &[u8], n: &Node, long: bool, json: bool) -> Result<()> {
    if json {
        // serde_json escapes C0 controls; scrub writes C1 and bidi controls as \uHHHH too,
        // which is the same JSON.
        writeln!(
            out,
            "{}",
            lifeboat::display::scrub(&node_json(path, n).to_string())
        )
        .map_err(super::stdout_error)?;
    } else if long {
        writeln!(out, "{}", long_line(path, n)).map_err(super::stdout_error)?;
    } else {
        writeln!(out, "{}", lifeboat::display::bytes(path)).map_err(super::stdout_error)?;
    }
    Ok(())
}

/// An entry at `path` as a JSON object (`ls --json`, and the entries `find --json` and `diff
/// --json` give): `path` and `link_target` are text (a byte that is not UTF-8 becomes
/// U+FFFD); where that loses something, `path_bytes` and `link_target_bytes` give the exact
/// bytes.
pub(super) fn node_json(path: &[u8], n: &Node) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": String::from_utf8_lossy(path),
        "type": format!("{:?}", n.kind).to_lowercase(),
        "size": n.size,
        "mode": format!("{:o}", n.mode),
        "uid": n.uid,
        "gid": n.gid,
        "user": n.user,
        "group": n.group,
        "mtime": chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
        "link_target": n.link_target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
    });
    if let Some(o) = v.as_object_mut() {
        if std::str::from_utf8(path).is_err() {
            o.insert("path_bytes".into(), path.into());
        }
        if let Some(t) = n
            .link_target
            .as_ref()
            .filter(|t| std::str::from_utf8(t).is_err())
        {
            o.insert("link_target_bytes".into(), t.as_slice().into());
        }
    }
    v
}

/// An entry's modification time as `ls --long` shows it (local time, to the second).
pub(super) fn local_time(t: lifeboat::repo::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.sec, t.nsec)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// An entry at `path` as `ls --long` shows it: type, mode, owner, group, size, modification
/// time, path (and a symlink's target), names escaped.
pub(super) fn long_line(path: &[u8], n: &Node) -> String {
    // User and group names come from the backed-up machine (or a crafted snapshot).
    let owner = n
        .user
        .as_deref()
        .map(lifeboat::display::escape)
        .unwrap_or_else(|| n.uid.to_string());
    let group = n
        .group
        .as_deref()
        .map(lifeboat::display::escape)
        .unwrap_or_else(|| n.gid.to_string());
    let link = n
        .link_target
        .as_ref()
        .map(|t| format!(" -> {}", lifeboat::display::bytes(t)))
        .unwrap_or_default();
    format!(
        "{}{:04o} {owner:>8} {group:>8} {:>12} {} {}{link}",
        n.kind.letter(),
        n.mode,
        n.size,
        local_time(n.mtime),
        lifeboat::display::bytes(path)
    )
}

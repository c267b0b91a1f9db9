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
    /// Snapshot id, unique id prefix, or "latest".
    snapshot: String,
    /// List only this absolute path and what is beneath it.
    path: Option<String>,
    /// Show type, mode, owner, size and modification time.
    #[arg(long, short)]
    long: bool,
    /// With "latest": only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
    /// Print one JSON object per entry.
    #[arg(long)]
    json: bool,
}

pub fn run(a: LsArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot, a.host.as_deref(), None)?;
    let index = repo.load_index()?;
    let prefix = a
        .path
        .as_deref()
        .map(|p| p.trim_end_matches('/'))
        .unwrap_or("");
    if !prefix.is_empty() && !prefix.starts_with('/') {
        bail!("{prefix:?}: give an absolute path as it is in the snapshot");
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut found = prefix.is_empty();
    // Streamed as the walk goes (depth first, in name order): nothing but the open
    // directories' listings is held, however many entries the snapshot has.
    let mut walk = TreeWalk::of(&repo, &index, snap.tree);
    let mut path = String::new();
    while let Some(step) = walk.next()? {
        let (dir, node) = match step {
            Step::Entry { dir, node, .. } => (dir, node),
            Step::Leave { .. } => continue,
            Step::Damaged { dir, damage, .. } => {
                bail!(
                    "/{}: its directory listing cannot be read: {damage}; run `lifeboat check` to see what is affected",
                    dir.display()
                )
            }
        };
        path.clear();
        if !dir.as_os_str().is_empty() {
            path.push('/');
            path.push_str(&dir.to_string_lossy());
        }
        path.push('/');
        path.push_str(&String::from_utf8_lossy(&node.name));
        let inside = prefix.is_empty()
            || path == prefix
            || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'));
        let ancestor =
            prefix.starts_with(&path) && prefix.as_bytes().get(path.len()) == Some(&b'/');
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
        bail!("{prefix} is not in the snapshot");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_node(out: &mut impl Write, path: &str, n: &Node, long: bool, json: bool) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "path": path,
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
        writeln!(out, "{v}").map_err(super::stdout_error)?;
    } else if long {
        let mtime = chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        let owner = n.user.clone().unwrap_or_else(|| n.uid.to_string());
        let group = n.group.clone().unwrap_or_else(|| n.gid.to_string());
        let link = n
            .link_target
            .as_ref()
            .map(|t| format!(" -> {}", String::from_utf8_lossy(t)))
            .unwrap_or_default();
        writeln!(
            out,
            "{}{:04o} {owner:>8} {group:>8} {:>12} {mtime} {path}{link}",
            n.kind.letter(),
            n.mode,
            n.size
        )
        .map_err(super::stdout_error)?;
    } else {
        writeln!(out, "{path}").map_err(super::stdout_error)?;
    }
    Ok(())
}

//! `lifeboat diff`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use lifeboat::ops::diff::{diff, Change, Side, What};
use lifeboat::repo::{Node, NodeKind};
use lifeboat::units::human_bytes;

use super::find::{output_error, write_error};
use super::RepoArgs;

#[derive(Debug, Args)]
#[command(after_help = "\
Output: one line per difference, in path order: `+` added, `-` removed, `M` changed, then the \
entry as `ls --long` shows it (in the second snapshot; removed ones as they were), and for a \
changed entry what changed: content (the data differs; nothing of it is read), size, type, \
mode, owner, group, mtime, link target, xattrs, device. A directory whose listing is the same \
in both is unchanged all the way down and skipped. Then a summary: entries added, removed and \
changed, and the bytes of the files added and removed. With --json, one object per difference \
per line (`change`: added, removed or changed, the entry's fields as `ls --json` gives them; a \
changed one with `what` and `before`), and a last line {\"summary\": {...}}.

Exit code 0 when the diff is complete, whether or not anything changed; 1 when a directory \
listing could not be read (named on stderr; what is beneath it is left out) or on any other \
error; 5 when a \"latest\" is ambiguous.")]
pub struct DiffArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The first (older) snapshot: id, unique id prefix, or "latest" (with the filters).
    #[arg(value_name = "SNAPSHOT1")]
    before: String,
    /// The second (newer) snapshot: id, unique id prefix, or "latest" (with the filters).
    #[arg(value_name = "SNAPSHOT2")]
    after: String,
    /// Compare only this absolute path and what is beneath it; with "latest", the newest
    /// snapshot that holds it (unless --path says otherwise).
    #[arg(value_name = "PATH")]
    at: Option<String>,
    #[command(flatten)]
    which: super::SnapshotArgs,
    /// Print one JSON object per difference per line, then a summary object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: DiffArgs) -> Result<ExitCode> {
    let at = a.at.as_deref().map(|p| {
        let t = p.trim_end_matches('/');
        if t.is_empty() {
            "/"
        } else {
            t
        }
    });
    if let Some(p) = at.filter(|p| !p.starts_with('/')) {
        bail!("{p:?}: give an absolute path as it is in the snapshots");
    }
    let filter = a.which.filter(&a.at.iter().cloned().collect::<Vec<_>>());
    filter.validate()?;
    let repo = a.repo.open()?;
    let _lock = repo.lock_for_reading("diff")?;
    let list = repo.list_snapshots()?;
    let mut chosen = Vec::new();
    for selector in [&a.before, &a.after] {
        list.check_selector(selector)?;
        chosen.push(lifeboat::repo::select_snapshot(
            list.snapshots.clone(),
            selector,
            &filter,
        )?);
    }
    for (id, s) in &chosen {
        super::announce(id, s);
    }
    let [(id_a, snap_a), (id_b, snap_b)] = <[_; 2]>::try_from(chosen)
        .map_err(|_| anyhow::anyhow!("two snapshots are chosen, one for each selector"))?;
    let index = repo.load_index()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let json = a.json;
    let result = diff(
        &repo,
        &index,
        snap_a.tree,
        snap_b.tree,
        at.filter(|p| *p != "/").map(Path::new),
        &mut |c| {
            if let Change::Damaged { path, side, damage } = &c {
                let _ = out.flush();
                let id = if *side == Side::Before { &id_a } else { &id_b };
                errln!(
                    "lifeboat: {}: the directory listing in snapshot {} cannot be read: {damage}; \
                     the diff leaves out what is beneath it",
                    shown(path),
                    id.short()
                );
                return Ok(());
            }
            let line = if json {
                lifeboat::display::scrub(&change_json(&c).to_string()).into_owned()
            } else {
                change_line(&c)
            };
            writeln!(out, "{line}").map_err(write_error)
        },
    );
    let sum = result.map_err(output_error)?;
    if json {
        let v = serde_json::json!({
            "summary": {
                "snapshot_ids": [id_a.to_hex(), id_b.to_hex()],
                "added": sum.added,
                "removed": sum.removed,
                "changed": sum.changed,
                "added_bytes": sum.added_bytes,
                "removed_bytes": sum.removed_bytes,
                "damaged": sum.damaged,
            }
        });
        writeln!(out, "{v}").map_err(super::stdout_error)?;
    } else {
        writeln!(
            out,
            "{} added ({}), {} removed ({}), {} changed",
            sum.added,
            human_bytes(sum.added_bytes),
            sum.removed,
            human_bytes(sum.removed_bytes),
            sum.changed
        )
        .map_err(super::stdout_error)?;
    }
    out.flush().map_err(super::stdout_error)?;
    if sum.damaged > 0 {
        bail!(
            "the diff is incomplete: {} directory listing(s) could not be read (named above), \
             and what is beneath them is left out; `lifeboat check` shows what is damaged",
            sum.damaged
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A path for people ("/" for the root).
fn shown(path: &[u8]) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        lifeboat::display::bytes(path).to_string()
    }
}

/// One difference as a line for people.
fn change_line(c: &Change<'_>) -> String {
    match c {
        Change::Added { path, node } => format!("+ {}", super::ls::long_line(path, node)),
        Change::Removed { path, node } => format!("- {}", super::ls::long_line(path, node)),
        Change::Changed {
            path,
            before,
            after,
            what,
        } => {
            let details: Vec<String> = what.iter().map(|w| detail(*w, before, after)).collect();
            format!(
                "M {}  [{}]",
                super::ls::long_line(path, after),
                details.join("; ")
            )
        }
        Change::Damaged { path, .. } => format!("! {}", shown(path)),
    }
}

/// What changed in field `w`, with the two values where they are short.
fn detail(w: What, a: &Node, b: &Node) -> String {
    let owner = |n: &Node| {
        n.user
            .as_deref()
            .map(lifeboat::display::escape)
            .unwrap_or_else(|| n.uid.to_string())
    };
    let group = |n: &Node| {
        n.group
            .as_deref()
            .map(lifeboat::display::escape)
            .unwrap_or_else(|| n.gid.to_string())
    };
    let kind = |k: NodeKind| format!("{k:?}").to_lowercase();
    let link = |n: &Node| {
        n.link_target
            .as_deref()
            .map(|t| lifeboat::display::bytes(t).to_string())
            .unwrap_or_default()
    };
    match w {
        What::Content => "content".into(),
        What::Size => format!("size {} -> {}", a.size, b.size),
        What::Type => format!("type {} -> {}", kind(a.kind), kind(b.kind)),
        What::Mode => format!("mode {:04o} -> {:04o}", a.mode, b.mode),
        What::Owner => format!("owner {} -> {}", owner(a), owner(b)),
        What::Group => format!("group {} -> {}", group(a), group(b)),
        What::Mtime => format!("mtime {} -> {}", precise(a.mtime), precise(b.mtime)),
        What::LinkTarget => format!("link target {} -> {}", link(a), link(b)),
        What::Xattrs => "xattrs".into(),
        What::Device => format!("device {:#x} -> {:#x}", a.rdev, b.rdev),
    }
}

/// A modification time to the nanosecond, in local time: two times of one second differ.
fn precise(t: lifeboat::repo::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.sec, t.nsec)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.9f")
                .to_string()
        })
        .unwrap_or_else(|| format!("{}.{:09}", t.sec, t.nsec))
}

/// One difference as a JSON object.
fn change_json(c: &Change<'_>) -> serde_json::Value {
    let (change, path, node) = match c {
        Change::Added { path, node } => ("added", path, node),
        Change::Removed { path, node } => ("removed", path, node),
        Change::Changed { path, after, .. } => ("changed", path, after),
        Change::Damaged { path, .. } => return serde_json::json!({ "damaged": shown(path) }),
    };
    let mut v = super::ls::node_json(path, node);
    if let Some(o) = v.as_object_mut() {
        o.insert("change".into(), change.into());
        if let Change::Changed { before, what, .. } = c {
            o.insert(
                "what".into(),
                what.iter().map(|w| w.name()).collect::<Vec<_>>().into(),
            );
            o.insert("before".into(), super::ls::node_json(path, before));
        }
    }
    v
}

//! The directories above the snapshots in a mount: `ids/`, `hosts/`, `jobs/`, `snapshots/`.
//!
//! Built from the snapshot list (the ones the filters leave), as names only: what a snapshot
//! holds is read when someone looks ([`super::fs`]). Host and job names come from the
//! repository, which may be hostile: each becomes exactly one safe path component
//! ([`component`]), so no name reaches outside its directory or hides another.

use std::collections::{BTreeMap, HashMap};

use crate::id::SnapshotId;
use crate::repo::Snapshot;

/// A directory of the layout (not inside a snapshot). Host and job names are the components
/// shown ([`component`]), not the raw names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dir {
    Root,
    Ids,
    Hosts,
    Host(String),
    Jobs,
    Job(String),
    Snapshots,
}

/// What a name in a layout directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Dir(Dir),
    /// The root ("/") of this snapshot.
    Snapshot(SnapshotId),
    /// A symlink (`latest`) to this name in the same directory.
    Link(String),
}

/// One directory of snapshots by time: `hosts/<host>/`, `jobs/<job>/` or `snapshots/`.
#[derive(Debug, Default)]
struct Group {
    /// `2026-12-07T10:15:00Z` (and `-1`, `-2`, ... for more in the same second) to snapshot.
    by_time: BTreeMap<String, SnapshotId>,
    /// The name of the newest.
    newest: Option<String>,
}

impl Group {
    /// Names every snapshot of `members` (oldest first) by its time.
    fn of(members: &[&(SnapshotId, Snapshot)]) -> Group {
        let mut g = Group::default();
        for (id, s) in members {
            let base = time_name(s);
            let mut name = base.clone();
            let mut n = 0;
            while g.by_time.contains_key(&name) {
                n += 1;
                name = format!("{base}-{n}");
            }
            g.by_time.insert(name.clone(), *id);
            g.newest = Some(name);
        }
        g
    }

    fn entries(&self, latest: bool) -> Vec<(String, Target)> {
        let mut out: Vec<(String, Target)> = self
            .by_time
            .iter()
            .map(|(n, id)| (n.clone(), Target::Snapshot(*id)))
            .collect();
        if let (true, Some(newest)) = (latest, &self.newest) {
            out.push(("latest".to_string(), Target::Link(newest.clone())));
        }
        out
    }
}

/// A snapshot's time as a directory name: `2026-12-07T10:15:00Z` (UTC, whole seconds).
pub fn time_name(s: &Snapshot) -> String {
    s.time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Longest component made of a host or job name (bytes), before the `…` that ends a cut one.
const MAX_COMPONENT: usize = 200;

/// A host or job name as one safe path component: `%` as `%25`, `/` as `%2F`, NUL and other
/// control characters as `%XX`; `.` and `..` as `%2E` and `%2E%2E`; an empty name as
/// `(empty)`; a name longer than 200 bytes cut there with `…`. Distinct names that still come
/// out the same (`(empty)` and an empty name, two long names) are told apart by
/// [`Layout::new`].
pub fn component(name: &str) -> String {
    match name {
        "" => return "(empty)".to_string(),
        "." => return "%2E".to_string(),
        ".." => return "%2E%2E".to_string(),
        _ => {}
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' | '/' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_control() && (c as u32) < 0x80 => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
        if out.len() > MAX_COMPONENT {
            let mut cut = MAX_COMPONENT;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

/// The snapshots of a mount and the directories that name them.
#[derive(Debug, Default)]
pub struct Layout {
    snapshots: HashMap<SnapshotId, Snapshot>,
    hosts: BTreeMap<String, Group>,
    jobs: BTreeMap<String, Group>,
    all: Group,
}

/// Groups `list` by `key` (a raw name, `None`: left out) under safe, distinct components.
fn grouped<'a>(
    list: &'a [(SnapshotId, Snapshot)],
    key: impl Fn(&Snapshot) -> Option<&str>,
) -> BTreeMap<String, Group> {
    let mut raw: BTreeMap<&str, Vec<&'a (SnapshotId, Snapshot)>> = BTreeMap::new();
    for entry in list {
        if let Some(k) = key(&entry.1) {
            raw.entry(k).or_default().push(entry);
        }
    }
    let mut out = BTreeMap::new();
    for (name, members) in raw {
        let base = component(name);
        let mut shown = base.clone();
        let mut n = 1;
        while out.contains_key(&shown) {
            n += 1;
            shown = format!("{base}~{n}");
        }
        out.insert(shown, Group::of(&members));
    }
    out
}

impl Layout {
    /// The layout of `list` (the snapshots to show, in any order).
    pub fn new(mut list: Vec<(SnapshotId, Snapshot)>) -> Layout {
        list.sort_by_key(|a| (a.1.time, a.0));
        let hosts = grouped(&list, |s| Some(s.host.as_str()));
        let jobs = grouped(&list, |s| s.job.as_deref());
        let all = Group::of(&list.iter().collect::<Vec<_>>());
        Layout {
            snapshots: list.into_iter().collect(),
            hosts,
            jobs,
            all,
        }
    }

    /// How many snapshots it shows.
    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    /// Whether it shows none.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    /// The snapshot `id`, if it is shown.
    pub fn snapshot(&self, id: &SnapshotId) -> Option<&Snapshot> {
        self.snapshots.get(id)
    }

    /// The entries of `dir`, sorted by name; `None` when it is not (or no longer) there.
    pub fn entries(&self, dir: &Dir) -> Option<Vec<(String, Target)>> {
        let named = |m: &BTreeMap<String, Group>, f: fn(String) -> Dir| {
            m.keys()
                .map(|k| (k.clone(), Target::Dir(f(k.clone()))))
                .collect::<Vec<_>>()
        };
        Some(match dir {
            Dir::Root => vec![
                ("hosts".to_string(), Target::Dir(Dir::Hosts)),
                ("ids".to_string(), Target::Dir(Dir::Ids)),
                ("jobs".to_string(), Target::Dir(Dir::Jobs)),
                ("snapshots".to_string(), Target::Dir(Dir::Snapshots)),
            ],
            Dir::Ids => {
                let mut ids: Vec<(String, Target)> = self
                    .snapshots
                    .keys()
                    .map(|id| (id.to_hex(), Target::Snapshot(*id)))
                    .collect();
                ids.sort_by(|a, b| a.0.cmp(&b.0));
                ids
            }
            Dir::Hosts => named(&self.hosts, Dir::Host),
            Dir::Jobs => named(&self.jobs, Dir::Job),
            Dir::Host(h) => self.hosts.get(h)?.entries(true),
            Dir::Job(j) => self.jobs.get(j)?.entries(true),
            Dir::Snapshots => self.all.entries(false),
        })
    }

    /// What `name` is in `dir`, if it is there.
    pub fn lookup(&self, dir: &Dir, name: &str) -> Option<Target> {
        match dir {
            Dir::Ids => {
                let id = SnapshotId::from_hex(name).ok()?;
                (self.snapshots.contains_key(&id) && id.to_hex() == name)
                    .then_some(Target::Snapshot(id))
            }
            Dir::Host(h) | Dir::Job(h) => {
                let g = match dir {
                    Dir::Host(_) => self.hosts.get(h)?,
                    _ => self.jobs.get(h)?,
                };
                if name == "latest" {
                    return g.newest.clone().map(Target::Link);
                }
                g.by_time.get(name).map(|id| Target::Snapshot(*id))
            }
            Dir::Snapshots => self.all.by_time.get(name).map(|id| Target::Snapshot(*id)),
            Dir::Hosts => self
                .hosts
                .contains_key(name)
                .then(|| Target::Dir(Dir::Host(name.to_string()))),
            Dir::Jobs => self
                .jobs
                .contains_key(name)
                .then(|| Target::Dir(Dir::Job(name.to_string()))),
            Dir::Root => self
                .entries(dir)?
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, job: Option<&str>, time: &str) -> Snapshot {
        Snapshot::for_test(host, job, &["/etc"], &[], time)
    }

    /// Hostile host and job names become one component each that cannot leave its
    /// directory, and distinct names stay distinct.
    #[test]
    fn hostile_names_become_one_safe_component() {
        for (raw, want) in [
            ("web1", "web1"),
            ("a/../../etc", "a%2F..%2F..%2Fetc"),
            ("..", "%2E%2E"),
            (".", "%2E"),
            ("", "(empty)"),
            ("nul\0byte", "nul%00byte"),
            ("new\nline", "new%0Aline"),
            ("100%", "100%25"),
            ("/", "%2F"),
        ] {
            let got = component(raw);
            assert_eq!(got, want, "{raw:?}");
            assert!(crate::repo::tree::name_is_safe(got.as_bytes()), "{raw:?}");
        }
        let long = component(&"é".repeat(300));
        assert!(long.len() <= MAX_COMPONENT + '…'.len_utf8() && long.ends_with('…'));

        let list = vec![
            (SnapshotId([1; 32]), snap("", None, "2026-12-07T10:15:00Z")),
            (
                SnapshotId([2; 32]),
                snap("(empty)", None, "2026-12-07T10:15:00Z"),
            ),
            (
                SnapshotId([3; 32]),
                snap("x/..", Some("../.."), "2026-12-07T10:16:00Z"),
            ),
        ];
        let l = Layout::new(list);
        let hosts: Vec<String> = l
            .entries(&Dir::Hosts)
            .expect("hosts")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(hosts, ["(empty)", "(empty)~2", "x%2F.."]);
        let jobs = l.entries(&Dir::Jobs).expect("jobs");
        assert_eq!(jobs.len(), 1, "snapshots without a job are not under jobs/");
        assert_eq!(jobs[0].0, "..%2F..");
    }

    /// Snapshots are named by their time, a second one in the same second with `-1`; each
    /// host and job directory has a `latest` link to its newest; `ids/` finds full ids only.
    #[test]
    fn snapshots_by_time_with_latest() {
        let list = vec![
            (
                SnapshotId([3; 32]),
                snap("web1", Some("db"), "2026-12-07T10:15:00.7Z"),
            ),
            (
                SnapshotId([1; 32]),
                snap("web1", Some("etc"), "2026-12-07T10:15:00.2Z"),
            ),
            (
                SnapshotId([0xab; 32]),
                snap("web2", Some("etc"), "2026-12-08T00:00:00Z"),
            ),
        ];
        let l = Layout::new(list);
        let web1 = l.entries(&Dir::Host("web1".into())).expect("web1");
        assert_eq!(
            web1,
            vec![
                (
                    "2026-12-07T10:15:00Z".to_string(),
                    Target::Snapshot(SnapshotId([1; 32]))
                ),
                (
                    "2026-12-07T10:15:00Z-1".to_string(),
                    Target::Snapshot(SnapshotId([3; 32]))
                ),
                (
                    "latest".to_string(),
                    Target::Link("2026-12-07T10:15:00Z-1".into())
                ),
            ]
        );
        assert_eq!(
            l.lookup(&Dir::Job("etc".into()), "latest"),
            Some(Target::Link("2026-12-08T00:00:00Z".into()))
        );
        assert_eq!(l.entries(&Dir::Snapshots).expect("all").len(), 3);
        assert!(l.lookup(&Dir::Snapshots, "latest").is_none());
        let hex = SnapshotId([0xab; 32]).to_hex();
        assert_eq!(
            l.lookup(&Dir::Ids, &hex),
            Some(Target::Snapshot(SnapshotId([0xab; 32])))
        );
        assert_eq!(l.lookup(&Dir::Ids, &hex[..8]), None, "no prefixes");
        assert_eq!(l.lookup(&Dir::Ids, &hex.to_uppercase()), None);
        assert!(l.entries(&Dir::Host("gone".into())).is_none());
    }
}

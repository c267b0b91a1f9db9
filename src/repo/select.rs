//! Choosing snapshots: the filters every command that takes a snapshot accepts (`--job`,
//! `--host`, `--path`, `--tag`), and a `latest` that never guesses.
//!
//! A repository often holds several lineages of snapshots: the jobs of one server, the servers
//! of a fleet, the paths someone backed up by hand. The newest snapshot of all of them is
//! rarely what an operator means by "latest", and restoring it "succeeds" with the wrong data.
//! So `latest` picks the newest snapshot of one [`Lineage`] only; when the snapshots that match
//! the filters belong to more than one, selection fails with [`Error::AmbiguousSnapshot`],
//! which lists the newest snapshot of each lineage and the flags that select it.
//!
//! `--path P` means what an operator means by it: the snapshots in which P is, whether P was
//! backed up itself, lies beneath a backed-up path (`/etc/ssh` in a backup of `/etc`), or holds
//! one (`/var` of a backup of `/var/lib/postgresql`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::snapshot::Snapshot;
use crate::error::{Error, Result};
use crate::id::SnapshotId;

/// Which snapshots a command means, beside its selector (an id, an id prefix or `latest`).
/// Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Made by this daemon job.
    pub job: Option<String>,
    /// Made on this host.
    pub host: Option<String>,
    /// Holding each of these absolute paths ([`holds_path`]).
    pub paths: Vec<String>,
    /// Carrying each of these tags.
    pub tags: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes every condition.
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.job.as_ref().is_none_or(|j| s.job.as_ref() == Some(j))
            && self.host.as_ref().is_none_or(|h| &s.host == h)
            && self.paths.iter().all(|p| holds_path(s, p))
            && self.tags.iter().all(|t| s.tags.contains(t))
    }

    /// Whether no condition is given.
    pub fn is_empty(&self) -> bool {
        self.job.is_none() && self.host.is_none() && self.paths.is_empty() && self.tags.is_empty()
    }

    /// The conditions as words ("job db, host web1, path /etc"), for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(j) = &self.job {
            parts.push(format!("job {j}"));
        }
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        for p in &self.paths {
            parts.push(format!("path {p}"));
        }
        for t in &self.tags {
            parts.push(format!("tag {t}"));
        }
        parts.join(", ")
    }

    /// Refuses a path that cannot be in any snapshot: snapshots hold absolute paths.
    pub fn validate(&self) -> Result<()> {
        for p in &self.paths {
            if !p.starts_with('/') {
                return Err(Error::SnapshotSelect(format!(
                    "{p:?} is not an absolute path: give a path as the snapshot has it (such as /etc/ssh)"
                )));
            }
        }
        Ok(())
    }
}

/// `p` without trailing slashes ("/" stays "/").
fn trimmed(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() && p.starts_with('/') {
        "/"
    } else {
        t
    }
}

/// Whether `inner` is `outer` or lies beneath it.
fn within(inner: &str, outer: &str) -> bool {
    outer == "/"
        || inner == outer
        || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
}

/// Whether path `p` is in snapshot `s`: a backed-up path itself, beneath one, or above one
/// (a directory the snapshot recreates on the way to what it holds).
pub fn holds_path(s: &Snapshot, p: &str) -> bool {
    let p = trimmed(p);
    s.paths
        .iter()
        .map(|q| trimmed(q))
        .any(|q| within(p, q) || within(q, p))
}

/// Snapshots of one lineage are versions of the same thing, between which `latest` may choose
/// the newest: one job of one host; for snapshots made outside the daemon, one set of
/// backed-up paths of one host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lineage {
    pub host: String,
    pub job: Option<String>,
    /// The backed-up paths, sorted, when there is no job (empty otherwise: a job's paths may
    /// change with its config and it stays the same job).
    pub paths: Vec<String>,
}

impl Lineage {
    /// The lineage of `s`.
    pub fn of(s: &Snapshot) -> Lineage {
        let paths = if s.job.is_some() {
            Vec::new()
        } else {
            let mut p = s.paths.clone();
            p.sort();
            p
        };
        Lineage {
            host: s.host.clone(),
            job: s.job.clone(),
            paths,
        }
    }
}

/// The newest snapshot of one lineage, offered when `latest` cannot choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: SnapshotId,
    pub host: String,
    pub job: Option<String>,
    pub paths: Vec<String>,
    pub time: DateTime<Utc>,
    /// The flags that select this lineage's newest snapshot with `latest` among all the
    /// candidates (`--job db`, `--host web1 --job db`), or `None` when no flag does (two
    /// lineages without a job whose paths overlap): the id then selects it.
    pub flags: Option<Vec<String>>,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe_parts(
            &self.id,
            &self.time,
            &self.host,
            self.job.as_deref(),
            &self.paths,
        ))
    }
}

/// A snapshot as every command names it: `3fa2c1d0 of 2026-12-07 03:00:00 UTC, host web1,
/// job db, paths /var/lib/postgresql` ("no job" for one made by hand).
pub fn describe(id: &SnapshotId, s: &Snapshot) -> String {
    describe_parts(id, &s.time, &s.host, s.job.as_deref(), &s.paths)
}

fn describe_parts(
    id: &SnapshotId,
    time: &DateTime<Utc>,
    host: &str,
    job: Option<&str>,
    paths: &[String],
) -> String {
    format!(
        "{} of {}, host {host}, {}, paths {}",
        id.short(),
        time.format("%Y-%m-%d %H:%M:%S UTC"),
        match job {
            Some(j) => format!("job {j}"),
            None => "no job".to_string(),
        },
        paths.join(" ")
    )
}

/// The newest snapshot of each lineage among `all`, newest first.
pub fn newest_per_lineage(all: &[(SnapshotId, Snapshot)]) -> Vec<(SnapshotId, Snapshot)> {
    let mut newest: BTreeMap<Lineage, &(SnapshotId, Snapshot)> = BTreeMap::new();
    for entry in all {
        let l = Lineage::of(&entry.1);
        match newest.get(&l) {
            Some(have) if (have.1.time, have.0) >= (entry.1.time, entry.0) => {}
            _ => {
                newest.insert(l, entry);
            }
        }
    }
    let mut out: Vec<_> = newest.into_values().cloned().collect();
    out.sort_by_key(|(id, s)| std::cmp::Reverse((s.time, *id)));
    out
}

/// The flags that pick `s`'s lineage out of `lineages` with `latest`, if any do.
fn flags_for(s: &Snapshot, lineages: &[Lineage]) -> Option<Vec<String>> {
    let own = Lineage::of(s);
    let job = s.job.as_ref()?;
    let hosts_differ = lineages.iter().any(|l| l.host != own.host);
    let mut flags = Vec::new();
    if hosts_differ {
        flags.extend(["--host".to_string(), own.host.clone()]);
    }
    flags.extend(["--job".to_string(), job.clone()]);
    let picked = lineages
        .iter()
        .filter(|l| l.job.as_ref() == Some(job) && (!hosts_differ || l.host == own.host))
        .count();
    (picked == 1).then_some(flags)
}

/// Picks a snapshot from `all`: a full id, a unique id prefix, or `latest`, among the
/// snapshots that pass `filter`. `latest` is the newest snapshot of the one lineage the
/// matching snapshots belong to; when they belong to several it refuses
/// ([`Error::AmbiguousSnapshot`]).
pub fn select_snapshot(
    all: Vec<(SnapshotId, Snapshot)>,
    selector: &str,
    filter: &SnapshotFilter,
) -> Result<(SnapshotId, Snapshot)> {
    filter.validate()?;
    let total = all.len();
    let matching: Vec<_> = all.into_iter().filter(|(_, s)| filter.matches(s)).collect();
    if selector == "latest" {
        let mut newest = newest_per_lineage(&matching);
        return match newest.len() {
            1 => Ok(newest.remove(0)),
            0 => Err(Error::SnapshotSelect(if filter.is_empty() {
                "the repository has no snapshot yet".to_string()
            } else {
                format!(
                    "no snapshot matches {} (of {total} in the repository; `lifeboat snapshots` lists them)",
                    filter.describe()
                )
            })),
            _ => {
                let lineages: Vec<Lineage> = newest.iter().map(|(_, s)| Lineage::of(s)).collect();
                Err(Error::AmbiguousSnapshot {
                    selector: selector.to_string(),
                    candidates: newest
                        .iter()
                        .map(|(id, s)| Candidate {
                            id: *id,
                            host: s.host.clone(),
                            job: s.job.clone(),
                            paths: s.paths.clone(),
                            time: s.time,
                            flags: flags_for(s, &lineages),
                        })
                        .collect(),
                })
            }
        };
    }
    let sel = selector.to_ascii_lowercase();
    if sel.is_empty() || !sel.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::SnapshotSelect(format!(
            "{selector:?} is not a snapshot id, id prefix, or \"latest\""
        )));
    }
    let mut matches: Vec<_> = matching
        .into_iter()
        .filter(|(id, _)| id.to_hex().starts_with(&sel))
        .collect();
    match matches.len() {
        0 if filter.is_empty() => Err(Error::SnapshotSelect(format!(
            "no snapshot matches {selector:?}"
        ))),
        0 => Err(Error::SnapshotSelect(format!(
            "no snapshot matches {selector:?} with {}",
            filter.describe()
        ))),
        1 => Ok(matches.remove(0)),
        n => Err(Error::SnapshotSelect(format!(
            "{selector:?} is ambiguous: {n} snapshots start with it; give more characters"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, job: Option<&str>, paths: &[&str], minute: u32, tags: &[&str]) -> Snapshot {
        Snapshot::for_test(
            host,
            job,
            paths,
            tags,
            &format!("2026-12-07T03:{minute:02}:00Z"),
        )
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    fn repo() -> Vec<(SnapshotId, Snapshot)> {
        vec![
            (id(1), snap("web1", Some("etc"), &["/etc"], 1, &[])),
            (id(2), snap("web1", Some("etc"), &["/etc"], 5, &[])),
            (
                id(3),
                snap("web1", Some("db"), &["/var/backups"], 3, &["nightly"]),
            ),
            (id(4), snap("web2", Some("etc"), &["/etc"], 9, &[])),
        ]
    }

    #[test]
    fn latest_across_jobs_or_hosts_refuses_and_names_each_lineage() {
        let err = select_snapshot(repo(), "latest", &SnapshotFilter::default())
            .expect_err("three lineages");
        let Error::AmbiguousSnapshot { candidates, .. } = &err else {
            panic!("{err:?}");
        };
        let got: Vec<_> = candidates.iter().map(|c| (c.id, c.flags.clone())).collect();
        let flags = |f: &[&str]| Some(f.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            got,
            vec![
                (id(4), flags(&["--host", "web2", "--job", "etc"])),
                (id(2), flags(&["--host", "web1", "--job", "etc"])),
                (id(3), flags(&["--host", "web1", "--job", "db"])),
            ]
        );
        // Within one host, the job alone picks it.
        let web1 = SnapshotFilter {
            host: Some("web1".into()),
            ..Default::default()
        };
        let err = select_snapshot(repo(), "latest", &web1).expect_err("two jobs");
        let Error::AmbiguousSnapshot { candidates, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(candidates[0].flags, flags(&["--job", "etc"]));
    }

    #[test]
    fn latest_of_one_lineage_is_its_newest() {
        let f = SnapshotFilter {
            host: Some("web1".into()),
            job: Some("etc".into()),
            ..Default::default()
        };
        assert_eq!(select_snapshot(repo(), "latest", &f).expect("one").0, id(2));
        let tagged = SnapshotFilter {
            tags: vec!["nightly".into()],
            ..Default::default()
        };
        assert_eq!(
            select_snapshot(repo(), "latest", &tagged).expect("one").0,
            id(3)
        );
    }

    #[test]
    fn a_path_selects_the_snapshots_it_is_in() {
        let inside = |p: &str| SnapshotFilter {
            host: Some("web1".into()),
            paths: vec![p.into()],
            ..Default::default()
        };
        for (p, want) in [
            ("/etc/ssh", id(2)),
            ("/etc/ssh/", id(2)),
            ("/etc", id(2)),
            ("/var", id(3)),
            ("/var/backups/db.sql", id(3)),
        ] {
            assert_eq!(
                select_snapshot(repo(), "latest", &inside(p)).expect(p).0,
                want,
                "{p}"
            );
        }
        for p in ["/et", "/etcetera", "/var/backupsx"] {
            assert!(matches!(
                select_snapshot(repo(), "latest", &inside(p)),
                Err(Error::SnapshotSelect(_))
            ));
        }
        assert!(select_snapshot(repo(), "latest", &inside("etc")).is_err());
        // "/" holds everything.
        let s = snap("h", None, &["/"], 0, &[]);
        assert!(holds_path(&s, "/etc/ssh") && holds_path(&s, "/"));
    }

    #[test]
    fn snapshots_without_a_job_are_told_apart_by_their_paths() {
        let all = vec![
            (id(1), snap("h", None, &["/etc"], 1, &[])),
            (id(2), snap("h", None, &["/etc", "/home"], 2, &[])),
            (id(3), snap("h", None, &["/home", "/etc"], 3, &[])),
        ];
        let err = select_snapshot(all.clone(), "latest", &SnapshotFilter::default())
            .expect_err("two path sets");
        let Error::AmbiguousSnapshot { candidates, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(candidates.len(), 2);
        assert!(
            candidates.iter().all(|c| c.flags.is_none()),
            "{candidates:?}"
        );
        let home = SnapshotFilter {
            paths: vec!["/home".into()],
            ..Default::default()
        };
        assert_eq!(select_snapshot(all, "latest", &home).expect("one").0, id(3));
    }

    #[test]
    fn an_id_must_pass_the_filter_too() {
        let f = SnapshotFilter {
            job: Some("db".into()),
            ..Default::default()
        };
        assert!(select_snapshot(repo(), &id(2).to_hex()[..8], &f).is_err());
        assert_eq!(
            select_snapshot(repo(), &id(3).to_hex()[..8], &f)
                .expect("db")
                .0,
            id(3)
        );
    }
}

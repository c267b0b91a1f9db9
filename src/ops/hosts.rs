//! The fleet view (`lifeboat hosts`): from the repository's snapshot list alone, each host and
//! job (or, for snapshots made outside the daemon, set of paths), its newest snapshot, its age
//! and whether it is older than a bound. It reads the snapshot objects and nothing else, takes
//! no lock and writes nothing, so a monitoring machine can run it with read-only credentials
//! while the servers back up and an admin machine prunes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::daemon::metrics::escape;
use crate::id::SnapshotId;
use crate::repo::select::Lineage;
use crate::repo::Snapshot;

/// One host and job (or set of paths) of the repository.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostLine {
    pub host: String,
    /// The daemon job; `None` for snapshots made by hand without `--job`.
    pub job: Option<String>,
    /// The backed-up paths, for snapshots without a job (empty for a job's).
    pub paths: Vec<String>,
    /// The newest snapshot.
    pub snapshot_id: String,
    pub time: DateTime<Utc>,
    /// Seconds from its time to now (0 for a snapshot dated in the future: a clock ahead).
    pub age_secs: f64,
    /// Snapshots of this host and job.
    pub snapshots: u64,
    /// Whether the newest snapshot is older than the bound given.
    pub stale: bool,
}

/// The repository's hosts and jobs, by host, then job (snapshots without a job first).
pub fn lines(
    all: &[(SnapshotId, Snapshot)],
    now: DateTime<Utc>,
    stale_after: Option<Duration>,
) -> Vec<HostLine> {
    let mut by: BTreeMap<Lineage, (u64, &(SnapshotId, Snapshot))> = BTreeMap::new();
    for entry in all {
        by.entry(Lineage::of(&entry.1))
            .and_modify(|(n, newest)| {
                *n += 1;
                if (entry.1.time, entry.0) > (newest.1.time, newest.0) {
                    *newest = entry;
                }
            })
            .or_insert((1, entry));
    }
    by.into_iter()
        .map(|(lineage, (snapshots, (id, s)))| {
            let age_secs = ((now - s.time).num_milliseconds() as f64 / 1000.0).max(0.0);
            HostLine {
                host: lineage.host,
                job: lineage.job,
                paths: lineage.paths,
                snapshot_id: id.to_hex(),
                time: s.time,
                age_secs,
                snapshots,
                stale: stale_after.is_some_and(|bound| age_secs > bound.as_secs_f64()),
            }
        })
        .collect()
}

/// The lines as a Prometheus text file for node_exporter's textfile collector: per host and
/// job the newest snapshot's time and age and the number of snapshots, with `stale_after` a
/// 0/1 gauge, and when the listing was made and how many snapshot objects it could not read.
pub fn metrics(
    lines: &[HostLine],
    now: DateTime<Utc>,
    stale_after: Option<Duration>,
    damaged: usize,
) -> String {
    type Value = fn(&HostLine) -> f64;
    let mut gauges: Vec<(&str, &str, Value)> = vec![
        (
            "lifeboat_snapshot_last_timestamp_seconds",
            "Time of the newest snapshot of the host and job.",
            |l| l.time.timestamp_millis() as f64 / 1000.0,
        ),
        (
            "lifeboat_snapshot_age_seconds",
            "Age of the newest snapshot of the host and job when the listing was made.",
            |l| l.age_secs,
        ),
        (
            "lifeboat_snapshots",
            "Snapshots of the host and job in the repository.",
            |l| l.snapshots as f64,
        ),
    ];
    if stale_after.is_some() {
        gauges.push((
            "lifeboat_snapshot_stale",
            "1 when the newest snapshot of the host and job is older than --stale-after.",
            |l| f64::from(u8::from(l.stale)),
        ));
    }
    let mut out = String::new();
    for (name, help, value) in gauges {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for l in lines {
            out.push_str(&format!(
                "{name}{{host=\"{}\",job=\"{}\",paths=\"{}\"}} {}\n",
                escape(&l.host),
                escape(l.job.as_deref().unwrap_or("")),
                escape(&l.paths.join(" ")),
                value(l)
            ));
        }
    }
    if let Some(bound) = stale_after {
        out.push_str(
            "# HELP lifeboat_snapshot_stale_after_seconds The bound of --stale-after.\n\
             # TYPE lifeboat_snapshot_stale_after_seconds gauge\n",
        );
        out.push_str(&format!(
            "lifeboat_snapshot_stale_after_seconds {}\n",
            bound.as_secs_f64()
        ));
    }
    out.push_str(&format!(
        "# HELP lifeboat_hosts_listing_timestamp_seconds When the repository's snapshots were listed.\n\
         # TYPE lifeboat_hosts_listing_timestamp_seconds gauge\n\
         lifeboat_hosts_listing_timestamp_seconds {}\n\
         # HELP lifeboat_damaged_snapshots Snapshot objects the listing could not read.\n\
         # TYPE lifeboat_damaged_snapshots gauge\n\
         lifeboat_damaged_snapshots {damaged}\n",
        now.timestamp_millis() as f64 / 1000.0
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn each_host_and_job_with_its_newest_snapshot_age_count_and_staleness() {
        let snap = |n: u8, host, job, paths: &[&str], time| {
            (
                SnapshotId([n; 32]),
                Snapshot::for_test(host, job, paths, &[], time),
            )
        };
        let all = vec![
            snap(1, "web1", Some("etc"), &["/etc"], "2026-12-06T02:00:00Z"),
            snap(2, "web1", Some("etc"), &["/etc"], "2026-12-07T02:00:00Z"),
            snap(
                3,
                "web1",
                Some("db"),
                &["/var/backups"],
                "2026-12-05T02:00:00Z",
            ),
            snap(4, "db\"1", None, &["/srv", "/home"], "2026-12-07T20:00:00Z"),
            // A clock ahead: age 0, not negative.
            snap(5, "web2", Some("etc"), &["/etc"], "2026-12-08T03:00:00Z"),
        ];
        let now = at("2026-12-08T02:00:00Z");
        let l = lines(&all, now, Some(Duration::from_secs(26 * 3600)));
        let got: Vec<_> = l
            .iter()
            .map(|l| {
                (
                    l.host.as_str(),
                    l.job.as_deref(),
                    l.snapshots,
                    l.age_secs,
                    l.stale,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("db\"1", None, 1, 6.0 * 3600.0, false),
                ("web1", Some("db"), 1, 72.0 * 3600.0, true),
                ("web1", Some("etc"), 2, 24.0 * 3600.0, false),
                ("web2", Some("etc"), 1, 0.0, false),
            ]
        );
        assert_eq!(l[2].snapshot_id, SnapshotId([2; 32]).to_hex());
        assert_eq!(l[0].paths, ["/home", "/srv"]);
        // Without a bound nothing is stale.
        assert!(lines(&all, now, None).iter().all(|l| !l.stale));

        let m = metrics(&l, now, Some(Duration::from_secs(26 * 3600)), 2);
        assert!(
            m.contains(
                "lifeboat_snapshot_age_seconds{host=\"web1\",job=\"db\",paths=\"\"} 259200\n"
            ),
            "{m}"
        );
        assert!(
            m.contains(
                "lifeboat_snapshot_stale{host=\"db\\\"1\",job=\"\",paths=\"/home /srv\"} 0\n"
            ),
            "{m}"
        );
        assert!(
            m.contains("lifeboat_snapshots{host=\"web1\",job=\"etc\",paths=\"\"} 2\n"),
            "{m}"
        );
        assert!(m.contains("lifeboat_damaged_snapshots 2\n"), "{m}");
        assert!(m.contains("# TYPE lifeboat_snapshot_stale gauge\n"), "{m}");
        assert!(!metrics(&l, now, None, 0).contains("lifeboat_snapshot_stale"));
    }
}

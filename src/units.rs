//! Small shared helpers for reading and showing quantities: durations, percentages, byte
//! sizes, and paths made absolute. One copy each, used by the command line, the daemon's
//! config and the library alike.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Parses a duration such as "90s", "10m", "26h", "1h 30m", "7d" (humantime's syntax: "m" is
/// minutes, "M" or "months" months). Retention durations refuse a bare "m"
/// ([`crate::ops::retention::parse_duration`]).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("{s:?} is not a duration (like \"90s\", \"10m\", \"26h\", \"1h 30m\"): {e}")
    })
}

/// Parses "10%" (or "10") into a percentage in `min..=100`.
pub fn parse_percent(s: &str, min: f64) -> std::result::Result<f64, String> {
    match s.trim().trim_end_matches('%').trim().parse::<f64>() {
        Ok(v) if v >= min && v <= 100.0 => Ok(v),
        _ => Err(format!("{s:?} is not a percentage from {min}% to 100%")),
    }
}

/// A share (0.25) as a percentage: "25%", or "12.5%" when not whole.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p}%")
    }
}

/// Bytes in a human unit: "512 B", "1.5 KiB", "3.2 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds in a human unit: "0.4 s", "12 s", "3 min 20 s", "5 h 12 min".
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    if secs < 10.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// A count with its noun: "1 match", "3 matches", "0 snapshots".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Bytes per second of `bytes` in `secs` (0 for no time).
pub fn per_sec(bytes: u64, secs: f64) -> u64 {
    if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    }
}

/// Makes a path absolute and removes `.` and `..` components lexically.
pub fn normalize_path(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io("resolve path", p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "m" is minutes wherever a duration is read (hooks, locks, retries, pauses, maintenance);
    /// months are "M" or "months".
    #[test]
    fn m_is_minutes_and_months_are_spelled_out() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        let month = parse_duration("1M").expect("months");
        assert_eq!(parse_duration("1months"), Ok(month));
        assert!(month > Duration::from_secs(28 * 86400));
        let e = parse_duration("soon").expect_err("not a duration");
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn percentages_and_sizes_read_well() {
        assert_eq!(parse_percent("10%", 0.0), Ok(10.0));
        assert_eq!(parse_percent(" 2.5 ", 0.0), Ok(2.5));
        assert!(parse_percent("0", 0.001).is_err());
        assert!(parse_percent("101%", 0.0).is_err());
        assert_eq!(percent(0.25), "25%");
        assert_eq!(percent(0.125), "12.5%");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn counts_take_the_noun_that_fits() {
        assert_eq!(count(1, "match", "matches"), "1 match");
        assert_eq!(count(0, "snapshot", "snapshots"), "0 snapshots");
        assert_eq!(count(12, "file", "files"), "12 files");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(1.23), "1.2 s");
        assert_eq!(human_duration(12.4), "12 s");
        assert_eq!(human_duration(200.0), "3 min 20 s");
        assert_eq!(human_duration(5.0 * 3600.0 + 12.0 * 60.0), "5 h 12 min");
    }

    #[test]
    fn paths_are_made_absolute_lexically() {
        assert_eq!(
            normalize_path(Path::new("/a/./b/../c")).expect("path"),
            PathBuf::from("/a/c")
        );
        assert_eq!(
            normalize_path(Path::new("/../x")).expect("path"),
            PathBuf::from("/x")
        );
    }
}

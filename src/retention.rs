//! Retention policy: which snapshots `lifeboat forget` keeps, and why.
//!
//! This module is the pure core of `forget` (and of the daemon's pruning): it reads no
//! repository and touches no clock. The caller passes the snapshots, the [`Policy`], how to
//! [`GroupBy`], the time zone that defines calendar periods, and the current time.
//!
//! # Semantics
//!
//! The rules follow restic's documented `forget` semantics:
//!
//! * Snapshots are first divided into groups ([`GroupBy`], by default host and set of paths);
//!   the policy is applied to each group on its own.
//! * Within a group, snapshots are processed newest first. Equal timestamps are ordered by
//!   snapshot id (the greater id counts as the newer one), so the result never depends on the
//!   order of the input.
//! * `keep_last N` keeps the N newest snapshots.
//! * `keep_hourly/daily/weekly/monthly/yearly N` keeps, for each of the N newest periods (clock
//!   hour, calendar day, ISO week Monday–Sunday, calendar month, calendar year, in the time
//!   zone given) that *have* a snapshot, the newest snapshot of that period. Periods without a
//!   snapshot do not count.
//! * [`Count::All`] (restic's `unlimited` or `-1`) removes the limit.
//! * If a counted period rule has slots left once every snapshot has been seen (the group's
//!   history is shorter than the rule asks for), the group's oldest snapshot is kept as well,
//!   with [`Reason::Oldest`]: restic does this since 0.17 to keep the longest history that
//!   the policy allows. The same holds for the `keep_within_<period>` rules
//!   ([`Reason::OldestWithinPeriod`]) when the oldest snapshot is inside their window.
//! * `keep_within D` keeps every snapshot strictly newer than *the latest snapshot's time*
//!   minus D — measured from the newest snapshot, not from now, so that a host which stopped
//!   backing up does not lose its last backups to the passing of time.
//! * `keep_within_<period> D` keeps the newest snapshot of every period inside that window.
//! * `keep_tags` keeps every snapshot that carries any of the tags.
//! * A snapshot is kept if any rule keeps it; every rule that keeps it is recorded as a
//!   [`Reason`], in a fixed order (future, tags, within, last, periods, within-periods).
//!
//! ## Snapshots dated in the future
//!
//! A snapshot whose time is after `now` (a wrong clock on the backed-up host, or a snapshot
//! planted to push real ones out — see restic's notes on append-only repositories) is always
//! kept, with [`Reason::Future`], and is otherwise ignored: it takes no `keep_last` slot and no
//! period slot, and `keep_within` is measured from the latest snapshot that is *not* in the
//! future. This is stricter than restic, where future snapshots are exempt only from the
//! duration rules.
//!
//! ## Safety
//!
//! [`Policy::is_empty`] tells whether a policy has no rule at all; [`Policy::apply`] refuses an
//! empty policy with [`EmptyPolicy`] rather than planning to remove everything.
//! [`GroupResult::removes_all`] and [`Plan::emptied_groups`] tell the caller that a group would
//! lose every one of its (non-future) snapshots, which the command refuses without `--force`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::SnapshotId;
use crate::repo::snapshot::Snapshot;

// ---------------------------------------------------------------------------------------------
// Counts and periods
// ---------------------------------------------------------------------------------------------

/// How many snapshots (`keep_last`) or periods (`keep_daily`, ...) a counted rule keeps.
///
/// In configuration and on the command line it is a non-negative integer, or `"unlimited"`
/// (also `-1`, as restic accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Count {
    /// At most this many; `N(0)` is the same as not setting the rule.
    N(u32),
    /// No limit.
    All,
}

impl Count {
    /// Whether the rule keeps anything at all.
    pub fn is_active(self) -> bool {
        self != Count::N(0)
    }

    /// Slots of the rule: `None` is unlimited.
    fn slots(count: Option<Self>) -> Option<u32> {
        match count {
            None => Some(0),
            Some(Count::N(n)) => Some(n),
            Some(Count::All) => None,
        }
    }
}

/// A count could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a count: expected a non-negative number, or \"unlimited\" (or -1)")]
pub struct ParseCountError(String);

impl FromStr for Count {
    type Err = ParseCountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("unlimited") || t == "-1" {
            return Ok(Count::All);
        }
        t.parse::<u32>()
            .map(Count::N)
            .map_err(|_| ParseCountError(s.to_string()))
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::N(n) => write!(f, "{n}"),
            Count::All => f.write_str("unlimited"),
        }
    }
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Count::N(n) => s.serialize_u32(*n),
            Count::All => s.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative number, or \"unlimited\" (or -1)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Count, E> {
                u32::try_from(v)
                    .map(Count::N)
                    .map_err(|_| E::custom(format!("{v} is too large for a count")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Count, E> {
                match v {
                    -1 => Ok(Count::All),
                    v if v < 0 => Err(E::custom(format!(
                        "{v} is not a count: use a non-negative number, or \"unlimited\" (or -1)"
                    ))),
                    v => self.visit_u64(v.unsigned_abs()),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Count, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A calendar period of the counted (`keep_daily`, ...) and window (`keep_within_daily`, ...)
/// rules. Periods are taken in the time zone the caller passes to [`Policy::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// A clock hour, :00 to :59.
    Hour,
    /// A calendar day, 00:00 to 23:59.
    Day,
    /// An ISO 8601 week, Monday 00:00 to Sunday 23:59.
    Week,
    /// A calendar month.
    Month,
    /// A calendar year.
    Year,
}

impl Period {
    /// Every period, shortest first (the order in which rules are evaluated and reported).
    pub const ALL: [Period; 5] = [
        Period::Hour,
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
    ];

    /// "hourly", "daily", ...
    pub fn adjective(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// Which period of this kind `t` falls in, in `tz`: equal keys, same period.
    fn key<Tz: TimeZone>(self, t: &DateTime<Utc>, tz: &Tz) -> (i32, u32, u32, u32) {
        let l = t.with_timezone(tz);
        match self {
            Period::Hour => (l.year(), l.month(), l.day(), l.hour()),
            Period::Day => (l.year(), l.month(), l.day(), 0),
            Period::Week => {
                let w = l.iso_week();
                (w.year(), w.week(), 0, 0)
            }
            Period::Month => (l.year(), l.month(), 0, 0),
            Period::Year => (l.year(), 0, 0, 0),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reasons
// ---------------------------------------------------------------------------------------------

/// Why a snapshot is kept.
///
/// Serialized (for the CLI's JSON) as a short stable string: `"last"`, `"daily"` (and
/// `"hourly"`, `"weekly"`, `"monthly"`, `"yearly"`), `"oldest_daily"`, `"within"`,
/// `"within_daily"`, `"oldest_within_daily"`, `"tag:NAME"`, `"future"`. Displayed the way
/// restic prints its reasons ("last snapshot", "daily snapshot", "oldest daily snapshot", ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Dated after `now`: never removed, never counted (see the module documentation).
    Future,
    /// Carries this tag of the policy's `keep_tags`.
    Tag(String),
    /// Within `keep_within` of the group's latest (non-future) snapshot.
    Within,
    /// One of the `keep_last` newest.
    Last,
    /// The newest snapshot of one of the `keep_<period>` newest periods.
    Period(Period),
    /// The group's oldest snapshot, kept because `keep_<period>` had slots left.
    Oldest(Period),
    /// The newest snapshot of its period, within `keep_within_<period>` of the latest.
    WithinPeriod(Period),
    /// The group's oldest snapshot, inside the `keep_within_<period>` window.
    OldestWithinPeriod(Period),
}

impl Reason {
    /// The stable identifier used in JSON (see the type's documentation).
    pub fn id(&self) -> String {
        match self {
            Reason::Future => "future".into(),
            Reason::Tag(t) => format!("tag:{t}"),
            Reason::Within => "within".into(),
            Reason::Last => "last".into(),
            Reason::Period(p) => p.adjective().into(),
            Reason::Oldest(p) => format!("oldest_{}", p.adjective()),
            Reason::WithinPeriod(p) => format!("within_{}", p.adjective()),
            Reason::OldestWithinPeriod(p) => format!("oldest_within_{}", p.adjective()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Future => f.write_str("dated in the future"),
            Reason::Tag(t) => write!(f, "has tag {t}"),
            Reason::Within => f.write_str("within"),
            Reason::Last => f.write_str("last snapshot"),
            Reason::Period(p) => write!(f, "{} snapshot", p.adjective()),
            Reason::Oldest(p) => write!(f, "oldest {} snapshot", p.adjective()),
            Reason::WithinPeriod(p) => write!(f, "{} within", p.adjective()),
            Reason::OldestWithinPeriod(p) => write!(f, "oldest {} within", p.adjective()),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id())
    }
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// A retention policy: the `keep_*` rules. A snapshot is kept if any rule keeps it.
///
/// Deserializes from configuration such as
///
/// ```toml
/// keep_last = 3
/// keep_daily = 7
/// keep_weekly = 5
/// keep_monthly = "unlimited"
/// keep_within = "30d"
/// keep_tags = ["release"]
/// ```
///
/// Durations are read by [`parse_duration`] (humantime: `"30d"`, `"2weeks"`, `"6months"`,
/// `"1y"`), except that a bare `m` is refused as ambiguous.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Keep the N newest snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<Count>,
    /// Keep the newest snapshot of each of the N newest days that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<Count>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<Count>,
    /// Keep the newest snapshot of each of the N newest months that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<Count>,
    /// Keep the newest snapshot of each of the N newest years that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<Count>,
    /// Keep every snapshot newer than the group's latest snapshot minus this duration.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Duration>,
    /// Keep the newest snapshot of every hour within this duration of the latest snapshot.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<Duration>,
    /// Keep the newest snapshot of every day within this duration of the latest snapshot.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<Duration>,
    /// Keep the newest snapshot of every ISO week within this duration of the latest snapshot.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<Duration>,
    /// Keep the newest snapshot of every month within this duration of the latest snapshot.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<Duration>,
    /// Keep the newest snapshot of every year within this duration of the latest snapshot.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<Duration>,
    /// Keep every snapshot that has any of these tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
}

/// [`Policy::apply`] was given a policy without any rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the retention policy is empty: it keeps nothing (set at least one keep_* rule)")]
pub struct EmptyPolicy;

/// Parses a retention duration such as `"30d"`, `"2weeks"`, `"6months"`, `"1y 6months"`.
///
/// The syntax is humantime's (a month is 30.44 days, a year 365.25 days), except that the
/// unit `m` alone is refused: humantime reads it as minutes, restic's `--keep-within 6m` means
/// six months, and guessing wrong here deletes backups. `min` and `months` (or `M`) are
/// accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bare_m = s
        .split(|c: char| !c.is_ascii_alphabetic())
        .any(|unit| unit == "m");
    if bare_m {
        return Err(format!(
            "{s:?}: the unit \"m\" is ambiguous in a retention duration; write \"months\" or \"min\""
        ));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration (like \"30d\", \"2weeks\", \"6months\", \"1y\"): {e}")
    })
}

/// Serde for `Option<Duration>` as a humantime string, through [`parse_duration`].
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

fn active_duration(d: Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}

impl Policy {
    /// The count of the counted rule for `period`.
    pub fn count(&self, period: Period) -> Option<Count> {
        match period {
            Period::Hour => self.keep_hourly,
            Period::Day => self.keep_daily,
            Period::Week => self.keep_weekly,
            Period::Month => self.keep_monthly,
            Period::Year => self.keep_yearly,
        }
    }

    /// The window of the `keep_within_<period>` rule.
    pub fn within_period(&self, period: Period) -> Option<Duration> {
        match period {
            Period::Hour => self.keep_within_hourly,
            Period::Day => self.keep_within_daily,
            Period::Week => self.keep_within_weekly,
            Period::Month => self.keep_within_monthly,
            Period::Year => self.keep_within_yearly,
        }
    }

    /// Whether the policy has no rule at all (counts of 0 and zero durations count as unset),
    /// so that it would keep nothing. Restic refuses such a policy, and so does
    /// [`Policy::apply`].
    pub fn is_empty(&self) -> bool {
        let counted = std::iter::once(self.keep_last)
            .chain(Period::ALL.iter().map(|p| self.count(*p)))
            .any(|c| c.is_some_and(Count::is_active));
        let windows = std::iter::once(self.keep_within)
            .chain(Period::ALL.iter().map(|p| self.within_period(*p)))
            .any(|d| active_duration(d).is_some());
        !counted && !windows && self.keep_tags.is_empty()
    }

    /// Decides, for every snapshot, whether it is kept and why (see the module documentation
    /// for the rules).
    ///
    /// `group_by` divides the snapshots into groups, each decided on its own; `tz` defines the
    /// calendar periods (hours, days, weeks, ...); `now` is the current time, after which a
    /// snapshot is dated in the future. The input may be in any order; a snapshot id given
    /// twice is decided once. Groups come out ordered by key, each group's decisions newest
    /// first.
    ///
    /// Refuses an empty policy ([`Policy::is_empty`]).
    pub fn apply<Tz: TimeZone>(
        &self,
        snapshots: &[(SnapshotId, Snapshot)],
        group_by: GroupBy,
        tz: &Tz,
        now: DateTime<Utc>,
    ) -> Result<Plan, EmptyPolicy> {
        if self.is_empty() {
            return Err(EmptyPolicy);
        }
        let mut seen = HashSet::new();
        let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, &Snapshot)>> = BTreeMap::new();
        for (id, snap) in snapshots {
            if seen.insert(*id) {
                groups
                    .entry(group_by.key(snap))
                    .or_default()
                    .push((*id, snap));
            }
        }
        let groups = groups
            .into_iter()
            .map(|(key, mut members)| {
                // newest first; among equal times the greater id counts as the newer
                members.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
                GroupResult {
                    key,
                    decisions: self.decide(&members, tz, now),
                }
            })
            .collect();
        Ok(Plan { groups })
    }

    /// Decides one group, given newest first.
    fn decide<Tz: TimeZone>(
        &self,
        members: &[(SnapshotId, &Snapshot)],
        tz: &Tz,
        now: DateTime<Utc>,
    ) -> Vec<Decision> {
        let mut out = Vec::with_capacity(members.len());
        // Sorted newest first, so the future-dated ones lead.
        let first_real = members
            .iter()
            .position(|(_, s)| s.time <= now)
            .unwrap_or(members.len());
        let (future, real) = members.split_at(first_real);
        for (id, snap) in future {
            let mut reasons = vec![Reason::Future];
            reasons.extend(self.tag_reasons(snap));
            out.push(Decision::new(*id, snap.time, reasons));
        }

        let latest = real.first().map(|(_, s)| s.time);
        let window = |d: Option<Duration>| match (active_duration(d), latest) {
            (Some(d), Some(latest)) => Window::from_latest(latest, d),
            _ => Window::Off,
        };
        let within = window(self.keep_within);
        let mut last = Count::slots(self.keep_last);
        let mut counted = Period::ALL.map(|p| PeriodRule {
            period: p,
            slots: Count::slots(self.count(p)),
            window: Window::Unbounded,
            last_key: None,
        });
        let mut windowed = Period::ALL.map(|p| PeriodRule {
            period: p,
            // window rules keep every period inside their window
            slots: None,
            window: window(self.within_period(p)),
            last_key: None,
        });

        for (i, (id, snap)) in real.iter().enumerate() {
            let oldest = i + 1 == real.len();
            let t = &snap.time;
            let mut reasons = self.tag_reasons(snap);
            if within.contains(t) {
                reasons.push(Reason::Within);
            }
            if take_slot(&mut last) {
                reasons.push(Reason::Last);
            }
            for rule in &mut counted {
                match rule.offer(t, tz, oldest) {
                    Offer::Kept => reasons.push(Reason::Period(rule.period)),
                    Offer::KeptAsOldest => reasons.push(Reason::Oldest(rule.period)),
                    Offer::Declined => {}
                }
            }
            for rule in &mut windowed {
                match rule.offer(t, tz, oldest) {
                    Offer::Kept => reasons.push(Reason::WithinPeriod(rule.period)),
                    Offer::KeptAsOldest => reasons.push(Reason::OldestWithinPeriod(rule.period)),
                    Offer::Declined => {}
                }
            }
            out.push(Decision::new(*id, snap.time, reasons));
        }
        out
    }

    /// One [`Reason::Tag`] for each of the policy's tags that the snapshot has.
    fn tag_reasons(&self, snap: &Snapshot) -> Vec<Reason> {
        let mut reasons: Vec<Reason> = Vec::new();
        for tag in &self.keep_tags {
            let reason = Reason::Tag(tag.clone());
            if snap.tags.contains(tag) && !reasons.contains(&reason) {
                reasons.push(reason);
            }
        }
        reasons
    }
}

/// Takes one slot of a counted rule: `None` is unlimited.
fn take_slot(slots: &mut Option<u32>) -> bool {
    match slots {
        None => true,
        Some(0) => false,
        Some(n) => {
            *n -= 1;
            true
        }
    }
}

/// The time range of a duration rule.
#[derive(Debug, Clone, Copy)]
enum Window {
    /// The rule is not set: contains nothing.
    Off,
    /// Contains every time (a counted rule; or a window too long to compute).
    Unbounded,
    /// Contains the times strictly after this one.
    After(DateTime<Utc>),
}

impl Window {
    fn from_latest(latest: DateTime<Utc>, d: Duration) -> Self {
        // A duration reaching beyond the representable time covers the whole history.
        TimeDelta::from_std(d)
            .ok()
            .and_then(|d| latest.checked_sub_signed(d))
            .map_or(Window::Unbounded, Window::After)
    }

    fn contains(&self, t: &DateTime<Utc>) -> bool {
        match self {
            Window::Off => false,
            Window::Unbounded => true,
            Window::After(start) => t > start,
        }
    }
}

/// The state of one period rule while a group is decided.
struct PeriodRule {
    period: Period,
    /// Periods left to keep: `None` is unlimited.
    slots: Option<u32>,
    window: Window,
    /// The period of the last snapshot this rule kept.
    last_key: Option<(i32, u32, u32, u32)>,
}

enum Offer {
    Kept,
    KeptAsOldest,
    Declined,
}

impl PeriodRule {
    /// Offers the next (older) snapshot to the rule; `oldest` marks the group's last one.
    fn offer<Tz: TimeZone>(&mut self, t: &DateTime<Utc>, tz: &Tz, oldest: bool) -> Offer {
        if self.slots == Some(0) || !self.window.contains(t) {
            return Offer::Declined;
        }
        let key = self.period.key(t, tz);
        if self.last_key != Some(key) {
            self.last_key = Some(key);
            take_slot(&mut self.slots);
            Offer::Kept
        } else if oldest {
            Offer::KeptAsOldest
        } else {
            Offer::Declined
        }
    }
}

impl fmt::Display for Policy {
    /// A sentence such as "keep the 3 newest snapshots, 7 daily, all monthly; all within
    /// 30days of the newest; tagged release".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("keep nothing (empty policy)");
        }
        let mut parts = Vec::new();
        match self.keep_last {
            Some(Count::All) => parts.push("all snapshots".to_string()),
            Some(Count::N(n)) if n > 0 => parts.push(format!("the {n} newest snapshots")),
            _ => {}
        }
        for p in Period::ALL {
            match self.count(p) {
                Some(Count::All) => parts.push(format!("all {}", p.adjective())),
                Some(Count::N(n)) if n > 0 => parts.push(format!("{n} {}", p.adjective())),
                _ => {}
            }
        }
        if let Some(d) = active_duration(self.keep_within) {
            parts.push(format!(
                "all within {} of the newest",
                humantime::format_duration(d)
            ));
        }
        for p in Period::ALL {
            if let Some(d) = active_duration(self.within_period(p)) {
                parts.push(format!(
                    "{} within {} of the newest",
                    p.adjective(),
                    humantime::format_duration(d)
                ));
            }
        }
        if !self.keep_tags.is_empty() {
            parts.push(format!("all tagged {}", self.keep_tags.join(" or ")));
        }
        write!(f, "keep {}", parts.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Grouping
// ---------------------------------------------------------------------------------------------

/// Which snapshot attributes divide snapshots into groups. The default is host and paths
/// (restic's); all `false` puts every snapshot into one group.
///
/// Parses from a comma-separated list such as `"host,paths"`; `""` or `"none"` is no grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupBy {
    /// By host name.
    pub host: bool,
    /// By the set of backed-up paths (order and repetitions do not matter).
    pub paths: bool,
    /// By the set of tags.
    pub tags: bool,
    /// By the daemon job that made the snapshot (snapshots made outside a job form their own
    /// group).
    pub job: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
            job: false,
        }
    }
}

impl GroupBy {
    /// No grouping: one group of every snapshot.
    pub const NONE: GroupBy = GroupBy {
        host: false,
        paths: false,
        tags: false,
        job: false,
    };

    /// The group `snap` belongs to.
    pub fn key(&self, snap: &Snapshot) -> GroupKey {
        let set = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        GroupKey {
            host: self.host.then(|| snap.host.clone()),
            paths: self.paths.then(|| set(&snap.paths)),
            tags: self.tags.then(|| set(&snap.tags)),
            job: self.job.then(|| snap.job.clone()),
        }
    }
}

/// A `--group-by` value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a grouping: expected a comma-separated list of host, paths, tags, job (or \"none\")")]
pub struct ParseGroupByError(String);

impl FromStr for GroupBy {
    type Err = ParseGroupByError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut g = GroupBy::NONE;
        if s.trim() == "none" {
            return Ok(g);
        }
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                "job" => g.job = true,
                _ => return Err(ParseGroupByError(s.to_string())),
            }
        }
        Ok(g)
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.host, "host"),
            (self.paths, "paths"),
            (self.tags, "tags"),
            (self.job, "job"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// The identity of a group: the values of the attributes grouped by; `None` for an attribute
/// not grouped by. Paths and tags are sorted sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    /// The host, when grouped by host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The sorted set of paths, when grouped by paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// The sorted set of tags, when grouped by tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// When grouped by job: `Some(Some(name))`, or `Some(None)` for snapshots made outside a
    /// job (JSON `null`; the field is absent when not grouped by job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Option<String>>,
}

impl fmt::Display for GroupKey {
    /// "host web1, paths [/etc, /srv]", or "all snapshots" for no grouping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        match &self.job {
            Some(Some(j)) => parts.push(format!("job {j}")),
            Some(None) => parts.push("no job".to_string()),
            None => {}
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time, for display.
    pub time: DateTime<Utc>,
    /// Whether it is kept; always `!reasons.is_empty()`.
    pub keep: bool,
    /// Every rule that keeps it, in a fixed order; empty if it is to be removed.
    pub reasons: Vec<Reason>,
}

impl Decision {
    fn new(id: SnapshotId, time: DateTime<Utc>, reasons: Vec<Reason>) -> Self {
        Decision {
            id,
            time,
            keep: !reasons.is_empty(),
            reasons,
        }
    }

    /// Whether the snapshot is dated in the future (kept for that reason).
    pub fn is_future(&self) -> bool {
        self.reasons.contains(&Reason::Future)
    }
}

/// The decisions for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupResult {
    /// The group.
    pub key: GroupKey,
    /// One per snapshot of the group, newest first.
    pub decisions: Vec<Decision>,
}

impl GroupResult {
    /// The snapshots kept.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep)
    }

    /// The snapshots to remove.
    pub fn removed(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }

    /// Whether the plan removes every snapshot of this group: some snapshot is removed and
    /// none is kept other than future-dated ones (which are kept whatever the policy, so a
    /// group left with only those has lost all of its real history).
    pub fn removes_all(&self) -> bool {
        self.removed().next().is_some() && self.kept().all(Decision::is_future)
    }
}

/// The decisions for every group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// One per group, ordered by key.
    pub groups: Vec<GroupResult>,
}

impl Plan {
    /// The groups that would lose every snapshot (see [`GroupResult::removes_all`]); the
    /// command refuses such a plan without `--force`.
    pub fn emptied_groups(&self) -> impl Iterator<Item = &GroupResult> {
        self.groups.iter().filter(|g| g.removes_all())
    }

    /// The ids of every snapshot to remove.
    pub fn to_remove(&self) -> Vec<SnapshotId> {
        self.groups
            .iter()
            .flat_map(|g| g.removed().map(|d| d.id))
            .collect()
    }

    /// The ids of every snapshot kept.
    pub fn to_keep(&self) -> Vec<SnapshotId> {
        self.groups
            .iter()
            .flat_map(|g| g.kept().map(|d| d.id))
            .collect()
    }
}

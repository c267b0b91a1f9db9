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
    crate::units::parse_duration(s)
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

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;

    use super::*;
    use crate::id::BlobId;
    use crate::repo::snapshot::{BackupKind, Summary};

    /// Ids that sort like `n`.
    fn id(n: u64) -> SnapshotId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        SnapshotId(b)
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("test time")
    }

    fn snap(time: DateTime<Utc>) -> Snapshot {
        Snapshot {
            time,
            host: "mopped".into(),
            username: "user".into(),
            paths: vec!["/home/user/work".into()],
            tags: Vec::new(),
            job: None,
            kind: BackupKind::Full,
            parent: None,
            tree: BlobId::default(),
            summary: Summary::default(),
            program: "test".into(),
            original: None,
        }
    }

    /// Snapshots at these times, with ids 1, 2, ... in the order given.
    fn list(times: &[&str]) -> Vec<(SnapshotId, Snapshot)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| (id(i as u64 + 1), snap(at(t))))
            .collect()
    }

    fn one_group(plan: &Plan) -> &GroupResult {
        assert_eq!(plan.groups.len(), 1, "expected one group: {plan:#?}");
        &plan.groups[0]
    }

    /// Times of the kept snapshots, newest first, in RFC 3339.
    fn kept_times(g: &GroupResult) -> Vec<String> {
        g.kept()
            .map(|d| d.time.format("%Y-%m-%d %H:%M").to_string())
            .collect()
    }

    fn reasons(g: &GroupResult, want: SnapshotId) -> Vec<Reason> {
        g.decisions
            .iter()
            .find(|d| d.id == want)
            .map(|d| d.reasons.clone())
            .expect("snapshot decided")
    }

    fn run(policy: &Policy, snaps: &[(SnapshotId, Snapshot)], now: &str) -> Plan {
        policy
            .apply(snaps, GroupBy::default(), &Utc, at(now))
            .expect("non-empty policy")
    }

    fn daily(n: u32) -> Policy {
        Policy {
            keep_daily: Some(Count::N(n)),
            ..Policy::default()
        }
    }

    // --- restic's documented examples -------------------------------------------------------

    /// restic's documentation: one backup every Sunday for 12 weeks, `--keep-daily 4` keeps
    /// the last four Sundays, each as a "daily snapshot", and removes the other eight.
    #[test]
    fn restic_docs_twelve_sundays_keep_daily_4() {
        let snaps = list(&[
            "2019-09-01T11:00:00Z",
            "2019-09-08T11:00:00Z",
            "2019-09-15T11:00:00Z",
            "2019-09-22T11:00:00Z",
            "2019-09-29T11:00:00Z",
            "2019-10-06T11:00:00Z",
            "2019-10-13T11:00:00Z",
            "2019-10-20T11:00:00Z",
            "2019-10-27T11:00:00Z",
            "2019-11-03T11:00:00Z",
            "2019-11-10T11:00:00Z",
            "2019-11-17T11:00:00Z",
        ]);
        let plan = run(&daily(4), &snaps, "2019-11-18T00:00:00Z");
        let g = one_group(&plan);
        assert_eq!(
            kept_times(g),
            [
                "2019-11-17 11:00",
                "2019-11-10 11:00",
                "2019-11-03 11:00",
                "2019-10-27 11:00"
            ]
        );
        for d in g.kept() {
            assert_eq!(d.reasons, [Reason::Period(Period::Day)]);
            assert_eq!(d.reasons[0].to_string(), "daily snapshot");
        }
        assert_eq!(g.removed().count(), 8);
        assert!(!g.removes_all());
    }

    /// restic's documentation: a backup every day for 100 years and `--keep-daily 7
    /// --keep-weekly 5 --keep-monthly 12 --keep-yearly 75` keeps the 7 newest dailies, 4 more
    /// weeklies (the dailies include one), 11 or 12 more monthlies and 74 or 75 more yearlies.
    /// Ending on Sunday 2024-12-29 makes the counts exact: 7 + 4 + 11 + 74.
    #[test]
    fn restic_docs_hundred_years_of_dailies() {
        let first = at("1925-01-01T12:00:00Z");
        let last = at("2024-12-29T12:00:00Z");
        let days = (last - first).num_days();
        let snaps: Vec<_> = (0..=days)
            .map(|i| (id(i as u64), snap(first + TimeDelta::days(i))))
            .collect();
        let policy = Policy {
            keep_daily: Some(Count::N(7)),
            keep_weekly: Some(Count::N(5)),
            keep_monthly: Some(Count::N(12)),
            keep_yearly: Some(Count::N(75)),
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2025-01-01T00:00:00Z");
        let g = one_group(&plan);
        let with = |r: Reason| g.kept().filter(|d| d.reasons.contains(&r)).count();
        assert_eq!(with(Reason::Period(Period::Day)), 7);
        assert_eq!(with(Reason::Period(Period::Week)), 5);
        assert_eq!(with(Reason::Period(Period::Month)), 12);
        assert_eq!(with(Reason::Period(Period::Year)), 75);
        let only = |r: Reason| g.kept().filter(|d| d.reasons == [r.clone()]).count();
        assert_eq!(only(Reason::Period(Period::Week)), 4);
        assert_eq!(only(Reason::Period(Period::Month)), 11);
        assert_eq!(only(Reason::Period(Period::Year)), 74);
        assert_eq!(g.kept().count(), 7 + 4 + 11 + 74);
        // every rule ran out of slots: the oldest snapshot is not kept
        assert!(!g.decisions.last().expect("decisions").keep);
        // the newest is daily, weekly, monthly and yearly at once
        assert_eq!(
            g.decisions[0].reasons,
            Period::ALL[1..]
                .iter()
                .map(|p| Reason::Period(*p))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_rule_that_keeps_a_snapshot_is_a_reason() {
        let snaps = list(&[
            "2024-05-01T10:00:00Z",
            "2024-05-02T10:00:00Z",
            "2024-05-02T11:00:00Z",
        ]);
        let policy = Policy {
            keep_last: Some(Count::N(1)),
            keep_daily: Some(Count::N(1)),
            keep_weekly: Some(Count::N(1)),
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        let g = one_group(&plan);
        assert_eq!(
            reasons(g, id(3)),
            [
                Reason::Last,
                Reason::Period(Period::Day),
                Reason::Period(Period::Week)
            ]
        );
        assert!(reasons(g, id(2)).is_empty());
        assert!(reasons(g, id(1)).is_empty());
        let shown: Vec<String> = reasons(g, id(3)).iter().map(|r| r.to_string()).collect();
        assert_eq!(
            shown,
            ["last snapshot", "daily snapshot", "weekly snapshot"]
        );
        let json = serde_json::to_string(&reasons(g, id(3))).expect("json");
        assert_eq!(json, r#"["last","daily","weekly"]"#);
    }

    // --- calendar periods --------------------------------------------------------------------

    /// Days without a snapshot are not periods: keep_daily 3 reaches back past the gaps.
    #[test]
    fn periods_without_snapshots_do_not_count() {
        let snaps = list(&[
            "2024-01-01T09:00:00Z",
            "2024-01-02T09:00:00Z",
            "2024-01-02T18:00:00Z",
            "2024-01-05T09:00:00Z",
            "2024-01-09T09:00:00Z",
        ]);
        let plan = run(&daily(3), &snaps, "2024-02-01T00:00:00Z");
        assert_eq!(
            kept_times(one_group(&plan)),
            ["2024-01-09 09:00", "2024-01-05 09:00", "2024-01-02 18:00"]
        );
    }

    /// A snapshot at 23:30 UTC is on the next day in UTC+2: the day a snapshot belongs to is
    /// taken in the zone given.
    #[test]
    fn periods_are_taken_in_the_time_zone_given() {
        let late = at("2024-03-10T23:30:00Z");
        let plus2 = FixedOffset::east_opt(2 * 3600).expect("offset");
        assert_eq!(Period::Day.key(&late, &Utc), (2024, 3, 10, 0));
        assert_eq!(Period::Day.key(&late, &plus2), (2024, 3, 11, 0));
        assert_eq!(
            Period::Day.key(&late, &chrono_tz::Europe::Helsinki),
            (2024, 3, 11, 0)
        );

        let snaps = list(&[
            "2024-03-09T10:00:00Z", // 1: Mar 9 everywhere
            "2024-03-10T21:00:00Z", // 2: Mar 10 in UTC, 23:00 Mar 10 in UTC+2
            "2024-03-10T23:30:00Z", // 3: Mar 10 in UTC, 01:30 Mar 11 in UTC+2
        ]);
        let kept = |plan: Plan| plan.to_keep();
        let now = at("2024-04-01T00:00:00Z");
        let utc = daily(2).apply(&snaps, GroupBy::default(), &Utc, now);
        assert_eq!(kept(utc.expect("plan")), [id(3), id(1)]);
        let east = daily(2).apply(&snaps, GroupBy::default(), &plus2, now);
        assert_eq!(kept(east.expect("plan")), [id(3), id(2)]);
        let tz = daily(2).apply(
            &snaps,
            GroupBy::default(),
            &chrono_tz::Europe::Helsinki,
            now,
        );
        assert_eq!(kept(tz.expect("plan")), [id(3), id(2)]);
    }

    /// Weeks are ISO weeks (Monday to Sunday), across a year boundary too: Monday 2024-12-30
    /// is in week 1 of 2025, with Wednesday 2025-01-01.
    #[test]
    fn weeks_are_iso_weeks() {
        let snaps = list(&[
            "2024-12-29T12:00:00Z", // Sunday, week 52 of 2024
            "2024-12-30T12:00:00Z", // Monday, week 1 of 2025
            "2025-01-01T12:00:00Z", // Wednesday, week 1 of 2025
        ]);
        let policy = Policy {
            keep_weekly: Some(Count::N(2)),
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2025-02-01T00:00:00Z");
        assert_eq!(plan.to_keep(), [id(3), id(1)]);
    }

    #[test]
    fn hours_months_and_years() {
        let snaps = list(&[
            "2022-06-01T10:05:00Z",
            "2023-06-01T10:05:00Z",
            "2023-07-01T10:05:00Z",
            "2023-07-01T10:55:00Z",
            "2023-07-01T11:05:00Z",
        ]);
        let now = "2024-01-01T00:00:00Z";
        let with = |f: fn(&mut Policy)| {
            let mut p = Policy::default();
            f(&mut p);
            run(&p, &snaps, now).to_keep()
        };
        assert_eq!(with(|p| p.keep_hourly = Some(Count::N(2))), [id(5), id(4)]);
        assert_eq!(with(|p| p.keep_monthly = Some(Count::N(2))), [id(5), id(2)]);
        assert_eq!(with(|p| p.keep_yearly = Some(Count::N(2))), [id(5), id(1)]);
    }

    // --- ties, duplicates, unlimited, oldest -------------------------------------------------

    /// Snapshots with the same time are ordered by id (the greater counts as newer), whatever
    /// the input order.
    #[test]
    fn equal_times_are_ordered_by_id() {
        let t = "2024-05-01T10:00:00Z";
        let snaps = list(&[t, t, t]);
        let mut reversed = snaps.clone();
        reversed.reverse();
        let policy = Policy {
            keep_last: Some(Count::N(1)),
            ..Policy::default()
        };
        let now = "2024-06-01T00:00:00Z";
        assert_eq!(run(&policy, &snaps, now).to_keep(), [id(3)]);
        assert_eq!(run(&policy, &reversed, now), run(&policy, &snaps, now));
        assert_eq!(run(&daily(1), &reversed, now).to_keep(), [id(3)]);
        let order: Vec<_> = one_group(&run(&policy, &reversed, now))
            .decisions
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(order, [id(3), id(2), id(1)]);
    }

    #[test]
    fn a_repeated_id_is_decided_once() {
        let mut snaps = list(&["2024-05-01T10:00:00Z", "2024-05-02T10:00:00Z"]);
        snaps.push(snaps[0].clone());
        let plan = run(&daily(5), &snaps, "2024-06-01T00:00:00Z");
        assert_eq!(one_group(&plan).decisions.len(), 2);
    }

    /// `unlimited` keeps the newest snapshot of every day; and as the rule never runs out,
    /// the oldest snapshot too ("oldest daily snapshot").
    #[test]
    fn unlimited_keeps_every_period() {
        let snaps = list(&[
            "2020-01-01T08:00:00Z",
            "2020-01-01T09:00:00Z",
            "2021-03-04T09:00:00Z",
            "2021-03-04T10:00:00Z",
            "2024-05-01T10:00:00Z",
        ]);
        let policy = Policy {
            keep_daily: Some(Count::All),
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        let g = one_group(&plan);
        assert_eq!(g.kept().count(), 4);
        assert!(reasons(g, id(3)).is_empty());
        assert_eq!(reasons(g, id(1)), [Reason::Oldest(Period::Day)]);
        assert_eq!(reasons(g, id(2)), [Reason::Period(Period::Day)]);
    }

    /// restic (0.17 on): when a period rule still has slots after the whole history, the
    /// oldest snapshot is kept too, as "oldest daily snapshot"; not when the slots ran out.
    #[test]
    fn a_rule_with_slots_left_keeps_the_oldest_snapshot() {
        let snaps = list(&[
            "2024-05-01T08:00:00Z",
            "2024-05-01T12:00:00Z",
            "2024-05-02T10:00:00Z",
        ]);
        let now = "2024-06-01T00:00:00Z";
        let plan = run(&daily(3), &snaps, now);
        let g = one_group(&plan);
        assert_eq!(reasons(g, id(1)), [Reason::Oldest(Period::Day)]);
        assert_eq!(reasons(g, id(1))[0].to_string(), "oldest daily snapshot");
        assert_eq!(reasons(g, id(1))[0].id(), "oldest_daily");
        assert_eq!(g.kept().count(), 3);

        let plan = run(&daily(2), &snaps, now);
        assert_eq!(plan.to_keep(), [id(3), id(2)]);
        // keep_last never keeps an "oldest": it counts snapshots, not periods
        let last = Policy {
            keep_last: Some(Count::N(5)),
            ..Policy::default()
        };
        let plan = run(&last, &snaps, now);
        assert!(one_group(&plan).kept().all(|d| d.reasons == [Reason::Last]));
    }

    // --- empty policies and plans that remove everything -------------------------------------

    #[test]
    fn an_empty_policy_is_recognized_and_refused() {
        assert!(Policy::default().is_empty());
        assert!(daily(0).is_empty());
        let zero = Policy {
            keep_last: Some(Count::N(0)),
            keep_within: Some(Duration::ZERO),
            keep_within_daily: Some(Duration::ZERO),
            ..Policy::default()
        };
        assert!(zero.is_empty());
        assert!(!daily(1).is_empty());
        let all = Policy {
            keep_yearly: Some(Count::All),
            ..Policy::default()
        };
        assert!(!all.is_empty());
        let tags = Policy {
            keep_tags: vec!["x".into()],
            ..Policy::default()
        };
        assert!(!tags.is_empty());
        let within = Policy {
            keep_within_weekly: Some(Duration::from_secs(3600)),
            ..Policy::default()
        };
        assert!(!within.is_empty());

        let snaps = list(&["2024-05-01T08:00:00Z"]);
        let now = at("2024-06-01T00:00:00Z");
        assert_eq!(
            zero.apply(&snaps, GroupBy::default(), &Utc, now),
            Err(EmptyPolicy)
        );
        assert_eq!(zero.to_string(), "keep nothing (empty policy)");
    }

    /// A policy that keeps nothing of a group (here: only tagged snapshots, and none is)
    /// is reported, so that the command can refuse it.
    #[test]
    fn a_plan_that_empties_a_group_says_so() {
        let mut snaps = list(&["2024-05-01T08:00:00Z", "2024-05-02T08:00:00Z"]);
        let mut other = snap(at("2024-05-01T08:00:00Z"));
        other.host = "other".into();
        other.tags = vec!["keep".into()];
        snaps.push((id(9), other));
        let policy = Policy {
            keep_tags: vec!["keep".into()],
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        assert_eq!(plan.groups.len(), 2);
        let emptied: Vec<_> = plan.emptied_groups().collect();
        assert_eq!(emptied.len(), 1);
        assert_eq!(emptied[0].key.host.as_deref(), Some("mopped"));
        assert_eq!(plan.to_remove(), [id(2), id(1)]);
        assert_eq!(plan.to_keep(), [id(9)]);
    }

    // --- tags and windows --------------------------------------------------------------------

    #[test]
    fn tagged_snapshots_are_kept() {
        let mut snaps = list(&[
            "2020-05-01T08:00:00Z",
            "2021-05-01T08:00:00Z",
            "2024-05-02T08:00:00Z",
        ]);
        snaps[0].1.tags = vec!["release".into(), "audit".into()];
        snaps[1].1.tags = vec!["other".into()];
        let policy = Policy {
            keep_last: Some(Count::N(1)),
            keep_tags: vec!["audit".into(), "release".into(), "audit".into()],
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        let g = one_group(&plan);
        assert_eq!(
            reasons(g, id(1)),
            [Reason::Tag("audit".into()), Reason::Tag("release".into())]
        );
        assert_eq!(reasons(g, id(1))[0].id(), "tag:audit");
        assert!(reasons(g, id(2)).is_empty());
        assert_eq!(reasons(g, id(3)), [Reason::Last]);
    }

    /// keep_within counts back from the latest snapshot, not from now: a host that stopped
    /// backing up months ago keeps the backups of its last 30 days. The boundary itself is out
    /// (strictly newer, as restic).
    #[test]
    fn keep_within_is_measured_from_the_latest_snapshot() {
        let snaps = list(&[
            "2024-01-15T12:00:00Z",
            "2024-01-21T12:00:00Z", // exactly 30 days before the latest: out
            "2024-01-21T12:00:01Z",
            "2024-02-01T12:00:00Z",
            "2024-02-20T12:00:00Z",
        ]);
        let policy = Policy {
            keep_within: Some(parse_duration("30d").expect("duration")),
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        let g = one_group(&plan);
        assert_eq!(
            g.kept().map(|d| d.id).collect::<Vec<_>>(),
            [id(5), id(4), id(3)]
        );
        assert!(g.kept().all(|d| d.reasons == [Reason::Within]));
        assert!(!g.removes_all());
    }

    #[test]
    fn keep_within_period_keeps_one_per_period_inside_the_window() {
        let snaps = list(&[
            "2024-05-01T08:00:00Z", // 1: outside the window
            "2024-05-03T08:00:00Z", // 2
            "2024-05-03T20:00:00Z", // 3: newest of May 3
            "2024-05-05T08:00:00Z", // 4
            "2024-05-05T20:00:00Z", // 5: newest of May 5, the latest
        ]);
        let policy = Policy {
            keep_within_daily: Some(Duration::from_secs(3 * 86400)),
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        let g = one_group(&plan);
        assert_eq!(plan.to_keep(), [id(5), id(3)]);
        assert_eq!(reasons(g, id(5)), [Reason::WithinPeriod(Period::Day)]);
        assert_eq!(reasons(g, id(5))[0].id(), "within_daily");

        // a window covering the whole history also keeps the oldest snapshot
        let policy = Policy {
            keep_within_daily: Some(Duration::from_secs(30 * 86400)),
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        assert_eq!(
            reasons(one_group(&plan), id(1)),
            [Reason::WithinPeriod(Period::Day)]
        );
        let snaps = list(&["2024-05-05T08:00:00Z", "2024-05-05T20:00:00Z"]);
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        assert_eq!(
            reasons(one_group(&plan), id(1)),
            [Reason::OldestWithinPeriod(Period::Day)]
        );
    }

    #[test]
    fn a_window_longer_than_time_covers_everything() {
        let snaps = list(&["1970-01-01T00:00:00Z", "2024-05-05T20:00:00Z"]);
        let policy = Policy {
            keep_within: Some(Duration::from_secs(u64::MAX)),
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        assert_eq!(plan.to_keep().len(), 2);
    }

    // --- snapshots dated in the future -------------------------------------------------------

    /// Future snapshots are kept, take no slot, and do not move keep_within's reference.
    #[test]
    fn future_snapshots_are_kept_but_never_counted() {
        let snaps = list(&[
            "2024-05-28T12:00:00Z", // 1
            "2024-05-30T12:00:00Z", // 2
            "2024-05-31T23:00:00Z", // 3: the latest real one
            "2024-06-02T12:00:00Z", // 4: future
            "2030-01-01T00:00:00Z", // 5: future
        ]);
        let now = "2024-06-01T00:00:00Z";
        let last2 = Policy {
            keep_last: Some(Count::N(2)),
            ..Policy::default()
        };
        let plan = run(&last2, &snaps, now);
        let g = one_group(&plan);
        assert_eq!(plan.to_keep(), [id(5), id(4), id(3), id(2)]);
        assert_eq!(reasons(g, id(5)), [Reason::Future]);
        assert_eq!(reasons(g, id(5))[0].id(), "future");
        assert_eq!(reasons(g, id(3)), [Reason::Last]);

        assert_eq!(run(&daily(1), &snaps, now).to_keep(), [id(5), id(4), id(3)]);

        let within = Policy {
            keep_within: Some(parse_duration("2d").expect("duration")),
            ..Policy::default()
        };
        // measured from 05-31 23:00, not from 2030
        assert_eq!(
            run(&within, &snaps, now).to_keep(),
            [id(5), id(4), id(3), id(2)]
        );
    }

    #[test]
    fn future_snapshots_do_not_hide_an_emptied_group() {
        let mut snaps = list(&["2024-05-28T12:00:00Z", "2030-01-01T00:00:00Z"]);
        snaps[1].1.tags = vec!["keep".into()];
        let policy = Policy {
            keep_tags: vec!["keep".into()],
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        let g = one_group(&plan);
        assert_eq!(
            reasons(g, id(2)),
            [Reason::Future, Reason::Tag("keep".into())]
        );
        assert!(g.removes_all(), "only a future snapshot survives");

        // a group of nothing but future snapshots loses nothing
        let snaps = list(&["2030-01-01T00:00:00Z"]);
        let plan = run(&daily(1), &snaps, "2024-06-01T00:00:00Z");
        assert!(!one_group(&plan).removes_all());
        assert_eq!(plan.to_keep(), [id(1)]);
    }

    // --- grouping ----------------------------------------------------------------------------

    #[test]
    fn groups_are_decided_independently() {
        let mk = |n: u64, host: &str, paths: &[&str], job: Option<&str>| {
            let mut s = snap(at("2024-05-01T00:00:00Z") + TimeDelta::hours(n as i64));
            s.host = host.into();
            s.paths = paths.iter().map(|p| p.to_string()).collect();
            s.job = job.map(str::to_string);
            (id(n), s)
        };
        let snaps = vec![
            mk(1, "a", &["/x", "/y"], Some("home")),
            mk(2, "a", &["/y", "/x", "/x"], Some("home")),
            mk(3, "a", &["/z"], None),
            mk(4, "b", &["/x", "/y"], Some("home")),
            mk(5, "b", &["/z"], Some("etc")),
        ];
        let policy = Policy {
            keep_last: Some(Count::N(1)),
            ..Policy::default()
        };
        let now = at("2024-06-01T00:00:00Z");
        let kept = |by: &str| {
            let by: GroupBy = by.parse().expect("group by");
            let plan = policy.apply(&snaps, by, &Utc, now).expect("plan");
            let mut k = plan.to_keep();
            k.sort();
            (plan.groups.len(), k)
        };
        // host and paths (the default): path order and repetition do not matter
        assert_eq!(kept("host,paths"), (4, vec![id(2), id(3), id(4), id(5)]));
        assert_eq!(kept("host"), (2, vec![id(3), id(5)]));
        assert_eq!(kept("paths"), (2, vec![id(4), id(5)]));
        assert_eq!(kept("job"), (3, vec![id(3), id(4), id(5)]));
        assert_eq!(kept("host,job"), (4, vec![id(2), id(3), id(4), id(5)]));
        assert_eq!(kept(""), (1, vec![id(5)]));
        assert_eq!(kept("none"), (1, vec![id(5)]));

        let plan = policy
            .apply(&snaps, GroupBy::default(), &Utc, now)
            .expect("plan");
        let key = &plan.groups[0].key;
        assert_eq!(key.host.as_deref(), Some("a"));
        assert_eq!(key.paths, Some(vec!["/x".to_string(), "/y".to_string()]));
        assert_eq!(key.to_string(), "host a, paths [/x, /y]");
        assert_eq!(
            serde_json::to_string(key).expect("json"),
            r#"{"host":"a","paths":["/x","/y"]}"#
        );
        let plan = policy
            .apply(&snaps, "job".parse().expect("group by"), &Utc, now)
            .expect("plan");
        assert_eq!(plan.groups[0].key.to_string(), "no job");
        assert_eq!(
            serde_json::to_string(&plan.groups[0].key).expect("json"),
            r#"{"job":null}"#
        );
        let plan = policy
            .apply(&snaps, GroupBy::NONE, &Utc, now)
            .expect("plan");
        assert_eq!(plan.groups[0].key.to_string(), "all snapshots");
    }

    #[test]
    fn group_by_parses_and_prints() {
        assert_eq!("".parse::<GroupBy>(), Ok(GroupBy::NONE));
        assert_eq!("host,paths".parse::<GroupBy>(), Ok(GroupBy::default()));
        assert_eq!(GroupBy::default().to_string(), "host,paths");
        assert_eq!(GroupBy::NONE.to_string(), "none");
        let all: GroupBy = " host, paths ,tags,job".parse().expect("group by");
        assert_eq!(all.to_string(), "host,paths,tags,job");
        assert!("hostname".parse::<GroupBy>().is_err());
    }

    // --- configuration -----------------------------------------------------------------------

    #[test]
    fn policy_reads_from_toml() {
        let p: Policy = toml::from_str(
            r#"
            keep_last = 3
            keep_hourly = 0
            keep_daily = 7
            keep_weekly = -1
            keep_monthly = "unlimited"
            keep_within = "30d"
            keep_within_daily = "2weeks"
            keep_tags = ["release"]
            "#,
        )
        .expect("policy");
        assert_eq!(p.keep_last, Some(Count::N(3)));
        assert_eq!(p.keep_hourly, Some(Count::N(0)));
        assert_eq!(p.keep_daily, Some(Count::N(7)));
        assert_eq!(p.keep_weekly, Some(Count::All));
        assert_eq!(p.keep_monthly, Some(Count::All));
        assert_eq!(p.keep_yearly, None);
        assert_eq!(p.keep_within, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(p.keep_within_daily, Some(Duration::from_secs(14 * 86400)));
        assert_eq!(p.keep_tags, ["release"]);
        assert_eq!(
            p.to_string(),
            "keep the 3 newest snapshots, 7 daily, all weekly, all monthly, \
             all within 30days of the newest, daily within 14days of the newest, \
             all tagged release"
        );
        // and back through JSON
        let json = serde_json::to_string(&p).expect("json");
        let back: Policy = serde_json::from_str(&json).expect("policy");
        assert_eq!(back, p);

        assert_eq!(
            toml::from_str::<Policy>("").expect("policy"),
            Policy::default()
        );
    }

    #[test]
    fn policy_rejects_mistakes() {
        let err = |text: &str| toml::from_str::<Policy>(text).expect_err(text).to_string();
        assert!(err("keep_dialy = 7").contains("unknown field"));
        assert!(err("keep_daily = -2").contains("not a count"));
        assert!(err("keep_daily = \"lots\"").contains("not a count"));
        assert!(err("keep_daily = 5000000000").contains("too large"));
        assert!(err("keep_within = \"soon\"").contains("not a duration"));
        assert!(err("keep_within = \"6m\"").contains("ambiguous"));
        assert!(err("keep_within = \"1y 6m\"").contains("ambiguous"));
        assert!(parse_duration("6months").is_ok());
        assert!(parse_duration("6M").is_ok());
        assert!(parse_duration("90min").is_ok());
    }

    #[test]
    fn counts_parse() {
        assert_eq!("7".parse(), Ok(Count::N(7)));
        assert_eq!("unlimited".parse(), Ok(Count::All));
        assert_eq!("-1".parse(), Ok(Count::All));
        assert!("-3".parse::<Count>().is_err());
        assert!("x".parse::<Count>().is_err());
        assert_eq!(Count::All.to_string(), "unlimited");
        assert_eq!(serde_json::to_string(&Count::N(4)).expect("json"), "4");
        assert_eq!(
            serde_json::to_string(&Count::All).expect("json"),
            "\"unlimited\""
        );
    }

    #[test]
    fn decisions_serialize_for_the_cli() {
        let snaps = list(&["2024-05-01T08:00:00Z", "2024-05-02T08:00:00Z"]);
        let policy = Policy {
            keep_last: Some(Count::N(1)),
            ..Policy::default()
        };
        let plan = run(&policy, &snaps, "2024-06-01T00:00:00Z");
        let json = serde_json::to_value(&plan).expect("json");
        let d = &json["groups"][0]["decisions"][0];
        assert_eq!(d["id"], id(2).to_hex());
        assert_eq!(d["time"], "2024-05-02T08:00:00Z");
        assert_eq!(d["keep"], true);
        assert_eq!(d["reasons"], serde_json::json!(["last"]));
        assert_eq!(json["groups"][0]["decisions"][1]["keep"], false);
    }

    // --- properties --------------------------------------------------------------------------

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const BASE: &str = "2020-01-01T00:00:00Z";

        /// Up to 40 snapshots on 2 hosts and 2 path sets, some tagged; times in hours after
        /// BASE, often crowded into two days (ties and shared periods), else over two years.
        fn snapshots() -> impl Strategy<Value = Vec<(SnapshotId, Snapshot)>> {
            let hours = prop_oneof![0i64..48, 0i64..(24 * 800)];
            prop::collection::vec((hours, 0u8..2, 0u8..2, any::<bool>()), 0..40).prop_map(|raw| {
                raw.into_iter()
                    .enumerate()
                    .map(|(i, (h, host, paths, tagged))| {
                        let mut s = snap(at(BASE) + TimeDelta::hours(h));
                        s.host = format!("h{host}");
                        s.paths = vec![format!("/p{paths}")];
                        if tagged {
                            s.tags = vec!["keep".into()];
                        }
                        (id(i as u64), s)
                    })
                    .collect()
            })
        }

        fn count() -> impl Strategy<Value = Option<Count>> {
            prop_oneof![
                2 => Just(None),
                3 => (0u32..5).prop_map(|n| Some(Count::N(n))),
                1 => Just(Some(Count::All)),
            ]
        }

        fn window() -> impl Strategy<Value = Option<Duration>> {
            prop_oneof![
                3 => Just(None),
                1 => (0u64..24 * 60).prop_map(|h| Some(Duration::from_secs(h * 3600))),
            ]
        }

        fn policy() -> impl Strategy<Value = Policy> {
            (
                prop::array::uniform6(count()),
                prop::array::uniform6(window()),
                any::<bool>(),
            )
                .prop_map(|(c, w, tags)| Policy {
                    keep_last: c[0],
                    keep_hourly: c[1],
                    keep_daily: c[2],
                    keep_weekly: c[3],
                    keep_monthly: c[4],
                    keep_yearly: c[5],
                    keep_within: w[0],
                    keep_within_hourly: w[1],
                    keep_within_daily: w[2],
                    keep_within_weekly: w[3],
                    keep_within_monthly: w[4],
                    keep_within_yearly: w[5],
                    keep_tags: if tags {
                        vec!["keep".into()]
                    } else {
                        Vec::new()
                    },
                })
        }

        fn group_by() -> impl Strategy<Value = GroupBy> {
            (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(host, paths, tags)| GroupBy {
                host,
                paths,
                tags,
                job: false,
            })
        }

        /// A zone from UTC-12 to UTC+14, in quarter hours.
        fn zone() -> impl Strategy<Value = FixedOffset> {
            (-48i32..=56).prop_map(|q| FixedOffset::east_opt(q * 900).expect("offset in range"))
        }

        /// Now: mostly after every snapshot, sometimes among them.
        fn now() -> impl Strategy<Value = DateTime<Utc>> {
            prop_oneof![
                Just(at("2030-01-01T00:00:00Z")),
                (0i64..(24 * 800)).prop_map(|h| at(BASE) + TimeDelta::hours(h)),
            ]
        }

        fn kept_set(plan: &Plan) -> HashSet<SnapshotId> {
            plan.to_keep().into_iter().collect()
        }

        /// The counted rules of a policy, by index: 0 is keep_last, 1..=5 the periods.
        fn counted(p: &mut Policy, i: usize) -> &mut Option<Count> {
            match i {
                0 => &mut p.keep_last,
                1 => &mut p.keep_hourly,
                2 => &mut p.keep_daily,
                3 => &mut p.keep_weekly,
                4 => &mut p.keep_monthly,
                _ => &mut p.keep_yearly,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Every snapshot is decided exactly once, in its group, newest first; kept
            /// exactly when there is a reason; future exactly when dated after now.
            #[test]
            fn every_snapshot_is_decided_once(
                snaps in snapshots(), policy in policy(), by in group_by(), tz in zone(),
                now in now(),
            ) {
                prop_assume!(!policy.is_empty());
                let plan = policy.apply(&snaps, by, &tz, now).expect("non-empty");
                let mut decided: Vec<SnapshotId> =
                    plan.groups.iter().flat_map(|g| g.decisions.iter().map(|d| d.id)).collect();
                decided.sort();
                let mut given: Vec<SnapshotId> = snaps.iter().map(|(id, _)| *id).collect();
                given.sort();
                prop_assert_eq!(decided, given);
                let by_id: BTreeMap<SnapshotId, &Snapshot> =
                    snaps.iter().map(|(id, s)| (*id, s)).collect();
                for g in &plan.groups {
                    prop_assert!(!g.decisions.is_empty());
                    for d in &g.decisions {
                        let s = by_id[&d.id];
                        prop_assert_eq!(&by.key(s), &g.key);
                        prop_assert_eq!(d.time, s.time);
                        prop_assert_eq!(d.keep, !d.reasons.is_empty());
                        prop_assert_eq!(d.is_future(), s.time > now);
                    }
                    for w in g.decisions.windows(2) {
                        prop_assert!((w[0].time, w[0].id) > (w[1].time, w[1].id));
                    }
                }
            }

            /// keep_last alone keeps min(N, group size) of each group's non-future snapshots,
            /// and every future one.
            #[test]
            fn keep_last_keeps_n(snaps in snapshots(), n in 1u32..10, now in now()) {
                let policy = Policy { keep_last: Some(Count::N(n)), ..Policy::default() };
                let plan = policy.apply(&snaps, GroupBy::default(), &Utc, now).expect("plan");
                for g in &plan.groups {
                    let future = g.decisions.iter().filter(|d| d.time > now).count();
                    let real = g.decisions.len() - future;
                    prop_assert_eq!(g.kept().count(), real.min(n as usize) + future);
                }
            }

            /// The newest non-future snapshot of every group is kept when any counted rule
            /// keeps at least one.
            #[test]
            fn the_newest_real_snapshot_is_kept(
                snaps in snapshots(), policy in policy(), by in group_by(), tz in zone(),
                now in now(),
            ) {
                let mut p = policy;
                let active = (0..6).any(|i| counted(&mut p, i).is_some_and(Count::is_active));
                prop_assume!(active);
                let plan = p.apply(&snaps, by, &tz, now).expect("non-empty");
                for g in &plan.groups {
                    if let Some(newest) = g.decisions.iter().find(|d| d.time <= now) {
                        prop_assert!(newest.keep, "{:?}", g);
                    }
                    prop_assert!(!g.removes_all());
                }
            }

            /// The order of the input does not matter.
            #[test]
            fn input_order_does_not_matter(
                (snaps, shuffled) in snapshots().prop_flat_map(|s| {
                    let shuffled = Just(s.clone()).prop_shuffle();
                    (Just(s), shuffled)
                }),
                policy in policy(), by in group_by(), tz in zone(), now in now(),
            ) {
                prop_assume!(!policy.is_empty());
                let a = policy.apply(&snaps, by, &tz, now).expect("plan");
                let b = policy.apply(&shuffled, by, &tz, now).expect("plan");
                prop_assert_eq!(a, b);
            }

            /// Raising any count (by one, or to unlimited) never removes a kept snapshot.
            #[test]
            fn raising_a_count_keeps_at_least_as_much(
                snaps in snapshots(), policy in policy(), rule in 0usize..6, to_all in any::<bool>(),
                by in group_by(), tz in zone(), now in now(),
            ) {
                prop_assume!(!policy.is_empty());
                let mut more = policy.clone();
                let slot = counted(&mut more, rule);
                *slot = match (*slot, to_all) {
                    (_, true) | (Some(Count::All), _) => Some(Count::All),
                    (Some(Count::N(n)), false) => Some(Count::N(n + 1)),
                    (None, false) => Some(Count::N(1)),
                };
                let before = kept_set(&policy.apply(&snaps, by, &tz, now).expect("plan"));
                let after = kept_set(&more.apply(&snaps, by, &tz, now).expect("plan"));
                prop_assert!(before.is_subset(&after), "lost {:?}", before.difference(&after));
            }

            /// keep_within alone keeps exactly the future snapshots and those strictly newer
            /// than the group's latest non-future snapshot minus the duration.
            #[test]
            fn keep_within_keeps_the_window(
                snaps in snapshots(), hours in 1u64..2000, now in now(),
            ) {
                let window = Duration::from_secs(hours * 3600);
                let policy = Policy { keep_within: Some(window), ..Policy::default() };
                let plan = policy.apply(&snaps, GroupBy::NONE, &Utc, now).expect("plan");
                let latest = snaps.iter().map(|(_, s)| s.time).filter(|t| *t <= now).max();
                for d in plan.groups.iter().flat_map(|g| g.decisions.iter()) {
                    let inside = latest.is_some_and(|l| {
                        d.time <= now && d.time > l - TimeDelta::hours(hours as i64)
                    });
                    prop_assert_eq!(d.keep, inside || d.time > now);
                }
            }
        }
    }
}

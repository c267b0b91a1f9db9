//! Cron schedules with crontab(5) meaning.
//!
//! Built on `croner`: standard five fields (minute hour day-of-month month day-of-week) with
//! POSIX weekdays (0 and 7 are Sunday, `1-5` is Monday to Friday, names allowed), or six with a
//! leading seconds field; `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`; day-of-month
//! and day-of-week combined with OR when both are restricted, as crontab does. Times are
//! evaluated in the job's time zone (default: the system's), through daylight-saving changes:
//! a time that occurs twice runs once, a time skipped by the spring change runs once that day
//! (see the tests).

use chrono::{DateTime, Local, SubsecRound, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    text: String,
    tz: Option<chrono_tz::Tz>,
}

impl Schedule {
    /// Parses a cron line, evaluated in `tz` (the system's zone when `None`).
    pub fn parse(line: &str, tz: Option<chrono_tz::Tz>) -> Result<Self, String> {
        let text = line.trim();
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "{text:?} has {fields} fields: give five (minute hour day month weekday), or six with a leading seconds field"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(false)
            .alternative_weekdays(false)
            .build();
        // croner takes an empty list item ("0 , * * *") as a field that matches nothing.
        if text
            .split_whitespace()
            .any(|f| f.split(',').any(str::is_empty))
        {
            return Err(format!(
                "{text:?} is not a valid cron line: a field has an empty list item"
            ));
        }
        let cron = parser
            .parse(text)
            .map_err(|e| format!("{text:?} is not a valid cron line: {e}"))?;
        let s = Schedule {
            cron,
            text: text.to_string(),
            tz,
        };
        // A line that never fires ("0 0 30 2 *") would leave the job unscheduled without a
        // word, and cost croner a search to the year 5000 on every evaluation: refuse it once.
        if s.next_after(Utc::now()).is_none() {
            return Err(format!(
                "{text:?} never occurs (no such date): check the day and month fields"
            ));
        }
        Ok(s)
    }

    /// The line as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn next_in<Z: TimeZone>(&self, after: DateTime<Utc>, zone: &Z) -> Option<DateTime<Utc>> {
        // Cron has whole seconds: search from the second `after` falls in (croner mishandles
        // fractional starts).
        let local = after.trunc_subsecs(0).with_timezone(zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.tz {
            Some(tz) => self.next_in(after, &tz),
            None => self.next_in(after, &Local),
        }
    }

    /// Occurrences in `(from, to]`, at most `limit` of them.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while out.len() < limit {
            match self.next_after(t) {
                Some(n) if n <= to => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_line_that_never_fires_is_refused() {
        // Both parsed, then made every evaluation search to the year 5000 (seconds of CPU in
        // the daemon's loop) and the job was never run, without a word.
        let empty = Schedule::parse("0 , * * * *", Some(chrono_tz::UTC)).expect_err("empty");
        assert!(empty.contains("empty list item"), "{empty}");
        let never = Schedule::parse("0 0 30 2 *", Some(chrono_tz::UTC)).expect_err("never");
        assert!(never.contains("never occurs"), "{never}");
        assert!(Schedule::parse("0 0 29 2 *", Some(chrono_tz::UTC)).is_ok());
    }

    #[test]
    fn weekdays_mean_what_crontab_means() {
        let s = Schedule::parse("0 3 * * 1-5", Some(chrono_tz::UTC)).expect("parse");
        let days: Vec<Weekday> = s
            .between(utc("2026-11-22T00:00:00Z"), utc("2026-11-29T23:59:59Z"), 20)
            .iter()
            .map(|t| t.weekday())
            .collect();
        assert_eq!(
            days,
            vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri
            ]
        );
        let sunday = Schedule::parse("30 3 * * sun", Some(chrono_tz::UTC)).expect("parse");
        let n = sunday
            .next_after(utc("2026-11-26T00:00:00Z"))
            .expect("next");
        assert_eq!((n.weekday(), n.hour(), n.minute()), (Weekday::Sun, 3, 30));
        let zero = Schedule::parse("0 0 * * 0", Some(chrono_tz::UTC)).expect("parse");
        let seven = Schedule::parse("0 0 * * 7", Some(chrono_tz::UTC)).expect("parse");
        let t = utc("2026-11-26T00:00:00Z");
        assert_eq!(zero.next_after(t), seven.next_after(t));
        assert_eq!(zero.next_after(t).expect("next").weekday(), Weekday::Sun);
    }

    #[test]
    fn fractional_start_times_find_the_next_second() {
        let s = Schedule::parse("*/2 * * * * *", Some(chrono_tz::UTC)).expect("parse");
        let t = utc("2026-11-26T12:18:38.935Z");
        assert_eq!(s.next_after(t), Some(utc("2026-11-26T12:18:40Z")));
        assert_eq!(s.between(t, utc("2026-11-26T12:18:45Z"), 10).len(), 3);
    }

    #[test]
    fn nicknames_seconds_and_bad_lines() {
        let h = Schedule::parse("@hourly", Some(chrono_tz::UTC)).expect("parse");
        assert_eq!(
            h.next_after(utc("2026-11-26T10:15:00Z")),
            Some(utc("2026-11-26T11:00:00Z"))
        );
        let s = Schedule::parse("*/10 * * * * *", Some(chrono_tz::UTC)).expect("parse");
        assert_eq!(
            s.next_after(utc("2026-11-26T10:15:01Z")),
            Some(utc("2026-11-26T10:15:10Z"))
        );
        for bad in [
            "61 * * * *",
            "* * *",
            "0 0 0 0 0 0 0",
            "every day",
            "0 25 * * *",
        ] {
            assert!(Schedule::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn autumn_dst_change_runs_a_repeated_time_once() {
        // Europe/Berlin, 2026-10-25: 02:00-03:00 happens twice.
        let s = Schedule::parse("30 2 * * *", Some(chrono_tz::Europe::Berlin)).expect("parse");
        let runs = s.between(utc("2026-10-24T12:00:00Z"), utc("2026-10-26T12:00:00Z"), 10);
        let days: Vec<u32> = runs
            .iter()
            .map(|t| t.with_timezone(&chrono_tz::Europe::Berlin).day())
            .collect();
        assert_eq!(days, vec![25, 26], "{runs:?}");
    }

    #[test]
    fn spring_dst_change_does_not_skip_the_day() {
        // Europe/Berlin, 2026-03-29: 02:00-03:00 does not exist.
        let s = Schedule::parse("30 2 * * *", Some(chrono_tz::Europe::Berlin)).expect("parse");
        let runs = s.between(utc("2026-03-28T12:00:00Z"), utc("2026-03-30T12:00:00Z"), 10);
        let days: Vec<u32> = runs
            .iter()
            .map(|t| t.with_timezone(&chrono_tz::Europe::Berlin).day())
            .collect();
        assert_eq!(days, vec![29, 30], "{runs:?}");
    }
}

//! Cron schedules in a time zone (seed 003 §2 "Cron Registry"): the next
//! fire time, and which fires are due when the scheduler looks at `now`
//! having last looked at `last` (the watermark). Pure functions of their
//! inputs, so DST and missed runs are tested without waiting.
//!
//! DST: a time that does not exist (the spring-forward gap) fires at the
//! first valid time after it; a time that happens twice (fall back) fires
//! once, at its first occurrence.

use crate::manifest::MissedRuns;
use chrono::{DateTime, Utc};
use std::str::FromStr;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
    expr: String,
}

/// What the scheduler should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Scheduled times to fire now (at most one after downtime).
    pub fire: Vec<DateTime<Utc>>,
    /// Scheduled times skipped (missed while down, policy `skip`).
    pub skipped: usize,
    /// The new watermark.
    pub watermark: DateTime<Utc>,
}

/// Why a schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not five fields.
    #[error("invalid schedule `{expr}`: {fields} fields, expected 5 (minute hour day-of-month month day-of-week)")]
    Fields {
        /// The expression.
        expr: String,
        /// How many fields it has.
        fields: usize,
    },
    /// A field is out of range or malformed.
    #[error("invalid schedule `{expr}`: {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// What the cron parser said.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone `{0}`; expected an IANA name like `Europe/Paris`")]
    TimeZone(String),
}

impl CronSchedule {
    /// Parses a 5-field expression (minute hour day-of-month month
    /// day-of-week) in an IANA time zone (default UTC).
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Self, ScheduleError> {
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::Fields { expr: expr.to_string(), fields });
        }
        let cron = croner::Cron::new(expr)
            .parse()
            .map_err(|e| ScheduleError::Cron { expr: expr.to_string(), reason: e.to_string() })?;
        let tz = match timezone {
            None => chrono_tz::UTC,
            Some(name) => chrono_tz::Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(name.to_string()))?,
        };
        Ok(Self { cron, tz, expr: expr.to_string() })
    }

    /// The expression.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron.find_next_occurrence(&local, false).ok().map(|n| n.with_timezone(&Utc))
    }

    /// The fires due at `now` when the schedule was last looked at up to
    /// `last`. `grace` is how late a fire may be and still count as on time
    /// (policy `skip` drops later ones).
    pub fn due(&self, last: DateTime<Utc>, now: DateTime<Utc>, missed: MissedRuns, grace: chrono::Duration) -> Due {
        let mut occurrences = Vec::new();
        let mut t = last;
        // Bounded: a schedule every minute for a week of downtime is ~10k.
        while occurrences.len() < 100_000 {
            match self.next_after(t) {
                Some(n) if n <= now => {
                    occurrences.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        let Some(latest) = occurrences.last().copied() else {
            return Due { fire: vec![], skipped: 0, watermark: last.max(now.min(last)) };
        };
        let on_time = now - latest <= grace;
        match (missed, on_time) {
            (_, true) => Due { fire: vec![latest], skipped: occurrences.len() - 1, watermark: latest },
            (MissedRuns::RunOnce, false) => {
                Due { fire: vec![latest], skipped: occurrences.len() - 1, watermark: latest }
            }
            (MissedRuns::Skip, false) => Due { fire: vec![], skipped: occurrences.len(), watermark: latest },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn weekday_mornings_in_los_angeles() {
        // The seed's example: "0 8 * * 1-5", America/Los_Angeles.
        let s = CronSchedule::parse("0 8 * * 1-5", Some("America/Los_Angeles")).unwrap();
        // Friday 2026-03-06 at 16:00 UTC (08:00 PST) → the next is Monday 09 March, 08:00 PDT (DST began on Sunday 8 March).
        let next = s.next_after(utc("2026-03-06T16:00:00Z")).unwrap();
        assert_eq!(next, utc("2026-03-09T15:00:00Z"), "08:00 PDT is 15:00 UTC");
        let prev_week = s.next_after(utc("2026-03-05T16:00:00Z")).unwrap();
        assert_eq!(prev_week, utc("2026-03-06T16:00:00Z"), "08:00 PST is 16:00 UTC");
    }

    #[test]
    fn spring_forward_gap_and_fall_back_overlap_in_berlin() {
        // 02:30 does not exist on 2026-03-29 in Europe/Berlin (02:00 → 03:00).
        let s = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let fire = s.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(fire, utc("2026-03-29T01:00:00Z"), "fires once, at 03:00 CEST, the first valid time");
        let after = s.next_after(fire).unwrap();
        assert_eq!(after, utc("2026-03-30T00:30:00Z"), "then 02:30 CEST as usual");
        // 02:30 happens twice on 2026-10-25 (03:00 CEST → 02:00 CET): fire once.
        let first = s.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-10-25T00:30:00Z"), "the first 02:30 (CEST)");
        let second = s.next_after(first).unwrap();
        assert_eq!(second, utc("2026-10-26T01:30:00Z"), "not again at 02:30 CET the same night");
    }

    #[test]
    fn missed_runs_run_once_or_are_skipped() {
        let s = CronSchedule::parse("0 * * * *", None).unwrap();
        let grace = chrono::Duration::seconds(60);
        let last = utc("2026-01-01T00:00:30Z");
        // On time: one fire.
        let d = s.due(last, utc("2026-01-01T01:00:05Z"), MissedRuns::Skip, grace);
        assert_eq!(d.fire, vec![utc("2026-01-01T01:00:00Z")]);
        // Down from 00:30 to 05:20: 01..05 were missed.
        let now = utc("2026-01-01T05:20:00Z");
        let d = s.due(last, now, MissedRuns::RunOnce, grace);
        assert_eq!((d.fire, d.skipped), (vec![utc("2026-01-01T05:00:00Z")], 4), "runs once, for the latest");
        let d = s.due(last, now, MissedRuns::Skip, grace);
        assert_eq!((d.fire.len(), d.skipped), (0, 5), "skips them all");
        assert_eq!(d.watermark, utc("2026-01-01T05:00:00Z"));
        // Looking again changes nothing: no double fire.
        let again = s.due(d.watermark, now, MissedRuns::RunOnce, grace);
        assert!(again.fire.is_empty());
    }

    #[test]
    fn bad_schedules_and_zones_are_explained() {
        assert!(CronSchedule::parse("* * * *", None).unwrap_err().to_string().contains("expected 5"));
        assert!(CronSchedule::parse("61 * * * *", None).unwrap_err().to_string().starts_with("invalid schedule"));
        let err = CronSchedule::parse("0 8 * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(err, ScheduleError::TimeZone("Mars/Olympus".into()));
        assert!(err.to_string().contains("unknown time zone"));
    }
}

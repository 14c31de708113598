//! Budgets and the reservations that keep them: before a call is forwarded
//! its worst case (the estimated input plus the output cap) is reserved at
//! every level at once, or the call is refused; after the call the
//! reservation is replaced by the actual usage. Concurrent calls therefore
//! cannot oversubscribe a budget, and a budget is overrun only by the
//! difference between one call's estimate and its actual input.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::rate::{Pace, RateScope, Rates, Windows};

/// A budget period, reset at its UTC boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Resets at 00:00 UTC.
    Day,
    /// Resets at 00:00 UTC on the first of the month.
    Month,
}

impl Period {
    /// When the period containing `t` started.
    pub fn start(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = Utc.with_ymd_and_hms(t.year(), t.month(), t.day(), 0, 0, 0).single().unwrap_or(t);
        match self {
            Period::Day => day,
            Period::Month => Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).single().unwrap_or(day),
        }
    }

    /// When the period containing `t` ends.
    pub fn end(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.start(t);
        match self {
            Period::Day => start + chrono::Duration::days(1),
            Period::Month => {
                let (y, m) =
                    if start.month() == 12 { (start.year() + 1, 1) } else { (start.year(), start.month() + 1) };
                Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(start + chrono::Duration::days(31))
            }
        }
    }
}

/// Who a budget belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "level", content = "name", rename_all = "lowercase")]
pub enum Level {
    /// The whole organisation.
    Org,
    /// One chapter.
    Chapter(String),
    /// One AgentSpec.
    Agent(String),
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::Org => f.write_str("org"),
            Level::Chapter(c) => write!(f, "chapter {c}"),
            Level::Agent(a) => write!(f, "AgentSpec {a}"),
        }
    }
}

/// One budget: at most `tokens` per `period` for `level`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limit {
    /// Whose.
    pub level: Level,
    /// Per.
    pub period: Period,
    /// Tokens (input + output).
    pub tokens: u64,
}

/// Every budget in force, and the per-call output cap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budgets {
    /// The limits.
    pub limits: Vec<Limit>,
    /// Output tokens one call may produce (`max_tokens` is clamped to it), per AgentSpec.
    pub per_invocation: HashMap<String, u64>,
    /// Default per-call output cap.
    pub default_cap: u64,
    /// Rate limits.
    pub rates: Rates,
}

/// What a call will be charged to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// Job.
    pub job: String,
    /// Attempt.
    pub attempt: u32,
    /// AgentSpec.
    pub agent_spec: String,
    /// Chapter (`""` when none).
    pub chapter: String,
}

impl Charge {
    fn levels(&self) -> [Level; 3] {
        [Level::Org, Level::Chapter(self.chapter.clone()), Level::Agent(self.agent_spec.clone())]
    }

    /// The agent instance: `job#attempt`.
    pub fn instance(&self) -> String {
        format!("{}#{}", self.job, self.attempt)
    }

    fn rate_scopes(&self) -> Vec<RateScope> {
        let mut s = vec![RateScope::Instance(self.instance()), RateScope::Agent(self.agent_spec.clone())];
        if !self.chapter.is_empty() {
            s.push(RateScope::Chapter(self.chapter.clone()));
        }
        s
    }
}

/// A call that may go ahead, holding its worst case against every budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    id: u64,
    /// The charge.
    pub charge: Charge,
    /// Tokens held (estimated input + output cap).
    pub tokens: u64,
    /// The output cap the call must be given.
    pub cap: u64,
}

/// Why a call may not go ahead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token budget exhausted: {level} has {remaining} of {limit} tokens left this {period:?} and the call may use {needed}")]
pub struct Refusal {
    /// The level that would overrun.
    pub level: Level,
    /// Its period.
    pub period: Period,
    /// The budget.
    pub limit: u64,
    /// Left (after other calls' reservations).
    pub remaining: u64,
    /// What the call could use.
    pub needed: u64,
}

#[derive(Debug, Default)]
struct State {
    budgets: Budgets,
    /// Usage recorded per (level, period), with the period's start.
    used: HashMap<(Level, Period), (DateTime<Utc>, u64)>,
    /// Tokens reserved by calls in flight, per level.
    reserved: HashMap<Level, u64>,
    /// Recent usage for rate limits.
    windows: Windows,
    next_id: u64,
}

/// The budget keeper.
#[derive(Debug, Default)]
pub struct Governor {
    state: Mutex<State>,
}

impl Governor {
    /// A governor with `budgets`.
    pub fn new(budgets: Budgets) -> Self {
        Self { state: Mutex::new(State { budgets, ..Default::default() }) }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Replaces the budgets (manifests changed); usage is kept.
    pub fn configure(&self, budgets: Budgets) {
        self.lock().budgets = budgets;
    }

    /// The budgets in force.
    pub fn budgets(&self) -> Budgets {
        self.lock().budgets.clone()
    }

    /// Adds usage already in the ledger (at start-up).
    pub fn load(&self, level: Level, period: Period, start: DateTime<Utc>, tokens: u64) {
        self.lock().used.insert((level, period), (start, tokens));
    }

    fn used_now(state: &State, level: &Level, period: Period, now: DateTime<Utc>) -> u64 {
        match state.used.get(&(level.clone(), period)) {
            Some((start, n)) if *start == period.start(now) => *n,
            _ => 0,
        }
    }

    /// Used tokens of `level` in the current `period`.
    pub fn used(&self, level: &Level, period: Period, now: DateTime<Utc>) -> u64 {
        Self::used_now(&self.lock(), level, period, now)
    }

    /// The output cap of a call that asks for `requested` output tokens.
    pub fn cap(&self, agent_spec: &str, requested: Option<u64>) -> u64 {
        let s = self.lock();
        let limit = s.budgets.per_invocation.get(agent_spec).copied().unwrap_or(s.budgets.default_cap).max(1);
        requested.map_or(limit, |r| r.clamp(1, limit))
    }

    /// The org's reserve pool (seed 003 §4): the part of the org's monthly
    /// budget not allocated to chapters, minus what has been drawn from it
    /// this month — usage beyond chapters' allocations, and all usage of
    /// chapters without one. Zero without an org monthly budget.
    fn reserve_pool_left(s: &State, now: DateTime<Utc>) -> u64 {
        let month = |level: &Level| s.budgets.limits.iter().find(|l| &l.level == level && l.period == Period::Month);
        let Some(org) = month(&Level::Org) else { return 0 };
        let chapters: Vec<&Limit> = s
            .budgets
            .limits
            .iter()
            .filter(|l| matches!(l.level, Level::Chapter(_)) && l.period == Period::Month)
            .collect();
        let allocated: u64 = chapters.iter().map(|l| l.tokens).sum();
        let pool = org.tokens.saturating_sub(allocated);
        let spent =
            |level: &Level| Self::used_now(s, level, Period::Month, now) + s.reserved.get(level).copied().unwrap_or(0);
        let within_allocations: u64 = chapters.iter().map(|l| spent(&l.level).min(l.tokens)).sum();
        let drawn = spent(&Level::Org).saturating_sub(within_allocations);
        pool.saturating_sub(drawn)
    }

    /// The reserve pool's size and what is left of it this month (`None` without an org monthly budget).
    pub fn reserve_pool(&self, now: DateTime<Utc>) -> Option<(u64, u64)> {
        let s = self.lock();
        let org = s.budgets.limits.iter().find(|l| l.level == Level::Org && l.period == Period::Month)?;
        let allocated: u64 = s
            .budgets
            .limits
            .iter()
            .filter(|l| matches!(l.level, Level::Chapter(_)) && l.period == Period::Month)
            .map(|l| l.tokens)
            .sum();
        Some((org.tokens.saturating_sub(allocated), Self::reserve_pool_left(&s, now)))
    }

    /// Reserves a call's worst case (`input_estimate` + `cap`) at every level,
    /// or refuses it if any budget would be overrun.
    pub fn reserve(
        &self,
        charge: Charge,
        input_estimate: u64,
        cap: u64,
        now: DateTime<Utc>,
    ) -> Result<Reservation, Refusal> {
        let mut s = self.lock();
        let needed = input_estimate.saturating_add(cap);
        for limit in &s.budgets.limits {
            if !charge.levels().contains(&limit.level) {
                continue;
            }
            let used = Self::used_now(&s, &limit.level, limit.period, now);
            let held = s.reserved.get(&limit.level).copied().unwrap_or(0);
            let mut remaining = limit.tokens.saturating_sub(used.saturating_add(held));
            if needed > remaining && matches!(limit.level, Level::Chapter(_)) && limit.period == Period::Month {
                // A chapter past its allocation bursts into the org's reserve pool.
                remaining = remaining.saturating_add(Self::reserve_pool_left(&s, now));
            }
            if needed > remaining {
                return Err(Refusal {
                    level: limit.level.clone(),
                    period: limit.period,
                    limit: limit.tokens,
                    remaining,
                    needed,
                });
            }
        }
        for level in charge.levels() {
            let held = s.reserved.entry(level).or_default();
            *held = held.saturating_add(needed);
        }
        s.next_id += 1;
        Ok(Reservation { id: s.next_id, charge, tokens: needed, cap })
    }

    /// Replaces a reservation by the call's actual usage (0 if it failed).
    pub fn commit(&self, r: &Reservation, actual: u64, now: DateTime<Utc>) {
        let mut s = self.lock();
        s.windows.record(r.charge.rate_scopes(), actual, now);
        for level in r.charge.levels() {
            if let Some(held) = s.reserved.get_mut(&level) {
                *held = held.saturating_sub(r.tokens);
            }
            for period in [Period::Day, Period::Month] {
                let start = period.start(now);
                let e = s.used.entry((level.clone(), period)).or_insert((start, 0));
                if e.0 != start {
                    *e = (start, 0);
                }
                e.1 += actual;
            }
        }
        let _ = r.id;
    }

    /// Adds a call already in the ledger to the rate windows (at start-up).
    pub fn remember_call(&self, charge: &Charge, tokens: u64, at: DateTime<Utc>) {
        self.lock().windows.record(charge.rate_scopes(), tokens, at);
    }

    /// Whether a call of `needed` tokens must wait for a rate limit, and
    /// for which (the longest wait when several apply).
    pub fn pace(&self, charge: &Charge, needed: u64, now: DateTime<Utc>) -> Option<Pace> {
        let s = self.lock();
        s.budgets
            .rates
            .limits_for(&charge.instance(), &charge.agent_spec, &charge.chapter)
            .iter()
            .filter_map(|l| s.windows.wait(l, needed, now))
            .max_by_key(|p| p.wait)
    }

    /// Tokens `scope` used in the `window` before `now`.
    pub fn rate_used(&self, scope: &RateScope, window: chrono::Duration, now: DateTime<Utc>) -> u64 {
        self.lock().windows.used(scope, window, now)
    }

    /// The share of the tightest budget of `level` used, in percent.
    pub fn percent_used(&self, level: &Level, now: DateTime<Utc>) -> Option<f64> {
        self.tightest(level, now).map(|(p, _)| p)
    }

    /// The tightest budget of `level`: its share used, in percent, and the
    /// start of its current period.
    pub fn tightest(&self, level: &Level, now: DateTime<Utc>) -> Option<(f64, DateTime<Utc>)> {
        let s = self.lock();
        s.budgets
            .limits
            .iter()
            .filter(|l| &l.level == level && l.tokens > 0)
            .map(|l| (Self::used_now(&s, level, l.period, now) as f64 * 100.0 / l.tokens as f64, l.period.start(now)))
            .fold(None, |acc: Option<(f64, DateTime<Utc>)>, p| Some(acc.map_or(p, |a| if p.0 > a.0 { p } else { a })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn charge(chapter: &str, agent: &str) -> Charge {
        Charge { job: "j".into(), attempt: 1, agent_spec: agent.into(), chapter: chapter.into() }
    }

    fn budgets() -> Budgets {
        Budgets {
            limits: vec![
                Limit { level: Level::Org, period: Period::Month, tokens: 10_000 },
                Limit { level: Level::Chapter("pay".into()), period: Period::Month, tokens: 3_000 },
                Limit { level: Level::Agent("qm".into()), period: Period::Day, tokens: 1_000 },
            ],
            per_invocation: HashMap::from([("qm".into(), 400)]),
            default_cap: 4096,
            ..Default::default()
        }
    }

    #[test]
    fn a_chapter_past_its_allocation_bursts_into_the_reserve_pool() {
        // Org 10 000 a month; chapters pay 3 000 and search 2 000: a pool of 5 000.
        let g = Governor::new(Budgets {
            limits: vec![
                Limit { level: Level::Org, period: Period::Month, tokens: 10_000 },
                Limit { level: Level::Chapter("pay".into()), period: Period::Month, tokens: 3_000 },
                Limit { level: Level::Chapter("search".into()), period: Period::Month, tokens: 2_000 },
            ],
            default_cap: 4096,
            ..Default::default()
        });
        let now = Utc.with_ymd_and_hms(2026, 1, 24, 9, 0, 0).unwrap();
        let spend = |chapter: &str, n: u64| {
            let r = g.reserve(charge(chapter, "a"), 0, n, now)?;
            g.commit(&r, n, now);
            Ok::<(), Refusal>(())
        };
        assert_eq!(g.reserve_pool(now), Some((5_000, 5_000)));
        spend("pay", 2_500).unwrap(); // within its allocation
        assert_eq!(g.reserve_pool(now), Some((5_000, 5_000)));
        spend("pay", 1_500).unwrap(); // 500 within, 1 000 from the pool
        assert_eq!(g.reserve_pool(now), Some((5_000, 4_000)));
        spend("", 1_000).unwrap(); // work of no chapter draws on the pool too
        assert_eq!(g.reserve_pool(now), Some((5_000, 3_000)));
        let refused = spend("pay", 3_500).unwrap_err();
        assert_eq!((refused.level, refused.remaining), (Level::Chapter("pay".into()), 3_000));
        spend("pay", 3_000).unwrap();
        assert_eq!(g.reserve_pool(now), Some((5_000, 0)));
        // search still has its own allocation, and nothing more.
        spend("search", 2_000).unwrap();
        assert!(spend("search", 1).is_err());
        assert_eq!(g.used(&Level::Org, Period::Month, now), 10_000, "the org budget is never overrun");
        // Without an org budget there is no pool: chapter budgets are hard caps.
        let hard = Governor::new(Budgets {
            limits: vec![Limit { level: Level::Chapter("pay".into()), period: Period::Month, tokens: 100 }],
            default_cap: 4096,
            ..Default::default()
        });
        assert!(hard.reserve(charge("pay", "a"), 0, 101, now).is_err());
    }

    #[test]
    fn committed_usage_paces_the_next_call() {
        let mut b = budgets();
        b.rates.instance_per_minute = Some(500);
        let g = Governor::new(b);
        let now = Utc.with_ymd_and_hms(2026, 1, 24, 9, 0, 0).unwrap();
        let r = g.reserve(charge("pay", "qm"), 10, 100, now).unwrap();
        g.commit(&r, 450, now);
        assert_eq!(g.pace(&charge("pay", "qm"), 40, now), None);
        let pace = g.pace(&charge("pay", "qm"), 60, now + chrono::Duration::seconds(15)).unwrap();
        assert_eq!(pace.wait, chrono::Duration::seconds(45));
        let other = Charge { attempt: 2, ..charge("pay", "qm") };
        assert_eq!(g.pace(&other, 60, now), None, "a new attempt is a new instance");
        assert_eq!(g.pace(&charge("pay", "qm"), 60, now + chrono::Duration::seconds(60)), None);
    }

    #[test]
    fn periods_reset_at_utc_boundaries() {
        let now = t("2026-02-14T15:30:00Z");
        assert_eq!(Period::Day.start(now), t("2026-02-14T00:00:00Z"));
        assert_eq!(Period::Month.start(now), t("2026-02-01T00:00:00Z"));
        assert_eq!(Period::Month.end(t("2026-12-31T23:00:00Z")), t("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn caps_clamp_requested_output() {
        let g = Governor::new(budgets());
        assert_eq!(g.cap("qm", Some(10_000)), 400);
        assert_eq!(g.cap("qm", Some(100)), 100);
        assert_eq!(g.cap("other", None), 4096);
    }

    #[test]
    fn reservations_hold_every_level_and_refuse_overruns() {
        let g = Governor::new(budgets());
        let now = t("2026-02-14T15:30:00Z");
        let a = g.reserve(charge("pay", "qm"), 100, 400, now).unwrap();
        let b = g.reserve(charge("pay", "qm"), 100, 400, now).unwrap();
        // 1000 for qm per day: 2 × 500 held; a third is refused before it is sent.
        let err = g.reserve(charge("pay", "qm"), 100, 400, now).unwrap_err();
        assert_eq!((err.level.clone(), err.remaining, err.needed), (Level::Agent("qm".into()), 0, 500));
        assert!(err.to_string().starts_with("token budget exhausted: AgentSpec qm has 0 of 1000 tokens left"));
        g.commit(&a, 300, now);
        g.commit(&b, 0, now); // failed call: nothing charged
        assert_eq!(g.used(&Level::Agent("qm".into()), Period::Day, now), 300);
        assert_eq!(g.used(&Level::Org, Period::Month, now), 300);
        assert!(g.reserve(charge("pay", "qm"), 100, 400, now).is_ok());
        // The next day the AgentSpec's daily budget is fresh; the month is not.
        let tomorrow = t("2026-02-15T00:00:01Z");
        assert_eq!(g.used(&Level::Agent("qm".into()), Period::Day, tomorrow), 0);
        assert_eq!(g.used(&Level::Chapter("pay".into()), Period::Month, tomorrow), 300);
        assert!((g.percent_used(&Level::Chapter("pay".into()), tomorrow).unwrap() - 10.0).abs() < 1e-9);
    }
}

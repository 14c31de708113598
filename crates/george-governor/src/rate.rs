//! Rate limits (seed 003 "Rate Limiting"): sliding windows of tokens — per
//! minute for each agent instance (an attempt), per hour for each chapter
//! and each AgentSpec. A call that does not fit its windows is paced: it
//! waits until enough of the window's earlier usage has slid out. Unlike
//! budgets, rates only delay work; they never refuse it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Whose usage a window counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", content = "name", rename_all = "lowercase")]
pub enum RateScope {
    /// One agent instance: `job#attempt`.
    Instance(String),
    /// One chapter.
    Chapter(String),
    /// One AgentSpec.
    Agent(String),
}

impl std::fmt::Display for RateScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateScope::Instance(i) => write!(f, "agent instance {i}"),
            RateScope::Chapter(c) => write!(f, "chapter {c}"),
            RateScope::Agent(a) => write!(f, "AgentSpec {a}"),
        }
    }
}

/// The rate limits in force, in tokens per window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Per minute for every agent instance (Policy `rateLimits.perMinute`).
    pub instance_per_minute: Option<u64>,
    /// Per minute for instances of one AgentSpec (its `tokenBudget.perMinute`), overriding the above.
    pub agent_per_minute: HashMap<String, u64>,
    /// Per hour for every chapter (Policy `rateLimits.perHour`).
    pub chapter_per_hour: Option<u64>,
    /// Per hour for one chapter (`george throttle`), overriding the above when lower.
    pub chapter_throttle: HashMap<String, u64>,
    /// Per hour for one AgentSpec (its `tokenBudget.perHour`).
    pub agent_per_hour: HashMap<String, u64>,
}

/// One limit that applies to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Whose window.
    pub scope: RateScope,
    /// Tokens per window.
    pub tokens: u64,
    /// The window's length.
    pub window: Duration,
}

impl Rates {
    /// The limits for a call by `instance` of `agent_spec` in `chapter` (`""`: none).
    pub fn limits_for(&self, instance: &str, agent_spec: &str, chapter: &str) -> Vec<RateLimit> {
        let minute = Duration::minutes(1);
        let hour = Duration::hours(1);
        let mut out = Vec::new();
        if let Some(t) = self.agent_per_minute.get(agent_spec).copied().or(self.instance_per_minute) {
            out.push(RateLimit { scope: RateScope::Instance(instance.into()), tokens: t, window: minute });
        }
        if !chapter.is_empty() {
            let throttle = self.chapter_throttle.get(chapter).copied();
            let hourly = match (self.chapter_per_hour, throttle) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(t) = hourly {
                out.push(RateLimit { scope: RateScope::Chapter(chapter.into()), tokens: t, window: hour });
            }
        }
        if let Some(t) = self.agent_per_hour.get(agent_spec) {
            out.push(RateLimit { scope: RateScope::Agent(agent_spec.into()), tokens: *t, window: hour });
        }
        out
    }
}

/// A call that must wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pace {
    /// The limit it waits for.
    pub limit: RateLimit,
    /// Tokens of the window already used.
    pub used: u64,
    /// How long until it fits.
    pub wait: Duration,
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rate limit: {} used {} of {} tokens in the last {}s; wait {}s",
            self.limit.scope,
            self.used,
            self.limit.tokens,
            self.limit.window.num_seconds(),
            (self.wait.num_milliseconds().max(0) as u64).div_ceil(1000)
        )
    }
}

/// Usage per scope, newest last, kept for the longest window (an hour).
#[derive(Debug, Default)]
pub struct Windows {
    entries: HashMap<RateScope, VecDeque<(DateTime<Utc>, u64)>>,
}

impl Windows {
    /// Records `tokens` used at `at` by every scope in `scopes`.
    pub fn record(&mut self, scopes: impl IntoIterator<Item = RateScope>, tokens: u64, at: DateTime<Utc>) {
        if tokens == 0 {
            return;
        }
        for scope in scopes {
            let q = self.entries.entry(scope).or_default();
            q.push_back((at, tokens));
            while q.front().is_some_and(|(t, _)| *t <= at - Duration::hours(1)) {
                q.pop_front();
            }
        }
    }

    /// Tokens `scope` used in the `window` before `now`.
    pub fn used(&self, scope: &RateScope, window: Duration, now: DateTime<Utc>) -> u64 {
        self.entries.get(scope).map_or(0, |q| q.iter().filter(|(t, _)| *t > now - window).map(|(_, n)| n).sum())
    }

    /// How long a call of `needed` tokens must wait for `limit`; `None` if it fits now.
    /// A window with no usage always admits a call, however large.
    pub fn wait(&self, limit: &RateLimit, needed: u64, now: DateTime<Utc>) -> Option<Pace> {
        let q = self.entries.get(&limit.scope)?;
        let recent: Vec<_> = q.iter().filter(|(t, _)| *t > now - limit.window).collect();
        let used: u64 = recent.iter().map(|(_, n)| n).sum();
        if used == 0 || used + needed <= limit.tokens {
            return None;
        }
        // Slide the window forward entry by entry until the call fits (or the window is empty).
        let mut left = used;
        for (t, n) in &recent {
            left -= n;
            if left == 0 || left + needed <= limit.tokens {
                let wait = (*t + limit.window - now).max(Duration::milliseconds(1));
                return Some(Pace { limit: limit.clone(), used, wait });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 24, 9, 0, 0).unwrap() + Duration::seconds(secs)
    }

    fn per_minute(tokens: u64) -> RateLimit {
        RateLimit { scope: RateScope::Instance("j#1".into()), tokens, window: Duration::minutes(1) }
    }

    #[test]
    fn a_call_waits_until_enough_usage_slides_out_of_the_window() {
        let mut w = Windows::default();
        let scope = || [RateScope::Instance("j#1".into())];
        w.record(scope(), 600, t(0));
        w.record(scope(), 300, t(20));
        let limit = per_minute(1000);
        assert_eq!(w.wait(&limit, 100, t(30)), None, "900 + 100 fits");
        // 900 + 200 does not: the first 600 leave the window at t(60).
        let pace = w.wait(&limit, 200, t(30)).unwrap();
        assert_eq!((pace.used, pace.wait), (900, Duration::seconds(30)));
        assert_eq!(w.wait(&limit, 200, t(60)), None, "the window slid");
        // 800 needs both entries gone: until t(80).
        assert_eq!(w.wait(&limit, 800, t(30)).unwrap().wait, Duration::seconds(50));
        // Bigger than the limit: waits for an empty window, then goes.
        assert_eq!(w.wait(&limit, 5000, t(30)).unwrap().wait, Duration::seconds(50));
        assert_eq!(w.wait(&limit, 5000, t(81)), None);
        assert!(w.wait(&limit, 200, t(30)).unwrap().to_string().contains("agent instance j#1 used 900 of 1000"));
    }

    #[test]
    fn windows_are_per_scope_and_limits_pick_the_tightest_chapter_rate() {
        let mut w = Windows::default();
        w.record([RateScope::Chapter("payments".into())], 900, t(0));
        let rates = Rates {
            chapter_per_hour: Some(1000),
            chapter_throttle: HashMap::from([("payments".into(), 500)]),
            instance_per_minute: Some(20_000),
            agent_per_minute: HashMap::from([("ranger".into(), 100)]),
            ..Default::default()
        };
        let limits = rates.limits_for("j#1", "quartermaster", "payments");
        assert_eq!(limits.len(), 2);
        assert_eq!((limits[0].tokens, limits[1].tokens), (20_000, 500), "the throttle is lower than the policy");
        let pace = w.wait(&limits[1], 10, t(600)).unwrap();
        assert_eq!(pace.wait, Duration::minutes(50));
        assert_eq!(w.wait(&limits[1], 10, t(3600)), None, "an hour later");
        assert_eq!(rates.limits_for("j#1", "ranger", "")[0].tokens, 100, "the AgentSpec's own rate");
        assert!(w
            .wait(&RateLimit { scope: RateScope::Chapter("search".into()), ..limits[1].clone() }, 10, t(1))
            .is_none());
    }
}

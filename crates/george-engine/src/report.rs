//! Token reports and chapter throttles (seed 003 §4 "Consumption Tracking",
//! `!guild budget` and `!guild throttle`): the ledger summed per chapter and
//! AgentSpec, set against the budgets in force, with the burn rate and the
//! day a budget runs out at that rate.

use crate::alerts::Color;
use crate::context::Context;
use crate::llm::THROTTLE_PREFIX;
use chrono::{DateTime, Utc};
use george_core::api::{AgentUsage, BudgetReport, BudgetStanding, ChapterReport, ThrottleRequest, ThrottleView};
use george_core::manifest::Kind;
use george_governor::{Level, Period, RateScope};
use george_store::StoreError;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The report of the current `period`.
pub(crate) async fn budget(ctx: &Arc<Context>, period: Period) -> Result<BudgetReport, StoreError> {
    let now = ctx.clock.now();
    let since = period.start(now);
    let label = match period {
        Period::Day => since.format("%Y-%m-%d").to_string(),
        Period::Month => since.format("%Y-%m").to_string(),
    };
    let budgets = ctx.governor.budgets();
    let budget_of =
        |level: &Level| budgets.limits.iter().find(|l| &l.level == level && l.period == period).map(|l| l.tokens);
    let mut chapters: BTreeMap<String, BTreeMap<String, AgentUsage>> = BTreeMap::new();
    for l in budgets.limits.iter().filter(|l| l.period == period) {
        if let Level::Chapter(c) = &l.level {
            chapters.entry(c.clone()).or_default();
        }
    }
    for t in ctx.store.usage_totals(since).await? {
        let u = AgentUsage {
            invocations: t.invocations,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            total: t.input_tokens + t.output_tokens,
        };
        chapters.entry(t.chapter).or_default().insert(t.agent_spec, u);
    }
    let total = |b: &BTreeMap<String, AgentUsage>| b.values().map(|u| u.total).sum::<u64>();
    let org_total = chapters.values().map(total).sum();
    let org = standing(org_total, budget_of(&Level::Org), since, now, color(ctx, &Level::Org, now));
    let rates = budgets.rates;
    let chapters = chapters
        .into_iter()
        .map(|(chapter, breakdown)| {
            let level = Level::Chapter(chapter.clone());
            let limit =
                rates.limits_for("", "", &chapter).into_iter().find(|l| l.scope == RateScope::Chapter(chapter.clone()));
            ChapterReport {
                protocol: "MANA_REPORT_V1".into(),
                period: label.clone(),
                standing: standing(total(&breakdown), budget_of(&level), since, now, color(ctx, &level, now)),
                used_last_hour: ctx.governor.rate_used(
                    &RateScope::Chapter(chapter.clone()),
                    chrono::Duration::hours(1),
                    now,
                ),
                rate_per_hour: limit.map(|l| l.tokens),
                throttle_per_hour: rates.chapter_throttle.get(&chapter).copied(),
                chapter,
                breakdown,
            }
        })
        .collect();
    let pool = ctx.governor.reserve_pool(now);
    Ok(BudgetReport {
        protocol: "MANA_REPORT_V1".into(),
        period: label,
        since,
        generated_at: now,
        org,
        reserve_pool: pool.map(|p| p.0),
        reserve_pool_remaining: pool.map(|p| p.1),
        chapters,
    })
}

fn color(ctx: &Context, level: &Level, now: DateTime<Utc>) -> String {
    let c = ctx.governor.percent_used(level, now).map(Color::of).unwrap_or(Color::Green);
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Usage `total` since `since` against `budget`, at the period's pace so far
/// (at least one day is assumed elapsed, so an early spike is not projected
/// as a catastrophe).
fn standing(
    total: u64,
    budget: Option<u64>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    alert: String,
) -> BudgetStanding {
    let days = ((now - since).num_seconds() as f64 / 86_400.0).max(1.0);
    let burn = (total as f64 / days).round() as u64;
    let remaining = budget.map(|b| b.saturating_sub(total));
    let projected_exhaustion = match remaining {
        Some(0) => Some(now.date_naive()),
        Some(r) if burn > 0 => {
            let days_left = r as f64 / burn as f64;
            Some((now + chrono::Duration::seconds((days_left * 86_400.0) as i64)).date_naive())
        }
        _ => None,
    };
    BudgetStanding { total, budget, budget_remaining: remaining, burn_rate_daily: burn, projected_exhaustion, alert }
}

/// Why a throttle cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// No Chapter manifest or AgentSpec names the chapter.
    #[error("chapter `{0}` not found: no Chapter manifest or AgentSpec names it")]
    UnknownChapter(String),
    /// The request cannot be carried out.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reduces (or clears) a chapter's hourly token rate.
pub(crate) async fn throttle(
    ctx: &Arc<Context>,
    chapter: &str,
    req: &ThrottleRequest,
    actor: &str,
) -> Result<ThrottleView, ThrottleError> {
    let mut known: BTreeSet<String> =
        ctx.store.manifests(Some(Kind::Chapter)).await?.into_iter().map(|m| m.name).collect();
    known.extend(ctx.catalog.get(ctx.store.as_ref()).await?.agents.values().filter_map(|a| a.metadata.chapter.clone()));
    if !known.contains(chapter) {
        return Err(ThrottleError::UnknownChapter(chapter.into()));
    }
    let key = format!("{THROTTLE_PREFIX}{chapter}");
    let tokens = if req.clear {
        if req.tokens_per_hour.is_some() {
            return Err(ThrottleError::Invalid("give either tokens_per_hour or clear, not both".into()));
        }
        None
    } else {
        Some(match req.tokens_per_hour {
            Some(0) => return Err(ThrottleError::Invalid("tokens_per_hour must be at least 1".into())),
            Some(t) => t,
            None => {
                let now = ctx.clock.now();
                let rates = ctx.governor.budgets().rates;
                let in_force = rates
                    .limits_for("", "", chapter)
                    .into_iter()
                    .find(|l| l.scope == RateScope::Chapter(chapter.into()));
                let base = match in_force {
                    Some(l) => l.tokens,
                    None => {
                        ctx.governor.rate_used(&RateScope::Chapter(chapter.into()), chrono::Duration::hours(1), now)
                    }
                };
                if base == 0 {
                    return Err(ThrottleError::Invalid(format!(
                        "chapter `{chapter}` has no hourly rate and used no tokens in the last hour: give tokens_per_hour"
                    )));
                }
                (base / 2).max(1)
            }
        })
    };
    ctx.store.set_setting(&key, tokens.map(|t| json!(t))).await?;
    crate::llm::configure(ctx).await?;
    ctx.store
        .record_event(
            None,
            george_core::EventKind::ChapterThrottled,
            actor,
            json!({"chapter": chapter, "tokens_per_hour": tokens}),
        )
        .await?;
    tracing::info!(chapter, tokens_per_hour = ?tokens, "chapter throttle changed");
    Ok(ThrottleView { chapter: chapter.into(), tokens_per_hour: tokens })
}

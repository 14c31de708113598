//! Budget alerts (seed 003 §4 "Emergency Protocols"). Crossing 75, 90 and
//! 95 % of a budget (the org's or a chapter's tightest) raises a yellow,
//! orange or red alert — once per level and period — as an event and a
//! notification, and changes what the engine does while it lasts:
//!
//! - yellow: debounce windows are doubled;
//! - orange: BACKGROUND work does not start; active durations are halved;
//! - red: only P0/P1 work starts, and only once a human approves it;
//!   scheduled (cron) wakes are suspended.
//!
//! Colours are computed from current usage, so they end with the period.

use crate::context::Context;
use george_core::manifest::{Chapter, Kind};
use george_core::Priority;
use george_governor::{Charge, Level};
use george_store::StoreError;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

/// How close a budget is to running out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// Under 75 %.
    Green,
    /// 75 % or more.
    Yellow,
    /// 90 % or more.
    Orange,
    /// 95 % or more.
    Red,
}

impl Color {
    /// The colour of a share used, in percent.
    pub fn of(percent: f64) -> Color {
        match percent {
            p if p >= 95.0 => Color::Red,
            p if p >= 90.0 => Color::Orange,
            p if p >= 75.0 => Color::Yellow,
            _ => Color::Green,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Color::Green => "green",
            Color::Yellow => "yellow",
            Color::Orange => "orange",
            Color::Red => "red",
        }
    }

    fn actions(self) -> &'static str {
        match self {
            Color::Green => "",
            Color::Yellow => "debounce windows doubled",
            Color::Orange => "BACKGROUND work disabled; active durations halved",
            Color::Red => "only P0/P1 work proceeds, each needing human approval; scheduled jobs suspended",
        }
    }
}

fn level_key(level: &Level) -> String {
    match level {
        Level::Org => "org".into(),
        Level::Chapter(c) => format!("chapter:{c}"),
        Level::Agent(a) => format!("agent:{a}"),
    }
}

/// The alert colour in force for work of `chapter`: the worse of the org's and the chapter's.
pub(crate) fn color(ctx: &Context, chapter: Option<&str>) -> Color {
    let now = ctx.clock.now();
    let mut levels = vec![Level::Org];
    if let Some(c) = chapter.filter(|c| !c.is_empty()) {
        levels.push(Level::Chapter(c.to_string()));
    }
    levels.iter().filter_map(|l| ctx.governor.percent_used(l, now)).map(Color::of).max().unwrap_or(Color::Green)
}

/// After usage was charged: raises every alert newly crossed.
pub(crate) async fn check(ctx: &Arc<Context>, charge: &Charge) -> Result<(), StoreError> {
    let now = ctx.clock.now();
    let mut levels = vec![Level::Org];
    if !charge.chapter.is_empty() {
        levels.push(Level::Chapter(charge.chapter.clone()));
    }
    for level in levels {
        let Some((percent, period_start)) = ctx.governor.tightest(&level, now) else { continue };
        let reached = Color::of(percent);
        for color in [Color::Yellow, Color::Orange, Color::Red].into_iter().filter(|c| *c <= reached) {
            let key = format!("alert:{}:{}", level_key(&level), color.name());
            let period = period_start.to_rfc3339();
            if ctx.store.setting(&key).await?.as_ref().and_then(|v| v.as_str()) == Some(period.as_str()) {
                continue; // raised already this period
            }
            ctx.store.set_setting(&key, Some(json!(period))).await?;
            let text = format!(
                "George budget alert ({}): {level} has used {percent:.0}% of its budget: {}",
                color.name(),
                color.actions()
            );
            tracing::warn!(level = %level, color = color.name(), percent, "budget alert");
            ctx.store
                .record_event(
                    None,
                    george_core::EventKind::BudgetAlert,
                    "governor",
                    json!({"level": level.to_string(), "color": color, "percent": percent, "actions": color.actions()}),
                )
                .await?;
            let chapter = match &level {
                Level::Chapter(c) => Some(c.as_str()),
                _ => None,
            };
            notify(ctx, chapter, &text).await?;
        }
    }
    family(ctx, &charge.job).await
}

/// A family budget (see [`crate::family_budget`]) past 75, 90 or 95 %
/// raises an alert naming the family: the job at its top, and the job whose
/// call took it there. Once per family and colour.
async fn family(ctx: &Arc<Context>, job: &str) -> Result<(), StoreError> {
    let store = ctx.store.as_ref();
    let Some(mut top) = store.get_job(job).await? else { return Ok(()) };
    let catalog = ctx.catalog.get(store).await?;
    for _ in 0..16 {
        let Some(parent) = crate::children::parent_of(&top).map(str::to_string) else { break };
        let Some(p) = store.get_job(&parent).await? else { break };
        top = p;
    }
    let Some((limit, left)) = crate::family_budget::remaining(&ctx.family, store, &catalog, &top).await? else {
        return Ok(());
    };
    let percent = if limit == 0 { 100.0 } else { (limit - left) as f64 * 100.0 / limit as f64 };
    let reached = Color::of(percent);
    for color in [Color::Yellow, Color::Orange, Color::Red].into_iter().filter(|c| *c <= reached) {
        let key = format!("alert:family:{}:{}", top.id, color.name());
        if ctx.store.setting(&key).await?.is_some() {
            continue;
        }
        ctx.store.set_setting(&key, Some(json!(job))).await?;
        let text = format!(
            "George budget alert ({}): the family of job {} (its sub-agents included) has used {percent:.0}% of its budget of {limit} tokens; job {job} made the last call",
            color.name(),
            top.id
        );
        tracing::warn!(family = %top.id, job, color = color.name(), percent, "family budget alert");
        let data = json!({"level": format!("family {}", top.id), "family": top.id, "job": job, "color": color, "percent": percent, "limit": limit});
        ctx.store.record_event(Some(&top.id), george_core::EventKind::BudgetAlert, "governor", data).await?;
        notify(ctx, top.chapter.as_deref(), &text).await?;
    }
    Ok(())
}

/// Posts a Slack-compatible message, in the background, to every configured
/// webhook and — for a chapter's alert — to the chapter's `alertChannel`
/// when that is an http(s) URL.
pub(crate) async fn notify(ctx: &Arc<Context>, chapter: Option<&str>, text: &str) -> Result<(), StoreError> {
    let mut urls = ctx.cfg.notify.clone();
    if let Some(c) = chapter {
        for m in ctx.store.manifests(Some(Kind::Chapter)).await?.into_iter().filter(|m| m.name == c) {
            let channel = serde_json::from_value::<Chapter>(m.body).ok().and_then(|ch| ch.spec.alert_channel);
            if let Some(url) = channel.filter(|u| u.starts_with("http://") || u.starts_with("https://")) {
                if !urls.contains(&url) {
                    urls.push(url);
                }
            }
        }
    }
    for url in urls {
        let (http, body) = (ctx.http.clone(), json!({"text": text}));
        ctx.tasks.spawn(async move {
            if let Err(e) = http.post(&url).json(&body).send().await {
                tracing::warn!(error = %e, "cannot deliver a budget alert notification");
            }
        });
    }
    Ok(())
}

/// The settings key of a job's approval.
pub fn approval_key(job: &str) -> String {
    format!("{}{job}", george_store::job_settings::APPROVAL)
}

/// An approval lets one agent start: once it has, under a red alert, the
/// next wake of the job needs a new approval.
pub(crate) async fn spend_approval(ctx: &Context, job: &george_core::record::Job) -> Result<(), StoreError> {
    if color(ctx, job.chapter.as_deref()) == Color::Red && ctx.store.setting(&approval_key(&job.id)).await?.is_some() {
        ctx.store.set_setting(&approval_key(&job.id), None).await?;
    }
    Ok(())
}

/// Why a job may not start under the current alert, if it may not.
pub(crate) async fn hold(ctx: &Context, job: &george_core::record::Job) -> Result<Option<String>, StoreError> {
    let color = color(ctx, job.chapter.as_deref());
    if color == Color::Red {
        if job.priority > Priority::P1 {
            return Ok(Some("budget red: only P0/P1 work proceeds".into()));
        }
        if ctx.store.setting(&approval_key(&job.id)).await?.is_none() {
            return Ok(Some(format!("awaiting approval (budget red): approve with `george jobs approve {}`", job.id)));
        }
    }
    if color >= Color::Orange && job.priority == Priority::Background {
        return Ok(Some("budget orange: BACKGROUND work is disabled".into()));
    }
    Ok(None)
}

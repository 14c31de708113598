//! Triggers turn outside events into jobs (seed 003 §1): cron schedules,
//! webhook events and manual summons. Every trigger creates jobs of its
//! template through the same planning as any other job.
//!
//! - **Cron**: each tick compares the schedule with the trigger's stored
//!   watermark; a fire creates the job `<trigger>-<UTC minute>`, so neither a
//!   restart nor a repeated tick can fire twice.
//! - **Debouncing**: a wake with a debounce window creates a pending job that
//!   may not start before the window ends; further wakes with the same key
//!   replace its parameters (the job sees the latest payload) and push the
//!   start back, never beyond `maxDelay` after the first wake. It is all in
//!   the store, so a restart loses nothing.
//! - **Replays**: every wake's key (a webhook's delivery id, a cron minute)
//!   is remembered per trigger for `delivery_memory` (7 days by default); a
//!   wake seen before creates nothing and answers with the job it made,
//!   also after a debounce window has closed.

use crate::context::Context;
use chrono::{DateTime, Utc};
use george_core::labels::Labels;
use george_core::manifest::{TriggerSpec, TriggerType};
use george_core::plan::{JobRequest, Origin};
use george_core::schedule::CronSchedule;
use george_core::{DesiredState, EventKind, JobStatus, Priority};
use george_store::{Created, JobFilter, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A cron fire more than this late counts as missed (policy `skip`).
const ON_TIME: chrono::Duration = chrono::Duration::seconds(60);

/// What one trigger did with one wake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Fired {
    /// The trigger.
    pub trigger: String,
    /// The job it created, or the one the wake was folded into.
    pub job: String,
    /// Whether the wake was folded into an earlier one's job.
    pub debounced: bool,
    /// Whether this wake was seen before (a replayed delivery): nothing new
    /// was created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// Why a trigger could not create a job.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No such trigger, agent or template.
    #[error("{0}")]
    NotFound(String),
    /// The parameters do not fit the template.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This engine does not run (a standby replica): another replica fires it.
    #[error("this replica does not run the engine (a standby); another replica leads: try again")]
    NotLeading,
}

/// A valid job id from `base` and `suffix`: every character outside
/// `[a-z0-9-_]` becomes `-` (so no part of an outside value can reach a
/// file path as `..` or `/`), starting with a letter or digit, at most 63
/// characters (a hash keeps long ones unique).
fn job_id(base: &str, suffix: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c.to_ascii_lowercase() } else { '-' })
            .collect()
    };
    let id = format!("{}-{}", clean(base), clean(suffix));
    let id = id.trim_start_matches(['-', '_']).to_string();
    // Keys the cleaning changed (`pay.1`, `PAY-1`) get a hash of what they
    // were, so two keys that clean alike (`pay.1`, `pay-1`) stay two jobs.
    let lossless = format!("{base}-{suffix}") == id;
    if !id.is_empty() && id.len() <= 63 && lossless {
        return id;
    }
    if !id.is_empty() && id.len() <= 54 {
        let h = hex::encode(Sha256::digest(format!("{base}\0{suffix}").as_bytes()));
        return format!("{id}-{}", &h[..8]);
    }
    let h = hex::encode(Sha256::digest(format!("{base}\0{suffix}").as_bytes()));
    let head: String = id.chars().take(40).collect();
    format!("{}{}", if head.is_empty() { "t-".to_string() } else { format!("{head}-") }, &h[..16])
}

/// A payload value at a dotted path (`issue.fields.project`).
pub fn lookup<'a>(payload: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(payload, |v, key| v.get(key))
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a webhook trigger matches an event.
pub fn matches(spec: &TriggerSpec, source: Option<&str>, event: Option<&str>, payload: &Value) -> bool {
    spec.is_webhook()
        && spec.source.as_deref().is_none_or(|s| source == Some(s))
        && (spec.events.is_empty() || event.is_some_and(|e| spec.events.iter().any(|x| x == e)))
        && spec
            .conditions
            .iter()
            .all(|(path, want)| lookup(payload, path).map(as_text).as_deref() == Some(want.as_str()))
}

/// Parameters from a wake: the trigger's own, then the wake's fields named
/// like the template's variables; a `payload` variable gets the whole payload.
fn params_for(
    ctx_vars: &[george_core::manifest::Variable],
    spec: &TriggerSpec,
    wake: &Value,
) -> BTreeMap<String, Value> {
    let mut params = spec.params.clone();
    for var in ctx_vars {
        if var.name == "payload" && !wake.is_null() {
            params.insert("payload".into(), Value::String(wake.to_string()));
        } else if let Some(v) = wake.get(&var.name) {
            params.insert(var.name.clone(), v.clone());
        }
    }
    params
}

/// What a wake's job gets beyond its trigger's spec.
#[derive(Debug, Clone, Default)]
pub struct JobExtras {
    /// A priority of its own (else the trigger's).
    pub priority: Option<Priority>,
    /// Its labels (e.g. the Slack thread it was summoned from).
    pub labels: Labels,
}

/// Creates the job for one wake of trigger `name` (or folds the wake into a
/// debounced one). `fire_key` names this wake (a cron minute, a delivery id).
pub(crate) async fn fire(
    ctx: &Arc<Context>,
    name: &str,
    spec: &TriggerSpec,
    wake: &Value,
    fire_key: &str,
    extras: &JobExtras,
    actor: &str,
) -> Result<Fired, TriggerError> {
    // Alerts change how a wake is handled: judge it against loaded accounts.
    // A standby never loads them: it sends the caller elsewhere.
    if !ctx.governor_ready_within(std::time::Duration::from_secs(5)).await {
        return Err(TriggerError::NotLeading);
    }
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let template_name =
        spec.template.clone().ok_or_else(|| TriggerError::NotFound(format!("trigger `{name}` has no template")))?;
    let template = catalog
        .templates
        .get(&template_name)
        .ok_or_else(|| TriggerError::NotFound(format!("trigger `{name}`: unknown TaskTemplate `{template_name}`")))?;
    let params = params_for(&template.spec.variables, spec, wake);
    let now = ctx.clock.now();
    let mut swept = ctx.trigger_lock.lock().await;
    let memory = Deliveries::new(name, fire_key);
    if let Some(job) = memory.seen(ctx, now).await? {
        ctx.store
            .record_event(Some(&job), EventKind::TriggerReplayed, actor, json!({"trigger": name, "wake": fire_key}))
            .await?;
        return Ok(Fired { trigger: name.into(), job, debounced: false, replayed: true });
    }
    Deliveries::sweep(ctx, now, &mut swept).await?;
    let fired = fire_new(ctx, name, spec, wake, fire_key, extras, actor, &catalog, &template_name, params, now).await?;
    memory.remember(ctx, &fired.job, now).await?;
    Ok(fired)
}

/// Remembered wake keys: settings `delivery/<trigger>/<hash of the key>`
/// holding the job the wake made and when.
struct Deliveries {
    key: String,
}

impl Deliveries {
    const PREFIX: &'static str = "delivery/";

    fn new(trigger: &str, fire_key: &str) -> Self {
        let h = hex::encode(&Sha256::digest(format!("{trigger}\0{fire_key}").as_bytes())[..16]);
        Self { key: format!("{}{trigger}/{h}", Self::PREFIX) }
    }

    /// The job this wake made, if it was seen within the memory.
    async fn seen(&self, ctx: &Context, now: DateTime<Utc>) -> Result<Option<String>, TriggerError> {
        let Some(v) = ctx.store.setting(&self.key).await? else { return Ok(None) };
        let at = v["at"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        let fresh = at.is_some_and(|at| now - at.with_timezone(&Utc) < memory(ctx));
        Ok(if fresh { v["job"].as_str().map(str::to_string) } else { None })
    }

    async fn remember(&self, ctx: &Context, job: &str, now: DateTime<Utc>) -> Result<(), TriggerError> {
        ctx.store.set_setting(&self.key, Some(json!({"job": job, "at": now.to_rfc3339()}))).await?;
        Ok(())
    }

    /// Forgets deliveries older than the memory, at most once an hour.
    async fn sweep(ctx: &Context, now: DateTime<Utc>, last: &mut Option<DateTime<Utc>>) -> Result<(), TriggerError> {
        if last.is_some_and(|l| now - l < chrono::Duration::hours(1)) {
            return Ok(());
        }
        *last = Some(now);
        for (key, v) in ctx.store.settings(Self::PREFIX).await? {
            let at = v["at"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
            if at.is_none_or(|at| now - at.with_timezone(&Utc) >= memory(ctx)) {
                ctx.store.set_setting(&key, None).await?;
            }
        }
        Ok(())
    }
}

fn memory(ctx: &Context) -> chrono::Duration {
    chrono::Duration::from_std(ctx.cfg.delivery_memory).unwrap_or(chrono::Duration::days(7))
}

/// [`fire`] for a wake not seen before.
#[allow(clippy::too_many_arguments)]
async fn fire_new(
    ctx: &Arc<Context>,
    name: &str,
    spec: &TriggerSpec,
    wake: &Value,
    fire_key: &str,
    extras: &JobExtras,
    actor: &str,
    catalog: &george_core::plan::Catalog,
    template_name: &str,
    params: BTreeMap<String, Value>,
    now: DateTime<Utc>,
) -> Result<Fired, TriggerError> {
    let source = format!("trigger:{name}");
    let template_name = template_name.to_string();

    // Debounced: fold into the open window's job if there is one.
    // A yellow (or worse) budget alert doubles debounce windows.
    let slow_down = crate::alerts::color(ctx, chapter_of(catalog, spec)) >= crate::alerts::Color::Yellow;
    let spec = &{
        let mut s = spec.clone();
        if slow_down {
            s.debounce = s.debounce.map(|d| george_core::duration::HumanDuration(d.get() * 2));
            s.max_delay = s.max_delay.map(|d| george_core::duration::HumanDuration(d.get() * 2));
        }
        s
    };
    let debounce_key = match (&spec.debounce, &spec.debounce_key) {
        (Some(_), Some(path)) => Some(lookup(wake, path).map(as_text).unwrap_or_else(|| "-".into())),
        (Some(_), None) => Some("-".into()),
        _ => None,
    };
    if let (Some(window), Some(key)) = (spec.debounce, &debounce_key) {
        let pending = ctx
            .store
            .list_jobs(&JobFilter {
                status: vec![JobStatus::Pending],
                source: Some(source.clone()),
                ..Default::default()
            })
            .await?;
        let open = pending.into_iter().find(|j| {
            j.attempt == 0
                && j.origin.reference.as_deref() == Some(key.as_str())
                && j.next_attempt_at.is_some_and(|t| t > now)
        });
        if let Some(j) = &open {
            let max_delay = spec.max_delay.map(|d| d.get()).unwrap_or(window.get() * 5);
            let not_before = (now + chrono::Duration::from_std(window.get()).unwrap_or_default())
                .min(j.created_at + chrono::Duration::from_std(max_delay).unwrap_or_default());
            let job = plan(catalog, name, spec, &j.id, &template_name, &params, extras, key, Some(not_before))?;
            if ctx.store.update_pending_job(job, actor).await? {
                ctx.store
                    .record_event(
                        Some(&j.id),
                        EventKind::TriggerDebounced,
                        actor,
                        json!({"trigger": name, "into": j.id, "wake": fire_key}),
                    )
                    .await?;
                return Ok(Fired { trigger: name.into(), job: j.id.clone(), debounced: true, replayed: false });
            }
            // It started meanwhile: this wake gets a job of its own.
        }
    }
    let (id, reference, not_before) = match (spec.debounce, &debounce_key) {
        (Some(window), Some(key)) => (
            job_id(&format!("{name}-{key}"), &now.format("%Y%m%d%H%M%S%3f").to_string()),
            key.clone(),
            Some(now + chrono::Duration::from_std(window.get()).unwrap_or_default()),
        ),
        _ => (job_id(name, fire_key), fire_key.to_string(), None),
    };
    let job = plan(catalog, name, spec, &id, &template_name, &params, extras, &reference, not_before)?;
    let created = ctx.store.create_job(job, actor).await?;
    if created == Created::New {
        ctx.store
            .record_event(
                Some(&id),
                EventKind::TriggerFired,
                actor,
                json!({"trigger": name, "wake": fire_key, "type": spec.trigger_type}),
            )
            .await?;
    }
    Ok(Fired { trigger: name.into(), job: id, debounced: false, replayed: false })
}

#[allow(clippy::too_many_arguments)]
fn plan(
    catalog: &george_core::plan::Catalog,
    name: &str,
    spec: &TriggerSpec,
    id: &str,
    template: &str,
    params: &BTreeMap<String, Value>,
    extras: &JobExtras,
    reference: &str,
    not_before: Option<DateTime<Utc>>,
) -> Result<george_core::plan::NewJob, TriggerError> {
    let env = BTreeMap::new();
    let req = JobRequest {
        id,
        template,
        params,
        agent: spec.agent.as_deref(),
        chapter: None,
        priority: extras.priority.unwrap_or_else(|| spec.job_priority()),
        desired: DesiredState::Active,
        env: &env,
        parallelism: None,
        fail_fast: None,
        labels: &extras.labels,
    };
    let origin = Origin { source: format!("trigger:{name}"), reference: Some(reference.to_string()), revision: None };
    let mut job = catalog.plan(&req, origin).map_err(|errs| {
        TriggerError::Invalid(format!(
            "trigger `{name}`: {}",
            errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
        ))
    })?;
    job.not_before = not_before;
    Ok(job)
}

/// The chapter of the agent a trigger wakes, when it names one.
fn chapter_of<'a>(catalog: &'a george_core::plan::Catalog, spec: &TriggerSpec) -> Option<&'a str> {
    spec.agent.as_ref().and_then(|a| catalog.agents.get(a)).and_then(|a| a.metadata.chapter.as_deref())
}

/// One look at every cron trigger: fires what is due, records the watermark.
pub(crate) async fn cron_tick(ctx: &Arc<Context>) -> Result<(), StoreError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let suspended = crate::suspension::all(ctx).await?;
    for (name, spec) in catalog.triggers.iter().filter(|(_, t)| t.trigger_type == TriggerType::Cron) {
        let Some(expr) = spec.schedule.as_deref() else { continue };
        let Ok(schedule) = CronSchedule::parse(expr, spec.timezone.as_deref()) else { continue };
        let now = ctx.clock.now();
        let Some(mark) = ctx.store.trigger_mark(name).await? else {
            // First sight: the schedule starts now (nothing before it is "missed").
            ctx.store.set_trigger_mark(name, now).await?;
            continue;
        };
        let due = schedule.due(mark, now, spec.missed, ON_TIME);
        if suspended.contains_key(name.as_str()) {
            // Suspended by an operator: its times pass unfired.
            if due.watermark != mark {
                ctx.store.set_trigger_mark(name, due.watermark).await?;
            }
            continue;
        }
        if !due.fire.is_empty() && crate::alerts::color(ctx, chapter_of(&catalog, spec)) == crate::alerts::Color::Red {
            // Red budget alert: scheduled jobs are suspended.
            ctx.store
                .record_event(
                    None,
                    EventKind::TriggerSuspended,
                    "governor",
                    json!({"trigger": name, "fire": due.fire, "reason": "budget red"}),
                )
                .await?;
            ctx.store.set_trigger_mark(name, due.watermark).await?;
            continue;
        }
        for at in &due.fire {
            let key = at.format("%Y%m%d%H%M").to_string();
            let wake = json!({"fire_time": at.to_rfc3339()});
            match fire(ctx, name, spec, &wake, &key, &JobExtras::default(), "trigger:cron").await {
                Ok(f) => tracing::info!(trigger = %name, job = %f.job, at = %at, "cron trigger fired"),
                Err(TriggerError::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(trigger = %name, error = %e, "cron trigger cannot create its job");
                    ctx.store
                        .record_event(
                            None,
                            EventKind::TriggerFailed,
                            "trigger:cron",
                            json!({"trigger": name, "reason": e.to_string()}),
                        )
                        .await?;
                }
            }
        }
        if due.skipped > 0 {
            ctx.store
                .record_event(
                    None,
                    EventKind::TriggerSkipped,
                    "trigger:cron",
                    json!({"trigger": name, "missed": due.skipped, "policy": spec.missed}),
                )
                .await?;
        }
        if due.watermark != mark {
            ctx.store.set_trigger_mark(name, due.watermark).await?;
        }
    }
    ctx.metrics.cron_ticks.inc();
    Ok(())
}

/// A webhook event: every matching trigger fires (or debounces).
pub(crate) async fn on_event(
    ctx: &Arc<Context>,
    source: Option<&str>,
    event: Option<&str>,
    delivery: &str,
    payload: &Value,
) -> Result<Vec<Fired>, TriggerError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let suspended = crate::suspension::all(ctx).await?;
    let mut out = Vec::new();
    let live = catalog.triggers.iter().filter(|(name, _)| !suspended.contains_key(name.as_str()));
    for (name, spec) in live.filter(|(_, t)| matches(t, source, event, payload)) {
        match fire(ctx, name, spec, payload, delivery, &JobExtras::default(), "trigger:webhook").await {
            Ok(f) => out.push(f),
            Err(TriggerError::Store(e)) => return Err(TriggerError::Store(e)),
            Err(TriggerError::NotLeading) => return Err(TriggerError::NotLeading),
            // One trigger that cannot make its job does not stop the others.
            Err(e) => {
                tracing::warn!(trigger = %name, error = %e, "webhook trigger cannot create its job");
                ctx.store
                    .record_event(
                        None,
                        EventKind::TriggerFailed,
                        "trigger:webhook",
                        json!({"trigger": name, "reason": e.to_string()}),
                    )
                    .await?;
            }
        }
    }
    Ok(out)
}

/// Fires trigger `name` once now, by hand, as its schedule or an event
/// would (`POST /api/v1/triggers/{name}/fire`): the wake has `fire_time` =
/// now and `manual: true` (a webhook trigger's parameters that read the
/// event's payload find nothing there). Each call is a new wake.
pub(crate) async fn fire_now(ctx: &Arc<Context>, name: &str, actor: &str) -> Result<Fired, TriggerError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let spec = catalog.triggers.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = catalog.triggers.keys().map(String::as_str).collect();
        TriggerError::NotFound(format!("unknown Trigger `{name}`; known triggers: [{}]", known.join(", ")))
    })?;
    let now = ctx.clock.now();
    let key = format!("manual-{}", now.format("%Y%m%d%H%M%S%6f"));
    let wake = json!({"fire_time": now.to_rfc3339(), "manual": true});
    fire(ctx, name, &spec, &wake, &key, &JobExtras::default(), actor).await
}

/// A manual summon of `agent`: its summon trigger (or `template`) with
/// `context` as parameters, and the job's `extras`.
pub(crate) async fn summon(
    ctx: &Arc<Context>,
    agent: &str,
    template: Option<&str>,
    context: &BTreeMap<String, Value>,
    extras: &JobExtras,
    actor: &str,
) -> Result<Fired, TriggerError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    if !catalog.agents.contains_key(agent) {
        return Err(TriggerError::NotFound(format!("unknown AgentSpec `{agent}`")));
    }
    let found = catalog.triggers.iter().find(|(_, t)| {
        t.trigger_type == TriggerType::Summon
            && t.agent.as_deref() == Some(agent)
            && template.is_none_or(|tpl| t.template.as_deref() == Some(tpl))
    });
    let (name, mut spec) = match (found, template) {
        (Some((n, t)), _) => (n.clone(), t.clone()),
        (None, Some(tpl)) => (
            format!("{agent}-summon"),
            TriggerSpec {
                trigger_type: TriggerType::Summon,
                template: Some(tpl.into()),
                agent: Some(agent.into()),
                priority: None,
                params: Default::default(),
                intent: None,
                schedule: None,
                timezone: None,
                missed: Default::default(),
                source: None,
                events: vec![],
                conditions: Default::default(),
                debounce: None,
                debounce_key: None,
                max_delay: None,
            },
        ),
        (None, None) => {
            return Err(TriggerError::NotFound(format!(
                "AgentSpec `{agent}` has no summon trigger; name a template to run (--template)"
            )))
        }
    };
    spec.params.extend(context.clone());
    let key = ctx.clock.now().format("%Y%m%d%H%M%S%3f").to_string();
    fire(ctx, &name, &spec, &Value::Null, &key, extras, actor).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_match_payload_paths() {
        let spec: TriggerSpec = serde_json::from_value(json!({
            "type": "webhook", "template": "t", "source": "jira_webhook", "events": ["issue.created"],
            "conditions": {"issue.fields.project": "PAYMENTS", "issue.fields.issue_type": "Bug"}
        }))
        .unwrap();
        let payload = json!({"issue": {"key": "PAY-1", "fields": {"project": "PAYMENTS", "issue_type": "Bug"}}});
        assert!(matches(&spec, Some("jira_webhook"), Some("issue.created"), &payload));
        assert!(!matches(&spec, Some("datadog"), Some("issue.created"), &payload));
        assert!(!matches(&spec, Some("jira_webhook"), Some("issue.updated"), &payload));
        let story = json!({"issue": {"fields": {"project": "PAYMENTS", "issue_type": "Story"}}});
        assert!(!matches(&spec, Some("jira_webhook"), Some("issue.created"), &story));
        assert_eq!(lookup(&payload, "issue.key"), Some(&json!("PAY-1")));
    }

    #[test]
    fn job_ids_are_valid_bounded_and_safe_in_paths() {
        assert_eq!(job_id("nightly-scan", "202603290100"), "nightly-scan-202603290100");
        let long = job_id(&"x".repeat(80), "202603290100");
        assert!(long.len() <= 63 && george_core::manifest::is_valid_name(&long), "{long}");
        for (base, suffix) in [("Jira Hook/PAY-1", "1"), ("hook", "../../etc/passwd"), ("hook", "A/B.C"), ("-", "..")] {
            let id = job_id(base, suffix);
            assert!(
                george_core::manifest::is_valid_name(&id) && !id.contains('.') && !id.contains('/'),
                "{base:?} {suffix:?} → {id}"
            );
        }
        assert_ne!(job_id("hook", "a.b"), job_id("hook", "a-b-x"));
        assert_ne!(job_id("hook", "pay.1"), job_id("hook", "pay-1"), "keys that clean alike stay apart");
        assert_ne!(job_id("hook", "PAY-1"), job_id("hook", "pay-1"));
        assert_eq!(job_id("hook", "pay-1"), "hook-pay-1", "a clean key is kept as it is");
    }
}

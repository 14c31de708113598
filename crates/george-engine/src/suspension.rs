//! An operator's suspension of a trigger (like a Kubernetes CronJob's
//! `suspend`): while suspended, its cron times pass without firing (the
//! schedule resumes from the moment it is resumed; nothing missed is made
//! up) and webhook events do not fire it. Firing it by hand still works.
//! A suspension is a durable setting, so it outlives a restart and holds on
//! every replica; each suspend and resume is an event.

use crate::context::Context;
use crate::triggers::TriggerError;
use chrono::{DateTime, Utc};
use george_core::EventKind;
use george_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Settings keys of suspensions: `trigger-suspended:<trigger>`.
const PREFIX: &str = "trigger-suspended:";

/// Who suspended a trigger, when and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Suspension {
    /// The operator.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, if they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The suspension of trigger `name`, if it is suspended.
pub(crate) async fn of(ctx: &Context, name: &str) -> Result<Option<Suspension>, StoreError> {
    Ok(ctx.store.setting(&format!("{PREFIX}{name}")).await?.and_then(|v| serde_json::from_value(v).ok()))
}

/// Every suspended trigger.
pub(crate) async fn all(ctx: &Context) -> Result<BTreeMap<String, Suspension>, StoreError> {
    Ok(ctx
        .store
        .settings(PREFIX)
        .await?
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?.to_string(), serde_json::from_value(v).ok()?)))
        .collect())
}

async fn known(ctx: &Context, name: &str) -> Result<(), TriggerError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    if catalog.triggers.contains_key(name) {
        return Ok(());
    }
    let names: Vec<&str> = catalog.triggers.keys().map(String::as_str).collect();
    Err(TriggerError::NotFound(format!("unknown Trigger `{name}`; known triggers: [{}]", names.join(", "))))
}

/// Suspends trigger `name` (again: the first suspension stands).
pub(crate) async fn suspend(
    ctx: &Arc<Context>,
    name: &str,
    by: &str,
    reason: Option<&str>,
) -> Result<Suspension, TriggerError> {
    known(ctx, name).await?;
    if let Some(s) = of(ctx, name).await? {
        return Ok(s);
    }
    let s = Suspension { by: by.to_string(), at: ctx.clock.now(), reason: reason.map(str::to_string) };
    let value = serde_json::to_value(&s).map_err(|e| TriggerError::Invalid(e.to_string()))?;
    ctx.store.set_setting(&format!("{PREFIX}{name}"), Some(value)).await?;
    let data = json!({"trigger": name, "by": by, "reason": reason});
    ctx.store.record_event(None, EventKind::TriggerSuspended, by, data).await?;
    tracing::info!(trigger = name, by, "trigger suspended");
    Ok(s)
}

/// Resumes trigger `name`; whether it was suspended.
pub(crate) async fn resume(ctx: &Arc<Context>, name: &str, by: &str) -> Result<bool, TriggerError> {
    known(ctx, name).await?;
    if of(ctx, name).await?.is_none() {
        return Ok(false);
    }
    ctx.store.set_setting(&format!("{PREFIX}{name}"), None).await?;
    ctx.store.record_event(None, EventKind::TriggerResumed, by, json!({"trigger": name, "by": by})).await?;
    tracing::info!(trigger = name, by, "trigger resumed");
    Ok(true)
}

//! Family token budgets: a job's budget covers its sub-agents too, and the
//! sum of a family can never exceed it.
//!
//! - A job without a parent gets its AgentSpec's `tokenBudget.perJob`, if set.
//! - A child's budget is carved out of its parent's remaining budget when it
//!   is created (the setting `budget.job:<child>`, written before the child);
//!   while the child is unfinished its whole budget counts against the
//!   parent; once it has ended, only what it and its own children spent
//!   does: the rest is returned.
//! - An LLM call of a job is reserved against the job's own budget (its
//!   worst case, as for every budget), beside the organisation's, chapter's
//!   and AgentSpec's: what the job itself used (the ledger), what its
//!   children hold or spent, and its calls in flight must fit.
//!
//! The check and the hold it adds happen under one lock, as do a child's
//! carve and its creation, so concurrent calls and concurrent children can
//! never together take a family past its budget.

use crate::children;
use george_core::plan::Catalog;
use george_core::record::Job;
use george_store::{Store, StoreError};
use parking_lot::Mutex;
use std::collections::HashMap;

/// Settings key of a child's carved budget: `budget.job:<job>`.
pub const SETTING: &str = george_store::job_settings::FAMILY_SHARE;

/// The engine's family accounts: the lock, and the calls in flight per job.
#[derive(Debug, Default)]
pub struct FamilyBudgets {
    lock: tokio::sync::Mutex<()>,
    held: Mutex<HashMap<String, u64>>,
}

/// A child about to be created, as its share is carved.
#[derive(Debug, Clone, Copy)]
pub struct Share<'a> {
    /// Its id.
    pub id: &'a str,
    /// The tokens it asks for.
    pub asked: Option<u64>,
    /// How many children its parent may still create.
    pub slots: u32,
}

/// Tokens a call holds against its job's family budget until its usage is in the ledger.
#[derive(Debug)]
pub struct FamilyHold {
    job: String,
    tokens: u64,
}

/// Why a family budget refused.
#[derive(Debug, thiserror::Error)]
pub enum FamilyError {
    /// Not enough left.
    #[error("token budget exhausted: job `{job}` has {remaining} of its family budget of {limit} tokens left and {what} needs {needed}")]
    Exhausted {
        /// The job whose budget it is.
        job: String,
        /// Its budget.
        limit: u64,
        /// Left.
        remaining: u64,
        /// Asked for.
        needed: u64,
        /// A call, or a child.
        what: &'static str,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The share of its parent's budget child `job` was given, if any.
pub async fn share(store: &dyn Store, job: &str) -> Result<Option<u64>, StoreError> {
    Ok(store.setting(&format!("{SETTING}{job}")).await?.and_then(|v| v.as_u64()))
}

/// A job's family budget, if it has one: a child's share, or for a job
/// without a parent its AgentSpec's `perJob` (from `catalog`).
pub async fn limit(store: &dyn Store, catalog: &Catalog, job: &Job) -> Result<Option<u64>, StoreError> {
    if children::parent_of(job).is_some() {
        return share(store, &job.id).await;
    }
    Ok(catalog.agents.get(&job.agent).and_then(|a| a.spec.resources.token_budget.as_ref()).and_then(|t| t.per_job))
}

/// Tokens `job` used itself (the ledger, all its attempts).
async fn used(store: &dyn Store, job: &str) -> Result<u64, StoreError> {
    let since = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let rows = store.usage_records(since, Some(job)).await?;
    Ok(rows.iter().map(|r| r.input_tokens + r.output_tokens).sum())
}

/// Tokens `job` and its family beneath it have spent or hold (see [`committed`]).
pub async fn spent(store: &dyn Store, job: &str) -> Result<u64, StoreError> {
    committed(store, job).await
}

/// An ended child's share goes back to its parent, but for what it spent:
/// said once, as a `budget.returned` event on the parent.
pub async fn give_back(store: &dyn Store, parent: &str, child: &str) -> Result<(), StoreError> {
    let Some(share) = store.setting(&format!("{SETTING}{child}")).await?.and_then(|v| v.as_u64()) else {
        return Ok(());
    };
    let said = format!("{}{child}", george_store::job_settings::SHARE_RETURNED);
    if store.setting(&said).await?.is_some() {
        return Ok(());
    }
    let spent = committed(store, child).await?;
    let returned = share.saturating_sub(spent);
    store.set_setting(&said, Some(serde_json::json!(returned))).await?;
    let data = serde_json::json!({"child": child, "share": share, "spent": spent, "returned": returned});
    store.record_event(Some(parent), george_core::EventKind::BudgetReturned, "governor", data).await?;
    tracing::info!(parent, child, share, spent, returned, "an ended child's unspent budget went back to its parent");
    Ok(())
}

/// What counts against `job`'s budget besides its calls in flight: its own
/// usage, each unfinished child's budget, each ended child's spending.
fn committed<'a>(
    store: &'a dyn Store,
    job: &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, StoreError>> + Send + 'a>> {
    Box::pin(async move {
        let mut total = used(store, job).await?;
        for child in children::children(store, job).await? {
            let carved = share(store, &child.id).await?;
            total += match carved {
                Some(l) if !child.status.is_final() => l,
                _ => committed(store, &child.id).await?,
            };
        }
        Ok(total)
    })
}

/// `job`'s budget, and what is left of it.
pub async fn remaining(
    budgets: &FamilyBudgets,
    store: &dyn Store,
    catalog: &Catalog,
    job: &Job,
) -> Result<Option<(u64, u64)>, StoreError> {
    let Some(l) = limit(store, catalog, job).await? else { return Ok(None) };
    Ok(Some((l, left(budgets, store, &job.id, l).await?)))
}

/// What is left of `job`'s budget `limit`.
async fn left(budgets: &FamilyBudgets, store: &dyn Store, job: &str, limit: u64) -> Result<u64, StoreError> {
    let held = budgets.held.lock().get(job).copied().unwrap_or(0);
    let spent = committed(store, job).await?;
    Ok(limit.saturating_sub(spent.saturating_add(held)))
}

impl FamilyBudgets {
    /// Holds a call's worst case (`needed`) against `job`'s family budget,
    /// or refuses it. `None`: the job has no family budget.
    pub async fn reserve(
        &self,
        store: &dyn Store,
        catalog: &Catalog,
        job: &Job,
        needed: u64,
    ) -> Result<Option<FamilyHold>, FamilyError> {
        // A job without a family budget (most) takes neither the lock nor the ledger's time.
        let Some(limit) = limit(store, catalog, job).await? else { return Ok(None) };
        let _turn = self.lock.lock().await;
        let left = left(self, store, &job.id, limit).await?;
        if needed > left {
            return Err(FamilyError::Exhausted {
                job: job.id.clone(),
                limit,
                remaining: left,
                needed,
                what: "the call",
            });
        }
        *self.held.lock().entry(job.id.clone()).or_default() += needed;
        Ok(Some(FamilyHold { job: job.id.clone(), tokens: needed }))
    }

    /// Gives a call's hold back (its usage is in the ledger by now).
    pub fn release(&self, hold: FamilyHold) {
        let mut held = self.held.lock();
        if let Some(n) = held.get_mut(&hold.job) {
            *n = n.saturating_sub(hold.tokens);
            if *n == 0 {
                held.remove(&hold.job);
            }
        }
    }

    /// Creates `parent`'s child as `create` does, first carving its budget
    /// out of the parent's: what `child` asks, else an equal share of what is
    /// left for the children the parent may still create. Without a parent
    /// budget the child has none.
    pub async fn carve<T>(
        &self,
        (store, catalog): (&dyn Store, &Catalog),
        parent: &Job,
        child: Share<'_>,
        create: impl std::future::Future<Output = Result<T, children::ChildError>>,
    ) -> Result<T, children::ChildError> {
        let Share { id: child_id, asked, slots } = child;
        let _turn = self.lock.lock().await;
        if store.get_job(child_id).await?.is_some() {
            return create.await;
        }
        if let Some((limit, left)) = remaining(self, store, catalog, parent).await? {
            let tokens = asked.unwrap_or(left / u64::from(slots.max(1)));
            if tokens > left || tokens == 0 {
                return Err(children::ChildError::Limit(
                    FamilyError::Exhausted {
                        job: parent.id.clone(),
                        limit,
                        remaining: left,
                        needed: tokens,
                        what: "the child",
                    }
                    .to_string(),
                ));
            }
            store.set_setting(&format!("{SETTING}{child_id}"), Some(serde_json::json!(tokens))).await?;
            tracing::info!(parent = %parent.id, child = child_id, tokens, left, "child budget carved from its parent's");
        }
        create.await
    }
}

//! Leader election on PostgreSQL: a lease row per name, taken or renewed
//! with one statement whose expiry is judged by the database's clock, so the
//! replicas' clocks do not matter. `epoch` counts the terms: it grows when
//! the lease changes hands or its holder let it expire.
//!
//! **Fencing.** While a store has a [`Fence`], every write transaction first
//! takes the lease's advisory lock in shared mode and checks `leases` for its
//! lease, holder and epoch, unexpired; otherwise the write is refused with
//! [`StoreError::Fenced`] and changes nothing. A campaign takes the same lock
//! exclusively, so a takeover waits for the fenced writes in flight (they
//! checked a term that was still valid) and every later fenced write of the
//! old term fails: a leader that was paused past its lease (and has not
//! noticed yet) cannot spawn, kill or change anything. An advisory lock lives
//! in memory: unlike a row lock (`FOR SHARE`), it costs no write to the
//! lease row on every transaction.

use super::PostgresStore;
use crate::{Result, StoreError};
use std::time::Duration;

/// A leader's term: what its writes are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease.
    pub lease: String,
    /// Who holds it (the engine id).
    pub holder: String,
    /// The term.
    pub epoch: i64,
}

impl PostgresStore {
    /// Runs `op` on the lease's own connection, off the async threads.
    async fn on_lease<T: Send + 'static>(
        &self,
        op: impl FnMut(&mut postgres::Client) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut op = op;
            inner.lease.run(|conn| op(&mut conn.client))
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Takes the lease `name` for `holder` for `ttl` if it is free or
    /// expired, or renews it if `holder` has it. Returns the term's epoch, or
    /// `None` if someone else holds it.
    pub async fn campaign(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<i64>> {
        let (name, holder, secs) = (name.to_string(), holder.to_string(), ttl.as_secs_f64());
        self.on_lease(move |client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name])?;
            let row = tx.query_opt(
                "INSERT INTO leases (name, holder, epoch, acquired_at, renewed_at, expires_at) \
                 VALUES ($1, $2, 1, now(), now(), now() + make_interval(secs => $3)) \
                 ON CONFLICT (name) DO UPDATE SET \
                   epoch = CASE WHEN leases.holder = EXCLUDED.holder AND leases.expires_at > now() \
                                THEN leases.epoch ELSE leases.epoch + 1 END, \
                   acquired_at = CASE WHEN leases.holder = EXCLUDED.holder AND leases.expires_at > now() \
                                      THEN leases.acquired_at ELSE now() END, \
                   holder = EXCLUDED.holder, renewed_at = now(), expires_at = EXCLUDED.expires_at \
                 WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= now() \
                 RETURNING epoch",
                &[&name, &holder, &secs],
            )?;
            let epoch = row.map(|r| r.try_get::<_, i64>("epoch")).transpose()?;
            tx.commit()?;
            Ok(epoch)
        })
        .await
    }

    /// Records a term won elsewhere (a Kubernetes Lease) as the lease row's
    /// term, so fenced writes are checked against it: the row becomes
    /// `holder`'s at `epoch` for `ttl` if `epoch` is newer than the row's, or
    /// is the row's own term and holder (a renewal). Returns whether it did;
    /// `false` means a newer term is recorded and this one is over. Takes
    /// the lease's lock exclusively, like a campaign, so the fenced writes of
    /// an older term in flight finish first and every later one is refused.
    pub async fn record_term(&self, name: &str, holder: &str, epoch: i64, ttl: Duration) -> Result<bool> {
        let (name, holder, secs) = (name.to_string(), holder.to_string(), ttl.as_secs_f64());
        self.on_lease(move |client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name])?;
            let n = tx.execute(
                "INSERT INTO leases (name, holder, epoch, acquired_at, renewed_at, expires_at) \
                 VALUES ($1, $2, $3, now(), now(), now() + make_interval(secs => $4)) \
                 ON CONFLICT (name) DO UPDATE SET \
                   acquired_at = CASE WHEN leases.epoch = EXCLUDED.epoch THEN leases.acquired_at ELSE now() END, \
                   holder = EXCLUDED.holder, epoch = EXCLUDED.epoch, renewed_at = now(), expires_at = EXCLUDED.expires_at \
                 WHERE leases.epoch < EXCLUDED.epoch OR (leases.epoch = EXCLUDED.epoch AND leases.holder = EXCLUDED.holder)",
                &[&name, &holder, &epoch, &secs],
            )?;
            tx.commit()?;
            Ok(n == 1)
        }).await
    }

    /// Gives the lease up at once (a clean shutdown), if `holder` has it.
    pub async fn resign(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.on_lease(move |client| {
            client
                .execute("UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2", &[&name, &holder])?;
            Ok(())
        })
        .await
    }

    /// Who holds the lease `name` now (unexpired), with the epoch.
    pub async fn leader(&self, name: &str) -> Result<Option<(String, i64)>> {
        let name = name.to_string();
        self.on_lease(move |client| {
            let row = client
                .query_opt("SELECT holder, epoch FROM leases WHERE name = $1 AND expires_at > now()", &[&name])?;
            Ok(row.map(|r| Ok::<_, postgres::Error>((r.try_get("holder")?, r.try_get("epoch")?))).transpose()?)
        })
        .await
    }

    /// Fences every later write with `fence` (or stops fencing).
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.inner.fence.lock() = fence;
    }
}

/// Refuses the transaction unless `fence`'s term still holds.
pub(super) fn check(tx: &mut postgres::Transaction<'_>, fence: &Fence) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))", &[&fence.lease])?;
    let held = tx.query_opt(
        "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()",
        &[&fence.lease, &fence.holder, &fence.epoch],
    )?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced(format!(
            "the lease `{}` is no longer held by `{}` in term {}; this engine was deposed",
            fence.lease, fence.holder, fence.epoch
        ))),
    }
}

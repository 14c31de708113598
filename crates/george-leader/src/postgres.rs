//! The lease as a row in PostgreSQL, taken or renewed with one statement
//! whose expiry is judged by the database's clock (so the replicas' clocks
//! do not matter); the row's epoch is also the fencing term.

use super::{LeaseError, LeaseLock, LEASE};
use async_trait::async_trait;
use george_store::PostgresStore;
use std::time::Duration;

/// The `george-engine` row of the `leases` table.
#[derive(Debug, Clone)]
pub struct PostgresLease {
    store: PostgresStore,
    holder: String,
    duration: Duration,
}

impl PostgresLease {
    /// `holder`'s bid for the lease, held for `duration` per renewal.
    pub fn new(store: PostgresStore, holder: String, duration: Duration) -> Self {
        Self { store, holder, duration }
    }
}

#[async_trait]
impl LeaseLock for PostgresLease {
    async fn try_acquire_or_renew(&self) -> Result<Option<i64>, LeaseError> {
        Ok(self.store.campaign(LEASE, &self.holder, self.duration).await?)
    }

    async fn release(&self) -> Result<(), LeaseError> {
        Ok(self.store.resign(LEASE, &self.holder).await?)
    }
}

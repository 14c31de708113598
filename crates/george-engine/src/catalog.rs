//! A cached copy of the stored templates and agent specs, so spawning and
//! submitting do not re-read manifests. The engine drops its copy whenever
//! the store says a manifest changed ([`CatalogCache::invalidate`]); a
//! reader with no engine loop behind it — the API planning a submission, on
//! a leader or a standby alike — keeps one that follows the store's events
//! itself ([`FollowedCatalog`]).

use george_core::plan::Catalog;
use george_core::record::Event;
use george_store::{Store, StoreError};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::time::Instant;

/// The cache.
#[derive(Debug, Default)]
pub struct CatalogCache {
    state: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    current: Option<(Arc<Catalog>, Instant)>,
    /// Counts invalidations: a load that began before one is not kept (it
    /// may have read the manifests before the change).
    generation: u64,
}

impl CatalogCache {
    /// The catalog, loading it if needed.
    pub async fn get(&self, store: &dyn Store) -> Result<Arc<Catalog>, StoreError> {
        self.get_within(store, None).await
    }

    /// The catalog, loading it if needed or if loaded longer than `max_age` ago.
    async fn get_within(&self, store: &dyn Store, max_age: Option<Duration>) -> Result<Arc<Catalog>, StoreError> {
        let began = {
            let s = self.state.lock();
            match &s.current {
                Some((c, at)) if max_age.is_none_or(|age| at.elapsed() < age) => return Ok(c.clone()),
                _ => s.generation,
            }
        };
        let loaded = Arc::new(store.catalog().await?);
        let mut s = self.state.lock();
        if s.generation == began {
            s.current = Some((loaded.clone(), Instant::now()));
        }
        Ok(loaded)
    }

    /// Forgets the cached catalog.
    pub fn invalidate(&self) {
        let mut s = self.state.lock();
        s.current = None;
        s.generation += 1;
    }
}

/// A cached catalog that reads the store's events as it is asked: a
/// manifest changed, or events were missed, and the next answer is read
/// again. Whatever a caller applied through this process is seen by its
/// next call (the store broadcasts a write's events before it returns);
/// another process's change, as soon as its events arrive (a PostgreSQL
/// standby's feed), and in any case within [`FollowedCatalog::MAX_AGE`].
#[derive(Debug)]
pub struct FollowedCatalog {
    cache: CatalogCache,
    events: Mutex<broadcast::Receiver<Event>>,
}

impl FollowedCatalog {
    /// The longest a copy is used without being read again.
    pub const MAX_AGE: Duration = Duration::from_secs(1);

    /// Follows `store`'s events from now on.
    pub fn new(store: &dyn Store) -> Self {
        Self { cache: CatalogCache::default(), events: Mutex::new(store.subscribe()) }
    }

    /// The catalog as the store has it, as far as its events tell.
    pub async fn get(&self, store: &dyn Store) -> Result<Arc<Catalog>, StoreError> {
        if self.changed() {
            self.cache.invalidate();
        }
        self.cache.get_within(store, Some(Self::MAX_AGE)).await
    }

    /// Whether the events since the last look say the manifests changed.
    fn changed(&self) -> bool {
        let mut events = self.events.lock();
        let mut changed = false;
        loop {
            match events.try_recv() {
                Ok(e) => changed |= e.kind.changes_catalog(),
                Err(TryRecvError::Empty) => return changed,
                // Missed some: any of them may have been a change.
                Err(TryRecvError::Lagged(_)) => changed = true,
                Err(TryRecvError::Closed) => return true,
            }
        }
    }
}

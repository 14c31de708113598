//! A cached copy of the stored templates and agent specs, dropped whenever a
//! source applies a revision, so spawning does not re-read manifests.

use george_core::plan::Catalog;
use george_store::{Store, StoreError};
use std::sync::{Arc, RwLock};

/// The cache.
#[derive(Debug, Default)]
pub struct CatalogCache {
    current: RwLock<Option<Arc<Catalog>>>,
}

impl CatalogCache {
    /// The catalog, loading it if needed.
    pub async fn get(&self, store: &dyn Store) -> Result<Arc<Catalog>, StoreError> {
        if let Some(c) = self.current.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let loaded = Arc::new(store.catalog().await?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(loaded.clone());
        Ok(loaded)
    }

    /// Forgets the cached catalog.
    pub fn invalidate(&self) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

//! The catalog the API plans submissions with is kept between requests and
//! follows the store: a change made through this process is seen at once,
//! another process's within `FollowedCatalog::MAX_AGE`.

use crate::support::{self, TEMPLATE, WORKER};
use george_engine::FollowedCatalog;
use george_store::{SqliteStore, Store};
use std::sync::Arc;

/// A second template, `u`.
const TEMPLATE_U: &str = "apiVersion: george/v1
kind: TaskTemplate
metadata: {name: u}
spec:
  steps:
    - {id: s, description: step, run: 'true'}
";

async fn apply(store: &dyn Store, dir: &std::path::Path, docs: &[&str], revision: &str) {
    let m = dir.join(revision);
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("all.yaml"), support::manifests(docs)).unwrap();
    let (set, problems) = george_sources::load_folder(&m, "").unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    store.apply_snapshot(george_sources::snapshot_of(&set.unwrap(), "folder", revision)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_followed_catalog_sees_every_manifest_change() {
    let dir = support::tempdir();
    let store = support::store_with(dir.path(), &support::manifests(&[WORKER, TEMPLATE]), None).await;
    let followed = FollowedCatalog::new(store.as_ref());
    let first = followed.get(store.as_ref()).await.unwrap();
    assert!(first.templates.contains_key("t") && !first.templates.contains_key("u"));
    // Kept while nothing changes.
    assert!(Arc::ptr_eq(&first, &followed.get(store.as_ref()).await.unwrap()));

    // Applied through this process: the next answer has it.
    apply(store.as_ref(), dir.path(), &[WORKER, TEMPLATE, TEMPLATE_U], "r2").await;
    assert!(followed.get(store.as_ref()).await.unwrap().templates.contains_key("u"));

    // Applied by another process (no event reaches this one): seen once the copy is old enough.
    let other = SqliteStore::open(dir.path().join("g.db")).unwrap();
    apply(&other, dir.path(), &[WORKER, TEMPLATE], "r3").await;
    assert!(followed.get(store.as_ref()).await.unwrap().templates.contains_key("u"));
    tokio::time::advance(FollowedCatalog::MAX_AGE).await;
    let last = followed.get(store.as_ref()).await.unwrap();
    assert!(last.templates.contains_key("t") && !last.templates.contains_key("u"), "{:?}", last.templates.keys());
}

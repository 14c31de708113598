//! The lease conformance suite (`george_testkit::lease_conformance`) over
//! both leader-election backends: the PostgreSQL lease row, and a
//! Kubernetes `Lease` on the Kubernetes API test server (its terms recorded
//! in PostgreSQL for fencing).

use george_leader::kubernetes::{KubernetesLease, MonotonicClock};
use george_leader::postgres::PostgresLease;
use george_leader::{LeaseLock, LEASE};
use george_store::PostgresStore;
use george_testkit::lease_conformance::LeaseBackend;
use george_testkit::postgres_server::TestDatabase;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a term lasts without renewal, in these tests.
const TERM: Duration = Duration::from_secs(30);

async fn store_on(db: &TestDatabase) -> PostgresStore {
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || PostgresStore::connect(&url)).await.unwrap().unwrap()
}

/// Ends the lease row's term now, by the database's clock.
fn expire_row(db: &TestDatabase) {
    db.with_client(|c| c.execute("UPDATE leases SET expires_at = now() WHERE name = $1", &[&LEASE]).map(drop));
}

mod postgres {
    use super::*;

    struct Row {
        db: TestDatabase,
        store: PostgresStore,
    }

    #[async_trait::async_trait]
    impl LeaseBackend for Row {
        async fn candidate(&self, holder: &str) -> Arc<dyn LeaseLock> {
            Arc::new(PostgresLease::new(self.store.clone(), holder.to_string(), TERM))
        }

        async fn expire(&self) {
            expire_row(&self.db);
        }
    }

    async fn backend() -> Row {
        let db = TestDatabase::create();
        let store = store_on(&db).await;
        Row { db, store }
    }

    george_testkit::lease_conformance_tests!(backend());
}

mod kubernetes {
    use super::*;
    use crate::common::kube_api::KubeServer;

    const NS: &str = "leases";

    struct KubeLease {
        server: KubeServer,
        db: TestDatabase,
        store: PostgresStore,
        /// Every replica's monotonic clock, in milliseconds.
        now_ms: Arc<AtomicU64>,
        _dir: tempfile::TempDir,
        kubeconfig: std::path::PathBuf,
    }

    #[async_trait::async_trait]
    impl LeaseBackend for KubeLease {
        async fn candidate(&self, holder: &str) -> Arc<dyn LeaseLock> {
            let client = george_runtime::kubernetes::client(Some(&self.kubeconfig)).await.unwrap();
            let now = self.now_ms.clone();
            let clock: MonotonicClock = Arc::new(move || Duration::from_millis(now.load(Ordering::SeqCst)));
            let api = kube::Api::namespaced(client, NS);
            Arc::new(KubernetesLease::new(api, LEASE, holder.to_string(), TERM, self.store.clone(), clock))
        }

        async fn expire(&self) {
            // Nobody renewed for a whole term, by every replica's clock; the
            // row recorded for fencing lapses with it.
            self.now_ms.fetch_add(TERM.as_millis() as u64 + 1, Ordering::SeqCst);
            expire_row(&self.db);
            let _ = &self.server;
        }
    }

    async fn backend() -> KubeLease {
        let server = KubeServer::start("lease-test-token");
        let dir = crate::common::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig, NS);
        let db = TestDatabase::create();
        let store = store_on(&db).await;
        KubeLease { server, db, store, now_ms: Arc::new(AtomicU64::new(0)), _dir: dir, kubeconfig }
    }

    george_testkit::lease_conformance_tests!(backend());
}

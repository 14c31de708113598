//! The store conformance suite against PostgreSQL, each test on a fresh
//! database (`postgres_server` says where the server comes from), and what
//! matters when several engines share one database.

use george_testkit::postgres_server;

use george_core::EventKind;
use george_store::conformance::job;
use george_store::{PostgresStore, Snapshot, Store, StoreError};
use postgres_server::TestDatabase;
use serde_json::json;
use std::sync::Arc;

fn connect_to(db: &TestDatabase) -> Arc<dyn Store> {
    Arc::new(PostgresStore::connect(&db.url).unwrap())
}

george_store::store_conformance_tests!(
    async {
        let db = TestDatabase::create();
        (connect_to(&db), Box::new(db) as Box<dyn std::any::Any + Send>)
    },
    second: |guard| connect_to(guard.downcast_ref::<TestDatabase>().expect("the guard is the test database"))
);

#[tokio::test]
async fn reconnecting_keeps_data_and_schema_version() {
    let db = TestDatabase::create();
    connect_to(&db).create_job(job("keep", "api"), "t").await.unwrap();
    let store = connect_to(&db);
    assert!(store.get_job("keep").await.unwrap().is_some());
    let versions: Vec<i64> = db.with_client(|c| {
        c.query("SELECT version FROM schema_migrations ORDER BY version", &[])?.iter().map(|r| r.try_get(0)).collect()
    });
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_advice() {
    let db = TestDatabase::create();
    drop(connect_to(&db));
    db.with_client(|c| c.execute("INSERT INTO schema_migrations (version) VALUES (99)", &[]));
    let err = PostgresStore::connect(&db.url).unwrap_err().to_string();
    assert!(err.contains("upgrade george"), "{err}");
}

#[tokio::test]
async fn the_event_log_is_append_only() {
    let db = TestDatabase::create();
    connect_to(&db).create_job(job("j", "api"), "t").await.unwrap();
    for sql in ["DELETE FROM events", "UPDATE events SET kind = 'x'", "TRUNCATE events"] {
        let refused = db.with_client(|c| Ok(c.batch_execute(sql)));
        let err = refused.expect_err(sql);
        let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_else(|| err.to_string());
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_starting_together_migrate_once() {
    let db = TestDatabase::create();
    let url = db.url.clone();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::task::spawn_blocking(move || PostgresStore::connect(&url).map(drop))
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let applied: i64 = db.with_client(|c| c.query_one("SELECT COUNT(*) FROM schema_migrations", &[])?.try_get(0));
    assert_eq!(applied, 6, "each migration once");
}

/// Events are committed in `seq` order across engines: a reader paging with
/// `seq > last` while three engines write sees every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_paging_the_log_never_skip_an_event() {
    const PER_ENGINE: usize = 100;
    let db = TestDatabase::create();
    let reader = connect_to(&db);
    let engines: Vec<_> = (0..3)
        .map(|engine| {
            let store = connect_to(&db);
            tokio::spawn(async move {
                for n in 0..PER_ENGINE {
                    store
                        .record_event(None, EventKind::Audit, &format!("engine:{engine}"), json!({"n": n}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    loop {
        let writing = engines.iter().any(|e| !e.is_finished());
        let page = reader.events_since(seen.last().copied().unwrap_or(0), 1000, None).await.unwrap();
        if page.is_empty() && !writing {
            break;
        }
        seen.extend(page.iter().map(|e| e.seq));
    }
    for engine in engines {
        engine.await.unwrap();
    }
    let all: Vec<i64> = reader.events_since(0, 10_000, None).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(all.len(), 3 * PER_ENGINE);
    assert_eq!(seen, all, "the reader skipped an event that committed after a later one");
}

/// Two engines applying the same revision of a source take turns: one
/// applies it, the other finds it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_apply_one_revision_once() {
    let db = TestDatabase::create();
    let snapshot = Snapshot {
        source: "git".into(),
        revision: "r1".into(),
        manifests: vec![],
        jobs: vec![job("a", "git"), job("b", "git")],
        prune: true,
    };
    let applies: Vec<_> = [connect_to(&db), connect_to(&db)]
        .into_iter()
        .map(|store| {
            let snapshot = snapshot.clone();
            tokio::spawn(async move { store.apply_snapshot(snapshot).await.unwrap() })
        })
        .collect();
    let mut reports = Vec::new();
    for apply in applies {
        reports.push(apply.await.unwrap());
    }
    reports.sort_by_key(|r| r.unchanged);
    assert_eq!(
        (reports[0].created.as_slice(), reports[0].unchanged),
        (["a".to_string(), "b".to_string()].as_slice(), false)
    );
    assert!(reports[1].unchanged, "{:?}", reports[1]);
    let created = connect_to(&db).events_since(0, 100, None).await.unwrap();
    assert_eq!(created.iter().filter(|e| e.kind == "job.created").count(), 2);
}

/// A connection the server closed (a restart) is reopened: the next
/// operations succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_is_reopened() {
    let db = TestDatabase::create();
    let store = connect_to(&db);
    store.create_job(job("before", "api"), "t").await.unwrap();
    assert!(store.get_job("before").await.unwrap().is_some());
    for round in 0..3 {
        assert!(db.terminate_connections() >= 2, "the writer and reader connections were open");
        let id = format!("after-{round}");
        store.create_job(job(&id, "api"), "t").await.unwrap();
        assert!(store.get_job(&id).await.unwrap().is_some());
    }
}

/// PostgreSQL cannot store a NUL character in text; such a write is refused
/// as invalid rather than failing the database.
#[tokio::test]
async fn text_with_a_nul_character_is_invalid() {
    let db = TestDatabase::create();
    let store = connect_to(&db);
    store.create_job(job("j", "api"), "t").await.unwrap();
    let err = store.add_comment("j", "operator:a", "nul \0 here").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let err =
        store.record_event(Some("j"), EventKind::CommentAdded, "t", json!({"text": "nul \0 here"})).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
}

/// The lease: one holder at a time, judged by the database's clock; a new
/// term fences every write of the old one, which changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_and_fences_the_old_term() {
    let db = TestDatabase::create();
    let open = || {
        let url = db.url.clone();
        std::thread::spawn(move || PostgresStore::connect(&url).unwrap()).join().unwrap()
    };
    let (a, b) = (open(), open());
    let ttl = std::time::Duration::from_secs(60);
    assert_eq!(a.campaign("l", "a", ttl).await.unwrap(), Some(1));
    assert_eq!(b.campaign("l", "b", ttl).await.unwrap(), None, "a holds it");
    assert_eq!(a.campaign("l", "a", ttl).await.unwrap(), Some(1), "a renewal keeps the term");
    a.set_fence(Some(george_store::Fence { lease: "l".into(), holder: "a".into(), epoch: 1 }));
    a.create_job(job("j1", "api"), "t").await.unwrap();

    // The lease lapses (as if a were paused past it); b takes a new term.
    db.with_client(|c| c.execute("UPDATE leases SET expires_at = now() - interval '1 second'", &[]));
    assert_eq!(b.leader("l").await.unwrap(), None);
    assert_eq!(b.campaign("l", "b", ttl).await.unwrap(), Some(2));
    assert_eq!(b.leader("l").await.unwrap(), Some(("b".into(), 2)));
    let before = b.latest_seq().await.unwrap();
    let err = a.create_job(job("j2", "api"), "t").await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert!(b.get_job("j2").await.unwrap().is_none(), "the fenced write changed nothing");
    assert_eq!(b.latest_seq().await.unwrap(), before);
    assert_eq!(a.campaign("l", "a", ttl).await.unwrap(), None, "b holds it now");

    // b resigns: the lease is free at once, and a starts term 3.
    b.resign("l", "b").await.unwrap();
    assert_eq!(a.campaign("l", "a", ttl).await.unwrap(), Some(3));
    a.set_fence(Some(george_store::Fence { lease: "l".into(), holder: "a".into(), epoch: 3 }));
    a.create_job(job("j3", "api"), "t").await.unwrap();
}

/// Terms won elsewhere (a Kubernetes Lease) recorded for fencing: only a
/// newer term, or a renewal of the recorded one by its holder, is taken;
/// every write of an older term is refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_terms_only_move_forward_and_fence_older_ones() {
    let db = TestDatabase::create();
    let open = || {
        let url = db.url.clone();
        std::thread::spawn(move || PostgresStore::connect(&url).unwrap()).join().unwrap()
    };
    let (a, b) = (open(), open());
    let ttl = std::time::Duration::from_secs(60);
    assert!(a.record_term("l", "a", 5, ttl).await.unwrap(), "the first term is recorded");
    assert!(a.record_term("l", "a", 5, ttl).await.unwrap(), "its holder renews it");
    assert!(!b.record_term("l", "b", 5, ttl).await.unwrap(), "another holder cannot claim the same term");
    assert!(!b.record_term("l", "b", 4, ttl).await.unwrap(), "nor an older one");
    assert_eq!(a.leader("l").await.unwrap(), Some(("a".into(), 5)));
    a.set_fence(Some(george_store::Fence { lease: "l".into(), holder: "a".into(), epoch: 5 }));
    a.create_job(job("j1", "api"), "t").await.unwrap();

    // b wins term 6 (while a's term has not even expired): a is fenced at once.
    assert!(b.record_term("l", "b", 6, ttl).await.unwrap());
    let err = a.create_job(job("j2", "api"), "t").await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert!(b.get_job("j2").await.unwrap().is_none(), "the fenced write changed nothing");
    assert!(!a.record_term("l", "a", 5, ttl).await.unwrap(), "a cannot renew its old term");
    assert_eq!(b.leader("l").await.unwrap(), Some(("b".into(), 6)));
}

/// Events reach every process's subscribers, in `seq` order and once each,
/// whichever process wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_subscribers_of_every_process() {
    let db = TestDatabase::create();
    let open = || {
        let url = db.url.clone();
        std::thread::spawn(move || PostgresStore::connect(&url).unwrap()).join().unwrap()
    };
    let (a, b) = (open(), open());
    let (mut on_a, mut on_b) = (a.subscribe(), b.subscribe());
    for i in 0..5 {
        let writer = if i % 2 == 0 { &a } else { &b };
        writer.create_job(job(&format!("j{i}"), "api"), "t").await.unwrap();
    }
    for rx in [&mut on_a, &mut on_b] {
        let mut seqs = Vec::new();
        while seqs.len() < 5 {
            let e = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("an event within 10s")
                .unwrap();
            assert_eq!(e.kind, "job.created");
            seqs.push(e.seq);
        }
        let want: Vec<i64> = (seqs[0]..seqs[0] + 5).collect();
        assert_eq!(seqs, want, "every event once, in order");
    }
    assert!(on_a.try_recv().is_err() && on_b.try_recv().is_err(), "nothing twice");
}

/// Whether every connection George holds to `db` is encrypted (`None`: it holds none).
fn george_sessions_encrypted(db: &TestDatabase) -> Option<bool> {
    let flags: Vec<bool> = db.with_client(|c| {
        c.query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.application_name = 'george' AND a.datname = current_database()",
            &[],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect()
    });
    (!flags.is_empty()).then(|| flags.iter().all(|f| *f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_configured_ca_and_used_as_sslmode_says() {
    let Some(ca) = postgres_server::server_ca() else {
        eprintln!("not checked: GEORGE_TEST_POSTGRES names an outside server, whose TLS setup is unknown");
        return;
    };
    let db = TestDatabase::create();
    let connect = |url: String, ca_file: Option<std::path::PathBuf>| {
        let tls = george_store::PostgresTls { ca_file };
        std::thread::spawn(move || PostgresStore::connect_tls(&url, &tls)).join().unwrap()
    };

    // With the CA: verified, and TLS is required even under the default sslmode=prefer.
    let store = connect(db.url.clone(), Some(ca.clone())).expect("verified TLS");
    store.create_job(job("over-tls", "api"), "t").await.unwrap();
    assert_eq!(george_sessions_encrypted(&db), Some(true));
    drop(store);

    // A certificate from another CA is refused, naming why.
    let err = connect(db.url.clone(), Some(ca.with_file_name("other-ca.crt"))).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A file with no certificate is bad configuration.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let err = connect(db.url.clone(), Some(empty.path().to_path_buf())).unwrap_err().to_string();
    assert!(err.contains("store.tls.caFile") && err.contains("no PEM certificate"), "{err}");

    // Without a CA, sslmode decides: require encrypts (unverified, as libpq), disable does not.
    let db2 = TestDatabase::create();
    let store = connect(format!("{} sslmode=require", db2.url), None).expect("TLS without verification");
    assert!(store.get_job("anything").await.unwrap().is_none());
    assert_eq!(george_sessions_encrypted(&db2), Some(true));
    drop(store);
    let db3 = TestDatabase::create();
    let store = connect(format!("{} sslmode=disable", db3.url), None).expect("plain");
    assert!(store.get_job("anything").await.unwrap().is_none());
    assert_eq!(george_sessions_encrypted(&db3), Some(false));
}

/// Another engine's hold (an AgentSpec's dismissal) written while a job's
/// attempt starts: the attempt waits for it to commit and sees it (before,
/// its check read the settings as they were, and the job started anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_waits_for_a_hold_being_written_and_sees_it() {
    let db = TestDatabase::create();
    let store = connect_to(&db);
    store.create_job(job("h", "api"), "t").await.unwrap();
    const HOLD: &str = "agents.dismissed.worker";
    // The other engine's write, in flight: as `set_setting` writes it, uncommitted.
    let (url, (written_tx, written_rx), (commit_tx, commit_rx)) =
        (db.url.clone(), std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let writer = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        let class = george_store::POSTGRES_SETTING_LOCK_CLASS;
        tx.execute("SELECT pg_advisory_xact_lock($1::int4, hashtext($2))", &[&class, &HOLD]).unwrap();
        tx.execute("INSERT INTO settings (key, value, updated_at) VALUES ($1, '{}', now())", &[&HOLD]).unwrap();
        written_tx.send(()).unwrap();
        commit_rx.recv().unwrap();
        tx.commit().unwrap();
    });
    written_rx.recv().unwrap();
    let attempt = george_store::NewAttempt {
        after: 0,
        agent_spec: "worker".into(),
        runtime: "process".into(),
        token_hash: "th".into(),
        held_by: Some(HOLD.into()),
        handle: None,
    };
    let starting = tokio::spawn({
        let store = store.clone();
        async move { store.start_attempt("h", attempt).await }
    });
    // It waits for the hold's lock (the server says so), rather than start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(!starting.is_finished(), "the attempt did not wait for the hold being written: {:?}", starting.await);
        let waiting: i64 = db.with_client(|c| {
            c.query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", &[])?.try_get(0)
        });
        if waiting == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the attempt neither waited nor started");
        tokio::task::yield_now().await;
    }
    commit_tx.send(()).unwrap();
    writer.join().unwrap();
    let outcome = starting.await.unwrap();
    assert!(matches!(outcome, Err(StoreError::Conflict(_))), "{outcome:?}");
    let job = store.get_job("h").await.unwrap().unwrap();
    assert_eq!(job.attempt, 0, "no attempt started");
}

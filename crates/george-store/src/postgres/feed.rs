//! The event feed across processes. Events are broadcast to a store's
//! subscribers in `seq` order, whichever engine process wrote them: a
//! writer's transaction ends with `pg_notify('george_events', ...)`, which
//! PostgreSQL delivers at commit to every process listening; each store
//! keeps one listening connection on a thread of its own, and when notified
//! of events it has not broadcast yet (or every second, as a safety net)
//! reads the events after the last one it broadcast and broadcasts them. A store's own writes are broadcast at once
//! when they directly follow the last broadcast event; otherwise the gap is
//! someone else's, and the listener sends the lot in order. So a standby's
//! watch streams see the leader's events, and the leader's engine wakes for
//! jobs submitted through a standby.

use super::dialect::{Pg, Statements};
use super::tls::Server;
use crate::{Event, Result};
use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::broadcast;

/// The notification channel.
pub(super) const CHANNEL: &str = "george_events";
/// How long the listener waits for a notification before it looks anyway.
const POLL: Duration = Duration::from_secs(1);
/// Events read per page.
const PAGE: u32 = 1000;

/// Sends events to subscribers in `seq` order, each once.
pub(super) struct Feed {
    /// The last event broadcast.
    mark: Mutex<i64>,
    pub(super) tx: broadcast::Sender<Event>,
}

impl Feed {
    /// A feed that starts after event `mark`, and its listener on `config`'s database.
    pub(super) fn start(server: Server, mark: i64) -> Arc<Feed> {
        let (tx, _) = broadcast::channel(4096);
        let feed = Arc::new(Feed { mark: Mutex::new(mark), tx });
        let weak = Arc::downgrade(&feed);
        let spawned = std::thread::Builder::new().name("george-pg-feed".into()).spawn(move || listen(server, weak));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the event listener; other processes' events arrive only by polling readers");
        }
        feed
    }

    /// The last event broadcast.
    fn mark(&self) -> i64 {
        *self.mark.lock()
    }

    /// This process's own events, just committed.
    pub(super) fn local(&self, events: Vec<Event>) {
        let mut mark = self.mark.lock();
        for e in events {
            if e.seq <= *mark {
                continue;
            }
            if e.seq != *mark + 1 {
                // Someone else's events come first: the listener sends them all in order.
                break;
            }
            *mark = e.seq;
            // No receiver is fine: nobody is watching.
            let _ = self.tx.send(e);
        }
    }

    /// Broadcasts what the database has after the mark.
    fn catch_up(&self, client: &mut postgres::Client, statements: &mut Statements) -> Result<()> {
        let mut mark = self.mark.lock();
        loop {
            let mut tx = client.build_transaction().read_only(true).start()?;
            let page = crate::ledger::events_since(&mut Pg { tx: &mut tx, statements }, *mark, PAGE, None)?;
            tx.commit()?;
            let full = page.len() as u32 == PAGE;
            for e in page {
                *mark = e.seq;
                let _ = self.tx.send(e);
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// The listener: runs until its feed is gone; reconnects after errors.
fn listen(server: Server, feed: Weak<Feed>) {
    while feed.strong_count() > 0 {
        let mut client = match server.connect() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "event listener cannot connect; retrying");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(error = %e, "event listener cannot LISTEN; retrying");
            std::thread::sleep(POLL);
            continue;
        }
        // Prepared once per connection, like the store's sessions.
        let mut statements = Statements::default();
        // The newest event a notification announced; `None` when the wait timed out.
        let mut announced: Option<i64> = None;
        loop {
            let Some(f) = feed.upgrade() else { return };
            // Nothing to read when this process already broadcast what was announced.
            let behind = announced.is_none_or(|seq| seq > f.mark());
            if behind {
                if let Err(e) = f.catch_up(&mut client, &mut statements) {
                    tracing::warn!(error = %e, "event listener lost its connection; reconnecting");
                    break;
                }
            }
            drop(f);
            // Wait for a notification (several are one), or look anyway after a while.
            let mut notifications = client.notifications();
            let waited = notifications.timeout_iter(POLL).next();
            announced = match waited {
                Ok(Some(first)) => {
                    let mut newest = first.payload().parse::<i64>().unwrap_or(i64::MAX);
                    while let Ok(Some(n)) = notifications.iter().next() {
                        newest = newest.max(n.payload().parse::<i64>().unwrap_or(i64::MAX));
                    }
                    Some(newest)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "event listener lost its connection; reconnecting");
                    break;
                }
            };
        }
    }
}

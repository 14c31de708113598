//! The newest events of the log that match: what "recent problems" and a
//! trigger's history show, read from a bounded window at the log's end.

use crate::{Result, Store};
use george_core::record::Event;

/// At most `keep` events matching `wanted` among the last `window` events
/// of the log, newest first.
pub async fn recent_events(
    store: &dyn Store,
    window: i64,
    keep: usize,
    wanted: impl Fn(&Event) -> bool,
) -> Result<Vec<Event>> {
    let mut found = Vec::new();
    let mut from = (store.latest_seq().await? - window).max(0);
    loop {
        let page = store.events_since(from, 5000, None).await?;
        let Some(end) = page.last().map(|e| e.seq) else { break };
        from = end;
        found.extend(page.into_iter().filter(|e| wanted(e)));
        if found.len() > keep {
            found.drain(..found.len() - keep);
        }
    }
    found.reverse();
    Ok(found)
}

//! `WS /api/v1/watch` and `WS /api/v1/jobs/{id}/watch`: the event log as a
//! live stream, one event (an [`EventView`] as JSON) per text frame, in
//! sequence order.
//!
//! A client resumes with `?since=<last seq it saw>` and gets every later
//! event exactly once, unless retention compacted the log past that point
//! (below the event floor): then the whole-log watch answers `410 resync`
//! (or, mid-stream, closes with reason `resync`) and the client lists the
//! jobs again and watches from now. `since=0` means from the oldest event
//! kept. A job's own events go only with the job, so a job's watch never
//! needs to resync. Otherwise the stream the stream first pages the backlog from the store,
//! then follows the store's broadcast, skipping what it already sent and
//! reading the store again whenever it might have missed something (its
//! broadcast receiver lagged, or a sequence number was skipped: writers
//! broadcast after they commit, so two of them may broadcast out of order,
//! but an event arriving means every earlier one is committed). A slow
//! client therefore never holds the engine up: the broadcast never waits for
//! it, and a client that stops reading altogether is disconnected.

use crate::auth::WATCH_PROTOCOL;
use crate::body::QueryParams;
use crate::{ApiError, ApiState, Caller};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use george_core::api::EventView;
use george_store::Event;
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How long one frame may take to be accepted before the client counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the server pings an idle stream.
const PING_EVERY: Duration = Duration::from_secs(20);
/// Events read from the store per page of backlog.
const PAGE: u32 = 1000;

/// Options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Stream the events after this sequence number (0 or more); default: only new ones.
    #[serde(default)]
    since: Option<u64>,
}

impl WatchQuery {
    /// `since` as the store's sequence numbers (`i64`).
    fn since(&self) -> Result<Option<i64>, ApiError> {
        self.since
            .map(|s| {
                i64::try_from(s).map_err(|_| ApiError::Invalid {
                    message: format!("since: expected a sequence number up to {}, got {s}", i64::MAX),
                    field: Some("since".into()),
                    details: vec![],
                })
            })
            .transpose()
    }
}

/// Every event.
pub async fn all(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<WatchQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    caller.viewer()?;
    let since = q.since()?;
    start(st, since, None, upgrade(ws)?).await
}

/// One job's events.
pub async fn job(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<WatchQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    caller.may_read(&id)?;
    let since = q.since()?;
    let ws = upgrade(ws)?;
    if st.store.get_job(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("job `{id}` not found")));
    }
    start(st, since, Some(id), ws).await
}

/// A request that is no WebSocket upgrade gets the documented JSON error,
/// not the web framework's plain text.
fn upgrade(ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|r| {
        ApiError::UpgradeRequired(format!(
            "this endpoint is a WebSocket: connect with `Connection: upgrade`, `Upgrade: websocket` and the \
             `george.v1` subprotocol ({r})"
        ))
    })
}

async fn start(
    st: ApiState,
    since: Option<i64>,
    job: Option<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let since = match since {
        Some(s) => {
            if job.is_none() {
                check_not_compacted(&st, s).await?;
            }
            s
        }
        None => st.store.latest_seq().await?,
    };
    Ok(ws.protocols([WATCH_PROTOCOL]).on_upgrade(move |socket| async move {
        let mut stream = Stream { socket, st, job, last: since, seen: 0 };
        if let Err(why) = stream.run().await {
            tracing::debug!(%why, last = stream.last, "watch stream ended");
        }
    }))
}

/// Refuses to resume after `since` when events after it may have been
/// compacted away (it is below the event floor).
pub(crate) async fn check_not_compacted(st: &ApiState, since: i64) -> Result<(), ApiError> {
    let floor = st.store.event_floor().await?;
    if since > 0 && since + 1 < floor {
        return Err(ApiError::Resync(resync_message(since, floor)));
    }
    Ok(())
}

fn resync_message(since: i64, floor: i64) -> String {
    format!(
        "resync: events up to {} were compacted by retention, so resuming after {since} would miss some; \
         list the jobs again and watch from now (or from since=0, the oldest event kept)",
        floor - 1
    )
}

struct Stream {
    socket: WebSocket,
    st: ApiState,
    job: Option<String>,
    /// The last sequence number sent (or the client's `since`).
    last: i64,
    /// Every event up to this sequence number has been considered (sent or not wanted).
    seen: i64,
}

/// Why a stream ended before its client closed it.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] george_store::StoreError),
    /// The store's broadcast closed (the engine stops).
    #[error("the store closed")]
    StoreClosed,
    /// An event could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The client's connection failed.
    #[error("client gone: {0}")]
    ClientGone(#[source] axum::Error),
    /// The client did not take a frame within the send timeout.
    #[error("client stopped reading")]
    ClientStalled,
    /// Retention compacted the log past the stream's position.
    #[error("{0}")]
    Resync(String),
}

impl Stream {
    async fn run(&mut self) -> Result<(), StreamEnd> {
        // Subscribe before reading the backlog, so nothing falls in between.
        let mut rx = self.st.store.subscribe();
        self.seen = self.latest().await?;
        self.catch_up().await?;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(e) if e.seq <= self.seen => {}
                    Ok(e) if e.seq == self.seen + 1 => {
                        self.seen = e.seq;
                        if e.seq > self.last && self.wanted(&e) {
                            self.send(&e).await?;
                        }
                    }
                    // A gap (or a reordering): everything up to `e` is committed; the store has it.
                    Ok(e) => {
                        self.catch_up().await?;
                        self.seen = e.seq;
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "watch receiver lagged; reading the store");
                        self.seen = self.latest().await?;
                        self.catch_up().await?;
                    }
                    Err(RecvError::Closed) => return Err(StreamEnd::StoreClosed),
                },
                incoming = self.socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(_)) => {}
                },
                _ = ping.tick() => self.push(Message::Ping(Default::default())).await?,
            }
        }
    }

    async fn latest(&mut self) -> Result<i64, StreamEnd> {
        Ok(self.st.store.latest_seq().await?)
    }

    fn wanted(&self, e: &Event) -> bool {
        self.job.as_deref().is_none_or(|j| e.job_id.as_deref() == Some(j))
    }

    /// Sends everything the store has after `last`.
    async fn catch_up(&mut self) -> Result<(), StreamEnd> {
        if self.job.is_none() && self.last > 0 {
            let floor = self.st.store.event_floor().await?;
            if self.last + 1 < floor {
                let why = resync_message(self.last, floor);
                let close = axum::extract::ws::CloseFrame { code: 4410, reason: "resync".into() };
                self.push(Message::Close(Some(close))).await?;
                return Err(StreamEnd::Resync(why));
            }
        }
        loop {
            let page = self.st.store.events_since(self.last, PAGE, self.job.as_deref()).await?;
            let full = page.len() as u32 == PAGE;
            for e in &page {
                self.send(e).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, e: &Event) -> Result<(), StreamEnd> {
        let text = serde_json::to_string(&EventView::from(e.clone()))?;
        self.push(Message::Text(text.into())).await?;
        self.last = e.seq;
        Ok(())
    }

    async fn push(&mut self, m: Message) -> Result<(), StreamEnd> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(m)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StreamEnd::ClientGone(e)),
            Err(_) => Err(StreamEnd::ClientStalled),
        }
    }
}

//! `GET /api/v1/events`: the audit log as server-sent events.
//!
//! The store is the stream: each SSE event's `id` is the audit sequence
//! number, and the stream is nothing but "read the events after the last id
//! sent, wait, repeat". A client that reconnects with `Last-Event-ID` (every
//! EventSource does) therefore resumes exactly where it stopped, whatever
//! happened in between — there is no in-memory buffer to overflow. The wait
//! ends when an API change is committed ([`AppState::changed`]) or after
//! [`POLL`], which picks up the controller's own transitions.
//!
//! Sequence numbers are taken when a transaction inserts its event, not
//! when it commits, so on PostgreSQL event 41 can become visible after 42.
//! A cursor that jumped to 42 would skip 41 forever. So the cursor only
//! moves over a *contiguous* run of sequence numbers; at a hole it waits for
//! the missing event, and only after [`GAP_GRACE`] (a rolled-back
//! transaction leaves a hole for good) does it step over it. Streams for one
//! rollout read the same global sequence and filter, for the same reason.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use sqlx::Row;

use super::AppState;
use super::auth::{Action, Caller};
use super::errors::ApiError;
use super::rollouts::event_json;
use crate::store::{EventRecord, Store};

/// How often the store is polled when nothing woke the stream.
pub const POLL: Duration = Duration::from_secs(1);
/// Comment lines that keep proxies from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
const PAGE: i64 = 200;
/// How long a hole in the sequence is waited for before it is taken to be
/// a rolled-back transaction (transitions commit in milliseconds).
pub const GAP_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Start after this sequence number (overridden by `Last-Event-ID`).
    /// Without either the stream starts at the newest event: live only.
    after: Option<i64>,
    /// Only this rollout's events.
    rollout: Option<String>,
}

async fn newest_seq(store: &Store) -> Result<i64, ApiError> {
    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS m FROM events")
        .fetch_one(store.pool())
        .await
        .map_err(ApiError::internal)?;
    row.try_get::<i64, _>("m").map_err(ApiError::internal)
}

struct Cursor {
    st: AppState,
    /// The stream's token: checked on every wake-up, so a revoked token's
    /// stream ends within one [`POLL`] (at once: revocation wakes streams).
    token: String,
    after: i64,
    rollout: Option<String>,
    buf: VecDeque<EventRecord>,
    changes: tokio::sync::watch::Receiver<u64>,
    /// The first missing sequence number and since when it is missing.
    hole: Option<(i64, std::time::Instant)>,
}

impl Cursor {
    /// The events of `evs` (ascending, all after `self.after`) that may be
    /// delivered now: up to the first hole, unless that hole is older than
    /// [`GAP_GRACE`]. Advances `after` over them.
    fn take_contiguous(&mut self, evs: Vec<EventRecord>) -> Vec<EventRecord> {
        let mut out = Vec::new();
        for e in evs {
            let expected = self.after + 1;
            if e.seq > expected {
                match self.hole {
                    Some((s, since)) if s == expected && since.elapsed() >= GAP_GRACE => {
                        tracing::debug!(
                            missing = s,
                            "Event stream: stepping over a hole (rolled back)."
                        );
                    }
                    Some((s, _)) if s == expected => break,
                    _ => {
                        self.hole = Some((expected, std::time::Instant::now()));
                        break;
                    }
                }
            }
            self.after = e.seq;
            self.hole = None;
            out.push(e);
        }
        out
    }
}

impl Cursor {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Cursor)> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                let data = event_json(&e).to_string();
                let ev = Event::default().id(e.seq.to_string()).data(data);
                return Some((Ok(ev), self));
            }
            // Mark the current change as seen *before* reading, so a commit
            // between the read and the wait still wakes us.
            self.changes.borrow_and_update();
            let store = self.st.controller.store();
            match store.token_live(&self.token).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(token = %self.token, "Event stream closed: its token was revoked.");
                    return None;
                }
                // Fail closed: nothing is sent while the token cannot be checked.
                Err(e) => {
                    tracing::warn!(error = %e, "Event stream: cannot check the token; retrying.");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            }
            match store.events(None, self.after, PAGE).await {
                Ok(evs) if !evs.is_empty() => {
                    let before = self.after;
                    let ready = self.take_contiguous(evs);
                    let rollout = self.rollout.clone();
                    self.buf.extend(ready.into_iter().filter(|e| {
                        rollout.is_none() || e.event.rollout_id.as_deref() == rollout.as_deref()
                    }));
                    if self.after != before {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Event stream: the store did not answer; retrying.");
                }
            }
            tokio::select! {
                r = self.changes.changed() => {
                    // The sender lives as long as the server; if it is gone
                    // the server is stopping.
                    if r.is_err() { return None; }
                }
                // Waiting on a hole: look again soon.
                _ = tokio::time::sleep(if self.hole.is_some() { POLL / 4 } else { POLL }) => {}
            }
        }
    }
}

pub async fn stream(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Action::Read)?;
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID is not an event sequence number")
                })?,
        ),
    };
    let after = match last.or(q.after) {
        Some(n) => n.max(0),
        None => newest_seq(st.controller.store()).await?,
    };
    let changes = st.subscribe();
    let cursor = Cursor {
        st,
        token: caller.token_name.clone(),
        after,
        rollout: q.rollout,
        buf: VecDeque::new(),
        changes,
        hole: None,
    };
    let s = futures_util::stream::unfold(cursor, Cursor::next);
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

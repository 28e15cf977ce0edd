//! `GET /databases/{id}/logs/stream` (`databases.stream_logs`): a data
//! service's binding events as Server-Sent Events. First the newest 100,
//! then each new one as it is recorded (polled), each `event: log` with
//! its event id, so a client that reconnects with `Last-Event-ID` resumes
//! after it; a heartbeat comment while quiet; `event: end` when the
//! service is deleted (or its events cannot be read: reconnect).

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream;
use mds_api_types::services::DatabaseLogLine;
use mds_control::attach::load_service;
use mds_store::Store;
use serde::Serialize;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::PathParams;
use crate::sse::{sse, sse_frame, sse_frame_with_id, HEARTBEAT};
use crate::state::AppState;

/// How often a quiet stream looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// How often a quiet stream says it is alive (and checks the service).
const BEAT: Duration = Duration::from_secs(15);
/// The most events sent at the start, or in one frame batch.
const PAGE: i64 = 100;

#[derive(Serialize)]
struct End {
    database_id: String,
    reason: &'static str,
}

struct Cursor {
    store: Store,
    tenant_id: String,
    service_id: String,
    /// The last event sent; `None` before the first page.
    after: Option<i64>,
    beat: Instant,
    done: bool,
}

impl Cursor {
    /// The next chunk of the stream: new events, a heartbeat or the end.
    async fn next(mut self) -> Option<(String, Self)> {
        if self.done {
            return None;
        }
        loop {
            let events = match self
                .store
                .binding_events_after(&self.service_id, self.after, PAGE)
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(service = self.service_id, "log stream ends: {e}");
                    self.done = true;
                    let end = End {
                        database_id: self.service_id.clone(),
                        reason: "the event log could not be read; reconnect to resume",
                    };
                    return Some((sse_frame("end", &end), self));
                }
            };
            if let Some((last, ..)) = events.last() {
                self.after = Some(*last);
                self.beat = Instant::now();
                let frames = events
                    .into_iter()
                    .map(|(id, t, stream, line)| {
                        sse_frame_with_id(id, "log", &DatabaseLogLine { line, stream, t })
                    })
                    .collect();
                return Some((frames, self));
            }
            self.after.get_or_insert(0);
            if self.beat.elapsed() >= BEAT {
                self.beat = Instant::now();
                let gone = matches!(
                    self.store
                        .data_service(&self.tenant_id, &self.service_id)
                        .await,
                    Ok(None)
                );
                if gone {
                    self.done = true;
                    let end = End {
                        database_id: self.service_id.clone(),
                        reason: "deleted",
                    };
                    return Some((sse_frame("end", &end), self));
                }
                return Some((HEARTBEAT.to_string(), self));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

pub async fn stream_logs(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let service = load_service(state.control(), &principal, &id).await?;
    // A reconnecting client resumes after the last event it saw.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|n| *n >= 0);
    let cursor = Cursor {
        store: state.store()?.clone(),
        tenant_id: principal.tenant_id.clone(),
        service_id: service.id,
        after,
        beat: Instant::now(),
        done: false,
    };
    Ok(sse(stream::unfold(cursor, Cursor::next)))
}

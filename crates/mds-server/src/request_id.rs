//! Every request gets an id (`req_<ULID>`, or a sane one the client sent),
//! echoed in `x-request-id` and in error bodies, and present in logs.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use mds_core::ids::IdKind;
use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

pub const HEADER: &str = "x-request-id";

/// The id of the request being served, or "" outside one.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn middleware(
    State(state): State<crate::state::AppState>,
    request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_string)
        .unwrap_or_else(|| IdKind::Request.mint());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    // Every log line of the request, and of the work it starts (a
    // supervisor's task, say), carries its id.
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    state.server().requests.record(response.status().as_u16());
    tracing::debug!(
        request_id = %id,
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

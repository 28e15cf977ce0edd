//! Server-Sent Events: the frames and the response every streaming route
//! (sandbox readiness and exec, database logs) answers with.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One event: its type and its JSON data.
pub fn sse_frame<T: Serialize>(event: &str, data: &T) -> String {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".to_string());
    format!("event: {event}\ndata: {data}\n\n")
}

/// One event with an id, which a client that reconnects sends back as
/// `Last-Event-ID` to resume after it.
pub fn sse_frame_with_id<T: Serialize>(id: i64, event: &str, data: &T) -> String {
    format!("id: {id}\n{}", sse_frame(event, data))
}

/// A comment line: keeps proxies and idle timers from closing a quiet
/// stream; clients ignore it.
pub const HEARTBEAT: &str = ": heartbeat\n\n";

pub fn sse(frames: impl futures_util::Stream<Item = String> + Send + 'static) -> Response {
    let body = Body::from_stream(futures_util::StreamExt::map(frames, |f| {
        Ok::<_, std::convert::Infallible>(f)
    }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

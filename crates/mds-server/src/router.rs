//! The router: requests whose Host is `<deployment>.<environment>.localhost`
//! go to a healthy instance of that deployment (a hyper proxy over pooled
//! connections) or to the files of its static release. Every other request
//! goes on to the API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use tower::ServiceExt;

use mds_control::deployer::{InFlight, Pick};

use crate::error::ApiError;
use crate::state::AppState;

/// Proxies a request to the instance `guard` counts it on.
async fn proxy(state: &AppState, guard: InFlight, mut req: Request) -> Response {
    let port = guard.port();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // The host names the instance (see `state::InstanceConnector`).
    let instance = guard.instance_id();
    let Ok(uri) = format!("http://{instance}:{port}{path}").parse::<Uri>() else {
        return ApiError::bad_request("INVALID_PATH", "the request path is not valid")
            .into_response();
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let host = req.headers().get(header::HOST).cloned();
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    // What the client said it was is not to be trusted: the peer.
    headers.remove("x-forwarded-for");
    if let Some(peer) = peer.and_then(|p| HeaderValue::from_str(&p).ok()) {
        headers.insert("x-forwarded-for", peer);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    match state.server().proxy.request(req).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            // The instance counts as busy until the body is sent.
            let stream = body.into_data_stream().map(move |chunk| {
                let _busy = &guard;
                chunk
            });
            Response::from_parts(parts, Body::from_stream(stream))
        }
        Err(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "INSTANCE_UNREACHABLE",
            format!("the instance did not answer: {e}"),
        )
        .into_response(),
    }
}

/// Removes the headers that concern one connection only (RFC 9110 7.6.1),
/// including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut axum::http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

async fn serve_files(root: PathBuf, entrypoint: Option<String>, req: Request) -> Response {
    let files = tower_http::services::ServeDir::new(&root).append_index_html_on_directories(true);
    let response = match entrypoint.filter(|e| !e.is_empty() && !e.contains("..")) {
        Some(entry) => files
            .not_found_service(tower_http::services::ServeFile::new(root.join(entry)))
            .oneshot(req)
            .await
            .map(|r| r.map(Body::new)),
        None => files.oneshot(req).await.map(|r| r.map(Body::new)),
    };
    match response {
        // ServeDir answers 500 for names the filesystem refuses (too
        // long, say): for a client, there is no such file.
        Ok(response) if response.status().is_server_error() => {
            ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such file").into_response()
        }
        Ok(response) => response,
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Sends requests whose Host is `<deployment>.<environment>.localhost`
/// (or `<deployment>.localhost`: production) to that deployment; every
/// other request goes on to the API.
pub async fn route_by_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host());
    let (Some(host), Ok(deployer)) = (host, state.deployer()) else {
        return next.run(req).await;
    };
    match deployer.pick(host) {
        Pick::Api => next.run(req).await,
        Pick::Unknown(label) => ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no deployment serves {label}.localhost"),
        )
        .into_response(),
        Pick::NoHealthyInstance => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NO_HEALTHY_INSTANCE",
            "no healthy instance serves this deployment right now",
        )
        .retry_after(Duration::from_secs(1))
        .into_response(),
        Pick::Static { root, entrypoint } => serve_files(root, entrypoint, req).await,
        Pick::Instance(guard) => proxy(&state, guard, req).await,
    }
}

//! `Idempotency-Key` on POST and PATCH: the first response is stored (sealed)
//! for 24 hours and replayed to any retry with the same key, method, path
//! and body; the same key with another body is a 409. Records are scoped to
//! the calling API key, so one key can never read another's responses.
//!
//! "The same body" means the same meaning: a JSON body is compared in a
//! canonical form (keys sorted, the SDK's renames folded), because the SDK
//! rebuilds bodies between attempts and may reorder or rename fields.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mds_store::{IdempotencyBegin, IdempotencyKey, StoredResponse};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{read_body, with_body};
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::POST | Method::PATCH) {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    match run(&state, key.clone(), request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(
    state: &AppState,
    key: HeaderValue,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "Idempotency-Key",
                format!("must be 1-{MAX_KEY_LEN} visible ASCII characters"),
            )
            .into_response()
        })?
        .to_string();
    let principal = request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| ApiError::invalid_token("missing API key").into_response())?;
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();

    let (parts, body) = request.into_parts();
    let body = read_body(
        Request::from_parts(parts.clone(), body),
        state.server().max_body_bytes,
    )
    .await
    .map_err(IntoResponse::into_response)?;
    let fingerprint = fingerprint(&path, &body);
    let request_hash =
        mds_crypto::digest_parts(&[method.as_bytes(), path.as_bytes(), &fingerprint]);

    let store = state
        .store()
        .map_err(|e| ApiError::from(e).into_response())?;
    let record = IdempotencyKey {
        principal_id: &principal.key_id,
        key: &key,
        method: &method,
        path: &path,
    };
    let seal_context = format!("idem:{}:{key}:{method}:{path}", principal.key_id);
    match store
        .idempotency_begin(&record, &request_hash)
        .await
        .map_err(|e| ApiError::from(e).into_response())?
    {
        IdempotencyBegin::Started => {}
        IdempotencyBegin::Replay(stored) => return Ok(replay(state, &seal_context, stored)),
        IdempotencyBegin::Mismatch => {
            return Err(ApiError::conflict(
                "IDEMPOTENCY_KEY_MISMATCH",
                "this Idempotency-Key was already used with a different request; use a new key",
            )
            .into_response())
        }
        IdempotencyBegin::InFlight => {
            return Err(ApiError::conflict(
                "IDEMPOTENCY_KEY_IN_USE",
                "a request with this Idempotency-Key is still being processed",
            )
            .retry_after(std::time::Duration::from_secs(1))
            .into_response())
        }
    }

    let response = next.run(with_body(parts, body)).await;
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = store.idempotency_abandon(&record).await;
            return Err(ApiError::internal(format!("buffering a response: {e}")).into_response());
        }
    };
    if parts.status.is_server_error() {
        // Not the client's fault and maybe transient: let a retry run again.
        if let Err(e) = store.idempotency_abandon(&record).await {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
    } else {
        let stored = StoredResponse {
            status: parts.status.as_u16(),
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            sealed_body: state.master_key.seal(&seal_context, &bytes),
        };
        if let Err(e) = store.idempotency_finish(&record, &stored).await {
            tracing::warn!(error = %e, "could not store an idempotent response");
            let _ = store.idempotency_abandon(&record).await;
        }
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

fn replay(state: &AppState, seal_context: &str, stored: StoredResponse) -> Response {
    let body = match state.master_key.open(seal_context, &stored.sealed_body) {
        Ok(body) => body.to_vec(),
        Err(e) => {
            return ApiError::internal(format!("opening a stored response: {e}")).into_response()
        }
    };
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    if let Some(ct) = stored
        .content_type
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
    {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// What a body means, for comparing a retry with the first attempt: JSON
/// with its keys sorted (serde_json's map is ordered) and, for data-service
/// creates, the SDK's documented renames folded (`version` is
/// `engine_version`, engine `postgres` is `postgresql`). Anything that is
/// not JSON is compared byte for byte.
fn fingerprint(path: &str, body: &[u8]) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    let creates_data_service = path.contains("/databases") || path.contains("/services");
    if let (true, Some(fields)) = (creates_data_service, value.as_object_mut()) {
        fold_renames(fields);
        if let Some(settings) = fields.get_mut("settings").and_then(|s| s.as_object_mut()) {
            fold_renames(settings);
        }
    }
    value.to_string().into_bytes()
}

fn fold_renames(fields: &mut serde_json::Map<String, serde_json::Value>) {
    if !fields.contains_key("engine_version") {
        if let Some(version) = fields.remove("version") {
            fields.insert("engine_version".to_string(), version);
        }
    }
    if fields.get("engine").and_then(|e| e.as_str()) == Some("postgres") {
        fields.insert("engine".to_string(), "postgresql".into());
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn key_order_and_the_sdks_renames_do_not_change_the_fingerprint() {
        let a = fingerprint(
            "/api/v1/databases",
            br#"{"name":"db","version":"15","engine":"postgres"}"#,
        );
        let b = fingerprint(
            "/api/v1/databases",
            br#"{"engine":"postgresql","name":"db","engine_version":"15"}"#,
        );
        assert_eq!(a, b);
        let other = fingerprint(
            "/api/v1/databases",
            br#"{"engine":"postgresql","name":"db","engine_version":"16"}"#,
        );
        assert_ne!(a, other);
        // Nested objects are canonical too; renames stay on data services.
        assert_eq!(
            fingerprint(
                "/api/v1/deployments",
                br#"{"a":{"y":1,"x":2},"version":"1"}"#
            ),
            fingerprint(
                "/api/v1/deployments",
                br#"{"version":"1","a":{"x":2,"y":1}}"#
            ),
        );
        assert_ne!(
            fingerprint("/api/v1/deployments", br#"{"version":"1"}"#),
            fingerprint("/api/v1/deployments", br#"{"engine_version":"1"}"#),
        );
        // Not JSON: bytes as they are.
        assert_eq!(fingerprint("/x", b"\xff raw"), b"\xff raw".to_vec());
    }
}

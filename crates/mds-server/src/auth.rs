//! Bearer API keys and scopes.
//!
//! The middleware resolves `Authorization: Bearer msk_...` to a
//! [`Principal`] before any handler runs. Key lookups go through the
//! store's coherent cache, so a hot path costs no database round trip, and a
//! revoke, rotate or scope change reaches every replica through the
//! database's invalidation notices.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mds_control::Caller;
use mds_core::scopes::Scopes;
use mds_store::ApiKeyRow;

use crate::error::ApiError;
use crate::state::AppState;

/// The caller: which key, which tenant, what it may do. Handlers read it
/// as the control layer's [`Caller`] (through `Deref`).
#[derive(Debug, Clone)]
pub struct Principal(Caller);

impl std::ops::Deref for Principal {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl Principal {
    fn from_row(row: &ApiKeyRow) -> Self {
        Self(Caller {
            key_id: row.id.clone(),
            key_name: row.name.clone(),
            tenant_id: row.tenant_id.clone(),
            scopes: Scopes::from_stored(row.scopes.clone()),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Arc<Principal>>()
            .map(|p| (**p).clone())
            .ok_or_else(|| ApiError::invalid_token("missing API key"))
    }
}

fn bearer(request: &Request) -> Result<&str, ApiError> {
    bearer_token(request.headers())
}

fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::invalid_token("missing API key: send Authorization: Bearer msk_...")
    })?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::invalid_token("malformed Authorization header"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        ApiError::invalid_token("malformed Authorization header: expected \"Bearer <key>\"")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::invalid_token(
            "malformed Authorization header: expected \"Bearer <key>\"",
        ));
    }
    Ok(token.trim())
}

pub async fn middleware(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = match bearer(&request) {
        Ok(token) => token.to_string(),
        Err(e) => return e.into_response(),
    };
    match authenticate(&state, &token).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// The caller of a route outside the middleware (one that also opens by
/// presigned URL).
pub async fn principal_from_headers(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Arc<Principal>, ApiError> {
    authenticate(state, bearer_token(headers)?).await
}

async fn authenticate(state: &AppState, token: &str) -> Result<Arc<Principal>, ApiError> {
    let hash = mds_crypto::hash_api_key(token);
    let row = state
        .store()?
        .api_key_by_hash(&hash)
        .await?
        .ok_or_else(|| ApiError::invalid_token("invalid, revoked or expired API key"))?;
    Ok(Arc::new(Principal::from_row(&row)))
}

//! Bearer API keys and scopes.
//!
//! The middleware resolves `Authorization: Bearer msk_...` to a
//! [`Principal`] before any handler runs. Valid keys are cached for a few
//! seconds so a hot path costs no database round trip for authentication;
//! a revoke, rotate or scope change on this replica evicts at once, and
//! other replicas see it within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use mds_core::scopes::Scopes;
use mds_store::ApiKeyRow;

use crate::error::ApiError;
use crate::state::AppState;

pub const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX_ENTRIES: usize = 10_000;

/// The caller: which key, which tenant, what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub tenant_id: String,
    pub scopes: Scopes,
    expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::insufficient_scope(scope))
        }
    }

    fn from_row(row: ApiKeyRow) -> Self {
        Self {
            key_id: row.id,
            tenant_id: row.tenant_id,
            scopes: Scopes::from_stored(row.scopes),
            expires_at: row.expires_at,
        }
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

/// Key hash -> (principal, when it was read from the database).
type CachedKeys = HashMap<[u8; 32], (Arc<Principal>, Instant)>;

#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<CachedKeys>,
}

impl KeyCache {
    fn get(&self, hash: &[u8; 32]) -> Option<Arc<Principal>> {
        let entries = self.entries.read().expect("key cache lock");
        let (principal, at) = entries.get(hash)?;
        let fresh =
            at.elapsed() < CACHE_TTL && principal.expires_at.is_none_or(|exp| exp > Utc::now());
        fresh.then(|| principal.clone())
    }

    fn put(&self, hash: [u8; 32], principal: Arc<Principal>) {
        let mut entries = self.entries.write().expect("key cache lock");
        if entries.len() >= CACHE_MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (principal, Instant::now()));
    }

    /// Forgets a key after it was revoked, rotated or re-scoped.
    pub fn evict(&self, key_id: &str) {
        self.entries
            .write()
            .expect("key cache lock")
            .retain(|_, (p, _)| p.key_id != key_id);
    }
}

fn bearer(request: &Request) -> Result<&str, ApiError> {
    let header = request.headers().get(AUTHORIZATION).ok_or_else(|| {
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

async fn authenticate(state: &AppState, token: &str) -> Result<Arc<Principal>, ApiError> {
    let hash = mds_crypto::hash_api_key(token);
    if let Some(principal) = state.key_cache.get(&hash) {
        return Ok(principal);
    }
    let store = state.store()?;
    let row = store
        .api_key_by_hash(&hash)
        .await?
        .ok_or_else(|| ApiError::invalid_token("invalid, revoked or expired API key"))?;
    let principal = Arc::new(Principal::from_row(row));
    state.key_cache.put(hash, principal.clone());
    // Usage is recorded once per cache period, off the request path.
    let store = store.clone();
    let key_id = principal.key_id.clone();
    tokio::spawn(async move {
        if let Err(e) = store.touch_api_key(&key_id).await {
            tracing::debug!(error = %e, "could not record API key use");
        }
    });
    Ok(principal)
}

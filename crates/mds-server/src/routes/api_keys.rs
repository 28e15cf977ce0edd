//! API keys: create with scopes (never more than the caller holds), list,
//! get, update, rotate, revoke. The plaintext appears once, in the answer to
//! create or rotate.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::services::KeyPreset;
use mds_api_types::{ApiKey, CreateApiKey, UpdateApiKey};
use mds_core::ids::IdKind;
use mds_core::names;
use mds_core::scopes::Scopes;
use mds_store::{ApiKeyRow, NewApiKeyRow};

use super::{data, deleted, list as list_response};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams};
use crate::state::AppState;

fn key_view(row: ApiKeyRow, token: Option<&str>) -> ApiKey {
    ApiKey {
        id: row.id,
        name: row.name,
        prefix: row.token_prefix,
        scopes: row.scopes,
        tenant_id: row.tenant_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
        last_used_at: row.last_used_at,
        expires_at: row.expires_at,
        token: token.map(str::to_string),
        key: token.map(str::to_string),
    }
}

/// Scopes for a new or changed key; refuses any the caller lacks.
fn grantable_scopes(principal: &Principal, requested: Option<Vec<String>>) -> ApiResult<Scopes> {
    let scopes = match requested {
        Some(list) => Scopes::parse("scopes", &list)?,
        None => Scopes::defaults(),
    };
    if let Some(missing) = principal.scopes.first_missing(&scopes) {
        return Err(
            ApiError::insufficient_scope(missing).with_details(serde_json::json!({
                "required_scope": missing,
                "reason": "a key cannot grant a scope it does not hold",
            })),
        );
    }
    Ok(scopes)
}

/// Named scope bundles, for clients that offer a choice.
pub async fn presets(principal: Principal) -> ApiResult<Response> {
    principal.require("api-keys:read")?;
    let preset = |name: &str, description: &str, scopes: &[&str]| KeyPreset {
        name: name.to_string(),
        description: description.to_string(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    let presets = vec![
        preset(
            "default",
            "projects and variables, read and write; values stay masked",
            mds_core::scopes::DEFAULT_SCOPES,
        ),
        preset(
            "read-only",
            "read projects and variable previews",
            &["projects:read", "env:read"],
        ),
        preset(
            "deploy",
            "what CI needs to read config and reveal values",
            &[
                "projects:read",
                "env:read",
                "env:reveal",
                "deployments:write",
            ],
        ),
        preset("admin", "everything, including managing keys", &["*"]),
    ];
    let total = presets.len() as u64;
    Ok(list_response(presets, 1, total as u32, total))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateApiKey>,
) -> ApiResult<Response> {
    principal.require("api-keys:write")?;
    let name = body.name.ok_or_else(|| ApiError::missing_field("name"))?;
    let name = names::validate_display_name("name", &name, 100)?;
    let scopes = grantable_scopes(&principal, body.scopes)?;
    if body.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
        return Err(ApiError::invalid_field(
            "expires_at",
            "must be in the future",
        ));
    }
    let minted = mds_crypto::new_api_key();
    let id = IdKind::ApiKey.mint();
    let row = state
        .store()?
        .insert_api_key(&NewApiKeyRow {
            id: &id,
            tenant_id: &principal.tenant_id,
            name: &name,
            token_hash: &minted.hash,
            token_prefix: &minted.prefix,
            scopes: scopes.as_slice(),
            expires_at: body.expires_at,
        })
        .await?;
    Ok(data(
        StatusCode::CREATED,
        key_view(row, Some(&minted.token)),
    ))
}

pub async fn list(State(state): State<AppState>, principal: Principal) -> ApiResult<Response> {
    principal.require("api-keys:read")?;
    let rows = state.store()?.api_keys(&principal.tenant_id).await?;
    let total = rows.len() as u64;
    let views = rows.into_iter().map(|r| key_view(r, None)).collect();
    Ok(list_response(views, 1, total.max(1) as u32, total))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("api-keys:read")?;
    let row = state
        .store()?
        .api_key(&principal.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key", &id))?;
    Ok(data(StatusCode::OK, key_view(row, None)))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateApiKey>,
) -> ApiResult<Response> {
    principal.require("api-keys:write")?;
    let name = body
        .name
        .map(|n| names::validate_display_name("name", &n, 100))
        .transpose()?;
    let scopes = body
        .scopes
        .map(|s| grantable_scopes(&principal, Some(s)))
        .transpose()?;
    let row = state
        .store()?
        .update_api_key(
            &principal.tenant_id,
            &id,
            name.as_deref(),
            scopes.as_ref().map(Scopes::as_slice),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("API key", &id))?;
    Ok(data(StatusCode::OK, key_view(row, None)))
}

pub async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("api-keys:write")?;
    let minted = mds_crypto::new_api_key();
    let row = state
        .store()?
        .rotate_api_key(&principal.tenant_id, &id, &minted.hash, &minted.prefix)
        .await?
        .ok_or_else(|| ApiError::not_found("API key", &id))?;
    Ok(data(StatusCode::OK, key_view(row, Some(&minted.token))))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("api-keys:write")?;
    if !state
        .store()?
        .revoke_api_key(&principal.tenant_id, &id)
        .await?
    {
        return Err(ApiError::not_found("API key", &id));
    }
    Ok(deleted(&id))
}

//! `/runtime-env` (`client.runtime_env`): tenant-, workspace- and
//! project-wide variables for sandboxes and runtime instances. Listed and
//! read as previews; `?reveal=true` (with `env:reveal`) adds each value.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::runtime_env::{RuntimeEnvVar, SetRuntimeEnv};
use mds_control::runtime_env::ListQuery;
use mds_core::vars;
use mds_store::RuntimeEnvRow;
use serde::Deserialize;

use super::{data, deleted, list_all};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{parse_bool, JsonBody, PathParams, QueryParams};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct Query {
    scope: Option<String>,
    project_id: Option<String>,
    target: Option<String>,
    reveal: Option<String>,
}

/// Whether the caller asked for values, and may see them.
fn wants_values(principal: &Principal, reveal: Option<&str>) -> ApiResult<bool> {
    let reveal = parse_bool("reveal", reveal)?;
    if reveal {
        principal.require("env:reveal")?;
    }
    Ok(reveal)
}

fn view(state: &AppState, row: RuntimeEnvRow, reveal: bool) -> ApiResult<RuntimeEnvVar> {
    let value = state.open_runtime_env(&row)?;
    Ok(RuntimeEnvVar {
        preview: vars::preview(&value, row.is_secret),
        value: reveal.then(|| value.to_string()),
        id: row.id,
        scope: row.scope,
        workspace_id: row.workspace_id,
        project_id: row.project_id,
        target: row.target,
        name: row.name,
        is_secret: row.is_secret,
        enabled: row.enabled,
        metadata: row.metadata,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<Query>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let reveal = wants_values(&principal, query.reveal.as_deref())?;
    let filters = ListQuery {
        scope: query.scope.as_deref(),
        project: query.project_id.as_deref(),
        target: query.target.as_deref(),
    };
    let rows = state.list_runtime_env(&principal, filters).await?;
    if reveal {
        tracing::info!(key = %principal.key_id, "runtime env revealed");
    }
    let views = rows
        .into_iter()
        .map(|row| view(&state, row, reveal))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(list_all(views))
}

pub async fn set(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<SetRuntimeEnv>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let row = state.set_runtime_env(&principal, body).await?;
    // A new key answers 201, a replaced one 200.
    let status = if row.created_at == row.updated_at {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(data(status, view(&state, row, false)?))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<Query>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let reveal = wants_values(&principal, query.reveal.as_deref())?;
    let row = state.runtime_env(&principal, &id).await?;
    if reveal {
        tracing::info!(key = %principal.key_id, variable = id, "runtime env revealed");
    }
    Ok(data(StatusCode::OK, view(&state, row, reveal)?))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    state.delete_runtime_env(&principal, &id).await?;
    Ok(deleted(&id))
}

//! Shared variables, per environment: sealed at rest, listed as previews,
//! revealed only with the `env:reveal` scope.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::SetVariables;
use mds_control::projects::load_environment;
use mds_control::variables;
use mds_store::{EnvironmentRow, VariableScope};

use super::{data, deleted, list_all};
use crate::audit::revealed;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, EnvQuery, JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::{variable_view, variable_views};

fn shared(env: &EnvironmentRow) -> VariableScope<'_> {
    VariableScope::Shared {
        environment_id: &env.id,
    }
}

async fn environment_for(
    state: &AppState,
    principal: &Principal,
    project: &str,
    environment: Option<&str>,
) -> ApiResult<EnvironmentRow> {
    let (_, env) = load_environment(state.store()?, principal, project, environment).await?;
    Ok(env)
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let reveal = parse_bool("reveal", query.reveal.as_deref())?;
    if reveal {
        principal.require("env:reveal")?;
    }
    let env = environment_for(&state, &principal, &project, query.environment()).await?;
    Ok(list_all(
        variable_views(&state, shared(&env), &env, reveal).await?,
    ))
}

pub async fn set(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
    JsonBody(body): JsonBody<SetVariables>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let entries = variables::entries(body.variables)?;
    let target = body
        .env
        .as_deref()
        .or(body.environment.as_deref())
        .or(query.environment());
    let env = environment_for(&state, &principal, &project, target).await?;
    state
        .write_variables(&principal, shared(&env), entries)
        .await?;
    Ok(list_all(
        variable_views(&state, shared(&env), &env, false).await?,
    ))
}

async fn one(
    state: &AppState,
    principal: &Principal,
    project: &str,
    name: &str,
    query: &EnvQuery,
    reveal: bool,
) -> ApiResult<Response> {
    let env = environment_for(state, principal, project, query.environment()).await?;
    let row = state
        .store()?
        .variable(shared(&env), name)
        .await?
        .ok_or_else(|| ApiError::not_found("variable", name))?;
    Ok(data(
        StatusCode::OK,
        variable_view(state, shared(&env), &env, row, reveal)?,
    ))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, name)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let reveal = parse_bool("reveal", query.reveal.as_deref())?;
    if reveal {
        principal.require("env:reveal")?;
    }
    one(&state, &principal, &project, &name, &query, reveal).await
}

pub async fn reveal(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, name)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:reveal")?;
    tracing::info!(key = %principal.key_id, project, variable = name, "variable revealed");
    let response = one(&state, &principal, &project, &name, &query, true).await?;
    Ok(revealed(response, None, [name]))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, name)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let env = environment_for(&state, &principal, &project, query.environment()).await?;
    if !state.store()?.delete_variable(shared(&env), &name).await? {
        return Err(ApiError::not_found("variable", &name));
    }
    Ok(deleted(&name))
}

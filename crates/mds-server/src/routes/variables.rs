//! Shared variables, per environment: sealed at rest, listed as previews,
//! revealed only with the `env:reveal` scope.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::{SetVariables, Variable, VariablesInput};
use mds_core::{names, vars};
use mds_store::{EnvironmentRow, VariableRow, VariableScope};
use serde::Deserialize;

use super::environments::resolve_environment;
use super::projects::load_project;
use super::{data, deleted, list as list_response};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, JsonBody, PathParams, QueryParams};
use crate::state::AppState;

/// Binds a sealed variable to its scope and name.
pub fn seal_context(scope: VariableScope<'_>, name: &str) -> String {
    match scope {
        VariableScope::Shared { environment_id } => format!("var:{environment_id}:{name}"),
        VariableScope::Service {
            service_id,
            environment_id,
        } => format!("svcvar:{service_id}:{environment_id}:{name}"),
        VariableScope::Deployment {
            deployment_id,
            environment_id,
        } => format!("depvar:{deployment_id}:{environment_id}:{name}"),
    }
}

fn shared(env: &EnvironmentRow) -> VariableScope<'_> {
    VariableScope::Shared {
        environment_id: &env.id,
    }
}

/// `?env=` (or `?environment=`), and `?reveal=`.
#[derive(Deserialize)]
pub struct EnvQuery {
    env: Option<String>,
    environment: Option<String>,
    reveal: Option<String>,
}

impl EnvQuery {
    pub fn environment(&self) -> Option<&str> {
        self.env.as_deref().or(self.environment.as_deref())
    }
}

/// A variable's value, unsealed.
pub fn open_variable(
    state: &AppState,
    scope: VariableScope<'_>,
    row: &VariableRow,
) -> ApiResult<zeroize::Zeroizing<String>> {
    state
        .master_key
        .open_string(&seal_context(scope, &row.name), &row.sealed_value)
        .map_err(|e| ApiError::internal(format!("variable {}: {e}", row.name)))
}

pub fn variable_view(
    state: &AppState,
    scope: VariableScope<'_>,
    env: &EnvironmentRow,
    row: VariableRow,
    reveal: bool,
) -> ApiResult<Variable> {
    let value = open_variable(state, scope, &row)?;
    Ok(Variable {
        preview: vars::preview(&value, row.is_secret),
        value: reveal.then(|| value.to_string()),
        name: row.name,
        is_secret: row.is_secret,
        environment: env.name.clone(),
        environment_id: env.id.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

async fn environment_for(
    state: &AppState,
    principal: &Principal,
    project: &str,
    environment: Option<&str>,
) -> ApiResult<EnvironmentRow> {
    let store = state.store()?;
    let project = load_project(store, principal, project).await?;
    resolve_environment(store, &project, environment).await
}

pub async fn list_for(
    state: &AppState,
    scope: VariableScope<'_>,
    env: &EnvironmentRow,
    reveal: bool,
) -> ApiResult<Response> {
    let rows = state.store()?.variables(scope).await?;
    let total = rows.len() as u64;
    let views = rows
        .into_iter()
        .map(|row| variable_view(state, scope, env, row, reveal))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(list_response(views, 1, total.max(1) as u32, total))
}

/// The (name, value, is_secret?) entries of a request, validated.
pub fn parse_input(
    input: Option<VariablesInput>,
) -> ApiResult<Vec<(String, String, Option<bool>)>> {
    let input = input.ok_or_else(|| ApiError::missing_field("variables"))?;
    let entries: Vec<(String, String, Option<bool>)> = match input {
        VariablesInput::Map(map) => map.into_iter().map(|(k, v)| (k, v, None)).collect(),
        VariablesInput::List(list) => list
            .into_iter()
            .map(|v| (v.name, v.value, v.is_secret))
            .collect(),
    };
    if entries.is_empty() {
        return Err(ApiError::invalid_field(
            "variables",
            "must name at least one variable",
        ));
    }
    for (name, value, _) in &entries {
        names::validate_variable_name("variables", name)?;
        names::validate_variable_value("variables", value)
            .map_err(|e| ApiError::invalid_field("variables", format!("{name}: {}", e.message)))?;
    }
    Ok(entries)
}

/// Seals and stores entries in `scope`, all or none. A name that steers
/// how programs start (`LD_PRELOAD`, `BASH_ENV`, `NODE_OPTIONS`...) runs
/// code with the environment's secrets at the next boot: writing one needs
/// `env:reveal` too.
pub async fn write_variables(
    state: &AppState,
    principal: &Principal,
    scope: VariableScope<'_>,
    entries: Vec<(String, String, Option<bool>)>,
) -> ApiResult<()> {
    if let Some((name, _, _)) = entries.iter().find(|(n, _, _)| vars::steers_programs(n)) {
        principal.require("env:reveal").map_err(|e| {
            e.with_details(serde_json::json!({
                "required_scope": "env:reveal",
                "field": "variables",
                "name": name,
                "reason": "this variable changes how programs start; setting it needs env:reveal",
            }))
        })?;
    }
    let sealed: Vec<(String, Vec<u8>, bool)> = entries
        .into_iter()
        .map(|(name, value, is_secret)| {
            let is_secret = is_secret.unwrap_or_else(|| vars::looks_secret(&name));
            let sealed = state
                .master_key
                .seal(&seal_context(scope, &name), value.as_bytes());
            (name, sealed, is_secret)
        })
        .collect();
    state.store()?.upsert_variables(scope, &sealed).await?;
    Ok(())
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
    list_for(&state, shared(&env), &env, reveal).await
}

pub async fn set(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
    JsonBody(body): JsonBody<SetVariables>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let entries = parse_input(body.variables)?;
    let target = body
        .env
        .as_deref()
        .or(body.environment.as_deref())
        .or(query.environment());
    let env = environment_for(&state, &principal, &project, target).await?;
    write_variables(&state, &principal, shared(&env), entries).await?;
    list_for(&state, shared(&env), &env, false).await
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
    one(&state, &principal, &project, &name, &query, true).await
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

//! A project's environments. `production` (the default) and `staging`
//! come with every project; custom ones (`qa`, `preview/pr-42`) are added
//! and removed. The default environment can be neither renamed nor deleted.
//! An environment can be duplicated (its configuration, not its data) and
//! synced from another (variables added or updated, never removed).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::projects::{DuplicateEnvironment, DuplicatedEnvironment, SyncEnvironment};
use mds_api_types::{CreateEnvironment, Environment, ExtendEnvironment, UpdateEnvironment};
use mds_core::names;
use mds_store::StoreError;
use serde::Deserialize;

use super::{data, deleted, list as list_response};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::environment_view;
use mds_control::previews;
use mds_control::projects::{
    create_environment, environment_name_taken, load_project, resolve_environment,
};

fn name_taken(name: &str) -> ApiError {
    environment_name_taken(name).into()
}

fn is_default_error(action: &str) -> ApiError {
    ApiError::conflict(
        "ENVIRONMENT_IS_DEFAULT",
        format!("the default environment cannot be {action}"),
    )
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let project = load_project(state.store()?, &principal, &project).await?;
    let total = project.environments.len() as u64;
    let envs: Vec<Environment> = project
        .environments
        .iter()
        .cloned()
        .map(environment_view)
        .collect();
    Ok(list_response(envs, 1, total.max(1) as u32, total))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let env = resolve_environment(store, &project, Some(&environment)).await?;
    Ok(data(StatusCode::OK, environment_view(env)))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<CreateEnvironment>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let project = load_project(state.store()?, &principal, &project).await?;
    let row = create_environment(&state, &project, body).await?;
    Ok(data(StatusCode::CREATED, environment_view(row)))
}

/// A new environment with the source's variables and new, empty bindings
/// of its data services ("secrets are generated again; no data is
/// copied").
pub async fn duplicate(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<DuplicateEnvironment>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    principal.require("env:write")?;
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let source = resolve_environment(store, &project, Some(&environment)).await?;
    let (created, report) = state
        .duplicate_environment(&principal, &project, &source, body.name, body.slug)
        .await?;
    let services = store
        .data_services(&project.id)
        .await?
        .into_iter()
        .filter(|s| s.environment_id.is_none())
        .map(|s| s.name)
        .collect();
    Ok(data(
        StatusCode::CREATED,
        DuplicatedEnvironment {
            environment: environment_view(created),
            duplicated_from: source.id,
            copied: report.changes,
            services,
            skipped: report.skipped,
        },
    ))
}

/// The diff of this environment against another; with `apply`, written.
pub async fn sync(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<SyncEnvironment>,
) -> ApiResult<Response> {
    let apply = body.apply.unwrap_or(false);
    principal.require(if apply { "env:write" } else { "env:read" })?;
    let from = body
        .from_environment_id
        .ok_or_else(|| ApiError::missing_field("from_environment_id"))?;
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let target = resolve_environment(store, &project, Some(&environment)).await?;
    let from = resolve_environment(store, &project, Some(&from)).await?;
    let report = state
        .sync_environment(&principal, &project, &target, &from, apply)
        .await?;
    Ok(data(StatusCode::OK, report))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<UpdateEnvironment>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    if let Some(name) = &body.name {
        names::validate_environment_name("name", name)?;
    }
    if let Some(slug) = &body.slug {
        names::validate_slug("slug", slug)?;
    }
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let env = resolve_environment(store, &project, Some(&environment)).await?;
    if body.name.is_none() && body.slug.is_none() {
        return Ok(data(StatusCode::OK, environment_view(env)));
    }
    if env.is_default {
        return Err(is_default_error("renamed"));
    }
    let name = body.name.unwrap_or(env.name.clone());
    let slug = body.slug.unwrap_or_else(|| names::environment_slug(&name));
    match store.rename_environment(&env.id, &name, &slug).await {
        Ok(Some(row)) => Ok(data(StatusCode::OK, environment_view(row))),
        Ok(None) => Err(ApiError::environment_not_found(&environment, &project.slug)),
        Err(StoreError::Conflict { .. }) => Err(name_taken(&name)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    purge: Option<String>,
}

/// An environment whose data services hold data is deleted only with
/// `?purge=true`, which drops that data first.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let purge = parse_bool("purge", query.purge.as_deref())?;
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let env = resolve_environment(store, &project, Some(&environment)).await?;
    let _kept = previews::delete_environment(&state, &project, &env, purge).await?;
    Ok(deleted(&env.id))
}

/// Pushes a preview's expiry out by `ttl` (`mds envs extend`).
pub async fn extend(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<ExtendEnvironment>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let ttl = body.ttl.ok_or_else(|| ApiError::missing_field("ttl"))?;
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let env = resolve_environment(store, &project, Some(&environment)).await?;
    let extended = previews::extend(&state, &env, &ttl).await?;
    Ok(data(StatusCode::OK, environment_view(extended)))
}

/// Rotates the environment's data-service credentials with overlap
/// (`mds credentials rotate`): the old ones work for the grace period.
pub async fn rotate_credentials(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    JsonBody(request): JsonBody<mds_api_types::backups::RotateRequest>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let result = state
        .rotate_credentials(&principal, &project, &environment, request)
        .await?;
    Ok(data(StatusCode::OK, result))
}

/// Sets or ends the environment's scheduled rotation (`mds credentials
/// schedule`).
pub async fn schedule_rotation(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    JsonBody(schedule): JsonBody<mds_api_types::backups::RotationSchedule>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let env = state
        .schedule_rotation(&principal, &project, &environment, schedule)
        .await?;
    Ok(data(StatusCode::OK, environment_view(env)))
}

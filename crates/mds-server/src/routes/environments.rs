//! A project's environments. `production` (the default) and `staging`
//! come with every project; custom ones (`qa`, `preview/pr-42`) are added
//! and removed. The default environment can be neither renamed nor deleted.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::{CreateEnvironment, Environment, UpdateEnvironment};
use mds_core::ids::IdKind;
use mds_core::names::{self, ENVIRONMENT_KINDS};
use mds_store::{NewEnvironment, StoreError};
use serde::Deserialize;

use super::{data, deleted, list as list_response};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::environment_view;
use mds_control::projects::{load_project, resolve_environment};

fn name_taken(name: &str) -> ApiError {
    ApiError::conflict(
        "ENVIRONMENT_NAME_TAKEN",
        format!("this project already has an environment named {name:?}"),
    )
    .with_details(serde_json::json!({ "field": "name" }))
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
    let name = body.name.ok_or_else(|| ApiError::missing_field("name"))?;
    names::validate_environment_name("name", &name)?;
    let slug = match body.slug {
        Some(slug) => {
            names::validate_slug("slug", &slug)?;
            slug
        }
        None => names::environment_slug(&name),
    };
    let kind = match body.kind {
        Some(kind) if ENVIRONMENT_KINDS.contains(&kind.as_str()) => kind,
        Some(kind) => {
            return Err(ApiError::invalid_field(
                "kind",
                format!("must be one of {ENVIRONMENT_KINDS:?}, got {kind:?}"),
            ))
        }
        None => names::environment_kind(&name).to_string(),
    };
    let store = state.store()?;
    let project = load_project(store, &principal, &project).await?;
    let new = NewEnvironment {
        id: IdKind::Environment.mint(),
        name: name.clone(),
        slug,
        kind,
        is_default: false,
    };
    match store.create_environment(&project.id, &new).await {
        Ok(row) => {
            // Its data-service bindings are added by the next pass.
            if let Ok(reconciler) = state.reconciler() {
                reconciler.wake();
            }
            Ok(data(StatusCode::CREATED, environment_view(row)))
        }
        Err(StoreError::Conflict { .. }) => Err(name_taken(&name)),
        Err(e) => Err(e.into()),
    }
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
    if env.is_default {
        return Err(is_default_error("deleted"));
    }
    let bound = store.environment_bindings(&env.id).await?;
    if !bound.is_empty() || store.environment_has_bindings(&env.id).await? {
        if !purge {
            return Err(ApiError::conflict(
                "ENVIRONMENT_HAS_DATA",
                format!(
                    "environment {:?} has data-service bindings; delete it with ?purge=true \
                     to drop their data too",
                    env.name
                ),
            ));
        }
        let reconciler = state.reconciler()?;
        for (service, binding) in bound {
            reconciler
                .remove_now(&service, &binding)
                .await
                .map_err(|e| ApiError::internal(format!("purging {}: {e}", binding.id)))?;
        }
    }
    state
        .deployer()?
        .retire_environment(&state, &env.id)
        .await?;
    if !store.delete_environment(&env.id).await? {
        return Err(ApiError::environment_not_found(&environment, &project.slug));
    }
    Ok(deleted(&env.id))
}

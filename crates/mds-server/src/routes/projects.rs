//! Projects: create (with `production` and `staging`), get, list, update,
//! delete. Projects are named by id or slug.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::{CreateProject, UpdateProject};
use mds_core::ids::IdKind;
use mds_core::names::{self, MAX_DESCRIPTION, MAX_PROJECT_NAME};
use mds_core::tenancy::DEFAULT_WORKSPACE_ID;
use mds_store::{NewProject, ProjectPatch, StoreError};
use serde::Deserialize;
use serde_json::Value;

use super::{data, deleted, list as list_response};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, JsonBody, Paging, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::project_view;
use mds_control::projects::{create_project, load_project};

fn validate_metadata(metadata: Option<Value>) -> ApiResult<Option<Value>> {
    match metadata {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(Value::Object(map))),
        Some(_) => Err(ApiError::invalid_field("metadata", "must be a JSON object")),
    }
}

fn validate_description(description: Option<String>) -> ApiResult<Option<String>> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::invalid_field(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        )),
        other => Ok(other),
    }
}

fn slug_taken(slug: &str) -> ApiError {
    mds_control::projects::slug_taken(slug).into()
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateProject>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let name = body.name.ok_or_else(|| ApiError::missing_field("name"))?;
    let name = names::validate_display_name("name", &name, MAX_PROJECT_NAME)?;
    let explicit_slug = body.slug.is_some();
    let base_slug = match body.slug {
        Some(slug) => {
            names::validate_slug("slug", &slug)?;
            slug
        }
        None => names::slugify(&name).unwrap_or_else(|| "project".to_string()),
    };
    let workspace_id = body
        .workspace_id
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| DEFAULT_WORKSPACE_ID.to_string());
    if workspace_id.len() > 255 {
        return Err(ApiError::invalid_field(
            "workspace_id",
            "must be at most 255 characters",
        ));
    }
    let project = NewProject {
        id: IdKind::Project.mint(),
        tenant_id: principal.tenant_id.clone(),
        workspace_id,
        slug: base_slug,
        name,
        description: validate_description(body.description)?,
        metadata: validate_metadata(body.metadata)?.unwrap_or_else(|| serde_json::json!({})),
        attribution: serde_json::to_value(&body.attribution).map_err(ApiError::internal)?,
        standalone: false,
    };
    let row = create_project(state.store()?, project, explicit_slug).await?;
    Ok(data(StatusCode::CREATED, project_view(&row)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    workspace_id: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let paging = Paging::parse(query.page.as_deref(), query.page_size.as_deref())?;
    let (rows, total) = state
        .store()?
        .projects(
            &principal.tenant_id,
            query.workspace_id.as_deref().filter(|w| !w.is_empty()),
            paging.offset(),
            paging.page_size as i64,
        )
        .await?;
    Ok(list_response(
        rows.iter().map(project_view).collect(),
        paging.page,
        paging.page_size,
        total as u64,
    ))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(reference): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let row = load_project(state.store()?, &principal, &reference).await?;
    Ok(data(StatusCode::OK, project_view(&row)))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(reference): PathParams<String>,
    JsonBody(body): JsonBody<UpdateProject>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let patch = ProjectPatch {
        name: body
            .name
            .map(|n| names::validate_display_name("name", &n, MAX_PROJECT_NAME))
            .transpose()?,
        slug: body
            .slug
            .map(|s| names::validate_slug("slug", &s).map(|()| s))
            .transpose()?,
        description: validate_description(body.description)?,
        metadata: validate_metadata(body.metadata)?,
    };
    let store = state.store()?;
    let project = load_project(store, &principal, &reference).await?;
    match store
        .update_project(&principal.tenant_id, &project.id, &patch)
        .await
    {
        Ok(Some(row)) => Ok(data(StatusCode::OK, project_view(&row))),
        Ok(None) => Err(ApiError::not_found("project", &reference)),
        Err(StoreError::Conflict { .. }) => Err(slug_taken(patch.slug.as_deref().unwrap_or(""))),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    purge: Option<String>,
}

/// A project that still has data services is deleted only with
/// `?purge=true`, which drops their databases first.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(reference): PathParams<String>,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let purge = parse_bool("purge", query.purge.as_deref())?;
    let store = state.store()?;
    let project = load_project(store, &principal, &reference).await?;
    let services = store.data_services(&project.id).await?;
    if !services.is_empty() {
        if !purge {
            let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            return Err(ApiError::conflict(
                "PROJECT_HAS_DATA_SERVICES",
                format!(
                    "project {:?} still has data services ({}); delete them first, or delete \
                     the project with ?purge=true to drop their data too",
                    project.slug,
                    names.join(", ")
                ),
            ));
        }
        let reconciler = state.reconciler()?;
        for service in &services {
            store.set_service_desired(&service.id, "deleted").await?;
            for binding in store.bindings(&service.id).await? {
                reconciler
                    .remove_now(service, &binding)
                    .await
                    .map_err(|e| ApiError::internal(format!("purging {}: {e}", binding.id)))?;
            }
        }
        // A service with no binding left is removed by the sweep, not by
        // its last binding's removal.
        store.sweep_deleted_services().await?;
        tracing::info!(
            project = project.id,
            services = services.len(),
            "purged data services"
        );
    }
    state.deployer()?.remove_project(&state, &project).await?;
    if !store
        .delete_project(&principal.tenant_id, &project.id)
        .await?
    {
        return Err(ApiError::not_found("project", &reference));
    }
    Ok(deleted(&project.id))
}

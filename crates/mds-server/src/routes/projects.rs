//! Projects: create (with `production` and `staging`), get, list, update,
//! delete, summary. Projects are named by id or slug. Templates and moves
//! are answered 501.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::BTreeMap;

use mds_api_types::projects::{
    BucketSummary, DeploymentSummary, EnvironmentSummary, ProjectCapabilities, ProjectSummary,
    ServiceSummary, SummaryCounts, VolumeSummary,
};
use mds_api_types::{CreateProject, UpdateProject};
use mds_core::ids::IdKind;
use mds_core::names::{self, MAX_DESCRIPTION, MAX_PROJECT_NAME};
use mds_core::tenancy::DEFAULT_WORKSPACE_ID;
use mds_store::{NewProject, ProjectPatch, SandboxRow, StoreError};
use serde::Deserialize;
use serde_json::Value;

use super::{data, deleted, list as list_response};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_bool, JsonBody, Paging, PathParams, QueryParams};
use crate::state::AppState;
use crate::views::{project_view, service_view};
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

/// `network_egress`: `allow` or `none`.
fn validate_egress(egress: Option<String>) -> ApiResult<Option<String>> {
    match egress.as_deref() {
        None | Some("allow" | "none") => Ok(egress),
        Some(_) => Err(ApiError::invalid_field(
            "network_egress",
            "must be `allow` (the outside is reachable) or `none` (only the project's own data services)",
        )),
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
        network_egress: validate_egress(body.network_egress)?.unwrap_or_else(|| "allow".into()),
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
        network_egress: validate_egress(body.network_egress)?,
    };
    let store = state.store()?;
    let project = load_project(store, &principal, &reference).await?;
    match store
        .update_project(&principal.tenant_id, &project.id, &patch)
        .await
    {
        Ok(Some(row)) => {
            if row.network_egress != project.network_egress {
                state.apply_network_egress(&row).await;
            }
            Ok(data(StatusCode::OK, project_view(&row)))
        }
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
        let all: Vec<&mds_store::DataServiceRow> = services.iter().collect();
        state
            .backup_before_delete(
                &project,
                &all,
                None,
                mds_control::backups::points::Reason::BeforePurge,
            )
            .await?;
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

/// `GET /projects/{id}/summary`: the project's environments, data services
/// (with their state in each environment), sandboxes, deployments and
/// their runtime instances, volumes and buckets, counted.
pub async fn summary(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let inv = state.project_inventory(&principal, &project).await?;
    let live = |s: &&SandboxRow| s.state != "destroyed";
    let mut environments: Vec<EnvironmentSummary> = inv
        .project
        .environments
        .iter()
        .map(|e| EnvironmentSummary {
            id: e.id.clone(),
            name: e.name.clone(),
            is_default: e.is_default,
            services: BTreeMap::new(),
            sandboxes: inv
                .sandboxes
                .iter()
                .filter(live)
                .filter(|s| s.environment_id.as_deref() == Some(&e.id))
                .count() as u64,
            runtime_instances: count_by(
                inv.deployments
                    .iter()
                    .flat_map(|(_, i)| i)
                    .filter(|i| i.environment_id == e.id)
                    .map(|i| i.state.as_str()),
            ),
        })
        .collect();
    let mut data_services = Vec::new();
    for (service, bindings) in &inv.services {
        for binding in bindings {
            if let Some(env) = environments
                .iter_mut()
                .find(|e| e.id == binding.environment_id)
            {
                env.services
                    .insert(service.name.clone(), binding.state.clone());
            }
        }
        let view = service_view(&inv.project.tenant_id, service, bindings);
        data_services.push(ServiceSummary {
            id: view.id,
            name: view.name,
            kind: view.kind,
            state: view.state,
            environments: bindings
                .iter()
                .map(|b| (b.environment_name.clone(), b.state.clone()))
                .collect(),
        });
    }
    let deployments: Vec<DeploymentSummary> = inv
        .deployments
        .iter()
        .map(|(d, instances)| DeploymentSummary {
            id: d.id.clone(),
            name: d.name.clone(),
            slug: d.slug.clone(),
            stopped: d.stopped,
            runtime_instances: count_by(instances.iter().map(|i| i.state.as_str())),
        })
        .collect();
    let counts = SummaryCounts {
        environments: environments.len() as u64,
        data_services: data_services.len() as u64,
        sandboxes: inv.sandboxes.iter().filter(live).count() as u64,
        deployments: deployments.len() as u64,
        runtime_instances: inv.deployments.iter().map(|(_, i)| i.len() as u64).sum(),
        volumes: inv.volumes.len() as u64,
        buckets: inv.buckets.len() as u64,
    };
    environments.sort_by_key(|e| !e.is_default);
    Ok(data(
        StatusCode::OK,
        ProjectSummary {
            project_id: inv.project.id.clone(),
            name: inv.project.name.clone(),
            slug: inv.project.slug.clone(),
            counts,
            environments,
            data_services,
            sandboxes: count_by(inv.sandboxes.iter().map(|s| s.state.as_str())),
            deployments,
            volumes: VolumeSummary {
                total: inv.volumes.len() as u64,
                attached: inv
                    .volumes
                    .iter()
                    .filter(|v| v.attachment.is_some())
                    .count() as u64,
                size_bytes: inv.volumes.iter().map(|v| v.size_bytes).sum(),
            },
            buckets: BucketSummary {
                total: inv.buckets.len() as u64,
                public: inv
                    .buckets
                    .iter()
                    .filter(|b| b.visibility == "public")
                    .count() as u64,
            },
        },
    ))
}

fn count_by<'a>(states: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for state in states {
        *counts.entry(state.to_string()).or_insert(0) += 1;
    }
    counts
}

/// `GET /project-capabilities`: what this server can do of the SDK's
/// project features.
pub async fn capabilities(principal: Principal) -> ApiResult<Response> {
    principal.require("projects:read")?;
    Ok(data(
        StatusCode::OK,
        ProjectCapabilities {
            services_api: true,
            image_source: false,
            template_apply: false,
        },
    ))
}

/// Templates (`/project-templates[/{slug}]`, `.../templates/{slug}/apply`):
/// there is no catalog here.
pub async fn templates(principal: Principal) -> ApiResult<Response> {
    principal.require("projects:read")?;
    Err(ApiError::not_implemented("project templates"))
}

/// The body is read, though unused: one left unread makes the server close
/// the connection, which a client reusing it sees as a reset.
pub async fn apply_template(principal: Principal, _body: Bytes) -> ApiResult<Response> {
    principal.require("projects:write")?;
    Err(ApiError::not_implemented("project templates"))
}

/// `POST /projects/{id}/move`: one workspace per server, nowhere to move to.
/// Its body is read for the reason [`apply_template`] gives.
pub async fn move_project(principal: Principal, _body: Bytes) -> ApiResult<Response> {
    principal.require("projects:write")?;
    Err(ApiError::not_implemented(
        "moving a project to another workspace (this server has one workspace)",
    ))
}

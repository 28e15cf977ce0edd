//! MIOSA `/deployments`: publish a sandbox's workspace as an immutable
//! version, promote versions per environment, roll back, and watch the
//! runtime instances that serve them (see `crate::deploy`).
//!
//! Every response is a whole object the SDK's strict models accept, with
//! enum values only from miosa-api.md 9.5. None of these routes touches a
//! data service: a version is code; the data stays where it is.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mds_core::ids::IdKind;
use mds_core::kinds::ServiceKind;
use mds_core::{names, vars};
use mds_store::{
    DeploymentPatch, DeploymentRow, EnvironmentRow, InstanceRow, NewDeployment, NewVersion,
    ProjectRow, StoreError, VariableScope, VersionRow,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{data, deleted, list_all, ts};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use mds_control::projects::{load_project, project_id_of, resolve_environment};
use mds_control::variables::{self, Entry};

const DEFAULT_ENVIRONMENT: &str = "production";
/// The port a dynamic version is said to listen on when none is given;
/// the instance really listens on the `PORT` it is given.
const DEFAULT_PORT: i32 = 8080;

fn release_id(version_id: &str) -> String {
    format!("rel_{}", version_id.trim_start_matches("ver_"))
}

fn version_id_of_release(release_id: &str) -> String {
    format!("ver_{}", release_id.trim_start_matches("rel_"))
}

fn artifact_uri(v: &VersionRow) -> Value {
    v.artifact_sha256.as_ref().map_or(Value::Null, |sha| {
        json!(format!("mds://releases/sha256/{sha}.tar.zst"))
    })
}

fn version_view(v: &VersionRow, project_id: Option<&str>) -> Value {
    json!({
        "id": v.id,
        "deployment_id": v.deployment_id,
        "tenant_id": v.tenant_id,
        "workspace_id": null,
        "project_id": project_id,
        "created_by": null,
        "source_sandbox_id": v.source_sandbox_id,
        "build_id": null,
        "version_number": v.version_number,
        "kind": v.kind,
        "state": v.state,
        "artifact_uri": artifact_uri(v),
        "artifact_manifest": v.manifest,
        "artifact_sha256": v.artifact_sha256,
        "artifact_bytes": v.artifact_bytes,
        "runtime_image": null,
        "runtime_command": v.runtime_command,
        "runtime_port": v.runtime_port,
        "health_check_path": v.health_check_path,
        "build_log_uri": null,
        "output_path": v.output_path,
        "entrypoint": v.entrypoint,
        "metadata": {},
        "promoted_at": ts(v.promoted_at),
        "archived_at": ts(v.archived_at),
        "ready_at": ts(v.ready_at),
        "created_at": ts(Some(v.created_at)),
        "updated_at": ts(Some(v.updated_at)),
    })
}

fn release_view(v: &VersionRow, project_id: Option<&str>) -> Value {
    json!({
        "id": release_id(&v.id),
        "deployment_id": v.deployment_id,
        "deployment_version_id": v.id,
        "tenant_id": v.tenant_id,
        "project_id": project_id,
        "source_sandbox_id": v.source_sandbox_id,
        "kind": if v.kind == "static" { "static" } else { "rootfs" },
        "state": v.state,
        "artifact_uri": artifact_uri(v),
        "artifact_sha256": v.artifact_sha256,
        "artifact_manifest": v.manifest,
        "storage_backend": "local",
        "storage_uri": artifact_uri(v),
        "sha256": v.artifact_sha256,
        "size_bytes": v.artifact_bytes,
        "start_command": v.runtime_command,
        "port": v.runtime_port,
        "health_check_path": v.health_check_path,
        "metadata": { "version_number": v.version_number },
        "ready_at": ts(v.ready_at),
        "archived_at": ts(v.archived_at),
        "created_at": ts(Some(v.created_at)),
        "updated_at": ts(Some(v.updated_at)),
    })
}

fn instance_view(i: &InstanceRow, health_check_path: Option<&str>) -> Value {
    json!({
        "id": i.id,
        "deployment_id": i.deployment_id,
        "environment_id": i.environment_id,
        "environment": i.environment,
        "service_id": null,
        "release_id": release_id(&i.version_id),
        "version_id": i.version_id,
        "tenant_id": i.tenant_id,
        "host_id": "local",
        "desired_state": i.desired_state,
        "state": i.state,
        "ip_address": "127.0.0.1",
        "port": i.port,
        "health_check_path": health_check_path,
        "last_health_check_at": ts(i.last_health_check_at),
        "last_heartbeat_at": ts(i.last_health_check_at),
        "started_at": ts(i.started_at),
        "stopped_at": ts(i.stopped_at),
        "error_message": i.error_message,
        "restart_count": i.restart_count,
        "metadata": {},
        "created_at": ts(Some(i.created_at)),
        "updated_at": ts(Some(i.updated_at)),
    })
}

/// A deployment as the SDK's `Deployment` reads it; `active_version_id`
/// is production's, `environments` has each environment's.
async fn view(state: &AppState, d: &DeploymentRow) -> ApiResult<Value> {
    let store = state.store()?;
    let actives = store.active_versions(&d.id).await?;
    let versions = store.versions(&d.id, None).await?;
    let latest = versions.first();
    let deployer = state.deployer()?;
    let mut environments = Map::new();
    for a in &actives {
        environments.insert(
            a.environment.clone(),
            json!({
                "environment_id": a.environment_id,
                "active_version_id": a.active_version_id,
                "active_release_id": release_id(&a.active_version_id),
                "previous_version_id": a.previous_version_id,
                "url": deployer.public_url(&d.slug, &a.environment),
                "updated_at": ts(Some(a.updated_at)),
            }),
        );
    }
    let production = actives
        .iter()
        .find(|a| a.environment == DEFAULT_ENVIRONMENT);
    // What serves in production (else the newest version) describes it.
    let serving = production.and_then(|p| versions.iter().find(|v| v.id == p.active_version_id));
    let deployment_state = if d.stopped {
        "stopped"
    } else if !actives.is_empty() {
        "running"
    } else {
        match latest.map(|v| v.state.as_str()) {
            Some("building" | "created") => "building",
            Some("failed") => "failed",
            _ => "pending",
        }
    };
    let kind = serving.or(latest).map(|v| v.kind.clone());
    Ok(json!({
        "id": d.id,
        "tenant_id": d.tenant_id,
        "owner_id": null,
        "workspace_id": null,
        "project_id": d.project_id,
        "name": d.name,
        "slug": d.slug,
        "repo_url": null,
        "repo_provider": null,
        "branch": null,
        "build_command": d.build_command,
        "run_command": d.run_command,
        "port": d.port,
        "health_check_path": d.health_check_path,
        "kind": kind,
        "runtime_image": null,
        "current_build_id": null,
        "active_version_id": production.map(|p| p.active_version_id.clone()),
        "active_release_id": production.map(|p| release_id(&p.active_version_id)),
        "running_artifact_sha256": serving.and_then(|v| v.artifact_sha256.clone()),
        "source_type": "sandbox",
        "state": deployment_state,
        "auto_deploy": false,
        "custom_domain_id": null,
        "linked_database_id": d.linked_database_id,
        "metadata": d.metadata,
        "public_url": deployer.public_url(&d.slug, DEFAULT_ENVIRONMENT),
        "auto_subdomain": format!("{}.{DEFAULT_ENVIRONMENT}.localhost", d.slug),
        "environments": environments,
        "created_at": ts(Some(d.created_at)),
        "updated_at": ts(Some(d.updated_at)),
    }))
}

async fn load(state: &AppState, principal: &Principal, id: &str) -> ApiResult<DeploymentRow> {
    state
        .store()?
        .deployment(&principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("deployment", id))
}

/// The deployment's project: versions run in its environments.
async fn project_of(state: &AppState, d: &DeploymentRow) -> ApiResult<Arc<ProjectRow>> {
    let project_id = d.project_id.as_deref().ok_or_else(|| {
        ApiError::conflict(
            "DEPLOYMENT_HAS_NO_PROJECT",
            "this deployment has no project yet: publish it from a sandbox of a project, or \
             create it with metadata.project_id",
        )
    })?;
    state
        .store()?
        .project(&d.tenant_id, project_id)
        .await?
        .ok_or_else(|| ApiError::not_found("project", project_id))
}

async fn environment_of(
    state: &AppState,
    project: &ProjectRow,
    reference: Option<&str>,
) -> ApiResult<EnvironmentRow> {
    Ok(resolve_environment(
        state.store()?,
        project,
        Some(reference.unwrap_or(DEFAULT_ENVIRONMENT)),
    )
    .await?)
}

async fn load_version(state: &AppState, d: &DeploymentRow, id: &str) -> ApiResult<VersionRow> {
    state
        .store()?
        .version(&d.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("version", id))
}

fn check_health_path(path: &str) -> ApiResult<()> {
    if !path.starts_with('/')
        || path.len() > 1024
        || path.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ApiError::invalid_field(
            "health_check_path",
            "must be a path starting with / without spaces or control characters",
        ));
    }
    Ok(())
}

fn check_port(port: i64) -> ApiResult<i32> {
    if !(1..=65535).contains(&port) {
        return Err(ApiError::invalid_field("port", "must be from 1 to 65535"));
    }
    Ok(port as i32)
}

fn check_command(field: &str, command: &str) -> ApiResult<()> {
    if command.trim().is_empty() || command.len() > 16 << 10 || command.contains('\0') {
        return Err(ApiError::invalid_field(
            field,
            "must be a non-empty shell command of at most 16 KiB without NUL",
        ));
    }
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreateBody {
    name: Option<String>,
    run_command: Option<String>,
    build_command: Option<String>,
    port: Option<i64>,
    health_check_path: Option<String>,
    metadata: Option<Value>,
    project_id: Option<String>,
    project_slug: Option<String>,
}

/// The host label a deployment's name gives it.
fn slug_of(name: &str) -> ApiResult<String> {
    names::slugify(name).ok_or_else(|| {
        ApiError::invalid_field(
            "name",
            "must contain letters or digits (it names the deployment's host)",
        )
    })
}

/// The longest deployment name.
const MAX_NAME: usize = 128;

async fn create_row(
    state: &AppState,
    principal: &Principal,
    body: CreateBody,
) -> ApiResult<DeploymentRow> {
    let store = state.store()?;
    let name = body.name.ok_or_else(|| ApiError::missing_field("name"))?;
    let name =
        names::validate_display_name("name", &name, MAX_NAME).map_err(ApiError::validation)?;
    let slug = slug_of(&name)?;
    if let Some(c) = &body.run_command {
        check_command("run_command", c)?;
    }
    if let Some(c) = &body.build_command {
        check_command("build_command", c)?;
    }
    let port = body.port.map(check_port).transpose()?;
    let metadata = match body.metadata {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ApiError::invalid_field("metadata", "must be an object")),
    };
    // The SDK's create sends no port or health check path: metadata may.
    let port = match port {
        Some(p) => Some(p),
        None => metadata["port"].as_i64().map(check_port).transpose()?,
    };
    let health_check_path = body
        .health_check_path
        .or_else(|| metadata["health_check_path"].as_str().map(str::to_string));
    if let Some(p) = &health_check_path {
        check_health_path(p)?;
    }
    let project_ref = body
        .project_id
        .or(body.project_slug)
        .or_else(|| metadata["project_id"].as_str().map(str::to_string));
    let project = match project_ref {
        Some(reference) => Some(load_project(store, principal, &reference).await?),
        None => None,
    };
    let id = IdKind::Deployment.mint();
    match store
        .create_deployment(&NewDeployment {
            id: &id,
            tenant_id: &principal.tenant_id,
            project_id: project.as_ref().map(|p| p.id.as_str()),
            name: &name,
            slug: &slug,
            run_command: body.run_command.as_deref(),
            build_command: body.build_command.as_deref(),
            port,
            health_check_path: health_check_path.as_deref(),
            metadata: &metadata,
        })
        .await
    {
        Ok(row) => Ok(row),
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(
            "DEPLOYMENT_NAME_TAKEN",
            format!("a deployment is already called {slug:?} (names are hosts: {slug}.production.localhost)"),
        )
        .with_details(json!({ "field": "name" }))),
        Err(e) => Err(e.into()),
    }
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<Response> {
    principal.require("deployments:write")?;
    let row = create_row(&state, &principal, body).await?;
    tracing::info!(deployment = row.id, slug = row.slug, "deployment created");
    Ok(data(StatusCode::CREATED, view(&state, &row).await?))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    project_id: Option<String>,
    state: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let store = state.store()?;
    let project = project_id_of(store, &principal, query.project_id.as_deref()).await?;
    let mut items = Vec::new();
    for row in store
        .deployments(&principal.tenant_id, project.as_deref())
        .await?
    {
        let v = view(&state, &row).await?;
        if query.state.as_deref().is_none_or(|s| v["state"] == s) {
            items.push(v);
        }
    }
    Ok(list_all(items))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let row = load(&state, &principal, &id).await?;
    Ok(data(StatusCode::OK, view(&state, &row).await?))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<Response> {
    principal.require("deployments:write")?;
    let row = load(&state, &principal, &id).await?;
    if let Some(c) = &body.run_command {
        check_command("run_command", c)?;
    }
    if let Some(c) = &body.build_command {
        check_command("build_command", c)?;
    }
    if let Some(p) = &body.health_check_path {
        check_health_path(p)?;
    }
    let name = body
        .name
        .map(|n| names::validate_display_name("name", &n, MAX_NAME))
        .transpose()
        .map_err(ApiError::validation)?;
    let patch = DeploymentPatch {
        name,
        run_command: body.run_command,
        build_command: body.build_command,
        port: body.port.map(check_port).transpose()?,
        health_check_path: body.health_check_path,
        linked_database_id: None,
    };
    let row = state
        .store()?
        .update_deployment(&row.id, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found("deployment", &id))?;
    Ok(data(StatusCode::OK, view(&state, &row).await?))
}

/// Deletes the deployment, its versions and instances; data services are
/// not touched.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("deployments:write")?;
    let row = load(&state, &principal, &id).await?;
    state.deployer()?.remove(&state, &row).await?;
    Ok(deleted(&row.id))
}

pub async fn stop(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("deployments:write")?;
    let row = load(&state, &principal, &id).await?;
    let store = state.store()?;
    store.set_deployment_stopped(&row.id, true).await?;
    state.deployer()?.stop_deployment(&state, &row.id).await;
    let row = load(&state, &principal, &id).await?;
    Ok(data(StatusCode::OK, view(&state, &row).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PublishBody {
    source_sandbox_id: Option<String>,
    sandbox_id: Option<String>,
    output_path: Option<String>,
    entrypoint: Option<String>,
    promote: Option<bool>,
    environment: Option<String>,
    kind: Option<String>,
    run_command: Option<String>,
    port: Option<i64>,
    health_check_path: Option<String>,
    // `POST /sandboxes/{id}/deploy`
    name: Option<String>,
    deployment_id: Option<String>,
}

/// `output_path` as a directory inside the jail: relative to
/// `/workspace` (or under it), without `..`.
fn output_dir(path: Option<&str>) -> ApiResult<String> {
    let path = path.unwrap_or(".").trim();
    let relative = path
        .strip_prefix("/workspace")
        .map(|p| p.trim_start_matches('/'))
        .unwrap_or(path);
    if relative.starts_with('/')
        || relative.split('/').any(|p| p == "..")
        || relative.chars().any(char::is_control)
        || relative.len() > 1024
    {
        return Err(ApiError::invalid_field(
            "output_path",
            "must be a directory of the workspace (relative, or under /workspace), without ..",
        ));
    }
    let relative = relative.trim_start_matches("./").trim_end_matches('/');
    Ok(if relative.is_empty() || relative == "." {
        "/workspace".to_string()
    } else {
        format!("/workspace/{relative}")
    })
}

/// A sandbox by id, or by the name of a live one.
async fn find_sandbox(
    state: &AppState,
    principal: &Principal,
    reference: &str,
) -> ApiResult<mds_store::SandboxRow> {
    let store = state.store()?;
    match store.sandbox(&principal.tenant_id, reference).await? {
        Some(sandbox) => Ok(sandbox),
        None => store
            .sandbox_by_name(&principal.tenant_id, reference)
            .await?
            .ok_or_else(|| ApiError::not_found("sandbox", reference)),
    }
}

/// Publishes the sandbox's workspace as the deployment's next version
/// and, unless `promote: false`, promotes it.
async fn publish_version(
    state: &AppState,
    principal: &Principal,
    mut deployment: DeploymentRow,
    body: PublishBody,
) -> ApiResult<Response> {
    let store = state.store()?;
    let sandbox_id = body
        .source_sandbox_id
        .or(body.sandbox_id)
        .ok_or_else(|| ApiError::missing_field("source_sandbox_id"))?;
    let sandbox = find_sandbox(state, principal, &sandbox_id).await?;
    if sandbox.state == "destroyed" {
        return Err(ApiError::conflict(
            "SANDBOX_DESTROYED",
            format!("sandbox {sandbox_id} was destroyed; its workspace is gone"),
        ));
    }
    // Code from one project never runs with another's secrets.
    let project_id =
        match (&deployment.project_id, &sandbox.project_id) {
            (Some(d), Some(s)) if d != s => {
                return Err(ApiError::conflict(
                    "PROJECT_MISMATCH",
                    format!("the sandbox belongs to project {s}, the deployment to {d}"),
                ))
            }
            (Some(d), _) => d.clone(),
            // Adopted below, once the request is known to be good.
            (None, Some(s)) => s.clone(),
            (None, None) => return Err(ApiError::invalid_field(
                "source_sandbox_id",
                "the sandbox has no project and neither has the deployment: create the sandbox \
                 with project_id, or the deployment with metadata.project_id",
            )),
        };
    let project = store
        .project(&principal.tenant_id, &project_id)
        .await?
        .ok_or_else(|| ApiError::not_found("project", &project_id))?;
    let env = environment_of(state, &project, body.environment.as_deref()).await?;
    let dir = output_dir(body.output_path.as_deref())?;
    if let Some(c) = &body.run_command {
        check_command("run_command", c)?;
    }
    let run_command = body.run_command.or(deployment.run_command.clone());
    let kind = match (body.kind.as_deref().unwrap_or("auto"), &run_command) {
        ("auto", Some(_)) | ("dynamic", Some(_)) => "dynamic",
        ("auto", None) | ("static", _) => "static",
        ("dynamic", None) => {
            return Err(ApiError::invalid_field(
                "run_command",
                "a dynamic version needs a run_command (set it on the deployment)",
            ))
        }
        (other, _) => {
            return Err(ApiError::invalid_field(
                "kind",
                format!("{other:?} is not one of auto, static, dynamic"),
            ))
        }
    };
    let (port, health) = if kind == "dynamic" {
        let port = match body.port {
            Some(p) => check_port(p)?,
            None => deployment.port.unwrap_or(DEFAULT_PORT),
        };
        let health = body
            .health_check_path
            .or(deployment.health_check_path.clone())
            .unwrap_or_else(|| "/".to_string());
        check_health_path(&health)?;
        (Some(port), Some(health))
    } else {
        (None, None)
    };
    let entrypoint = body.entrypoint.filter(|e| !e.is_empty());
    if let Some(e) = &entrypoint {
        if e.starts_with('/') || e.split('/').any(|p| p == "..") || e.chars().any(char::is_control)
        {
            return Err(ApiError::invalid_field(
                "entrypoint",
                "must be a file of the release (relative, without ..)",
            ));
        }
    }
    let sandboxes = state.sandboxes()?;
    if deployment.project_id.is_none() {
        deployment.project_id = store.adopt_project(&deployment.id, &project_id).await?;
        if deployment.project_id.as_deref() != Some(project_id.as_str()) {
            // Another publish adopted another project meanwhile.
            return Err(ApiError::conflict(
                "PROJECT_MISMATCH",
                "the deployment was just linked to another project; publish from a sandbox of it",
            ));
        }
    }
    let version = store
        .create_version(&NewVersion {
            id: &IdKind::Version.mint(),
            deployment_id: &deployment.id,
            tenant_id: &deployment.tenant_id,
            kind,
            source_sandbox_id: &sandbox.id,
            output_path: Some(&dir),
            entrypoint: entrypoint.as_deref(),
            runtime_command: run_command.as_deref().filter(|_| kind == "dynamic"),
            runtime_port: port,
            health_check_path: health.as_deref(),
        })
        .await?;
    let began = std::time::Instant::now();
    store
        .finish_version_stage(
            &version.id,
            "building",
            None,
            &format!("packing {dir} of sandbox {}\n", sandbox.id),
        )
        .await?;
    let deployer = state.deployer()?;
    let version = match deployer.pack(sandboxes, &sandbox.id, &dir).await {
        Ok(stored) => {
            let manifest = json!({
                "files": stored.files,
                "total_bytes": stored.file_bytes,
                "entrypoint": entrypoint,
                "tar_bytes": stored.tar_bytes,
            });
            store
                .finish_version_stage(
                    &version.id,
                    "ready",
                    Some((&stored.sha256, stored.bytes as i64, &manifest)),
                    &format!(
                        "{} files, {} bytes; artifact sha256:{} ({} bytes, tar+zstd) in {} ms\n",
                        stored.files,
                        stored.file_bytes,
                        stored.sha256,
                        stored.bytes,
                        began.elapsed().as_millis()
                    ),
                )
                .await?
        }
        Err(why) => {
            let failed = store
                .finish_version_stage(&version.id, "failed", None, &format!("failed: {why}\n"))
                .await?;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "BUILD_FAILED",
                format!("version {} failed: {why}", failed.version_number),
            )
            .with_details(json!({
                "version_id": failed.id,
                "version_number": failed.version_number,
                "log": failed.build_log,
            })));
        }
    };
    tracing::info!(
        deployment = deployment.id,
        version = version.id,
        number = version.version_number,
        sha256 = version.artifact_sha256,
        "version published"
    );
    // Each publish may push an old version past retention.
    if let Err(e) = deployer.collect_releases(state).await {
        tracing::warn!(error = %e, "collecting releases");
    }
    let promote = body.promote.unwrap_or(true);
    if promote {
        store.set_deployment_stopped(&deployment.id, false).await?;
        deployer
            .serve(state, &deployment, &project, &env, &version, true)
            .await?;
    }
    let version = load_version(state, &deployment, &version.id).await?;
    let deployment_view = view(state, &deployment).await?;
    let services = if promote {
        vec![json!({
            "id": format!("svc_{}_{}", deployment.id.trim_start_matches("dep_"), names::environment_slug(&env.name)),
            "deployment_id": deployment.id,
            "environment_id": env.id,
            "tenant_id": deployment.tenant_id,
            "type": if kind == "static" { "static_web" } else { "web" },
            "name": deployment.slug,
            "desired_replicas": 1,
            "state": "healthy",
            "metadata": { "url": deployer.public_url(&deployment.slug, &env.name) },
        })]
    } else {
        Vec::new()
    };
    Ok(data(
        StatusCode::CREATED,
        json!({
            "deployment": deployment_view,
            "version": version_view(&version, Some(&project.id)),
            "release": release_view(&version, Some(&project.id)),
            "services": services,
            "promoted": promote,
            "environment": env.name,
            "url": deployer.public_url(&deployment.slug, &env.name),
        }),
    ))
}

pub async fn publish(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<PublishBody>,
) -> ApiResult<Response> {
    require_boot(&principal)?;
    let deployment = load(&state, &principal, &id).await?;
    publish_version(&state, &principal, deployment, body).await
}

/// `POST /sandboxes/{id}/deploy`: publishes to `deployment_id`, or to the
/// deployment called `name` (made if there is none).
pub async fn sandbox_deploy(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(sandbox_id): PathParams<String>,
    JsonBody(mut body): JsonBody<PublishBody>,
) -> ApiResult<Response> {
    require_boot(&principal)?;
    let store = state.store()?;
    let sandbox = find_sandbox(&state, &principal, &sandbox_id).await?;
    let deployment = match (&body.deployment_id, &body.name) {
        (Some(id), _) => load(&state, &principal, id).await?,
        (None, Some(name)) => match store
            .deployment(&principal.tenant_id, &slug_of(name)?)
            .await?
        {
            Some(existing) => existing,
            None => {
                // Refused before anything is made: no half-made deployment.
                if sandbox.project_id.is_none() {
                    return Err(ApiError::invalid_field(
                        "source_sandbox_id",
                        "the sandbox has no project: create it with project_id to deploy it",
                    ));
                }
                create_row(
                    &state,
                    &principal,
                    CreateBody {
                        name: Some(name.clone()),
                        run_command: body.run_command.clone(),
                        port: body.port,
                        health_check_path: body.health_check_path.clone(),
                        project_id: sandbox.project_id.clone(),
                        ..CreateBody::default()
                    },
                )
                .await?
            }
        },
        (None, None) => return Err(ApiError::missing_field("name")),
    };
    body.source_sandbox_id = Some(sandbox.id);
    publish_version(&state, &principal, deployment, body).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PromoteBody {
    environment: Option<String>,
    version_id: Option<String>,
}

/// Whatever boots a release hands it the environment's secrets (and its
/// logs may print them): like a sandbox, that needs `env:reveal`.
fn require_boot(principal: &Principal) -> ApiResult<()> {
    principal.require("deployments:write")?;
    Ok(principal.require("env:reveal")?)
}

/// Serves `version` in the environment, if it can be.
async fn switch_to(
    state: &AppState,
    deployment: &DeploymentRow,
    version: &VersionRow,
    environment: Option<&str>,
) -> ApiResult<Response> {
    match version.state.as_str() {
        "ready" | "archived" => {}
        "failed" => {
            return Err(ApiError::conflict(
                "VERSION_FAILED",
                format!(
                    "version {} failed to build and cannot serve; publish again",
                    version.version_number
                ),
            )
            .with_details(json!({ "version_id": version.id, "state": version.state })))
        }
        other => {
            return Err(ApiError::conflict(
                "VERSION_NOT_READY",
                format!("version {} is {other}", version.version_number),
            )
            .with_details(json!({ "version_id": version.id, "state": version.state })))
        }
    }
    let project = project_of(state, deployment).await?;
    let env = environment_of(state, &project, environment).await?;
    let store = state.store()?;
    store.set_deployment_stopped(&deployment.id, false).await?;
    state
        .deployer()?
        .serve(state, deployment, &project, &env, version, true)
        .await?;
    tracing::info!(
        deployment = deployment.id,
        version = version.id,
        environment = env.name,
        "version promoted"
    );
    let deployment = store
        .deployment(&deployment.tenant_id, &deployment.id)
        .await?
        .ok_or_else(|| ApiError::not_found("deployment", &deployment.id))?;
    Ok(data(StatusCode::OK, view(state, &deployment).await?))
}

#[derive(Deserialize)]
pub struct VersionPath {
    id: String,
    version: String,
}

pub async fn promote(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<VersionPath>,
    JsonBody(body): JsonBody<PromoteBody>,
) -> ApiResult<Response> {
    require_boot(&principal)?;
    let deployment = load(&state, &principal, &path.id).await?;
    let version = load_version(&state, &deployment, &path.version).await?;
    switch_to(&state, &deployment, &version, body.environment.as_deref()).await
}

pub async fn promote_release(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<VersionPath>,
    JsonBody(body): JsonBody<PromoteBody>,
) -> ApiResult<Response> {
    require_boot(&principal)?;
    let deployment = load(&state, &principal, &path.id).await?;
    let version = load_version(&state, &deployment, &version_id_of_release(&path.version)).await?;
    switch_to(&state, &deployment, &version, body.environment.as_deref()).await
}

/// Back to `version_id`, or to the version active before the current one.
pub async fn rollback(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<PromoteBody>,
) -> ApiResult<Response> {
    require_boot(&principal)?;
    let deployment = load(&state, &principal, &id).await?;
    let version_id = match body.version_id {
        Some(v) => v,
        None => {
            let environment = body.environment.as_deref().unwrap_or(DEFAULT_ENVIRONMENT);
            let actives = state.store()?.active_versions(&deployment.id).await?;
            let active = actives
                .iter()
                .find(|a| a.environment == environment || a.environment_id == environment)
                .ok_or_else(|| {
                    ApiError::conflict(
                        "NOTHING_TO_ROLL_BACK",
                        format!("no version serves in {environment} yet"),
                    )
                })?;
            active.previous_version_id.clone().ok_or_else(|| {
                ApiError::conflict(
                    "NOTHING_TO_ROLL_BACK",
                    format!("{environment} has had only one version; name a version_id"),
                )
            })?
        }
    };
    let version = load_version(&state, &deployment, &version_id).await?;
    switch_to(&state, &deployment, &version, body.environment.as_deref()).await
}

/// Boots the active versions again: new instances with the variables as
/// they are now (a variable change reaches the next boot).
pub async fn redeploy(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<PromoteBody>,
) -> ApiResult<Response> {
    require_boot(&principal)?;
    let deployment = load(&state, &principal, &id).await?;
    let store = state.store()?;
    let actives = store.active_versions(&deployment.id).await?;
    if actives.is_empty() {
        return Err(ApiError::conflict(
            "NOTHING_TO_REDEPLOY",
            "no version serves anywhere yet; publish first",
        ));
    }
    for active in actives {
        if body
            .environment
            .as_deref()
            .is_some_and(|e| e != active.environment)
        {
            continue;
        }
        let version = load_version(&state, &deployment, &active.active_version_id).await?;
        let project = project_of(&state, &deployment).await?;
        let env = environment_of(&state, &project, Some(&active.environment)).await?;
        state
            .deployer()?
            .serve(&state, &deployment, &project, &env, &version, true)
            .await?;
    }
    Ok(data(StatusCode::OK, view(&state, &deployment).await?))
}

#[derive(Deserialize, Default)]
pub struct VersionsQuery {
    state: Option<String>,
}

pub async fn versions(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<VersionsQuery>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &id).await?;
    let rows = state
        .store()?
        .versions(&d.id, query.state.as_deref().filter(|s| !s.is_empty()))
        .await?;
    Ok(list_all(
        rows.iter()
            .map(|v| version_view(v, d.project_id.as_deref()))
            .collect(),
    ))
}

pub async fn version(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<VersionPath>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &path.id).await?;
    let v = load_version(&state, &d, &path.version).await?;
    Ok(data(
        StatusCode::OK,
        version_view(&v, d.project_id.as_deref()),
    ))
}

/// The version's build log, as text.
pub async fn version_logs(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<VersionPath>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &path.id).await?;
    let v = load_version(&state, &d, &path.version).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        v.build_log,
    )
        .into_response())
}

pub async fn releases(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &id).await?;
    let rows = state.store()?.versions(&d.id, None).await?;
    Ok(list_all(
        rows.iter()
            .filter(|v| v.artifact_sha256.is_some())
            .map(|v| release_view(v, d.project_id.as_deref()))
            .collect(),
    ))
}

pub async fn release(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<VersionPath>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &path.id).await?;
    let v = load_version(&state, &d, &version_id_of_release(&path.version)).await?;
    Ok(data(
        StatusCode::OK,
        release_view(&v, d.project_id.as_deref()),
    ))
}

pub async fn builds(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    load(&state, &principal, &id).await?;
    // Versions are packed from sandboxes; there are no repository builds.
    Ok(list_all(Vec::<Value>::new()))
}

pub async fn instances(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &id).await?;
    let rows = state.store()?.instances(&d.id).await?;
    let versions = state.store()?.versions(&d.id, None).await?;
    let health = |i: &InstanceRow| {
        versions
            .iter()
            .find(|v| v.id == i.version_id)
            .and_then(|v| v.health_check_path.clone())
    };
    Ok(list_all(
        rows.iter()
            .map(|i| instance_view(i, health(i).as_deref()))
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct InstancePath {
    id: String,
    instance: String,
}

async fn load_instance(
    state: &AppState,
    principal: &Principal,
    path: &InstancePath,
) -> ApiResult<(DeploymentRow, InstanceRow)> {
    let d = load(state, principal, &path.id).await?;
    let i = state
        .store()?
        .instance(&d.id, &path.instance)
        .await?
        .ok_or_else(|| ApiError::not_found("runtime instance", &path.instance))?;
    Ok((d, i))
}

pub async fn instance(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<InstancePath>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let (d, i) = load_instance(&state, &principal, &path).await?;
    let v = load_version(&state, &d, &i.version_id).await?;
    Ok(data(
        StatusCode::OK,
        instance_view(&i, v.health_check_path.as_deref()),
    ))
}

#[derive(Deserialize, Default)]
pub struct LogsQuery {
    lines: Option<usize>,
    environment: Option<String>,
}

fn log_lines(query: &LogsQuery) -> usize {
    query
        .lines
        .unwrap_or(100)
        .clamp(1, mds_runtime::instance::LOG_LINES)
}

pub async fn instance_logs(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<InstancePath>,
    QueryParams(query): QueryParams<LogsQuery>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    // What an instance prints may be its secrets.
    principal.require("env:reveal")?;
    let (_, i) = load_instance(&state, &principal, &path).await?;
    let lines = state
        .deployer()?
        .live(&i.id)
        .map(|l| l.logs.tail(log_lines(&query)))
        .unwrap_or_default();
    Ok(data(
        StatusCode::OK,
        json!({ "instance_id": i.id, "state": i.state, "logs": lines.join("\n"), "lines": lines }),
    ))
}

/// The recent output of the deployment's live instances (one environment
/// with `?environment=`).
pub async fn logs(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<LogsQuery>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    // What an instance prints may be its secrets.
    principal.require("env:reveal")?;
    let d = load(&state, &principal, &id).await?;
    let deployer = state.deployer()?;
    let mut lines = Vec::new();
    let mut instances = Vec::new();
    for i in state.store()?.instances(&d.id).await? {
        if query
            .environment
            .as_deref()
            .is_some_and(|e| e != i.environment && e != i.environment_id)
        {
            continue;
        }
        if let Some(live) = deployer.live(&i.id) {
            instances.push(i.id.clone());
            lines.extend(
                live.logs
                    .tail(log_lines(&query))
                    .into_iter()
                    .map(|l| format!("[{} {}] {l}", i.environment, i.id)),
            );
        }
    }
    let n = log_lines(&query);
    let lines: Vec<String> = lines.split_off(lines.len().saturating_sub(n));
    Ok(data(
        StatusCode::OK,
        json!({ "deployment_id": d.id, "instances": instances, "logs": lines.join("\n"), "lines": lines }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EnvBody {
    env: Option<Value>,
    variables: Option<Value>,
    environment: Option<String>,
    secret: Option<bool>,
    is_secret: Option<bool>,
}

async fn env_rows(state: &AppState, d: &DeploymentRow) -> ApiResult<Vec<Value>> {
    let project = project_of(state, d).await?;
    let mut rows = Vec::new();
    for env in &project.environments {
        let scope = VariableScope::Deployment {
            deployment_id: &d.id,
            environment_id: &env.id,
        };
        for row in state.store()?.variables(scope).await? {
            let value = state.open_variable(scope, &row)?;
            rows.push(json!({
                "name": row.name,
                "key": row.name,
                "preview": vars::preview(&value, row.is_secret),
                "is_secret": row.is_secret,
                "environment": env.name,
                "environment_id": env.id,
                "created_at": ts(Some(row.created_at)),
                "updated_at": ts(Some(row.updated_at)),
            }));
        }
    }
    Ok(rows)
}

/// Every environment's variables of the deployment, as previews.
pub async fn env_list(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let d = load(&state, &principal, &id).await?;
    Ok(list_all(env_rows(&state, &d).await?))
}

/// Sets variables of one environment (production unless named); they
/// reach the next boot (a promote, rollback or redeploy).
pub async fn env_set(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<EnvBody>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let d = load(&state, &principal, &id).await?;
    let project = project_of(&state, &d).await?;
    let env = environment_of(&state, &project, body.environment.as_deref()).await?;
    let raw = body
        .env
        .or(body.variables)
        .ok_or_else(|| ApiError::missing_field("env"))?;
    let map = variables::object_entries("env", Some(&raw))?;
    if map.is_empty() {
        return Err(ApiError::invalid_field(
            "env",
            "must name at least one variable",
        ));
    }
    let secret = body.secret.or(body.is_secret);
    let entries = map
        .into_iter()
        .map(|(name, value)| Entry {
            name,
            value,
            secret,
        })
        .collect();
    let scope = VariableScope::Deployment {
        deployment_id: &d.id,
        environment_id: &env.id,
    };
    state.write_variables(&principal, scope, entries).await?;
    Ok(list_all(env_rows(&state, &d).await?))
}

#[derive(Deserialize)]
pub struct EnvKeyPath {
    id: String,
    key: String,
}

#[derive(Deserialize, Default)]
pub struct EnvQuery {
    environment: Option<String>,
}

pub async fn env_delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<EnvKeyPath>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let d = load(&state, &principal, &path.id).await?;
    let project = project_of(&state, &d).await?;
    let env = environment_of(&state, &project, query.environment.as_deref()).await?;
    let scope = VariableScope::Deployment {
        deployment_id: &d.id,
        environment_id: &env.id,
    };
    if !state.store()?.delete_variable(scope, &path.key).await? {
        return Err(ApiError::not_found("variable", &path.key));
    }
    Ok(deleted(&path.key))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DatabaseBody {
    database_id: Option<String>,
    env: Option<String>,
    environment: Option<String>,
}

/// Links a Postgres data service of the deployment's project (attaching
/// one if the project has none): its `DATABASE_URL` is injected at boot.
pub async fn attach_database(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<DatabaseBody>,
) -> ApiResult<Response> {
    principal.require("deployments:write")?;
    principal.require("projects:write")?;
    let d = load(&state, &principal, &id).await?;
    let project = project_of(&state, &d).await?;
    let store = state.store()?;
    let services = store.data_services(&project.id).await?;
    let service = match &body.database_id {
        Some(reference) => services
            .into_iter()
            .find(|s| {
                s.kind == "postgres"
                    && (&s.id == reference || s.name.eq_ignore_ascii_case(reference))
            })
            .ok_or_else(|| ApiError::not_found("database", reference))?,
        None => match services.into_iter().find(|s| s.kind == "postgres") {
            Some(existing) => existing,
            None => {
                mds_control::attach::attach(
                    state.control(),
                    &project,
                    ServiceKind::Postgres,
                    None,
                    None,
                    &Default::default(),
                )
                .await?
            }
        },
    };
    let d = store
        .update_deployment(
            &d.id,
            &DeploymentPatch {
                linked_database_id: Some(service.id.clone()),
                ..DeploymentPatch::default()
            },
        )
        .await?
        .ok_or_else(|| ApiError::not_found("deployment", &id))?;
    let environment = body.env.or(body.environment);
    Ok(data(
        StatusCode::OK,
        json!({
            "deployment_id": d.id,
            "database_id": service.id,
            "linked_database_id": service.id,
            "project_id": project.id,
            "environment": environment.unwrap_or_else(|| "all".to_string()),
            "env_vars": ["DATABASE_URL", "DATABASE_URL_UNPOOLED", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"],
            "attached": true,
        }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct VolumeBody {
    volume_id: Option<String>,
    mount_path: Option<String>,
    environment: Option<String>,
}

/// A volume the deployment's instances mount in an environment. The
/// serving instance takes its lease at once (by booting again).
pub async fn attach_volume(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<VolumeBody>,
) -> ApiResult<Response> {
    principal.require("deployments:write")?;
    // Mounting a volume reads and writes its data.
    principal.require("projects:write")?;
    let d = load(&state, &principal, &id).await?;
    let project = project_of(&state, &d).await?;
    let env = environment_of(&state, &project, body.environment.as_deref()).await?;
    let store = state.store()?;
    let reference = body
        .volume_id
        .ok_or_else(|| ApiError::missing_field("volume_id"))?;
    let volume = store
        .volume(&principal.tenant_id, &reference)
        .await?
        .ok_or_else(|| ApiError::not_found("volume", &reference))?;
    if volume
        .project_id
        .as_deref()
        .is_some_and(|p| p != project.id)
    {
        return Err(ApiError::conflict(
            "PROJECT_MISMATCH",
            format!("volume {} belongs to another project", volume.id),
        ));
    }
    let mount_path = body
        .mount_path
        .unwrap_or_else(|| format!("/mnt/{}", volume.name));
    mds_runtime::jail::check_mount_path(&mount_path)
        .map_err(|why| ApiError::invalid_field("mount_path", why))?;
    store
        .add_volume_claim(&d.id, &env.id, &volume.id, &mount_path)
        .await?;
    Ok(data(
        StatusCode::CREATED,
        json!({
            "deployment_id": d.id,
            "environment": env.name,
            "volume_id": volume.id,
            "mount_path": mount_path,
        }),
    ))
}

pub async fn volumes(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &id).await?;
    let project = project_of(&state, &d).await?;
    let env = environment_of(&state, &project, query.environment.as_deref()).await?;
    let claims = state.store()?.volume_claims(&d.id, &env.id).await?;
    Ok(list_all(
        claims
            .iter()
            .map(|c| json!({ "volume_id": c.volume_id, "mount_path": c.mount_path, "environment": env.name }))
            .collect(),
    ))
}

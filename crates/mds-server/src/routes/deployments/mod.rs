//! MIOSA `/deployments`: publish a sandbox's workspace as an immutable
//! version, promote versions per environment, roll back, and watch the
//! runtime instances that serve them. What these do is
//! `mds_control::deployments`'; here is HTTP, by seam: the deployment
//! itself and its links (here), [`publish`] and switching versions,
//! [`versions`] and releases, runtime [`instances`] and logs, and its
//! [`variables`].
//!
//! Every response is a whole object the SDK's strict models accept, with
//! enum values only from miosa-api.md 9.5. None of these routes touches a
//! data service's data: a version is code; the data stays where it is.

mod instances;
mod publish;
mod variables;
mod versions;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::deployments::CreateDeployment;
use mds_control::projects::project_id_of;
use mds_store::DeploymentRow;
use serde::Deserialize;

use super::{data, deleted, list_all};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;

pub use instances::{instance, instance_logs, instances, logs};
pub use publish::{promote, promote_release, publish, redeploy, rollback, sandbox_deploy};
pub use variables::{env_delete, env_list, env_set};
pub use versions::{builds, release, releases, version, version_logs, versions};

/// The caller's deployment, by id or slug.
async fn load(state: &AppState, principal: &Principal, id: &str) -> ApiResult<DeploymentRow> {
    Ok(state.deployment(principal, id).await?)
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateDeployment>,
) -> ApiResult<Response> {
    principal.require("deployments:write")?;
    let row = state.create_deployment(&principal, body).await?;
    Ok(data(
        StatusCode::CREATED,
        state.deployment_view(&row).await?,
    ))
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
        let v = state.deployment_view(&row).await?;
        if query.state.as_deref().is_none_or(|s| v.state == s) {
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
    Ok(data(StatusCode::OK, state.deployment_view(&row).await?))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<CreateDeployment>,
) -> ApiResult<Response> {
    principal.require("deployments:write")?;
    let row = load(&state, &principal, &id).await?;
    let row = state.update_deployment(&row, body).await?;
    Ok(data(StatusCode::OK, state.deployment_view(&row).await?))
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
    state.stop_deployment(&row).await?;
    let row = load(&state, &principal, &id).await?;
    Ok(data(StatusCode::OK, state.deployment_view(&row).await?))
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
    let environment = body.env.or(body.environment);
    let link = state
        .link_database(&d, body.database_id.as_deref(), environment)
        .await?;
    Ok(data(StatusCode::OK, link))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct VolumeBody {
    volume_id: Option<String>,
    mount_path: Option<String>,
    environment: Option<String>,
}

/// A volume the deployment's instances mount in an environment. The
/// serving instance takes its lease at its next boot.
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
    let claim = state
        .claim_volume(
            &principal,
            &d,
            body.environment.as_deref(),
            body.volume_id.as_deref(),
            body.mount_path,
        )
        .await?;
    Ok(data(StatusCode::CREATED, claim))
}

#[derive(Deserialize, Default)]
pub struct EnvQuery {
    environment: Option<String>,
}

pub async fn volumes(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &id).await?;
    let claims = state
        .volume_claims(&d, query.environment.as_deref())
        .await?;
    Ok(list_all(claims))
}

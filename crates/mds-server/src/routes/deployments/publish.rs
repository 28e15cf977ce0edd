//! Publishing versions and switching which one serves: publish (also as
//! `POST /sandboxes/{id}/deploy`), promote, roll back, redeploy.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::deployments::Publish;
use mds_control::deployments::version_id_of_release;
use serde::Deserialize;

use super::load;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams};
use crate::routes::data;
use crate::state::AppState;

/// Whatever boots a release hands it the environment's secrets (and its
/// logs may print them): like a sandbox, that needs `env:reveal`.
fn require_boot(principal: &Principal) -> ApiResult<()> {
    principal.require("deployments:write")?;
    Ok(principal.require("env:reveal")?)
}

/// Publishes the sandbox's workspace as the next version and, unless
/// `promote: false`, promotes it.
pub async fn publish(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<Publish>,
) -> ApiResult<Response> {
    require_boot(&principal)?;
    let deployment = load(&state, &principal, &id).await?;
    let published = state.publish(&principal, deployment, body).await?;
    Ok(data(StatusCode::CREATED, published))
}

/// `POST /sandboxes/{id}/deploy`: publishes to `deployment_id`, or to the
/// deployment called `name` (made if there is none).
pub async fn sandbox_deploy(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(sandbox_id): PathParams<String>,
    JsonBody(mut body): JsonBody<Publish>,
) -> ApiResult<Response> {
    require_boot(&principal)?;
    let sandbox = state.find_sandbox(&principal, &sandbox_id).await?;
    let deployment = state
        .deployment_for_sandbox(&principal, &sandbox, &body)
        .await?;
    body.source_sandbox_id = Some(sandbox.id);
    let published = state.publish(&principal, deployment, body).await?;
    Ok(data(StatusCode::CREATED, published))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PromoteBody {
    environment: Option<String>,
    version_id: Option<String>,
}

#[derive(Deserialize)]
pub struct VersionPath {
    pub id: String,
    pub version: String,
}

/// Serves the deployment's version `version_id` in the body's
/// environment.
async fn promote_version(
    state: &AppState,
    principal: &Principal,
    deployment_id: &str,
    version_id: &str,
    body: PromoteBody,
) -> ApiResult<Response> {
    require_boot(principal)?;
    let deployment = load(state, principal, deployment_id).await?;
    let version = state.version(&deployment, version_id).await?;
    let view = state
        .promote(&deployment, &version, body.environment.as_deref())
        .await?;
    Ok(data(StatusCode::OK, view))
}

pub async fn promote(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<VersionPath>,
    JsonBody(body): JsonBody<PromoteBody>,
) -> ApiResult<Response> {
    promote_version(&state, &principal, &path.id, &path.version, body).await
}

/// A release is a version under another id.
pub async fn promote_release(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<VersionPath>,
    JsonBody(body): JsonBody<PromoteBody>,
) -> ApiResult<Response> {
    let version_id = version_id_of_release(&path.version);
    promote_version(&state, &principal, &path.id, &version_id, body).await
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
    let environment = body.environment.as_deref();
    let version = state
        .rollback_target(&deployment, environment, body.version_id.as_deref())
        .await?;
    let view = state.promote(&deployment, &version, environment).await?;
    Ok(data(StatusCode::OK, view))
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
    let view = state
        .redeploy(&deployment, body.environment.as_deref())
        .await?;
    Ok(data(StatusCode::OK, view))
}

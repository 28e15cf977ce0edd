//! A deployment's own variables, per environment of its project; they
//! reach the next boot (a promote, rollback or redeploy).

use axum::extract::State;
use axum::response::Response;
use mds_api_types::deployments::SetDeploymentVariables;
use serde::Deserialize;

use super::{load, EnvQuery};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::routes::{deleted, list_all};
use crate::state::AppState;

/// Every environment's variables of the deployment, as previews.
pub async fn env_list(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("env:read")?;
    let d = load(&state, &principal, &id).await?;
    Ok(list_all(state.deployment_variables(&d).await?))
}

/// Sets variables of one environment (production unless named); they
/// reach the next boot.
pub async fn env_set(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<SetDeploymentVariables>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let d = load(&state, &principal, &id).await?;
    state.set_deployment_variables(&principal, &d, body).await?;
    Ok(list_all(state.deployment_variables(&d).await?))
}

#[derive(Deserialize)]
pub struct EnvKeyPath {
    id: String,
    key: String,
}

pub async fn env_delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<EnvKeyPath>,
    QueryParams(query): QueryParams<EnvQuery>,
) -> ApiResult<Response> {
    principal.require("env:write")?;
    let d = load(&state, &principal, &path.id).await?;
    state
        .unset_deployment_variable(&d, query.environment.as_deref(), &path.key)
        .await?;
    Ok(deleted(&path.key))
}

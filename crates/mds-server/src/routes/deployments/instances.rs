//! The runtime instances serving a deployment, and what they print.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_control::deployments::instance_view;
use serde::Deserialize;

use super::load;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{PathParams, QueryParams};
use crate::routes::{data, list_all};
use crate::state::AppState;

pub async fn instances(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &id).await?;
    Ok(list_all(state.instance_views(&d).await?))
}

#[derive(Deserialize)]
pub struct InstancePath {
    id: String,
    instance: String,
}

pub async fn instance(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<InstancePath>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &path.id).await?;
    let i = state.instance(&d, &path.instance).await?;
    let v = state.version(&d, &i.version_id).await?;
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

impl LogsQuery {
    fn lines(&self) -> usize {
        self.lines
            .unwrap_or(100)
            .clamp(1, mds_runtime::instance::LOG_LINES)
    }
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
    let d = load(&state, &principal, &path.id).await?;
    let i = state.instance(&d, &path.instance).await?;
    Ok(data(
        StatusCode::OK,
        state.instance_logs(&i, query.lines())?,
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
    let logs = state
        .deployment_logs(&d, query.environment.as_deref(), query.lines())
        .await?;
    Ok(data(StatusCode::OK, logs))
}

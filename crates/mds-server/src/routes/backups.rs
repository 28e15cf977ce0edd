//! Restore points, restores and drills (`mds backup`, `mds restore`).
//! Scopes: `backups:read` to list, `backups:write` to take and drill,
//! `backups:restore` (on its own) to restore.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::backups::{RestoreRequest, RetentionPatch};
use mds_control::backups::points::point_view;
use serde::Deserialize;
use serde_json::json;

use super::{data, list_all};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct OverviewQuery {
    environment: Option<String>,
}

/// `POST /projects/{p}/environments/{e}/restore-points`
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    // Nothing to say yet; read, so the connection stays usable.
    _body: axum::body::Bytes,
) -> ApiResult<Response> {
    principal.require("backups:write")?;
    let point = state
        .create_restore_point(&principal, &project, &environment)
        .await?;
    Ok(data(StatusCode::CREATED, point_view(&point)))
}

/// `GET /projects/{p}/environments/{e}/restore-points`
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
) -> ApiResult<Response> {
    principal.require("backups:read")?;
    let (_, points) = state
        .list_restore_points(&principal, &project, Some(&environment))
        .await?;
    Ok(list_all(points.iter().map(point_view).collect()))
}

/// `GET /projects/{p}/backups[?environment=E]`
pub async fn overview(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(project): PathParams<String>,
    QueryParams(query): QueryParams<OverviewQuery>,
) -> ApiResult<Response> {
    principal.require("backups:read")?;
    let overview = state
        .backup_overview(&principal, &project, query.environment.as_deref())
        .await?;
    Ok(data(StatusCode::OK, overview))
}

/// `GET /restore-points/{id}`
pub async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("backups:read")?;
    let point = state.caller_restore_point(&principal, &id).await?;
    Ok(data(StatusCode::OK, point_view(&point)))
}

/// `DELETE /restore-points/{id}`: its files and holds go too.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("backups:write")?;
    state.delete_restore_point(&principal, &id).await?;
    Ok(super::deleted(&id))
}

/// `POST /restore-points/{id}/verify`: a drill, now.
pub async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("backups:write")?;
    let point = state.verify_restore_point(&principal, &id).await?;
    Ok(data(StatusCode::OK, point_view(&point)))
}

/// `POST /projects/{p}/environments/{e}/restores`
pub async fn restore(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    JsonBody(request): JsonBody<RestoreRequest>,
) -> ApiResult<Response> {
    principal.require("backups:restore")?;
    let result = state
        .restore(&principal, &project, &environment, request)
        .await?;
    Ok(data(StatusCode::OK, result))
}

/// `PUT /projects/{p}/environments/{e}/backup-retention`
pub async fn set_retention(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((project, environment)): PathParams<(String, String)>,
    JsonBody(patch): JsonBody<RetentionPatch>,
) -> ApiResult<Response> {
    principal.require("backups:write")?;
    let days = state
        .set_backup_retention(&principal, &project, &environment, patch.retention_days)
        .await?;
    Ok(data(StatusCode::OK, json!({ "retention_days": days })))
}

//! A deployment's versions, the same versions as MIOSA releases, and its
//! (always empty) repository builds.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mds_api_types::deployments::Version;
use mds_control::deployments::{release_view, version_id_of_release, version_view};
use serde::Deserialize;

use super::load;
use super::publish::VersionPath;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{PathParams, QueryParams};
use crate::routes::{data, list_all};
use crate::state::AppState;

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
    let project = d.project_id.as_deref();
    Ok(list_all(
        rows.iter().map(|v| version_view(v, project)).collect(),
    ))
}

pub async fn version(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<VersionPath>,
) -> ApiResult<Response> {
    principal.require("deployments:read")?;
    let d = load(&state, &principal, &path.id).await?;
    let v = state.version(&d, &path.version).await?;
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
    let v = state.version(&d, &path.version).await?;
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
    let project = d.project_id.as_deref();
    Ok(list_all(
        rows.iter()
            .filter(|v| v.artifact_sha256.is_some())
            .map(|v| release_view(v, project))
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
    let v = state
        .version(&d, &version_id_of_release(&path.version))
        .await?;
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
    Ok(list_all(Vec::<Version>::new()))
}

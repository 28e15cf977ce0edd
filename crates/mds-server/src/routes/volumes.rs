//! MIOSA `/volumes` and `/computers/{id}/volumes` (and the same under
//! `/sandboxes/{id}/volumes`). What they do is `mds_control::volumes`';
//! here is HTTP.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mds_api_types::volumes::{Attachment, CreateVolume};
use mds_control::projects::project_id_of;
use mds_control::volumes::attachment_view;
use serde::Deserialize;

use super::{data, deleted, list_all};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateVolume>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let row = state.create_volume(&principal, body).await?;
    Ok(data(StatusCode::CREATED, state.volume_view(&row).await?))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    project_id: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let store = state.store()?;
    let project = project_id_of(store, &principal, query.project_id.as_deref()).await?;
    let rows = store
        .volumes(Some(&principal.tenant_id), project.as_deref())
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(state.volume_view(row).await?);
    }
    Ok(list_all(items))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let row = state.volume(&principal, &id).await?;
    Ok(data(StatusCode::OK, state.volume_view(&row).await?))
}

/// Deletes a detached volume with its data and snapshots.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let id = state.delete_volume(&principal, &id).await?;
    Ok(deleted(&id))
}

pub async fn snapshot(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let snapshot = state.snapshot_volume(&principal, &id).await?;
    Ok(data(StatusCode::CREATED, snapshot))
}

pub async fn snapshots(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    Ok(list_all(state.volume_snapshots(&principal, &id).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RestoreBody {
    snapshot_id: Option<String>,
}

/// Puts a snapshot back; the volume must be detached.
pub async fn restore(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<RestoreBody>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let row = state
        .restore_volume(&principal, &id, body.snapshot_id.as_deref())
        .await?;
    Ok(data(StatusCode::OK, state.volume_view(&row).await?))
}

pub async fn attachments(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let sandbox = state.volume_holder(&principal, &id).await?;
    let items: Vec<Attachment> = state
        .store()?
        .holder_attachments(&sandbox.id)
        .await?
        .iter()
        .map(attachment_view)
        .collect();
    Ok(list_all(items))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AttachBody {
    volume_id: Option<String>,
    mount_path: Option<String>,
}

pub async fn attach(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<AttachBody>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let attachment = state
        .attach_volume(&principal, &id, body.volume_id.as_deref(), body.mount_path)
        .await?;
    Ok(data(StatusCode::CREATED, attachment_view(&attachment)))
}

#[derive(Deserialize)]
pub struct AttachmentPath {
    id: String,
    attachment: String,
}

/// Detaches by attachment id (or volume id), ending the sandbox's running
/// commands (which had the volume mounted).
pub async fn detach(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(path): PathParams<AttachmentPath>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    state
        .detach_volume(&principal, &path.id, &path.attachment)
        .await?;
    Ok(deleted(&path.attachment))
}

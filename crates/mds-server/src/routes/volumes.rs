//! MIOSA `/volumes` and `/computers/{id}/volumes`: filesystems that outlive
//! the sandboxes they are attached to, one holder at a time (a lease with a
//! fencing token), bind-mounted at `mount_path` in the holder's commands.
//! Snapshots are point-in-time copies; restore and delete need the volume
//! detached.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::SecondsFormat;
use mds_core::ids::IdKind;
use mds_runtime::jail::check_mount_path;
use mds_store::{AttachError, AttachmentRow, NewVolume, StoreError, VolumeRow};
use serde::Deserialize;
use serde_json::{json, Value};

use super::data;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use mds_control::projects::project_id_of;

const GIB: i64 = 1 << 30;
/// The largest volume, as the MIOSA docs have it.
const MAX_BYTES: i64 = 500 * GIB;

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn attachment_view(a: &AttachmentRow) -> Value {
    json!({
        "id": a.id,
        "volume_id": a.volume_id,
        "computer_id": a.holder_id,
        "sandbox_id": a.holder_id,
        "holder_kind": a.holder_kind,
        "mount_path": a.mount_path,
        "fencing_token": a.fencing_token,
        "state": "attached",
        "created_at": ts(a.created_at),
    })
}

async fn view(state: &AppState, v: &VolumeRow) -> ApiResult<Value> {
    let used = state.volumes()?.usage(&v.id, &v.backend).await;
    Ok(json!({
        "id": v.id,
        "name": v.name,
        "project_id": v.project_id,
        "size_bytes": v.size_bytes,
        "size_gb": v.size_bytes as f64 / GIB as f64,
        "used_bytes": used,
        "backend": v.backend,
        "filesystem": v.backend,
        "size_enforced": v.backend == mds_runtime::volume::EXT4,
        "state": if v.attachment.is_some() { "attached" } else { "available" },
        "attached_to": v.attachment.as_ref().map(|a| a.holder_id.clone()),
        "attachment": v.attachment.as_ref().map(attachment_view),
        "host_id": "local",
        "created_at": ts(v.created_at),
    }))
}

/// The volume, read again under its lock (it may have changed or gone
/// while this waited); the guard holds the lock.
async fn load_locked(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<(VolumeRow, tokio::sync::OwnedMutexGuard<()>)> {
    let first = load(state, principal, id).await?;
    let guard = state.volumes()?.lock(&first.id).await;
    Ok((load(state, principal, &first.id).await?, guard))
}

async fn load(state: &AppState, principal: &Principal, id: &str) -> ApiResult<VolumeRow> {
    state
        .store()?
        .volume(&principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("volume", id))
}

fn in_use(holder: &AttachmentRow) -> ApiError {
    ApiError::conflict(
        "VOLUME_IN_USE",
        format!(
            "the volume is attached to {} {} at {}; detach it first",
            holder.holder_kind, holder.holder_id, holder.mount_path
        ),
    )
    .with_details(json!({ "holder_id": holder.holder_id, "attachment_id": holder.id }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreateBody {
    name: Option<String>,
    size_gb: Option<f64>,
    size_bytes: Option<i64>,
    backend: Option<String>,
    project_id: Option<String>,
}

/// The size asked for, in bytes: `size_bytes` or `size_gb`, positive, at
/// most 500 GiB.
fn size_of(body: &CreateBody) -> ApiResult<i64> {
    let bytes = match (body.size_bytes, body.size_gb) {
        (Some(bytes), _) => bytes,
        (None, Some(gb)) if gb.is_finite() => (gb * GIB as f64) as i64,
        (None, Some(_)) => return Err(ApiError::invalid_field("size_gb", "must be a number")),
        (None, None) => return Err(ApiError::missing_field("size_gb")),
    };
    let field = if body.size_bytes.is_some() {
        "size_bytes"
    } else {
        "size_gb"
    };
    if bytes < 1 << 20 {
        return Err(ApiError::invalid_field(field, "must be at least 1 MiB"));
    }
    if bytes > MAX_BYTES {
        return Err(ApiError::invalid_field(field, "must be at most 500 GB"));
    }
    Ok(bytes)
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let volumes = state.volumes()?;
    let store = state.store()?;
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::missing_field("name"))?;
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 128 characters without / or control characters",
        ));
    }
    let size = size_of(&body)?;
    let backend =
        match body.backend.as_deref() {
            None | Some("local") => volumes.default_backend(),
            Some(b @ ("ext4" | "dir")) if volumes.supports(b) => {
                if b == "ext4" {
                    mds_runtime::volume::EXT4
                } else {
                    mds_runtime::volume::DIR
                }
            }
            Some("ext4") => return Err(ApiError::invalid_field(
                "backend",
                "ext4 volumes need mds to run as root with loop devices; use \"dir\" or \"local\"",
            )),
            Some(other) => {
                return Err(ApiError::invalid_field(
                    "backend",
                    format!("{other:?} is not local, ext4 or dir"),
                ))
            }
        };
    let project = project_id_of(store, &principal, body.project_id.as_deref()).await?;
    let id = IdKind::Volume.mint();
    match store
        .create_volume(&NewVolume {
            id: &id,
            tenant_id: &principal.tenant_id,
            project_id: project.as_deref(),
            binding_id: None,
            name: &name,
            size_bytes: size,
            backend,
        })
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::conflict(
                "VOLUME_NAME_TAKEN",
                format!("a volume named {name:?} exists"),
            )
            .with_details(json!({ "field": "name" })))
        }
        Err(e) => return Err(e.into()),
    }
    // No half-made volume stays visible: if the filesystem cannot be
    // made, the row goes too.
    if let Err(e) = volumes.materialize(&id, backend, size as u64).await {
        let _ = store.delete_volume(&id).await;
        let _ = volumes.remove(&id).await;
        return Err(ApiError::internal(e));
    }
    let row = load(&state, &principal, &id).await?;
    tracing::info!(volume = id, backend, size, "volume created");
    Ok(data(StatusCode::CREATED, view(&state, &row).await?))
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
        items.push(view(&state, row).await?);
    }
    Ok(super::list_all(items))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let row = load(&state, &principal, &id).await?;
    Ok(data(StatusCode::OK, view(&state, &row).await?))
}

/// Deletes a detached volume with its data and snapshots.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let (row, _lock) = load_locked(&state, &principal, &id).await?;
    if let Some(holder) = &row.attachment {
        return Err(in_use(holder));
    }
    if row.binding_id.is_some() {
        return Err(ApiError::conflict(
            "VOLUME_OF_DATA_SERVICE",
            "this volume belongs to a volume data service; delete the service (confirmed)",
        ));
    }
    if !state.store()?.delete_volume(&row.id).await? {
        let row = load(&state, &principal, &id).await?;
        if let Some(holder) = &row.attachment {
            return Err(in_use(holder));
        }
    }
    state
        .volumes()?
        .remove(&row.id)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(volume = row.id, "volume deleted");
    Ok(super::deleted(&row.id))
}

pub async fn snapshot(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:write")?;
    let (row, _lock) = load_locked(&state, &principal, &id).await?;
    let snapshot = IdKind::Snapshot.mint();
    let volumes = state.volumes()?;
    volumes
        .snapshot(&row.id, &row.backend, &snapshot)
        .await
        .map_err(ApiError::internal)?;
    let used = volumes.usage(&row.id, &row.backend).await as i64;
    state
        .store()?
        .add_snapshot(&snapshot, &row.id, used)
        .await?;
    Ok(data(
        StatusCode::CREATED,
        json!({ "id": snapshot, "volume_id": row.id, "size_bytes": used }),
    ))
}

pub async fn snapshots(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let row = load(&state, &principal, &id).await?;
    let items: Vec<Value> = state
        .store()?
        .snapshots(&row.id)
        .await?
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "volume_id": s.volume_id,
                "size_bytes": s.size_bytes,
                "created_at": ts(s.created_at),
            })
        })
        .collect();
    Ok(super::list_all(items))
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
    let snapshot = body
        .snapshot_id
        .ok_or_else(|| ApiError::missing_field("snapshot_id"))?;
    let (row, _lock) = load_locked(&state, &principal, &id).await?;
    if let Some(holder) = &row.attachment {
        return Err(in_use(holder));
    }
    let known = state.store()?.snapshots(&row.id).await?;
    if !known.iter().any(|s| s.id == snapshot) {
        return Err(ApiError::not_found("snapshot", &snapshot));
    }
    state
        .volumes()?
        .restore(&row.id, &row.backend, &snapshot)
        .await
        .map_err(ApiError::internal)?;
    Ok(data(StatusCode::OK, view(&state, &row).await?))
}

/// The sandbox a computer id names (the only kind of holder today).
async fn holder(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<mds_store::SandboxRow> {
    let row = state
        .store()?
        .sandbox(&principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox", id))?;
    if row.state == "destroyed" {
        return Err(ApiError::conflict(
            "SANDBOX_DESTROYED",
            format!("sandbox {id} was destroyed"),
        ));
    }
    Ok(row)
}

pub async fn attachments(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    principal.require("projects:read")?;
    let sandbox = holder(&state, &principal, &id).await?;
    let items: Vec<Value> = state
        .store()?
        .holder_attachments(&sandbox.id)
        .await?
        .iter()
        .map(attachment_view)
        .collect();
    Ok(super::list_all(items))
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
    let sandbox = holder(&state, &principal, &id).await?;
    if sandbox.state != "running" {
        return Err(ApiError::conflict(
            "SANDBOX_NOT_RUNNING",
            format!("sandbox {id} is {}; resume it first", sandbox.state),
        ));
    }
    let volume_ref = body
        .volume_id
        .ok_or_else(|| ApiError::missing_field("volume_id"))?;
    let (volume, _lock) = load_locked(&state, &principal, &volume_ref).await?;
    let mount_path = body
        .mount_path
        .unwrap_or_else(|| format!("/mnt/{}", volume.name));
    check_mount_path(&mount_path).map_err(|why| ApiError::invalid_field("mount_path", why))?;
    let store = state.store()?;
    let taken = store.holder_attachments(&sandbox.id).await?;
    if let Some(clash) = taken.iter().find(|a| {
        a.mount_path == mount_path
            || a.mount_path.starts_with(&format!("{mount_path}/"))
            || mount_path.starts_with(&format!("{}/", a.mount_path))
    }) {
        return Err(ApiError::conflict(
            "MOUNT_PATH_TAKEN",
            format!("{} is already at {}", clash.volume_id, clash.mount_path),
        )
        .with_details(json!({ "field": "mount_path" })));
    }
    state
        .volumes()?
        .materialize(&volume.id, &volume.backend, volume.size_bytes as u64)
        .await
        .map_err(ApiError::internal)?;
    let attachment = match store
        .attach_volume(
            &IdKind::Attachment.mint(),
            &volume.id,
            "sandbox",
            &sandbox.id,
            &mount_path,
        )
        .await
    {
        Ok(a) => a,
        Err(AttachError::InUse(holder)) => return Err(in_use(&holder)),
        Err(AttachError::Store(e)) => return Err(e.into()),
    };
    tracing::info!(
        volume = volume.id,
        sandbox = sandbox.id,
        token = attachment.fencing_token,
        "volume attached"
    );
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
    let sandbox = state
        .store()?
        .sandbox(&principal.tenant_id, &path.id)
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox", &path.id))?;
    if !state
        .store()?
        .release_attachment(&sandbox.id, &path.attachment)
        .await?
    {
        return Err(ApiError::not_found("attachment", &path.attachment));
    }
    // Commands running now mounted the volume: they end with the lease,
    // so the next holder is the only writer.
    state.sandboxes()?.kill_all(&sandbox.id);
    Ok(super::deleted(&path.attachment))
}

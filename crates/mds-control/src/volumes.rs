//! Volumes: filesystems that outlive the sandboxes they are attached to,
//! one holder at a time (a lease with a fencing token), bind-mounted at
//! `mount_path` in the holder's commands. Snapshots are point-in-time
//! copies; restore and delete need the volume detached. Every change to a
//! volume holds its lock, and reads the volume again under it.

use mds_api_types::volumes::{Attachment, CreateVolume, Snapshot, Volume};
use mds_core::ids::IdKind;
use mds_runtime::jail::check_mount_path;
use mds_store::{AttachError, AttachmentRow, NewVolume, SandboxRow, StoreError, VolumeRow};
use serde_json::json;
use tokio::sync::OwnedMutexGuard;

use crate::projects::project_id_of;
use crate::{Caller, Control, ControlError, ControlResult};

const GIB: i64 = 1 << 30;
/// The largest volume, as the MIOSA docs have it.
const MAX_BYTES: i64 = 500 * GIB;

pub fn attachment_view(a: &AttachmentRow) -> Attachment {
    Attachment {
        id: a.id.clone(),
        volume_id: a.volume_id.clone(),
        computer_id: a.holder_id.clone(),
        sandbox_id: a.holder_id.clone(),
        holder_kind: a.holder_kind.clone(),
        mount_path: a.mount_path.clone(),
        fencing_token: a.fencing_token,
        state: "attached".to_string(),
        created_at: a.created_at,
    }
}

fn in_use(holder: &AttachmentRow) -> ControlError {
    ControlError::conflict(
        "VOLUME_IN_USE",
        format!(
            "the volume is attached to {} {} at {}; detach it first",
            holder.holder_kind, holder.holder_id, holder.mount_path
        ),
    )
    .with_details(json!({ "holder_id": holder.holder_id, "attachment_id": holder.id }))
}

/// The size asked for, in bytes: `size_bytes` or `size_gb`, at least
/// 1 MiB, at most 500 GiB.
fn size_of(input: &CreateVolume) -> ControlResult<i64> {
    let bytes = match (input.size_bytes, input.size_gb) {
        (Some(bytes), _) => bytes,
        (None, Some(gb)) if gb.is_finite() => (gb * GIB as f64) as i64,
        (None, Some(_)) => return Err(ControlError::invalid("size_gb", "must be a number")),
        (None, None) => return Err(ControlError::missing("size_gb")),
    };
    let field = if input.size_bytes.is_some() {
        "size_bytes"
    } else {
        "size_gb"
    };
    if bytes < 1 << 20 {
        return Err(ControlError::invalid(field, "must be at least 1 MiB"));
    }
    if bytes > MAX_BYTES {
        return Err(ControlError::invalid(field, "must be at most 500 GB"));
    }
    Ok(bytes)
}

fn name_of(input: &CreateVolume) -> ControlResult<String> {
    let name = input
        .name
        .clone()
        .ok_or_else(|| ControlError::missing("name"))?;
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(ControlError::invalid(
            "name",
            "must be 1 to 128 characters without / or control characters",
        ));
    }
    Ok(name)
}

impl Control {
    /// A volume as the API shows it, with its use now.
    pub async fn volume_view(&self, v: &VolumeRow) -> ControlResult<Volume> {
        let used = self.volumes()?.usage(&v.id, &v.backend).await;
        Ok(Volume {
            id: v.id.clone(),
            name: v.name.clone(),
            project_id: v.project_id.clone(),
            size_bytes: v.size_bytes,
            size_gb: v.size_bytes as f64 / GIB as f64,
            used_bytes: used,
            backend: v.backend.clone(),
            filesystem: v.backend.clone(),
            size_enforced: v.backend == mds_runtime::volume::EXT4,
            state: if v.attachment.is_some() {
                "attached"
            } else {
                "available"
            }
            .to_string(),
            attached_to: v.attachment.as_ref().map(|a| a.holder_id.clone()),
            attachment: v.attachment.as_ref().map(attachment_view),
            host_id: "local".to_string(),
            created_at: v.created_at,
        })
    }

    /// The caller's volume, by id or name.
    pub async fn volume(&self, caller: &Caller, id: &str) -> ControlResult<VolumeRow> {
        self.store()?
            .volume(&caller.tenant_id, id)
            .await?
            .ok_or_else(|| ControlError::not_found("volume", id))
    }

    /// The volume, read again under its lock (it may have changed or gone
    /// while this waited); the guard holds the lock.
    async fn volume_locked(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ControlResult<(VolumeRow, OwnedMutexGuard<()>)> {
        let first = self.volume(caller, id).await?;
        let guard = self.volumes()?.lock(&first.id).await;
        Ok((self.volume(caller, &first.id).await?, guard))
    }

    /// The backend `asked` names, if this host can make it.
    fn volume_backend(&self, asked: Option<&str>) -> ControlResult<&'static str> {
        let volumes = self.volumes()?;
        match asked {
            None | Some("local") => Ok(volumes.default_backend()),
            Some("ext4") if volumes.supports("ext4") => Ok(mds_runtime::volume::EXT4),
            Some("dir") if volumes.supports("dir") => Ok(mds_runtime::volume::DIR),
            Some("ext4") => Err(ControlError::invalid(
                "backend",
                "ext4 volumes need mds to run as root with loop devices; use \"dir\" or \"local\"",
            )),
            Some(other) => Err(ControlError::invalid(
                "backend",
                format!("{other:?} is not local, ext4 or dir"),
            )),
        }
    }

    /// Makes a volume and its filesystem; no half-made volume stays
    /// visible: if the filesystem cannot be made, the row goes too.
    pub async fn create_volume(
        &self,
        caller: &Caller,
        input: CreateVolume,
    ) -> ControlResult<VolumeRow> {
        let volumes = self.volumes()?;
        let store = self.store()?;
        let name = name_of(&input)?;
        let size = size_of(&input)?;
        let backend = self.volume_backend(input.backend.as_deref())?;
        let project = project_id_of(store, caller, input.project_id.as_deref()).await?;
        let id = IdKind::Volume.mint();
        let made = store
            .create_volume(&NewVolume {
                id: &id,
                tenant_id: &caller.tenant_id,
                project_id: project.as_deref(),
                binding_id: None,
                name: &name,
                size_bytes: size,
                backend,
            })
            .await;
        match made {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(ControlError::conflict(
                    "VOLUME_NAME_TAKEN",
                    format!("a volume named {name:?} exists"),
                )
                .with_details(json!({ "field": "name" })))
            }
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = volumes.materialize(&id, backend, size as u64).await {
            let _ = store.delete_volume(&id).await;
            let _ = volumes.remove(&id).await;
            return Err(ControlError::internal(e));
        }
        tracing::info!(volume = id, backend, size, "volume created");
        self.volume(caller, &id).await
    }

    /// Deletes a detached volume with its data and snapshots; answers its
    /// id.
    pub async fn delete_volume(&self, caller: &Caller, id: &str) -> ControlResult<String> {
        let (row, _lock) = self.volume_locked(caller, id).await?;
        if let Some(holder) = &row.attachment {
            return Err(in_use(holder));
        }
        if row.binding_id.is_some() {
            return Err(ControlError::conflict(
                "VOLUME_OF_DATA_SERVICE",
                "this volume belongs to a volume data service; delete the service (confirmed)",
            ));
        }
        if !self.store()?.delete_volume(&row.id).await? {
            // Attached between the read and the delete.
            let row = self.volume(caller, id).await?;
            if let Some(holder) = &row.attachment {
                return Err(in_use(holder));
            }
        }
        self.volumes()?
            .remove(&row.id)
            .await
            .map_err(ControlError::internal)?;
        tracing::info!(volume = row.id, "volume deleted");
        Ok(row.id)
    }

    pub async fn snapshot_volume(&self, caller: &Caller, id: &str) -> ControlResult<Snapshot> {
        let (row, _lock) = self.volume_locked(caller, id).await?;
        let snapshot = IdKind::Snapshot.mint();
        let volumes = self.volumes()?;
        volumes
            .snapshot(&row.id, &row.backend, &snapshot)
            .await
            .map_err(ControlError::internal)?;
        let used = volumes.usage(&row.id, &row.backend).await as i64;
        self.store()?.add_snapshot(&snapshot, &row.id, used).await?;
        Ok(Snapshot {
            id: snapshot,
            volume_id: row.id,
            size_bytes: used,
            created_at: None,
        })
    }

    pub async fn volume_snapshots(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ControlResult<Vec<Snapshot>> {
        let row = self.volume(caller, id).await?;
        Ok(self
            .store()?
            .snapshots(&row.id)
            .await?
            .into_iter()
            .map(|s| Snapshot {
                id: s.id,
                volume_id: s.volume_id,
                size_bytes: s.size_bytes,
                created_at: Some(s.created_at),
            })
            .collect())
    }

    /// Puts a snapshot back; the volume must be detached.
    pub async fn restore_volume(
        &self,
        caller: &Caller,
        id: &str,
        snapshot: Option<&str>,
    ) -> ControlResult<VolumeRow> {
        let snapshot = snapshot.ok_or_else(|| ControlError::missing("snapshot_id"))?;
        let (row, _lock) = self.volume_locked(caller, id).await?;
        if let Some(holder) = &row.attachment {
            return Err(in_use(holder));
        }
        let known = self.store()?.snapshots(&row.id).await?;
        if !known.iter().any(|s| s.id == snapshot) {
            return Err(ControlError::not_found("snapshot", snapshot));
        }
        self.volumes()?
            .restore(&row.id, &row.backend, snapshot)
            .await
            .map_err(ControlError::internal)?;
        Ok(row)
    }

    /// The sandbox a computer id names (the only kind of holder today).
    pub async fn volume_holder(&self, caller: &Caller, id: &str) -> ControlResult<SandboxRow> {
        let row = self.sandbox(caller, id).await?;
        if row.state == "destroyed" {
            return Err(ControlError::conflict(
                "SANDBOX_DESTROYED",
                format!("sandbox {id} was destroyed"),
            ));
        }
        Ok(row)
    }

    /// Leases a volume to a running sandbox at `mount_path` (`/mnt/NAME`
    /// unless given), which must not overlap its other mounts.
    pub async fn attach_volume(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        volume: Option<&str>,
        mount_path: Option<String>,
    ) -> ControlResult<AttachmentRow> {
        let sandbox = self.volume_holder(caller, sandbox_id).await?;
        if sandbox.state != "running" {
            return Err(ControlError::conflict(
                "SANDBOX_NOT_RUNNING",
                format!("sandbox {sandbox_id} is {}; resume it first", sandbox.state),
            ));
        }
        let volume = volume.ok_or_else(|| ControlError::missing("volume_id"))?;
        let (volume, _lock) = self.volume_locked(caller, volume).await?;
        let mount_path = mount_path.unwrap_or_else(|| format!("/mnt/{}", volume.name));
        check_mount_path(&mount_path).map_err(|why| ControlError::invalid("mount_path", why))?;
        let store = self.store()?;
        let taken = store.holder_attachments(&sandbox.id).await?;
        if let Some(clash) = taken.iter().find(|a| {
            a.mount_path == mount_path
                || a.mount_path.starts_with(&format!("{mount_path}/"))
                || mount_path.starts_with(&format!("{}/", a.mount_path))
        }) {
            return Err(ControlError::conflict(
                "MOUNT_PATH_TAKEN",
                format!("{} is already at {}", clash.volume_id, clash.mount_path),
            )
            .with_details(json!({ "field": "mount_path" })));
        }
        self.volumes()?
            .materialize(&volume.id, &volume.backend, volume.size_bytes as u64)
            .await
            .map_err(ControlError::internal)?;
        let attached = store
            .attach_volume(
                &IdKind::Attachment.mint(),
                &volume.id,
                "sandbox",
                &sandbox.id,
                &mount_path,
            )
            .await;
        let attachment = match attached {
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
        Ok(attachment)
    }

    /// Ends a lease (by attachment id, or volume id), and with it the
    /// sandbox's running commands, which had the volume mounted: the next
    /// holder is the only writer.
    pub async fn detach_volume(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        attachment: &str,
    ) -> ControlResult<()> {
        let sandbox = self.sandbox(caller, sandbox_id).await?;
        if !self
            .store()?
            .release_attachment(&sandbox.id, attachment)
            .await?
        {
            return Err(ControlError::not_found("attachment", attachment));
        }
        self.sandboxes()?.kill_all(&sandbox.id);
        Ok(())
    }
}

//! What a restore point holds of a volume binding: a snapshot of the
//! volume (frozen for the copy when it is an ext4 image), kept on this
//! host beside the volume.

use mds_core::ids::IdKind;
use mds_store::{BindingRow, RestorePointItemRow};
use serde_json::{json, Value};

use super::failed;
use super::Captured;
use crate::{Control, ControlError, ControlResult};

pub(super) fn summary(record: &Value) -> String {
    format!(
        "snapshot {} ({} bytes, on this host)",
        record["snapshot"].as_str().unwrap_or("?"),
        record["bytes"].as_i64().unwrap_or(0)
    )
}

async fn volume_of(control: &Control, binding: &BindingRow) -> ControlResult<mds_store::VolumeRow> {
    control
        .store()?
        .binding_volume(&binding.id)
        .await?
        .ok_or_else(|| failed("the binding", "it has no volume"))
}

pub(super) async fn capture(control: &Control, binding: &BindingRow) -> ControlResult<Captured> {
    let volume = volume_of(control, binding).await?;
    let volumes = control.volumes()?;
    let snapshot = IdKind::Snapshot.mint();
    volumes
        .snapshot(&volume.id, &volume.backend, &snapshot)
        .await
        .map_err(|e| failed("snapshotting the volume", e))?;
    let used = volumes.usage(&volume.id, &volume.backend).await as i64;
    control
        .store()?
        .add_snapshot(&snapshot, &volume.id, used)
        .await?;
    Ok(Captured {
        files: Vec::new(),
        record: json!({ "volume": volume.id, "snapshot": snapshot, "bytes": used, "backend": volume.backend }),
    })
}

pub(super) async fn check(control: &Control, item: &RestorePointItemRow) -> ControlResult<String> {
    let volume = item.record["volume"].as_str().unwrap_or_default();
    let snapshot = item.record["snapshot"].as_str().unwrap_or_default();
    let known = control
        .store()?
        .snapshots(volume)
        .await?
        .iter()
        .any(|s| s.id == snapshot);
    if !known {
        return Err(ControlError::Failed {
            code: "RESTORE_CHECK_FAILED",
            message: format!("snapshot {snapshot} of volume {volume} is gone"),
            details: None,
        });
    }
    Ok(format!("snapshot {snapshot} present"))
}

/// Puts the snapshot back (into its own volume, or a copy of it into
/// another); the target volume must be detached.
pub(super) async fn restore(
    control: &Control,
    item: &RestorePointItemRow,
    target: &BindingRow,
) -> ControlResult<(u64, String)> {
    let volume = volume_of(control, target).await?;
    if volume.attachment.is_some() {
        return Err(ControlError::conflict(
            "VOLUME_ATTACHED",
            format!(
                "volume {} is attached; detach it (stop its sandbox) before restoring it",
                volume.name
            ),
        ));
    }
    // Another volume's snapshot (a restore `--into`, a preview's copy) is
    // copied in; it must be of the same kind of volume.
    let from = item.record["volume"].as_str().unwrap_or_default();
    let backend = item.record["backend"].as_str().unwrap_or(&volume.backend);
    if backend != volume.backend {
        return Err(ControlError::invalid(
            "into",
            format!(
                "the snapshot is of a {backend} volume and {} is {}",
                volume.name, volume.backend
            ),
        ));
    }
    let snapshot = item.record["snapshot"].as_str().unwrap_or_default();
    let volumes = control.volumes()?;
    // A new volume (a preview's) exists on disk from its first use on.
    volumes
        .materialize(&volume.id, &volume.backend, volume.size_bytes as u64)
        .await
        .map_err(|e| failed("making the volume", e))?;
    volumes
        .restore_from(&volume.id, &volume.backend, from, snapshot)
        .await
        .map_err(|e| failed("restoring the snapshot", e))?;
    Ok((0, format!("snapshot {snapshot} of volume {from} put back")))
}

/// A point that expires takes its snapshot with it.
pub(super) async fn forget(control: &Control, item: &RestorePointItemRow) {
    let (Some(volume), Some(snapshot)) = (
        item.record["volume"].as_str(),
        item.record["snapshot"].as_str(),
    ) else {
        return;
    };
    let backend = item.record["backend"].as_str().unwrap_or_default();
    if let Ok(volumes) = control.volumes() {
        let _ = volumes.delete_snapshot(volume, backend, snapshot).await;
    }
    if let Ok(store) = control.store() {
        let _ = store.delete_snapshot(snapshot).await;
    }
}

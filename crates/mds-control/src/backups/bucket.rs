//! What a restore point holds of a storage binding: its bucket's object
//! index at that moment, with every listed chunk held back from
//! collection while the point lives. No content byte is copied.

use mds_store::{BindingRow, BucketIndex, RestorePointItemRow};
use serde_json::{json, Value};

use super::{failed, Backups, Captured};
use crate::{Control, ControlError, ControlResult};

pub(super) fn summary(record: &Value) -> String {
    format!(
        "{} objects, {} bytes held (not copied)",
        record["objects"].as_u64().unwrap_or(0),
        record["bytes"].as_i64().unwrap_or(0)
    )
}

async fn bucket_of(control: &Control, binding: &BindingRow) -> ControlResult<String> {
    control
        .store()?
        .binding_bucket(&binding.id)
        .await?
        .map(|b| b.id)
        .ok_or_else(|| failed("the binding", "it has no bucket"))
}

pub(super) async fn capture(
    control: &Control,
    backups: &Backups,
    binding: &BindingRow,
    item_id: &str,
    dir: &str,
) -> ControlResult<Captured> {
    let storage = control.storage()?;
    let bucket = bucket_of(control, binding).await?;
    // The hold is named by the item, so retention releases it by id alone.
    let index = storage.snapshot_bucket(&bucket, item_id).await?;
    let written = async {
        let data = serde_json::to_vec(&index).map_err(|e| failed("the index", e))?;
        Ok::<_, ControlError>(
            backups
                .repo
                .put(&format!("{dir}/{}.index.json", binding.id), &data)
                .await?,
        )
    }
    .await;
    let entry = match written {
        Ok(entry) => entry,
        Err(e) => {
            let _ = storage.release_hold(item_id).await;
            return Err(e);
        }
    };
    let bytes: i64 = index.objects.iter().map(|o| o.size).sum();
    Ok(Captured {
        files: vec![entry],
        record: json!({ "bucket": bucket, "objects": index.objects.len(), "bytes": bytes }),
    })
}

async fn load_index(backups: &Backups, item: &RestorePointItemRow) -> ControlResult<BucketIndex> {
    let file = super::item_file(item, "index")?;
    let data = backups.repo.get(&file).await?;
    serde_json::from_slice(&data).map_err(|e| failed("the index", e))
}

/// Every chunk of every object of `index` present with its hash right,
/// and as many objects as were recorded.
async fn verify(
    control: &Control,
    item: &RestorePointItemRow,
    index: &BucketIndex,
) -> ControlResult<String> {
    let check_failed = |message: String| ControlError::Failed {
        code: "RESTORE_CHECK_FAILED",
        message,
        details: None,
    };
    let report = control
        .storage()?
        .verify_index(index)
        .await
        .map_err(|e| check_failed(format!("the bucket's content is not all there: {e}")))?;
    let recorded = item.record["objects"].as_u64().unwrap_or(0);
    if index.objects.len() as u64 != recorded {
        return Err(check_failed(format!(
            "the index lists {} objects, {recorded} were recorded",
            index.objects.len()
        )));
    }
    Ok(format!(
        "{} objects, {} chunks ({} bytes) present with their hashes",
        report.objects, report.chunks, report.bytes
    ))
}

/// The drill: the index read back and verified.
pub(super) async fn check(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
) -> ControlResult<String> {
    let index = load_index(backups, item).await?;
    verify(control, item, &index).await
}

/// The index verified, then written over the target's bucket in one
/// transaction.
pub(super) async fn restore(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
    target: &BindingRow,
) -> ControlResult<(u64, String)> {
    let index = load_index(backups, item).await?;
    let checked = verify(control, item, &index).await?;
    let bucket = bucket_of(control, target).await?;
    let report = control.storage()?.restore_bucket(&bucket, &index).await?;
    Ok((0, format!("{checked}; {} objects replaced", report.removed)))
}

/// A preview's branch: the index written over the target's bucket,
/// sharing every chunk. The chunks are not read (the store refuses an
/// index naming one that is gone), so a branch costs one transaction
/// however large the bucket.
pub(super) async fn branch(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
    target: &BindingRow,
) -> ControlResult<(u64, String)> {
    let index = load_index(backups, item).await?;
    let bucket = bucket_of(control, target).await?;
    control.storage()?.restore_bucket(&bucket, &index).await?;
    let bytes: i64 = index.objects.iter().map(|o| o.size).sum();
    Ok((
        0,
        format!(
            "{} objects ({bytes} bytes) shared with the source, none copied",
            index.objects.len()
        ),
    ))
}

pub(super) async fn release(control: &Control, item: &RestorePointItemRow) {
    if let Ok(storage) = control.storage() {
        if let Err(e) = storage.release_hold(&item.id).await {
            tracing::warn!(item = item.id, error = %e, "could not release a bucket hold; retried at expiry");
        }
    }
}

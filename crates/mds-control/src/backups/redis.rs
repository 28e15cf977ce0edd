//! What a restore point holds of a Redis binding: a consistent RDB of its
//! instance (writes paused for the fork, BGSAVE, the file copied once
//! renamed) and the key count and sample values it holds, recorded at
//! that same moment.

use mds_engines::redis_backup::RedisRecord;
use mds_store::{BindingRow, RestorePointItemRow};
use serde_json::{json, Value};

use super::{failed, skipped, Backups, Captured};
use crate::{Control, ControlError, ControlResult};

fn record_of(item: &RestorePointItemRow) -> ControlResult<RedisRecord> {
    serde_json::from_value(item.record.get("record").cloned().unwrap_or(Value::Null))
        .map_err(|e| failed("the restore point's Redis record", e))
}

pub(super) fn summary(record: &Value) -> String {
    let keys = record["record"]["keys"].as_u64().unwrap_or(0);
    format!("{keys} keys")
}

pub(super) async fn capture(
    control: &Control,
    backups: &Backups,
    binding: &BindingRow,
    dir: &str,
) -> ControlResult<Captured> {
    let reconciler = control.reconciler()?;
    if !reconciler.redis_is_managed() {
        return Ok(skipped(
            "Redis on an external server (--redis-url) is that server's to back up",
        ));
    }
    let scratch = backups
        .scratch("rdb")
        .map_err(|e| failed("scratch space", e))?;
    let rdb = scratch.join("dump.rdb");
    let result = async {
        let record = reconciler
            .redis_snapshot(binding, &rdb)
            .await
            .map_err(|e| failed("snapshotting the instance", e))?;
        let mut file = tokio::fs::File::open(&rdb)
            .await
            .map_err(|e| failed("reading the snapshot", e))?;
        let path = format!("{dir}/{}.rdb", binding.id);
        let mut writer = backups.repo.create(&path).await?;
        if let Err(e) = tokio::io::copy(&mut file, &mut writer).await {
            writer.abort().await;
            return Err(failed("writing the snapshot to the repository", e));
        }
        let entry = writer.finish().await?;
        let record = serde_json::to_value(&record).map_err(|e| failed("recording", e))?;
        Ok(Captured {
            files: vec![entry],
            record: json!({ "record": record }),
        })
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    result
}

/// The item's RDB, opened and written to `dest`.
async fn fetch_rdb(
    backups: &Backups,
    item: &RestorePointItemRow,
    dest: &std::path::Path,
) -> ControlResult<()> {
    let file = super::item_file(item, "RDB")?;
    let mut reader = backups.repo.open(&file).await?;
    let mut out = tokio::fs::File::create(dest)
        .await
        .map_err(|e| failed("scratch space", e))?;
    tokio::io::copy(&mut reader, &mut out)
        .await
        .map_err(|e| super::repository::read_error(&file, e))?;
    out.sync_all()
        .await
        .map_err(|e| failed("scratch space", e))?;
    Ok(())
}

/// Loads the RDB into a scratch redis-server and compares the key count
/// and the samples with the record.
async fn probe(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
    rdb: &std::path::Path,
) -> ControlResult<RedisRecord> {
    let record = record_of(item)?;
    let scratch = backups
        .scratch("redis-probe")
        .map_err(|e| failed("scratch space", e))?;
    let probed = control
        .reconciler()?
        .redis_probe(rdb, &scratch.join("server"), &record)
        .await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    probed.map_err(|e| ControlError::Failed {
        code: "RESTORE_CHECK_FAILED",
        message: format!("the RDB does not hold what was recorded: {e}"),
        details: None,
    })?;
    Ok(record)
}

pub(super) async fn check(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
) -> ControlResult<String> {
    let dir = backups
        .scratch("redis-drill")
        .map_err(|e| failed("scratch space", e))?;
    let rdb = dir.join("dump.rdb");
    let result = async {
        fetch_rdb(backups, item, &rdb).await?;
        probe(control, backups, item, &rdb).await
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let record = result?;
    Ok(format!(
        "{} keys and {} sampled values as recorded",
        record.keys,
        record.samples.len()
    ))
}

/// The RDB checked in a scratch server, then swapped in for the
/// instance's data (same credentials); returns the clients it cut.
pub(super) async fn restore(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
    target: &BindingRow,
) -> ControlResult<(u64, String)> {
    let reconciler = control.reconciler()?;
    let service = control
        .store()?
        .binding_with_service(&target.id)
        .await?
        .map(|(s, _)| s)
        .ok_or_else(|| ControlError::not_found("binding", &target.id))?;
    let dir = backups
        .scratch("redis-restore")
        .map_err(|e| failed("scratch space", e))?;
    let rdb = dir.join("dump.rdb");
    let result = async {
        fetch_rdb(backups, item, &rdb).await?;
        let record = probe(control, backups, item, &rdb).await?;
        let cut = reconciler
            .redis_replace(&service, target, &rdb)
            .await
            .map_err(|e| ControlError::Failed {
                code: "RESTORE_FAILED",
                message: format!("the instance did not take the restored data: {e}"),
                details: None,
            })?;
        Ok((
            cut,
            format!(
                "{} keys and {} sampled values as recorded, in a scratch server first",
                record.keys,
                record.samples.len()
            ),
        ))
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

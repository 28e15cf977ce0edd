//! What a restore point holds of an auth binding: its realm's users
//! (password hashes, metadata, confirmations) and signing keys (sealed).

use mds_store::{BindingRow, RealmExport, RestorePointItemRow};
use serde_json::{json, Value};

use super::{failed, Backups, Captured};
use crate::{Control, ControlError, ControlResult};

pub(super) fn summary(record: &Value) -> String {
    format!(
        "{} users, {} signing keys",
        record["users"].as_u64().unwrap_or(0),
        record["keys"].as_u64().unwrap_or(0)
    )
}

pub(super) async fn capture(
    control: &Control,
    backups: &Backups,
    binding: &BindingRow,
    dir: &str,
) -> ControlResult<Captured> {
    let export = control
        .store()?
        .export_realm(&binding.id)
        .await?
        .ok_or_else(|| ControlError::not_found("binding", &binding.id))?;
    let data = serde_json::to_vec(&export).map_err(|e| failed("the realm", e))?;
    let entry = backups
        .repo
        .put(&format!("{dir}/{}.realm.json", binding.id), &data)
        .await?;
    Ok(Captured {
        files: vec![entry],
        record: json!({ "users": export.users.len(), "keys": export.signing_keys.len() }),
    })
}

async fn load(backups: &Backups, item: &RestorePointItemRow) -> ControlResult<RealmExport> {
    let file = super::item_file(item, "realm")?;
    let data = backups.repo.get(&file).await?;
    serde_json::from_slice(&data).map_err(|e| failed("the realm", e))
}

/// The realm holds the recorded number of users.
fn verify(item: &RestorePointItemRow, export: &RealmExport) -> ControlResult<String> {
    let recorded = item.record["users"].as_u64().unwrap_or(0);
    if export.users.len() as u64 != recorded {
        return Err(ControlError::Failed {
            code: "RESTORE_CHECK_FAILED",
            message: format!(
                "the realm holds {} users, {recorded} were recorded",
                export.users.len()
            ),
            details: None,
        });
    }
    Ok(format!("{} users as recorded", export.users.len()))
}

/// The drill: the realm decrypts, parses and holds what was recorded.
pub(super) async fn check(backups: &Backups, item: &RestorePointItemRow) -> ControlResult<String> {
    verify(item, &load(backups, item).await?)
}

/// The realm's users become the point's, in one transaction; every
/// session ends. Into another binding, its own signing keys stay (the
/// point's are sealed to theirs).
pub(super) async fn restore(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
    target: &BindingRow,
    same_binding: bool,
) -> ControlResult<(u64, String)> {
    let export = load(backups, item).await?;
    let checked = verify(item, &export)?;
    let store = control.store()?;
    let (service, _) = store
        .binding_with_service(&target.id)
        .await?
        .ok_or_else(|| ControlError::not_found("binding", &target.id))?;
    let report = store
        .import_realm(&target.id, &export, !same_binding)
        .await?
        .ok_or_else(|| ControlError::not_found("binding", &target.id))?;
    // The realm cache holds the old keys and settings for 2 s otherwise.
    control.auth.forget(&service.project_id);
    Ok((
        report.sessions_ended,
        format!("{checked}; {} users restored", report.users),
    ))
}

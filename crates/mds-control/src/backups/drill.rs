//! Drills: a restore point is trusted once it has been restored. Each
//! service's part is restored into scratch resources and compared with
//! what was recorded when the point was taken; the WAL archive is checked
//! for gaps and damage. Results are stored on the point; a failure is an
//! error in the log, in status and on `/metrics`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use mds_store::RestorePointRow;
use serde_json::{json, Value};

use super::{check_item, item_skipped, Backups};
use crate::{Caller, Control, ControlResult};

impl Control {
    /// `mds backup verify RP`: drills one point of the caller's.
    pub async fn verify_restore_point(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ControlResult<RestorePointRow> {
        let point = self.caller_restore_point(caller, id).await?;
        let backups = self.backups()?;
        self.drill(backups, &point).await?;
        self.caller_restore_point(caller, id).await
    }

    /// Restores every part of `point` into scratch and records the verdict.
    pub async fn drill(&self, backups: &Backups, point: &RestorePointRow) -> ControlResult<bool> {
        if point.state != "complete" {
            return Err(crate::ControlError::conflict(
                "RESTORE_POINT_NOT_COMPLETE",
                format!(
                    "restore point {} is {}: only a complete point is drilled",
                    point.id, point.state
                ),
            ));
        }
        // One drill at a time: a drill asked for and a scheduled one of
        // the same point would restore it twice at once.
        let _drilling = backups.drilling.lock().await;
        let mut services = Vec::new();
        let mut passed = true;
        for item in &point.items {
            if let Some(reason) = item_skipped(item) {
                services.push(
                    json!({ "name": item.service_name, "kind": item.kind, "skipped": reason }),
                );
                continue;
            }
            match check_item(self, backups, item).await {
                Ok(detail) => services.push(json!({ "name": item.service_name, "kind": item.kind, "ok": true, "detail": detail })),
                Err(e) => {
                    passed = false;
                    services.push(json!({ "name": item.service_name, "kind": item.kind, "ok": false, "detail": e.to_string() }));
                }
            }
        }
        let wal = match backups.archive.as_ref() {
            Some(archive) => match archive.check_continuity(self, backups).await {
                Ok(detail) => json!({ "ok": true, "detail": detail }),
                Err(detail) => {
                    passed = false;
                    json!({ "ok": false, "detail": detail })
                }
            },
            None => Value::Null,
        };
        let verdict = if passed { "passed" } else { "failed" };
        let detail = json!({ "services": services, "wal_archive": wal, "at": mds_api_types::time::format(&Utc::now()) });
        self.store()?
            .set_restore_point_verification(&point.id, verdict, &detail)
            .await?;
        if passed {
            tracing::info!(
                restore_point = point.id,
                "drill passed: the restore point restores as recorded"
            );
        } else {
            backups.drill_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(restore_point = point.id, detail = %detail, "drill FAILED: the restore point does not restore as recorded");
        }
        Ok(passed)
    }

    /// The scheduled drill: the newest complete point of every
    /// environment whose last drill (of any of its points) is older than
    /// the schedule.
    pub(crate) async fn run_drills(&self, backups: &Backups) -> ControlResult<()> {
        let every = chrono::Duration::from_std(backups.settings.drill_every).unwrap_or_default();
        let points = self.store()?.restore_points_in_state("complete").await?;
        let mut newest: Vec<&RestorePointRow> = Vec::new();
        for point in points.iter().rev() {
            if !newest
                .iter()
                .any(|p| p.environment_id == point.environment_id)
            {
                newest.push(point);
            }
        }
        for point in newest {
            let recent = points
                .iter()
                .filter(|p| p.environment_id == point.environment_id)
                .filter_map(|p| p.verified_at)
                .any(|t| t > Utc::now() - every);
            if !recent {
                if let Err(e) = self.drill(backups, point).await {
                    tracing::error!(restore_point = point.id, error = %e, "a drill could not run");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }
}

//! Taking, listing and expiring restore points.

use chrono::{Duration as ChronoDuration, Utc};
use futures_util::future::join_all;
use mds_api_types::backups::{RestorePoint, RestorePointService, Verification};
use mds_core::ids::IdKind;
use mds_store::{
    EnvironmentRow, NewRestorePoint, ProjectRow, RestorePointItemRow, RestorePointRow,
};
use serde_json::Value;

use super::{capture, forget_point, item_skipped, item_summary, point_dir, Backups};
use crate::projects::load_environment;
use crate::{Caller, Control, ControlError, ControlResult};

/// Why a point is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Manual,
    Schedule,
    BeforeDelete,
    BeforePurge,
    BeforeRestore,
    /// A preview's time to live ran out (its data, kept past the purge).
    BeforeExpiry,
    /// A preview is made with the source's data and no point was verified.
    ForPreview,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Manual => "manual",
            Reason::Schedule => "schedule",
            Reason::BeforeDelete => "before-delete",
            Reason::BeforePurge => "before-purge",
            Reason::BeforeRestore => "before-restore",
            Reason::BeforeExpiry => "before-expiry",
            Reason::ForPreview => "for-preview",
        }
    }
}

pub fn point_view(point: &RestorePointRow) -> RestorePoint {
    RestorePoint {
        id: point.id.clone(),
        project_id: point.project_id.clone(),
        environment_id: point.environment_id.clone(),
        environment: point.environment.clone(),
        reason: point.reason.clone(),
        state: point.state.clone(),
        error: point.error.clone(),
        size_bytes: point.size_bytes,
        wal_lsn: point.wal_lsn.clone(),
        services: point
            .items
            .iter()
            .map(|item| RestorePointService {
                name: item.service_name.clone(),
                kind: item.kind.clone(),
                binding_id: item.binding_id.clone(),
                size_bytes: item.size_bytes,
                files: super::FileEntry::list(&item.files).len(),
                summary: item_summary(item),
                skipped: item_skipped(item),
            })
            .collect(),
        verification: Verification {
            state: point.verification.clone(),
            verified_at: point.verified_at,
            detail: point.verification_detail.clone(),
        },
        created_at: point.created_at,
        completed_at: point.completed_at,
        expires_at: point.expires_at,
    }
}

impl Control {
    /// `mds backup create` / `POST .../restore-points`.
    pub async fn create_restore_point(
        &self,
        caller: &Caller,
        project: &str,
        environment: &str,
    ) -> ControlResult<RestorePointRow> {
        let (project, env) =
            load_environment(self.store()?, caller, project, Some(environment)).await?;
        self.take_restore_point(&project, &env, Reason::Manual, None)
            .await
    }

    /// A project's points, newest first (of one environment if named).
    pub async fn list_restore_points(
        &self,
        caller: &Caller,
        project: &str,
        environment: Option<&str>,
    ) -> ControlResult<(std::sync::Arc<ProjectRow>, Vec<RestorePointRow>)> {
        let store = self.store()?;
        let project = crate::projects::load_project(store, caller, project).await?;
        let env = match environment {
            Some(reference) => {
                Some(crate::projects::resolve_environment(store, &project, Some(reference)).await?)
            }
            None => None,
        };
        let points = store
            .restore_points(&project.id, env.as_ref().map(|e| e.id.as_str()))
            .await?;
        Ok((project, points))
    }

    /// A point of the caller's, by id.
    pub async fn caller_restore_point(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ControlResult<RestorePointRow> {
        let store = self.store()?;
        let point = store
            .restore_point(id)
            .await?
            .filter(|p| p.tenant_id == caller.tenant_id)
            .ok_or_else(|| ControlError::not_found("restore point", id))?;
        Ok(point)
    }

    /// Captures every running binding of `env` (or only those listed)
    /// together into one point. On any failure the point is `failed`,
    /// its files deleted and its holds released, and the error returned.
    pub async fn take_restore_point(
        &self,
        project: &ProjectRow,
        env: &EnvironmentRow,
        reason: Reason,
        only: Option<&[String]>,
    ) -> ControlResult<RestorePointRow> {
        let backups = self.backups()?;
        let store = self.store()?;
        let holder = self
            .reconciler()?
            .incarnation()
            .await
            .map_err(|e| ControlError::internal(e.to_string()))?;
        let id = IdKind::RestorePoint.mint();
        store
            .begin_restore_point(&NewRestorePoint {
                id: &id,
                tenant_id: &project.tenant_id,
                project_id: &project.id,
                environment_id: &env.id,
                environment: &env.name,
                reason: reason.as_str(),
                holder,
            })
            .await?;
        let dir = point_dir(&id);
        let bindings: Vec<_> = store
            .environment_bindings(&env.id)
            .await?
            .into_iter()
            .filter(|(_, b)| only.is_none_or(|ids| ids.contains(&b.id)))
            .collect();
        let mut items = Vec::new();
        for (service, binding) in &bindings {
            let item = RestorePointItemRow {
                id: IdKind::RestorePointItem.mint(),
                restore_point_id: id.clone(),
                binding_id: binding.id.clone(),
                service_id: service.id.clone(),
                service_name: service.name.clone(),
                kind: service.kind.clone(),
                files: Value::Array(Vec::new()),
                record: Value::Object(Default::default()),
                size_bytes: 0,
            };
            store.add_restore_point_item(&item).await?;
            items.push(item);
        }
        // Together: every service is captured at (nearly) the same moment.
        let wal_lsn = match backups.archive.as_ref() {
            Some(archive) => archive.current_lsn().await.ok(),
            None => None,
        };
        // Boxed, so the task that runs this stays Send for any lifetime.
        type Capture<'a> = std::pin::Pin<
            Box<dyn std::future::Future<Output = ControlResult<super::Captured>> + Send + 'a>,
        >;
        let mut running: Vec<Capture<'_>> = Vec::new();
        for ((service, binding), item) in bindings.iter().zip(&items) {
            let dir = dir.as_str();
            running.push(Box::pin(async move {
                if !crate::is_running(binding) {
                    return Ok(super::skipped(format!(
                        "the binding was {} when the point was taken",
                        binding.state
                    )));
                }
                capture(self, backups, service, binding, &item.id, dir).await
            }));
        }
        let captures = join_all(running).await;
        let mut failure = None;
        for (item, captured) in items.iter().zip(captures) {
            match captured {
                Ok(captured) => {
                    let size: u64 = captured.files.iter().map(|f| f.size).sum();
                    let files = Value::Array(captured.files.iter().map(|f| f.to_json()).collect());
                    store
                        .update_restore_point_item(&item.id, &files, &captured.record, size as i64)
                        .await?;
                }
                Err(e) => {
                    failure.get_or_insert(format!("{} ({}): {e}", item.service_name, item.kind));
                }
            }
        }
        if let Some(error) = failure {
            tracing::error!(
                restore_point = id,
                project = project.id,
                environment = env.name,
                error,
                "a restore point failed"
            );
            store.fail_restore_point(&id, &error).await?;
            if let Some(point) = store.restore_point(&id).await? {
                for item in &point.items {
                    super::release_item(self, item).await;
                }
            }
            let _ = backups.repo.delete_under(&dir).await;
            return Err(ControlError::Failed {
                code: "BACKUP_FAILED",
                message: format!("the restore point was not taken: {error}"),
                details: None,
            });
        }
        let days = match store.environment_backup_retention(&env.id).await? {
            Some(days) => days,
            None => backups.settings.retention_days,
        };
        let expires = Utc::now() + ChronoDuration::days(i64::from(days));
        if !store
            .complete_restore_point(&id, wal_lsn.as_deref(), Some(expires))
            .await?
        {
            return Err(ControlError::Failed {
                code: "BACKUP_FAILED",
                message: "the restore point was abandoned while it was taken".to_string(),
                details: None,
            });
        }
        let point = store
            .restore_point(&id)
            .await?
            .ok_or_else(|| ControlError::internal("a restore point vanished"))?;
        tracing::info!(
            restore_point = id,
            project = project.id,
            environment = env.name,
            reason = reason.as_str(),
            services = point.items.len(),
            bytes = point.size_bytes,
            "took a restore point"
        );
        Ok(point)
    }

    /// Takes a point of the given services' running bindings (of one
    /// member only, if named) in every environment before they are
    /// deleted; refuses (nothing deleted) if it fails.
    pub async fn backup_before_delete(
        &self,
        project: &ProjectRow,
        services: &[&mds_store::DataServiceRow],
        member: Option<&str>,
        reason: Reason,
    ) -> ControlResult<Vec<String>> {
        if self.backups.get().is_none() {
            return Ok(Vec::new());
        }
        let store = self.store()?;
        let mut taken = Vec::new();
        for env in &project.environments {
            let ids: Vec<String> = store
                .environment_bindings(&env.id)
                .await?
                .into_iter()
                .filter(|(s, b)| {
                    services.iter().any(|d| d.id == s.id)
                        && member.is_none_or(|m| m == b.id)
                        && crate::is_running(b)
                })
                .map(|(_, b)| b.id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let point = self
                .take_restore_point(project, env, reason, Some(&ids))
                .await
                .map_err(|e| ControlError::Failed {
                    code: "BACKUP_FAILED",
                    message: format!(
                        "nothing was deleted: the restore point that must come first failed ({e})"
                    ),
                    details: None,
                })?;
            taken.push(point.id);
        }
        Ok(taken)
    }

    /// [`Control::backup_before_delete`] of one service, its project found
    /// from the service.
    pub async fn backup_service_before_delete(
        &self,
        service: &mds_store::DataServiceRow,
        member: Option<&str>,
    ) -> ControlResult<()> {
        let store = self.store()?;
        let tenant = store.project_tenant(&service.project_id).await?;
        let Some(project) = store.project(&tenant, &service.project_id).await? else {
            return Ok(());
        };
        self.backup_before_delete(&project, &[service], member, Reason::BeforeDelete)
            .await
            .map(|_| ())
    }

    /// Sets how long an environment keeps its points (`None`: the default).
    pub async fn set_backup_retention(
        &self,
        caller: &Caller,
        project: &str,
        environment: &str,
        days: Option<i32>,
    ) -> ControlResult<i32> {
        if let Some(days) = days {
            if !(1..=3650).contains(&days) {
                return Err(ControlError::invalid(
                    "retention_days",
                    "must be between 1 and 3650 days, or null for the server's default",
                ));
            }
        }
        let store = self.store()?;
        let (_, env) = load_environment(store, caller, project, Some(environment)).await?;
        store
            .set_environment_backup_retention(&env.id, days)
            .await?;
        Ok(days.unwrap_or(self.backups()?.settings.retention_days))
    }

    /// `mds backup delete`: a point of the caller's goes now, with its
    /// files, bucket holds and volume snapshot (a running one cannot).
    pub async fn delete_restore_point(&self, caller: &Caller, id: &str) -> ControlResult<()> {
        let point = self.caller_restore_point(caller, id).await?;
        if point.state == "running" {
            return Err(ControlError::conflict(
                "RESTORE_POINT_RUNNING",
                format!(
                    "restore point {id} is being taken; delete it once it is complete or failed"
                ),
            ));
        }
        forget_point(self, self.backups()?, &point).await?;
        tracing::info!(restore_point = id, "a restore point was deleted, as asked");
        Ok(())
    }

    /// Deletes expired points (their files and holds).
    pub(crate) async fn expire_restore_points(&self, backups: &Backups) -> ControlResult<usize> {
        let expired = self.store()?.expired_restore_points().await?;
        for point in &expired {
            forget_point(self, backups, point).await?;
            tracing::info!(restore_point = point.id, "a restore point expired");
        }
        Ok(expired.len())
    }
}

impl Control {
    /// `GET /projects/{p}/backups`: the repository, the PITR window, each
    /// environment's last success, what needs attention, and the points.
    pub async fn backup_overview(
        &self,
        caller: &Caller,
        project: &str,
        environment: Option<&str>,
    ) -> ControlResult<mds_api_types::backups::BackupOverview> {
        use mds_api_types::backups::{
            BackupOverview, EnvironmentBackups, PitrStatus, RepositoryStatus,
        };
        let backups = self.backups()?;
        let store = self.store()?;
        let (project, points) = self
            .list_restore_points(caller, project, environment)
            .await?;
        let pitr = match backups.archive.as_ref() {
            Some(archive) => {
                let window = archive.window(self, backups).await?;
                PitrStatus {
                    enabled: true,
                    window_start: window.map(|w| w.0),
                    window_end: window.map(|w| w.1),
                    note: match window {
                        Some(_) => "continuous WAL archiving of the managed engine: --to-time \
                                    reaches any moment from window_start to now"
                            .to_string(),
                        None => "WAL archiving is on; the window opens when the first base \
                                 backup finishes"
                            .to_string(),
                    },
                }
            }
            None => PitrStatus {
                enabled: false,
                window_start: None,
                window_end: None,
                note: "point-in-time recovery is the job of the PostgreSQL server given with \
                       --postgres-url; mds keeps logical restore points of its databases"
                    .to_string(),
            },
        };
        let twice = chrono::Duration::from_std(backups.settings.schedule * 2).unwrap_or_default();
        let mut environments = Vec::new();
        for env in &project.environments {
            let mine: Vec<&RestorePointRow> = points
                .iter()
                .filter(|p| p.environment_id == env.id)
                .collect();
            let last_success_at = mine
                .iter()
                .filter(|p| p.state == "complete")
                .filter_map(|p| p.completed_at)
                .max();
            let has_data = store
                .environment_bindings(&env.id)
                .await?
                .iter()
                .any(|(_, b)| crate::is_running(b));
            let since = last_success_at.unwrap_or(env.created_at);
            environments.push(EnvironmentBackups {
                environment: env.name.clone(),
                last_success_at,
                overdue: has_data && since < Utc::now() - twice,
                retention_days: store
                    .environment_backup_retention(&env.id)
                    .await?
                    .unwrap_or(backups.settings.retention_days),
                restore_points: mine.len(),
            });
        }
        let mut errors: Vec<String> = environments
            .iter()
            .filter(|e| e.overdue)
            .map(|e| {
                format!(
                    "{}: no restore point newer than twice the schedule ({} s)",
                    e.environment,
                    twice.num_seconds()
                )
            })
            .collect();
        errors.extend(
            points
                .iter()
                .filter(|p| p.verification == "failed")
                .map(|p| {
                    format!(
                        "restore point {} ({}) failed its drill",
                        p.id, p.environment
                    )
                }),
        );
        Ok(BackupOverview {
            repository: RepositoryStatus {
                location: backups.repo.location().to_string(),
                same_disk_as_data: backups.same_disk_as_data(),
                warning: backups.disk_warning(),
            },
            pitr,
            environments,
            errors,
            restore_points: points.iter().map(point_view).collect(),
        })
    }
}

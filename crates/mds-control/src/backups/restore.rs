//! Restores. Every one is non-destructive: the data goes into a fresh
//! database, Redis dataset or bucket version, is checked against what was
//! recorded, and only then is the binding switched to it, under the same
//! credentials. The data it replaces becomes a restore point first (the
//! restore's undo). One restore of a binding at a time.

use chrono::{DateTime, Utc};
use mds_api_types::backups::{NotRestored, RestoreRequest, RestoreResult, RestoredService};
use mds_core::ids::IdKind;
use mds_core::kinds::ServiceKind;
use mds_store::{BindingRow, DataServiceRow, RestorePointItemRow, StoreError};
use serde_json::json;

use super::points::Reason;
use super::{pg, Backups};
use crate::projects::{load_environment, resolve_environment};
use crate::{Caller, Control, ControlError, ControlResult};

/// Where one service's data comes from.
enum Source {
    Item(RestorePointItemRow),
    /// Point-in-time recovery of a Postgres database (the source
    /// binding's database name at that moment).
    Pitr {
        database: String,
    },
}

struct Job {
    service: DataServiceRow,
    target: BindingRow,
    source: Source,
    same_binding: bool,
}

fn parse_time(raw: &str) -> ControlResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ControlError::invalid(
                "to_time",
                format!("{raw:?} is not an RFC 3339 time (like 2026-12-06T10:00:00Z)"),
            )
        })
}

impl Control {
    /// `mds restore` / `POST .../restores`.
    pub async fn restore(
        &self,
        caller: &Caller,
        project: &str,
        environment: &str,
        request: RestoreRequest,
    ) -> ControlResult<RestoreResult> {
        if request.confirm != Some(true) {
            return Err(ControlError::invalid(
                "confirm",
                "a restore replaces the live data of its services (which becomes a restore \
                 point first); send confirm: true (mds restore --yes) to go ahead",
            ));
        }
        let backups = self.backups()?;
        let store = self.store()?;
        let (project, env) = load_environment(store, caller, project, Some(environment)).await?;
        let target_env = match request.into.as_deref() {
            Some(into) => resolve_environment(store, &project, Some(into)).await?,
            None => env.clone(),
        };
        let mut not_restored = Vec::new();
        let mut sources: Vec<(DataServiceRow, BindingRow, Source)> = Vec::new();
        let source_bindings = store.environment_bindings(&env.id).await?;
        let wanted = |name: &str| request.service.as_deref().is_none_or(|s| s == name);
        let from_label;
        let mut pitr_at = None;
        match (request.restore_point.as_deref(), request.to_time.as_deref()) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ControlError::invalid(
                    "restore_point",
                    "name exactly one of restore_point and to_time",
                ))
            }
            (Some(id), None) => {
                let point = self.caller_restore_point(caller, id).await?;
                if point.project_id != project.id || point.environment_id != env.id {
                    return Err(ControlError::invalid(
                        "restore_point",
                        format!(
                            "restore point {id} is of environment {:?}, not {:?}; restore it \
                             from there (with --into to copy it here)",
                            point.environment, env.name
                        ),
                    ));
                }
                if point.state != "complete" {
                    return Err(ControlError::conflict(
                        "RESTORE_POINT_NOT_COMPLETE",
                        format!(
                            "restore point {id} is {}: only a complete point restores",
                            point.state
                        ),
                    ));
                }
                from_label = point.id.clone();
                for item in point.items.into_iter().filter(|i| wanted(&i.service_name)) {
                    if let Some(reason) = super::item_skipped(&item) {
                        not_restored.push(NotRestored {
                            name: item.service_name.clone(),
                            reason: format!("not in the point: {reason}"),
                        });
                        continue;
                    }
                    match source_bindings
                        .iter()
                        .find(|(s, _)| s.id == item.service_id)
                    {
                        Some((service, binding)) => {
                            sources.push((service.clone(), binding.clone(), Source::Item(item)))
                        }
                        None => not_restored.push(NotRestored {
                            name: item.service_name.clone(),
                            reason: "the service is no longer attached".to_string(),
                        }),
                    }
                }
            }
            (None, Some(raw)) => {
                let at = parse_time(raw)?;
                pitr_at = Some(at);
                from_label = format!("pitr:{}", mds_api_types::time::format(&at));
                let points = store.restore_points(&project.id, Some(&env.id)).await?;
                for (service, binding) in source_bindings.iter().filter(|(s, _)| wanted(&s.name)) {
                    if matches!(
                        mds_provision::service_kind(service),
                        Ok(ServiceKind::Postgres)
                    ) {
                        sources.push((
                            service.clone(),
                            binding.clone(),
                            Source::Pitr {
                                database: binding.resource_name.clone(),
                            },
                        ));
                        continue;
                    }
                    // Other kinds: the newest point at or before that moment.
                    let item = points
                        .iter()
                        .filter(|p| {
                            p.state == "complete" && p.completed_at.is_some_and(|c| c <= at)
                        })
                        .find_map(|p| {
                            p.items.iter().find(|i| {
                                i.service_id == service.id && super::item_skipped(i).is_none()
                            })
                        });
                    match item {
                        Some(item) => sources.push((service.clone(), binding.clone(), Source::Item(item.clone()))),
                        None => not_restored.push(NotRestored { name: service.name.clone(), reason: format!("point-in-time recovery is for Postgres; {} has no restore point at or before {raw}", service.name) }),
                    }
                }
            }
        }
        if let Some(name) = request.service.as_deref() {
            if sources.is_empty() && not_restored.is_empty() {
                return Err(ControlError::not_found("service", name));
            }
        }
        if let Some(at) = pitr_at {
            if sources
                .iter()
                .any(|(_, _, s)| matches!(s, Source::Pitr { .. }))
            {
                self.check_pitr_window(backups, at).await?;
            }
        }
        // The same services' bindings in the target environment.
        let target_bindings = store.environment_bindings(&target_env.id).await?;
        let mut jobs = Vec::new();
        for (service, source_binding, source) in sources {
            match target_bindings.iter().find(|(s, _)| s.id == service.id) {
                Some((_, target)) if crate::is_running(target) => jobs.push(Job {
                    same_binding: target.id == source_binding.id,
                    service,
                    target: target.clone(),
                    source,
                }),
                Some((_, target)) => not_restored.push(NotRestored {
                    name: service.name.clone(),
                    reason: format!(
                        "its binding in {} is {}, not running",
                        target_env.name, target.state
                    ),
                }),
                None => not_restored.push(NotRestored {
                    name: service.name.clone(),
                    reason: format!("it is not attached in {}", target_env.name),
                }),
            }
        }
        if jobs.is_empty() {
            return Err(ControlError::invalid(
                "service",
                format!(
                    "nothing to restore: {}",
                    not_restored
                        .iter()
                        .map(|n| format!("{}: {}", n.name, n.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
        // One restore per binding at a time.
        let holder = self
            .reconciler()?
            .incarnation()
            .await
            .map_err(|e| ControlError::internal(e.to_string()))?;
        let id = IdKind::Restore.mint();
        let mut begun: Vec<String> = Vec::new();
        for (n, job) in jobs.iter().enumerate() {
            let row_id = format!("{id}.{n}");
            let (point, at) = match &job.source {
                Source::Item(item) => (Some(item.restore_point_id.as_str()), None),
                Source::Pitr { .. } => (None, pitr_at),
            };
            match store
                .begin_restore(&row_id, &project.id, &job.target.id, point, at, holder)
                .await
            {
                Ok(()) => begun.push(row_id),
                Err(StoreError::Conflict { .. }) => {
                    for row in &begun {
                        let _ = store
                            .finish_restore(
                                row,
                                Some("another restore of a binding was running"),
                                &json!({}),
                            )
                            .await;
                    }
                    return Err(ControlError::conflict(
                        "RESTORE_IN_PROGRESS",
                        format!(
                            "{} in {} is being restored already; wait for that restore to finish",
                            job.service.name, target_env.name
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let outcome = self
            .run_restore(backups, &project, &target_env, &jobs, pitr_at, &from_label)
            .await;
        let (undo, restored, error) = match outcome {
            Ok((undo, restored)) => (Some(undo), restored, None),
            Err((undo, restored, e)) => (undo, restored, Some(e)),
        };
        for (row, job) in begun.iter().zip(&jobs) {
            if let Some(undo) = &undo {
                let _ = store.set_restore_undo(row, undo).await;
            }
            let done = restored.iter().find(|r| r.name == job.service.name);
            let report = json!({ "service": job.service.name, "done": done.map(|d| json!({"terminated": d.terminated, "checked": d.checked})) });
            let why = match (&error, done) {
                (_, Some(_)) => None,
                (Some(e), None) => Some(e.to_string()),
                (None, None) => Some("not reached".to_string()),
            };
            store.finish_restore(row, why.as_deref(), &report).await?;
        }
        if let Some(e) = error {
            tracing::error!(restore = id, project = project.id, environment = target_env.name, error = %e, "a restore failed; the services it did not reach kept their data");
            return Err(e);
        }
        tracing::info!(
            restore = id,
            project = project.id,
            environment = target_env.name,
            services = restored.len(),
            "restored"
        );
        Ok(RestoreResult {
            id,
            environment: target_env.name.clone(),
            restored,
            not_restored,
            undo_restore_point: undo,
        })
    }

    /// The fresh, checked copies of the Postgres jobs (by job index):
    /// from their points' dumps, or from one cluster recovered to the
    /// moment. On error none is left.
    async fn prepare_postgres(
        &self,
        backups: &Backups,
        jobs: &[Job],
        pitr_at: Option<DateTime<Utc>>,
    ) -> ControlResult<Vec<(usize, pg::Prepared)>> {
        let mut scratch = None;
        if let Some(at) =
            pitr_at.filter(|_| jobs.iter().any(|j| matches!(j.source, Source::Pitr { .. })))
        {
            let archive = backups
                .archive
                .as_ref()
                .ok_or_else(|| ControlError::internal("no archive"))?;
            archive.flush(self, backups).await?;
            scratch = Some(archive.recover(self, backups, at).await?);
        }
        let mut prepared = Vec::new();
        let mut failure = None;
        for (n, job) in jobs.iter().enumerate() {
            let input = match (&job.source, &scratch) {
                (Source::Pitr { database }, Some(s)) => pg::Input::Scratch {
                    config: Box::new(s.admin_config()),
                    db: database.clone(),
                },
                (Source::Item(item), _)
                    if matches!(super::item_kind(item), Ok(ServiceKind::Postgres)) =>
                {
                    pg::Input::Item(item)
                }
                _ => continue,
            };
            if let pg::Input::Item(item) = &input {
                if let Err(e) = super::check_files(backups, item).await {
                    failure = Some(e);
                    break;
                }
            }
            match pg::prepare(self, backups, &input, &job.target, job.same_binding).await {
                Ok(p) => prepared.push((n, p)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(s) = scratch {
            shut_scratch(s).await;
        }
        match failure {
            None => Ok(prepared),
            Some(e) => {
                for (_, p) in prepared {
                    pg::discard(self, p).await;
                }
                Err(e)
            }
        }
    }

    async fn check_pitr_window(&self, backups: &Backups, at: DateTime<Utc>) -> ControlResult<()> {
        let Some(archive) = backups.archive.as_ref() else {
            return Err(ControlError::invalid(
                "to_time",
                "point-in-time recovery is the job of the PostgreSQL server given with \
                 --postgres-url; mds keeps restore points of it: restore one of those",
            ));
        };
        let window = archive.window(self, backups).await?;
        let now = Utc::now();
        let inside = window.is_some_and(|(start, _)| at >= start && at <= now);
        if !inside {
            let said = match window {
                Some((start, _)) => format!(
                    "from {} to now ({})",
                    mds_api_types::time::format(&start),
                    mds_api_types::time::format(&now)
                ),
                None => "empty: no base backup has finished yet".to_string(),
            };
            return Err(ControlError::invalid(
                "to_time",
                format!(
                    "{} is outside the point-in-time window, which is {said}",
                    mds_api_types::time::format(&at)
                ),
            ));
        }
        Ok(())
    }

    /// Takes the undo point, then restores each job; returns the undo
    /// point and what was restored, or, on the first failure, what was
    /// restored before it.
    #[allow(clippy::type_complexity)]
    async fn run_restore(
        &self,
        backups: &Backups,
        project: &mds_store::ProjectRow,
        target_env: &mds_store::EnvironmentRow,
        jobs: &[Job],
        pitr_at: Option<DateTime<Utc>>,
        from_label: &str,
    ) -> Result<(String, Vec<RestoredService>), (Option<String>, Vec<RestoredService>, ControlError)>
    {
        let targets: Vec<String> = jobs.iter().map(|j| j.target.id.clone()).collect();
        let undo_point =
            self.take_restore_point(project, target_env, Reason::BeforeRestore, Some(&targets));
        // Postgres copies are made and checked while the undo point is
        // taken: nothing live changes before the switches below, which
        // wait for both.
        let (undo, prepared) =
            tokio::join!(undo_point, self.prepare_postgres(backups, jobs, pitr_at));
        let undo = match undo {
            Ok(point) => point.id,
            Err(e) => {
                if let Ok(prepared) = prepared {
                    for (_, p) in prepared {
                        pg::discard(self, p).await;
                    }
                }
                return Err((
                    None,
                    Vec::new(),
                    ControlError::Failed {
                        code: "RESTORE_FAILED",
                        message: format!(
                            "nothing was restored: the restore point of the data it would \
                             replace failed ({e})"
                        ),
                        details: None,
                    },
                ));
            }
        };
        let mut prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return Err((Some(undo), Vec::new(), e)),
        };
        let mut restored = Vec::new();
        for (n, job) in jobs.iter().enumerate() {
            let result = match prepared.iter().position(|(i, _)| *i == n) {
                Some(at) => pg::switch(self, prepared.remove(at).1, &job.target).await,
                None => match &job.source {
                    Source::Item(item) => {
                        super::restore_item(self, backups, item, &job.target, job.same_binding)
                            .await
                    }
                    Source::Pitr { .. } => Err(ControlError::internal("no recovered copy")),
                },
            };
            match result {
                Ok((terminated, checked)) => restored.push(RestoredService {
                    name: job.service.name.clone(),
                    kind: job.service.kind.clone(),
                    from: match &job.source {
                        Source::Item(item) => item.restore_point_id.clone(),
                        Source::Pitr { .. } => from_label.to_string(),
                    },
                    terminated,
                    checked,
                }),
                Err(e) => {
                    for (_, p) in prepared {
                        pg::discard(self, p).await;
                    }
                    return Err((Some(undo), restored, e));
                }
            }
        }
        Ok((undo, restored))
    }
}

/// Stops a recovered scratch cluster and removes its directory with the
/// one around it (which held the WAL it replayed).
async fn shut_scratch(scratch: mds_engines::ScratchPostgres) {
    let around = scratch.dir().parent().map(std::path::Path::to_path_buf);
    if let Err(e) = scratch.shutdown().await {
        tracing::warn!(error = %e, "stopping a recovered scratch cluster");
    }
    if let Some(dir) = around {
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
}

//! Backups you can trust: restore points of one environment's services
//! at one moment, restores that never destroy data, drills that prove a
//! point by restoring it, and (on the managed engine) continuous WAL
//! archiving for point-in-time recovery.
//!
//! - [`repository`]: where the bytes go, encrypted and checksummed.
//! - [`points`]: taking, listing and expiring restore points.
//! - [`restore`]: into a fresh copy, checked, then switched; the data it
//!   replaced becomes a restore point first.
//! - [`drill`]: restores each point into scratch resources and compares
//!   with what was recorded when it was taken.
//! - [`archive`]: WAL shipping, base backups, the PITR window, recovery
//!   to a moment in a scratch instance.
//! - One module per kind for what a point holds of it: [`pg`], [`redis`],
//!   [`bucket`], [`realm`], [`volume`].
//!
//! Work in progress is a row naming this server's incarnation; a start
//! ends what a dead one left (state `failed`, files deleted).

pub mod archive;
mod bucket;
pub mod drill;
mod pg;
pub mod points;
mod realm;
mod redis;
pub mod repository;
pub mod restore;
mod volume;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mds_core::kinds::ServiceKind;
use mds_store::{BindingRow, DataServiceRow, RestorePointItemRow};
use serde_json::Value;

use crate::{Control, ControlError, ControlResult};
use repository::{FileEntry, RepoError, Repository};

/// How backups run; `mds server` flags.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// `--backup-url`; none means `DIR/backups`.
    pub url: Option<String>,
    /// How often each environment gets a restore point.
    pub schedule: Duration,
    /// How often the newest points are drilled and the WAL archive checked.
    pub drill_every: Duration,
    /// How often the managed engine gets a base backup.
    pub base_backup_every: Duration,
    /// How far back `--to-time` reaches.
    pub pitr_window: Duration,
    /// How long base backups are kept.
    pub base_retention: Duration,
    /// How long restore points are kept, unless an environment says.
    pub retention_days: i32,
}

impl Default for BackupSettings {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            url: None,
            schedule: Duration::from_secs(DAY),
            drill_every: Duration::from_secs(DAY),
            base_backup_every: Duration::from_secs(DAY),
            pitr_window: Duration::from_secs(7 * DAY),
            base_retention: Duration::from_secs(30 * DAY),
            retention_days: 30,
        }
    }
}

/// The backup machinery of a running server.
pub struct Backups {
    pub repo: Repository,
    pub settings: BackupSettings,
    data_dir: PathBuf,
    /// Scratch space: RDB copies, drill and recovery instances.
    work: PathBuf,
    /// WAL archiving and base backups of the managed engine.
    pub archive: Option<archive::Archive>,
    drill_failures: AtomicU64,
    drilling: tokio::sync::Mutex<()>,
    /// One template copy built (and pruned) at a time.
    branching: tokio::sync::Mutex<()>,
    /// The last drill or schedule failures, for status and metrics.
    problems: Mutex<Vec<String>>,
}

impl Backups {
    pub fn open(
        settings: BackupSettings,
        data_dir: &Path,
        master_key: &mds_crypto::MasterKey,
        archive: Option<archive::Archive>,
    ) -> Result<Self, String> {
        let repo = Repository::new(settings.url.as_deref(), data_dir, master_key)?;
        // Scratch space; what a killed run left in it goes at start
        // (`clean_up_after_a_crash`).
        let work = data_dir.join("backup-work");
        std::fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
        Ok(Self {
            repo,
            settings,
            data_dir: data_dir.to_path_buf(),
            work,
            archive,
            drill_failures: AtomicU64::new(0),
            drilling: tokio::sync::Mutex::new(()),
            branching: tokio::sync::Mutex::new(()),
            problems: Mutex::new(Vec::new()),
        })
    }

    /// Whether the repository shares the data's disk.
    pub fn same_disk_as_data(&self) -> bool {
        self.repo.on_disk_of(&self.data_dir)
    }

    /// The plain words for [`Backups::same_disk_as_data`].
    pub fn disk_warning(&self) -> Option<String> {
        self.same_disk_as_data().then(|| {
            format!(
                "the backup repository ({}) is on the same disk as the data: it protects \
                 against mistakes (a dropped table, a bad deploy), not against losing the \
                 disk; pass --backup-url to put it elsewhere",
                self.repo.location()
            )
        })
    }

    /// A fresh scratch directory under the work dir.
    fn scratch(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self.work.join(format!("{name}-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    pub fn drill_failures(&self) -> u64 {
        self.drill_failures.load(Ordering::Relaxed)
    }

    fn note_problems(&self, problems: Vec<String>) {
        if let Ok(mut held) = self.problems.lock() {
            *held = problems;
        }
    }

    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl From<RepoError> for ControlError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Damaged { .. } | RepoError::Missing(_) => ControlError::Failed {
                code: "BACKUP_DAMAGED",
                message: e.to_string(),
                details: None,
            },
            RepoError::Io { .. } => ControlError::Failed {
                code: "BACKUP_REPOSITORY_FAILED",
                message: e.to_string(),
                details: None,
            },
        }
    }
}

/// A backup step that failed, saying which and why (422 `BACKUP_FAILED`).
pub(crate) fn failed(what: &str, e: impl std::fmt::Display) -> ControlError {
    ControlError::Failed {
        code: "BACKUP_FAILED",
        message: format!("{what}: {e}"),
        details: None,
    }
}

/// The one repository file of an item (a dump, an RDB, an index, a realm).
pub(crate) fn item_file(item: &RestorePointItemRow, holds: &str) -> ControlResult<FileEntry> {
    FileEntry::list(&item.files)
        .into_iter()
        .next()
        .ok_or_else(|| failed("the restore point", format!("it holds no {holds}")))
}

/// What one kind does with a point: capture, check in scratch, restore.
/// The item is one binding's part of a point.
pub(crate) struct Captured {
    pub files: Vec<FileEntry>,
    pub record: Value,
}

/// A capture that did not happen, with the reason kept on the item.
pub(crate) fn skipped(reason: impl Into<String>) -> Captured {
    Captured {
        files: Vec::new(),
        record: serde_json::json!({ "skipped": reason.into() }),
    }
}

/// The reason an item was skipped, if it was.
pub fn item_skipped(item: &RestorePointItemRow) -> Option<String> {
    item.record
        .get("skipped")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Where a point's files live in the repository.
fn point_dir(point_id: &str) -> String {
    format!("restore-points/{point_id}")
}

/// A kind's capture of one binding into the point's directory.
async fn capture(
    control: &Control,
    backups: &Backups,
    service: &DataServiceRow,
    binding: &BindingRow,
    item_id: &str,
    dir: &str,
) -> ControlResult<Captured> {
    match mds_provision::service_kind(service)? {
        ServiceKind::Postgres => pg::capture(control, backups, binding, dir).await,
        ServiceKind::Redis => redis::capture(control, backups, binding, dir).await,
        ServiceKind::Storage => bucket::capture(control, backups, binding, item_id, dir).await,
        ServiceKind::Auth => realm::capture(control, backups, binding, dir).await,
        ServiceKind::Volume => volume::capture(control, binding).await,
    }
}

/// What a binding's data can be checked against: a point's item, in a
/// scratch copy. `Ok(summary)` or the first difference.
async fn check_item(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
) -> ControlResult<String> {
    check_files(backups, item).await?;
    match item_kind(item)? {
        ServiceKind::Postgres => pg::check(control, backups, item).await,
        ServiceKind::Redis => redis::check(control, backups, item).await,
        ServiceKind::Storage => bucket::check(control, backups, item).await,
        ServiceKind::Auth => realm::check(backups, item).await,
        ServiceKind::Volume => volume::check(control, item).await,
    }
}

/// Every file of an item read back and checked against its manifest
/// (size and BLAKE3), before anything is restored from it.
async fn check_files(backups: &Backups, item: &RestorePointItemRow) -> ControlResult<()> {
    for file in FileEntry::list(&item.files) {
        backups.repo.check(&file).await?;
    }
    Ok(())
}

/// Restores one item into `target` (fresh copy, checked, switched);
/// returns what the switch ended and what was checked.
async fn restore_item(
    control: &Control,
    backups: &Backups,
    item: &RestorePointItemRow,
    target: &BindingRow,
    same_binding: bool,
) -> ControlResult<(u64, String)> {
    check_files(backups, item).await?;
    match item_kind(item)? {
        ServiceKind::Postgres => {
            pg::restore(
                control,
                backups,
                pg::Input::Item(item),
                target,
                same_binding,
            )
            .await
        }
        ServiceKind::Redis => redis::restore(control, backups, item, target).await,
        ServiceKind::Storage => bucket::restore(control, backups, item, target).await,
        ServiceKind::Auth => realm::restore(control, backups, item, target, same_binding).await,
        ServiceKind::Volume => volume::restore(control, item, target).await,
    }
}

/// What a preview takes of one service of its source's restore point.
pub(crate) enum Fill<'a> {
    /// Everything: Postgres rows (with `masks` applied), the RDB, the
    /// bucket's index (sharing its chunks), the volume's snapshot.
    Copy {
        masks: &'a [crate::previews::masks::Mask],
    },
    /// Postgres tables without rows.
    Schema,
    /// An auth realm's users, without their sessions.
    Users,
}

/// Fills `target` (a binding of a preview) from `item` of its source's
/// point. Returns a line on what it got.
pub(crate) async fn fill_item(
    control: &Control,
    item: &RestorePointItemRow,
    target: &BindingRow,
    fill: Fill<'_>,
) -> ControlResult<String> {
    let backups = control.backups()?;
    let (_, detail) = match (item_kind(item)?, fill) {
        (ServiceKind::Postgres, Fill::Copy { masks }) => {
            pg::branch(control, backups, item, target, masks).await?
        }
        (ServiceKind::Postgres, Fill::Schema) => {
            pg::schema_only(control, backups, item, target).await?
        }
        (ServiceKind::Storage, Fill::Copy { .. }) => {
            bucket::branch(control, backups, item, target).await?
        }
        (ServiceKind::Auth, Fill::Users) => {
            check_files(backups, item).await?;
            realm::restore(control, backups, item, target, false).await?
        }
        (_, Fill::Copy { .. }) => restore_item(control, backups, item, target, false).await?,
        (kind, _) => {
            return Err(ControlError::internal(format!(
                "no such fill of a {} service",
                kind.as_str()
            )))
        }
    };
    Ok(detail)
}

/// The kind of an item's service, or the error naming a word this server
/// does not know (a row written by a newer version).
pub(crate) fn item_kind(item: &RestorePointItemRow) -> ControlResult<ServiceKind> {
    item.kind
        .parse()
        .map_err(|e| mds_provision::ProvisionError::UnknownKind(e).into())
}

/// A one-line account of an item's record, for listings.
pub fn item_summary(item: &RestorePointItemRow) -> String {
    if let Some(reason) = item_skipped(item) {
        return format!("skipped: {reason}");
    }
    match item_kind(item) {
        Ok(ServiceKind::Postgres) => pg::summary(&item.record),
        Ok(ServiceKind::Redis) => redis::summary(&item.record),
        Ok(ServiceKind::Storage) => bucket::summary(&item.record),
        Ok(ServiceKind::Auth) => realm::summary(&item.record),
        Ok(ServiceKind::Volume) => volume::summary(&item.record),
        Err(e) => e.to_string(),
    }
}

/// Releases what an item holds outside the repository: a bucket's
/// chunks, a volume's snapshot.
async fn release_item(control: &Control, item: &RestorePointItemRow) {
    match item_kind(item) {
        Ok(ServiceKind::Storage) => bucket::release(control, item).await,
        Ok(ServiceKind::Volume) => volume::forget(control, item).await,
        Ok(ServiceKind::Postgres | ServiceKind::Redis | ServiceKind::Auth) | Err(_) => {}
    }
}

/// Deletes a point's files and holds, then its rows.
pub(crate) async fn forget_point(
    control: &Control,
    backups: &Backups,
    point: &mds_store::RestorePointRow,
) -> ControlResult<()> {
    for item in &point.items {
        release_item(control, item).await;
    }
    backups.repo.delete_under(&point_dir(&point.id)).await?;
    control.store()?.delete_restore_point(&point.id).await?;
    Ok(())
}

impl Control {
    pub fn set_backups(&self, backups: Backups) {
        let _ = self.backups.set(backups);
    }

    pub fn backups(&self) -> ControlResult<&Backups> {
        self.backups
            .get()
            .ok_or_else(|| ControlError::unavailable("backups are starting"))
    }
}

/// How often the background task looks at the WAL staging directory.
const SHIP_EVERY: Duration = Duration::from_secs(2);
/// How often it looks at schedules (points, base backups, drills, expiry).
const PLAN_EVERY: Duration = Duration::from_secs(30);

/// Starts the background work: first the clean-up of what a killed run
/// left, then WAL shipping, base backups, scheduled points, drills and
/// expiry, for as long as the server runs.
pub fn spawn(control: Control) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(backups) = control.backups() else {
            return;
        };
        clean_up_after_a_crash(&control, backups).await;
        // The first look at the schedules waits one period: a start is
        // busy enough (and a server that lives seconds needs no base
        // backup).
        let mut last_plan = tokio::time::Instant::now();
        let mut ship_error: Option<String> = None;
        loop {
            if let Some(archive) = &backups.archive {
                match archive.ship(&control, backups).await {
                    Ok(_) => ship_error = None,
                    Err(e) => {
                        let e = e.to_string();
                        if ship_error.as_ref() != Some(&e) {
                            tracing::error!(
                                error = e,
                                "shipping WAL to the backup repository failed; retrying"
                            );
                        }
                        ship_error = Some(e);
                    }
                }
            }
            if last_plan.elapsed() >= PLAN_EVERY {
                last_plan = tokio::time::Instant::now();
                plan(&control, backups).await;
            }
            tokio::time::sleep(SHIP_EVERY).await;
        }
    })
}

/// One look at every schedule.
async fn plan(control: &Control, backups: &Backups) {
    let mut problems = Vec::new();
    if let Some(archive) = &backups.archive {
        match archive.base_backup_due(control, backups).await {
            Ok(true) => {
                if let Err(e) = archive.base_backup(control, backups).await {
                    problems.push(format!("the last base backup failed: {e}"));
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "reading base backups"),
        }
        if let Err(e) = archive.retain(control, backups).await {
            tracing::warn!(error = %e, "expiring base backups and WAL");
        }
    }
    if let Err(e) = scheduled_points(control, backups).await {
        problems.push(format!("scheduled restore points: {e}"));
    }
    if let Err(e) = control.expire_restore_points(backups).await {
        tracing::warn!(error = %e, "expiring restore points");
    }
    if let Err(e) = control.run_drills(backups).await {
        tracing::warn!(error = %e, "running drills");
    }
    problems.extend(overdue(control, backups).await);
    for problem in &problems {
        tracing::error!(problem, "backups need attention");
    }
    backups.note_problems(problems);
}

async fn scheduled_points(control: &Control, backups: &Backups) -> ControlResult<()> {
    let store = control.store()?;
    let due = store
        .environments_due_for_backup(backups.settings.schedule.as_secs_f64())
        .await?;
    for env in due {
        let Some(project) = store.project(&env.tenant_id, &env.project_id).await? else {
            continue;
        };
        let Some(environment) = store.environment(&project.id, &env.environment_id).await? else {
            continue;
        };
        control
            .take_restore_point(&project, &environment, points::Reason::Schedule, None)
            .await?;
    }
    Ok(())
}

/// Environments whose newest point is older than twice the schedule,
/// and points whose last drill failed, in words.
pub async fn overdue(control: &Control, backups: &Backups) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(store) = control.store() else {
        return problems;
    };
    let twice = backups.settings.schedule.as_secs_f64() * 2.0;
    if let Ok(late) = store.environments_due_for_backup(twice).await {
        for env in late {
            problems.push(format!(
                "environment {} of project {} has no restore point newer than twice the \
                 schedule ({} s)",
                env.environment_id, env.project_id, twice
            ));
        }
    }
    if let Ok(points) = store.restore_points_in_state("complete").await {
        for point in points.iter().filter(|p| p.verification == "failed") {
            problems.push(format!(
                "restore point {} ({} of project {}) failed its drill",
                point.id, point.environment, point.project_id
            ));
        }
    }
    problems
}

/// Ends what a killed run left: points, restores and base backups it was
/// taking become `failed` and their files go; scratch databases and
/// servers are removed. Says what it did.
async fn clean_up_after_a_crash(control: &Control, backups: &Backups) {
    if let Err(e) = mds_engines::sweep_scratch(&backups.work).await {
        tracing::warn!(error = %e, "sweeping scratch servers of the last run");
    }
    if let Ok(names) = pg::sweep_scratch_databases(control).await {
        if !names.is_empty() {
            tracing::warn!(databases = ?names, "dropped scratch databases a killed run left");
        }
    }
    if let Err(e) = pg::prune_templates(control).await {
        tracing::warn!(error = %e, "could not prune the template copies of branches");
    }
    let Ok(store) = control.store() else {
        return;
    };
    match store.abandon_orphaned_backup_work().await {
        Ok(abandoned) => {
            for path in &abandoned.files {
                let _ = backups.repo.delete(path).await;
            }
            for id in &abandoned.restore_points {
                let _ = backups.repo.delete_under(&point_dir(id)).await;
                if let Ok(Some(point)) = store.restore_point(id).await {
                    for item in &point.items {
                        release_item(control, item).await;
                    }
                }
            }
            if !(abandoned.restore_points.is_empty()
                && abandoned.restores.is_empty()
                && abandoned.base_backups.is_empty())
            {
                tracing::warn!(
                    restore_points = ?abandoned.restore_points,
                    restores = ?abandoned.restores,
                    base_backups = ?abandoned.base_backups,
                    "backup work interrupted by the last stop was marked failed and its files \
                     deleted; no binding was switched to unchecked data"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "cleaning up interrupted backup work"),
    }
}

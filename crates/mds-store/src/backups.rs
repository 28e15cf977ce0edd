//! Restore points, restores, and the managed engine's archive (WAL
//! segments, base backups): migration 0021.
//!
//! Work in progress is a row in state `running` naming its server
//! incarnation; [`Store::abandon_orphaned_backup_work`] ends what a dead
//! incarnation left, so nothing half-done is ever listed as complete.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct RestorePointRow {
    pub id: String,
    pub tenant_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub environment: String,
    pub reason: String,
    pub state: String,
    pub error: Option<String>,
    pub wal_lsn: Option<String>,
    pub size_bytes: i64,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub verification: String,
    pub verified_at: Option<DateTime<Utc>>,
    pub verification_detail: Option<Value>,
    pub items: Vec<RestorePointItemRow>,
}

#[derive(Debug, Clone)]
pub struct RestorePointItemRow {
    pub id: String,
    pub restore_point_id: String,
    pub binding_id: String,
    pub service_id: String,
    pub service_name: String,
    pub kind: String,
    /// `[{"path", "size", "blake3"}]`
    pub files: Value,
    pub record: Value,
    pub size_bytes: i64,
}

pub struct NewRestorePoint<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub project_id: &'a str,
    pub environment_id: &'a str,
    pub environment: &'a str,
    pub reason: &'a str,
    pub holder: i64,
}

#[derive(Debug, Clone)]
pub struct RestoreRow {
    pub id: String,
    pub project_id: String,
    pub binding_id: String,
    pub restore_point_id: Option<String>,
    pub to_time: Option<DateTime<Utc>>,
    pub undo_point_id: Option<String>,
    pub state: String,
    pub error: Option<String>,
    pub report: Value,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct WalSegmentRow {
    pub name: String,
    pub path: String,
    pub size_bytes: i64,
    pub blake3: String,
    pub archived_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct BaseBackupRow {
    pub id: String,
    pub state: String,
    pub error: Option<String>,
    pub path: Option<String>,
    pub size_bytes: i64,
    pub blake3: Option<String>,
    pub start_wal_file: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What [`Store::abandon_orphaned_backup_work`] ended: the repository
/// files the dead work wrote, for the caller to delete.
#[derive(Debug, Default)]
pub struct Abandoned {
    pub restore_points: Vec<String>,
    pub restores: Vec<String>,
    pub base_backups: Vec<String>,
    pub files: Vec<String>,
}

const POINT_COLUMNS: &str = "id, tenant_id, project_id, environment_id, environment, reason, \
     state, error, wal_lsn, size_bytes, created_at, completed_at, expires_at, verification, \
     verified_at, verification_detail";
const ITEM_COLUMNS: &str =
    "id, restore_point_id, binding_id, service_id, service_name, kind, files, record, size_bytes";
const RESTORE_COLUMNS: &str = "id, project_id, binding_id, restore_point_id, to_time, \
     undo_point_id, state, error, report, created_at, finished_at";
const BASE_COLUMNS: &str =
    "id, state, error, path, size_bytes, blake3, start_wal_file, started_at, finished_at";

/// An incarnation that is not working any more: ended, or silent for
/// longer than a few heartbeats (the rule of the binding leases).
const HOLDER_GONE: &str = "NOT EXISTS (SELECT 1 FROM server_incarnations i
     WHERE i.id = holder AND i.ended_at IS NULL AND i.heartbeat_at > now() - interval '10 seconds')";

/// [`HOLDER_GONE`] of a holder column with another name.
pub(crate) fn holder_gone(column: &str) -> String {
    HOLDER_GONE.replace("= holder", &format!("= {column}"))
}

fn point_from_row(r: &Row) -> RestorePointRow {
    RestorePointRow {
        id: r.get(0),
        tenant_id: r.get(1),
        project_id: r.get(2),
        environment_id: r.get(3),
        environment: r.get(4),
        reason: r.get(5),
        state: r.get(6),
        error: r.get(7),
        wal_lsn: r.get(8),
        size_bytes: r.get(9),
        created_at: r.get(10),
        completed_at: r.get(11),
        expires_at: r.get(12),
        verification: r.get(13),
        verified_at: r.get(14),
        verification_detail: r.get(15),
        items: Vec::new(),
    }
}

fn item_from_row(r: &Row) -> RestorePointItemRow {
    RestorePointItemRow {
        id: r.get(0),
        restore_point_id: r.get(1),
        binding_id: r.get(2),
        service_id: r.get(3),
        service_name: r.get(4),
        kind: r.get(5),
        files: r.get(6),
        record: r.get(7),
        size_bytes: r.get(8),
    }
}

fn restore_from_row(r: &Row) -> RestoreRow {
    RestoreRow {
        id: r.get(0),
        project_id: r.get(1),
        binding_id: r.get(2),
        restore_point_id: r.get(3),
        to_time: r.get(4),
        undo_point_id: r.get(5),
        state: r.get(6),
        error: r.get(7),
        report: r.get(8),
        created_at: r.get(9),
        finished_at: r.get(10),
    }
}

fn base_from_row(r: &Row) -> BaseBackupRow {
    BaseBackupRow {
        id: r.get(0),
        state: r.get(1),
        error: r.get(2),
        path: r.get(3),
        size_bytes: r.get(4),
        blake3: r.get(5),
        start_wal_file: r.get(6),
        started_at: r.get(7),
        finished_at: r.get(8),
    }
}

/// The repository paths listed in an item's `files`.
pub fn item_paths(files: &Value) -> Vec<String> {
    files
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("path")?.as_str().map(str::to_string))
        .collect()
}

impl Store {
    pub async fn begin_restore_point(&self, new: &NewRestorePoint<'_>) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO restore_points
                     (id, tenant_id, project_id, environment_id, environment, reason, state, holder)
                 VALUES ($1, $2, $3, $4, $5, $6, 'running', $7)",
                &[
                    &new.id,
                    &new.tenant_id,
                    &new.project_id,
                    &new.environment_id,
                    &new.environment,
                    &new.reason,
                    &new.holder,
                ],
            )
            .await?;
        Ok(())
    }

    /// Records one service's part of a running point (before its files
    /// are written, so a crash still finds them to delete).
    pub async fn add_restore_point_item(&self, item: &RestorePointItemRow) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO restore_point_items
                     (id, restore_point_id, binding_id, service_id, service_name, kind, files,
                      record, size_bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &item.id,
                    &item.restore_point_id,
                    &item.binding_id,
                    &item.service_id,
                    &item.service_name,
                    &item.kind,
                    &item.files,
                    &item.record,
                    &item.size_bytes,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn update_restore_point_item(
        &self,
        id: &str,
        files: &Value,
        record: &Value,
        size_bytes: i64,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE restore_point_items SET files = $2, record = $3, size_bytes = $4
                 WHERE id = $1",
                &[&id, files, record, &size_bytes],
            )
            .await?;
        Ok(())
    }

    /// Marks a running point complete; false if it was no longer running
    /// (abandoned by a start that thought its holder dead).
    pub async fn complete_restore_point(
        &self,
        id: &str,
        wal_lsn: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE restore_points SET state = 'complete', completed_at = now(),
                     wal_lsn = $2, expires_at = $3,
                     size_bytes = (SELECT coalesce(sum(size_bytes), 0)::bigint
                                   FROM restore_point_items WHERE restore_point_id = $1)
                 WHERE id = $1 AND state = 'running'",
                &[&id, &wal_lsn, &expires_at],
            )
            .await?
            > 0)
    }

    pub async fn fail_restore_point(&self, id: &str, error: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE restore_points SET state = 'failed', error = $2, completed_at = now()
                 WHERE id = $1",
                &[&id, &error],
            )
            .await?;
        Ok(())
    }

    async fn with_items(&self, mut points: Vec<RestorePointRow>) -> Result<Vec<RestorePointRow>> {
        if points.is_empty() {
            return Ok(points);
        }
        let ids: Vec<&str> = points.iter().map(|p| p.id.as_str()).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM restore_point_items
                     WHERE restore_point_id = ANY($1) ORDER BY service_name, id"
                ),
                &[&ids],
            )
            .await?;
        for row in &rows {
            let item = item_from_row(row);
            if let Some(point) = points.iter_mut().find(|p| p.id == item.restore_point_id) {
                point.items.push(item);
            }
        }
        Ok(points)
    }

    /// A project's points, newest first; of one environment if given.
    pub async fn restore_points(
        &self,
        project_id: &str,
        environment_id: Option<&str>,
    ) -> Result<Vec<RestorePointRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {POINT_COLUMNS} FROM restore_points
                     WHERE project_id = $1 AND ($2::text IS NULL OR environment_id = $2)
                     ORDER BY created_at DESC, id DESC"
                ),
                &[&project_id, &environment_id],
            )
            .await?;
        self.with_items(rows.iter().map(point_from_row).collect())
            .await
    }

    /// Of the items `ids`, those whose point is still complete: (item id,
    /// its binding, when its point was taken). Which template copies of
    /// dumps are still worth keeping.
    pub async fn live_items(&self, ids: &[String]) -> Result<Vec<(String, String, DateTime<Utc>)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT i.id, i.binding_id, p.created_at FROM restore_point_items i
                 JOIN restore_points p ON p.id = i.restore_point_id
                 WHERE i.id = ANY($1) AND p.state = 'complete'",
                &[&ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Every point in a state, oldest first (drills, retention, metrics).
    pub async fn restore_points_in_state(&self, state: &str) -> Result<Vec<RestorePointRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {POINT_COLUMNS} FROM restore_points WHERE state = $1
                     ORDER BY created_at, id"
                ),
                &[&state],
            )
            .await?;
        self.with_items(rows.iter().map(point_from_row).collect())
            .await
    }

    pub async fn restore_point(&self, id: &str) -> Result<Option<RestorePointRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {POINT_COLUMNS} FROM restore_points WHERE id = $1"),
                &[&id],
            )
            .await?;
        let points = self
            .with_items(row.iter().map(point_from_row).collect())
            .await?;
        Ok(points.into_iter().next())
    }

    pub async fn set_restore_point_verification(
        &self,
        id: &str,
        verdict: &str,
        detail: &Value,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE restore_points SET verification = $2, verified_at = now(),
                     verification_detail = $3
                 WHERE id = $1",
                &[&id, &verdict, detail],
            )
            .await?;
        Ok(())
    }

    pub async fn delete_restore_point(&self, id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM restore_points WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    /// Complete points past their expiry.
    pub async fn expired_restore_points(&self) -> Result<Vec<RestorePointRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {POINT_COLUMNS} FROM restore_points
                     WHERE state <> 'running' AND expires_at IS NOT NULL AND expires_at < now()
                     ORDER BY created_at"
                ),
                &[],
            )
            .await?;
        self.with_items(rows.iter().map(point_from_row).collect())
            .await
    }

    /// The newest complete point of every environment that has one:
    /// (environment_id, completed_at). Scheduling reads it.
    pub async fn last_restore_points(&self) -> Result<Vec<(String, String, DateTime<Utc>)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT project_id, environment_id, max(completed_at) FROM restore_points
                 WHERE state = 'complete' GROUP BY project_id, environment_id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Starts a restore of `binding_id`, or `Conflict` if one is running.
    pub async fn begin_restore(
        &self,
        id: &str,
        project_id: &str,
        binding_id: &str,
        restore_point_id: Option<&str>,
        to_time: Option<DateTime<Utc>>,
        holder: i64,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO restores
                     (id, project_id, binding_id, restore_point_id, to_time, state, holder)
                 VALUES ($1, $2, $3, $4, $5, 'running', $6)",
                &[
                    &id,
                    &project_id,
                    &binding_id,
                    &restore_point_id,
                    &to_time,
                    &holder,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn set_restore_undo(&self, id: &str, undo_point_id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE restores SET undo_point_id = $2 WHERE id = $1",
                &[&id, &undo_point_id],
            )
            .await?;
        Ok(())
    }

    pub async fn finish_restore(
        &self,
        id: &str,
        error: Option<&str>,
        report: &Value,
    ) -> Result<RestoreRow> {
        let client = self.client().await?;
        let state = if error.is_some() {
            "failed"
        } else {
            "complete"
        };
        let row = client
            .query_opt(
                &format!(
                    "UPDATE restores SET state = $2, error = $3, report = $4, finished_at = now()
                     WHERE id = $1 RETURNING {RESTORE_COLUMNS}"
                ),
                &[&id, &state, &error, report],
            )
            .await?
            .ok_or_else(|| StoreError::Config(format!("restore {id} is gone")))?;
        Ok(restore_from_row(&row))
    }

    pub async fn restores(&self, project_id: &str) -> Result<Vec<RestoreRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {RESTORE_COLUMNS} FROM restores WHERE project_id = $1
                     ORDER BY created_at DESC LIMIT 100"
                ),
                &[&project_id],
            )
            .await?;
        Ok(rows.iter().map(restore_from_row).collect())
    }

    /// Ends the work of incarnations that are gone: their running points,
    /// restores and base backups become `failed`, and the repository
    /// files they listed are returned for deletion.
    pub async fn abandon_orphaned_backup_work(&self) -> Result<Abandoned> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let why = "interrupted: the server doing it stopped; nothing of it was used";
        let points: Vec<String> = tx
            .query(
                &format!(
                    "UPDATE restore_points SET state = 'failed', error = $1, completed_at = now()
                     WHERE state = 'running' AND {HOLDER_GONE} RETURNING id"
                ),
                &[&why],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut files = Vec::new();
        for row in tx
            .query(
                "SELECT files FROM restore_point_items WHERE restore_point_id = ANY($1)",
                &[&points],
            )
            .await?
        {
            files.extend(item_paths(&row.get(0)));
        }
        let restores: Vec<String> = tx
            .query(
                &format!(
                    "UPDATE restores SET state = 'failed', error = $1, finished_at = now()
                     WHERE state = 'running' AND {HOLDER_GONE} RETURNING id"
                ),
                &[&why],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let bases = tx
            .query(
                &format!(
                    "UPDATE base_backups SET state = 'failed', error = $1, finished_at = now()
                     WHERE state = 'running' AND {HOLDER_GONE} RETURNING id, path"
                ),
                &[&why],
            )
            .await?;
        let base_backups = bases.iter().map(|r| r.get(0)).collect();
        files.extend(bases.iter().filter_map(|r| r.get::<_, Option<String>>(1)));
        tx.commit().await?;
        Ok(Abandoned {
            restore_points: points,
            restores,
            base_backups,
            files,
        })
    }

    pub async fn record_wal_segment(
        &self,
        name: &str,
        path: &str,
        size_bytes: i64,
        blake3: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO wal_segments (name, path, size_bytes, blake3) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET path = EXCLUDED.path,
                     size_bytes = EXCLUDED.size_bytes, blake3 = EXCLUDED.blake3",
                &[&name, &path, &size_bytes, &blake3],
            )
            .await?;
        Ok(())
    }

    /// Archived segments, in WAL order.
    pub async fn wal_segments(&self) -> Result<Vec<WalSegmentRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, path, size_bytes, blake3, archived_at FROM wal_segments
                 ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| WalSegmentRow {
                name: r.get(0),
                path: r.get(1),
                size_bytes: r.get(2),
                blake3: r.get(3),
                archived_at: r.get(4),
            })
            .collect())
    }

    pub async fn delete_wal_segment(&self, name: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM wal_segments WHERE name = $1", &[&name])
            .await?;
        Ok(())
    }

    pub async fn begin_base_backup(&self, id: &str, path: &str, holder: i64) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO base_backups (id, state, path, holder) VALUES ($1, 'running', $2, $3)",
                &[&id, &path, &holder],
            )
            .await?;
        Ok(())
    }

    pub async fn complete_base_backup(
        &self,
        id: &str,
        size_bytes: i64,
        blake3: &str,
        start_wal_file: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE base_backups SET state = 'complete', size_bytes = $2, blake3 = $3,
                     start_wal_file = $4, finished_at = now()
                 WHERE id = $1",
                &[&id, &size_bytes, &blake3, &start_wal_file],
            )
            .await?;
        Ok(())
    }

    pub async fn fail_base_backup(&self, id: &str, error: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE base_backups SET state = 'failed', error = $2, finished_at = now()
                 WHERE id = $1",
                &[&id, &error],
            )
            .await?;
        Ok(())
    }

    /// Base backups, oldest first.
    pub async fn base_backups(&self) -> Result<Vec<BaseBackupRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {BASE_COLUMNS} FROM base_backups ORDER BY started_at, id"),
                &[],
            )
            .await?;
        Ok(rows.iter().map(base_from_row).collect())
    }

    pub async fn delete_base_backup(&self, id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM base_backups WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    /// An environment's own retention in days, if it set one.
    pub async fn environment_backup_retention(&self, environment_id: &str) -> Result<Option<i32>> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT backup_retention_days FROM environments WHERE id = $1",
                &[&environment_id],
            )
            .await?
            .and_then(|r| r.get(0)))
    }

    pub async fn set_environment_backup_retention(
        &self,
        environment_id: &str,
        days: Option<i32>,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE environments SET backup_retention_days = $2 WHERE id = $1",
                &[&environment_id, &days],
            )
            .await?;
        Ok(())
    }
}

/// An environment whose scheduled restore point is due.
#[derive(Debug, Clone)]
pub struct DueEnvironment {
    pub tenant_id: String,
    pub project_id: String,
    pub environment_id: String,
}

impl Store {
    /// Environments with running bindings whose newest complete point (or,
    /// without one, whose oldest running binding) is older than
    /// `every_secs`.
    pub async fn environments_due_for_backup(
        &self,
        every_secs: f64,
    ) -> Result<Vec<DueEnvironment>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT p.tenant_id, p.id, e.id
                 FROM environments e JOIN projects p ON p.id = e.project_id
                 WHERE EXISTS (SELECT 1 FROM bindings b JOIN data_services s ON s.id = b.service_id
                               WHERE b.environment_id = e.id AND b.state = 'running'
                                 AND NOT s.deleting)
                   AND coalesce(
                         (SELECT max(completed_at) FROM restore_points r
                           WHERE r.environment_id = e.id AND r.state = 'complete'),
                         (SELECT min(b.ready_at) FROM bindings b WHERE b.environment_id = e.id))
                       < now() - make_interval(secs => $1)",
                &[&every_secs],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DueEnvironment {
                tenant_id: r.get(0),
                project_id: r.get(1),
                environment_id: r.get(2),
            })
            .collect())
    }
}

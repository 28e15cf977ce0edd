//! Restore points, restores and the backup overview
//! (`/projects/{p}/backups`, `/projects/{p}/environments/{e}/restore-points`,
//! `/projects/{p}/environments/{e}/restores`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{time, Timestamp};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestorePoint {
    pub id: String,
    pub project_id: String,
    pub environment_id: String,
    pub environment: String,
    /// `manual`, `schedule`, `before-delete`, `before-purge` or `before-restore`
    pub reason: String,
    /// `running`, `complete` or `failed`
    pub state: String,
    pub error: Option<String>,
    /// Stored bytes in the repository (encrypted; a bucket's objects are
    /// held, not copied, and count nothing).
    pub size_bytes: i64,
    /// The managed engine's WAL position when its databases were captured.
    pub wal_lsn: Option<String>,
    pub services: Vec<RestorePointService>,
    pub verification: Verification,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize_option")]
    pub completed_at: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestorePointService {
    pub name: String,
    pub kind: String,
    pub binding_id: String,
    pub size_bytes: i64,
    /// Repository files of this service's part.
    pub files: usize,
    /// What was recorded of it (tables and rows, keys, objects, users).
    pub summary: String,
    /// Why nothing was captured for it, if so.
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    /// `unverified`, `passed` or `failed`
    pub state: String,
    #[serde(serialize_with = "time::serialize_option")]
    pub verified_at: Option<Timestamp>,
    pub detail: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub restore_point: Option<String>,
    /// RFC 3339: Postgres to that moment (point-in-time recovery), other
    /// services from the newest restore point at or before it.
    pub to_time: Option<String>,
    /// One service by name; all of the point's services when absent.
    pub service: Option<String>,
    /// Another environment of the project to restore a copy into.
    pub into: Option<String>,
    /// Must be true: a restore replaces live data (which becomes a
    /// restore point of its own first).
    pub confirm: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreResult {
    pub id: String,
    pub environment: String,
    pub restored: Vec<RestoredService>,
    /// Services the restore did not touch, and why.
    pub not_restored: Vec<NotRestored>,
    /// The restore point holding the data this restore replaced: restore
    /// it to undo this one.
    pub undo_restore_point: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoredService {
    pub name: String,
    pub kind: String,
    /// The restore point, or `pitr:<time>` for a point-in-time recovery.
    pub from: String,
    /// What the switch ended: Postgres connections, Redis clients,
    /// auth sessions.
    pub terminated: u64,
    /// What was checked before the switch, in words.
    pub checked: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotRestored {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupOverview {
    pub repository: RepositoryStatus,
    pub pitr: PitrStatus,
    pub environments: Vec<EnvironmentBackups>,
    /// Failing drills and overdue backups, in words; empty when all is well.
    pub errors: Vec<String>,
    pub restore_points: Vec<RestorePoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepositoryStatus {
    pub location: String,
    pub same_disk_as_data: bool,
    /// Said plainly when the copy does not survive the data disk.
    pub warning: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PitrStatus {
    pub enabled: bool,
    /// The earliest and latest moments `--to-time` reaches now.
    #[serde(serialize_with = "time::serialize_option")]
    pub window_start: Option<Timestamp>,
    #[serde(serialize_with = "time::serialize_option")]
    pub window_end: Option<Timestamp>,
    /// Why not, or what it covers.
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentBackups {
    pub environment: String,
    #[serde(serialize_with = "time::serialize_option")]
    pub last_success_at: Option<Timestamp>,
    /// Older than twice the schedule.
    pub overdue: bool,
    pub retention_days: i32,
    pub restore_points: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPatch {
    /// Days this environment keeps its restore points; null: the server's default.
    pub retention_days: Option<i32>,
}

/// `POST /projects/{p}/environments/{e}/credentials/rotate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// One data service by name; every one of the environment when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// How long the replaced credentials keep working (`10m`, the
    /// default; from 1s to 7d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationResult {
    pub environment: String,
    pub rotated: Vec<RotatedService>,
    /// Services whose credentials did not change, and why.
    pub not_rotated: Vec<NotRestored>,
    /// Deployments whose instances were replaced, one at a time, to boot
    /// with the new credentials.
    pub restarted: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotatedService {
    pub name: String,
    pub kind: String,
    /// The user the new credentials log in as.
    pub user: String,
    /// Until when the replaced credentials work.
    #[serde(serialize_with = "time::serialize")]
    pub previous_valid_until: Timestamp,
}

/// `PUT /projects/{p}/environments/{e}/credentials/schedule`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationSchedule {
    /// Rotate every this long (`90d`; 1h to 365d); null: never.
    #[serde(default)]
    pub rotate_every: Option<String>,
    /// The grace period of each scheduled rotation (`10m` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
}

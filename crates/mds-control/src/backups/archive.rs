//! The managed engine's continuous archive: WAL segments shipped from the
//! engine's staging directory into the repository (zstd, then sealed),
//! base backups on a schedule, the point-in-time window they make, and
//! recovery of the whole cluster to a moment in a scratch instance (from
//! which a restore takes one database; the engine itself, and every other
//! tenant on it, is never touched).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mds_core::ids::IdKind;
use mds_engines::pg_archive::{self, RecoveryTarget, ScratchPostgres};
use mds_engines::{OsUser, PostgresBinaries};
use mds_store::{BaseBackupRow, WalSegmentRow};
use tokio::io::AsyncWriteExt;
use tokio_postgres::Config;

use super::repository::FileEntry;
use super::Backups;
use crate::{Control, ControlError, ControlResult};

/// What archiving needs of the managed engine.
pub struct Archive {
    /// Where the engine's `archive_command` leaves finished segments.
    pub staging: PathBuf,
    pub binaries: PostgresBinaries,
    pub os_user: Option<OsUser>,
    pub admin: Config,
    pub password: String,
    /// One shipper at a time: a restore's flush ships while the
    /// background loop does, and two puts of one segment (each sealed
    /// with its own nonce) would leave the file of one and the recorded
    /// BLAKE3 of the other.
    pub shipping: tokio::sync::Mutex<()>,
}

fn failed(code: &'static str, message: impl Into<String>) -> ControlError {
    ControlError::Failed {
        code,
        message: message.into(),
        details: None,
    }
}

/// Whether a staged file is one postgres finished archiving: a segment
/// (24 hex digits), a timeline history or a backup label.
fn is_archive_file(name: &str) -> bool {
    let hex24 = |s: &str| s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex24(name)
        || name.ends_with(".history")
        || (name.ends_with(".backup") && name.len() > 24 && hex24(&name[..24]))
}

/// The segment after `name` (16 MiB segments: 256 per log id), same
/// timeline.
fn next_segment(name: &str) -> Option<String> {
    let tli = u32::from_str_radix(name.get(0..8)?, 16).ok()?;
    let log = u32::from_str_radix(name.get(8..16)?, 16).ok()?;
    let seg = u32::from_str_radix(name.get(16..24)?, 16).ok()?;
    let (log, seg) = if seg >= 0xFF {
        (log.checked_add(1)?, 0)
    } else {
        (log, seg + 1)
    };
    Some(format!("{tli:08X}{log:08X}{seg:08X}"))
}

impl Archive {
    pub async fn current_lsn(&self) -> Result<String, String> {
        pg_archive::current_wal_lsn(&self.admin)
            .await
            .map_err(|e| e.to_string())
    }

    /// Moves every finished segment from staging into the repository;
    /// returns how many.
    pub async fn ship(&self, control: &Control, backups: &Backups) -> ControlResult<usize> {
        let _shipping = self.shipping.lock().await;
        let store = control.store()?;
        let mut names: Vec<String> = std::fs::read_dir(&self.staging)
            .map_err(|e| {
                failed(
                    "WAL_ARCHIVE_FAILED",
                    format!("reading the WAL staging: {e}"),
                )
            })?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| is_archive_file(n))
            .collect();
        names.sort();
        for name in &names {
            let staged = self.staging.join(name);
            let data = tokio::fs::read(&staged)
                .await
                .map_err(|e| failed("WAL_ARCHIVE_FAILED", format!("reading {name}: {e}")))?;
            let compressed = tokio::task::spawn_blocking(move || zstd::bulk::compress(&data, 1))
                .await
                .map_err(|e| ControlError::internal(e.to_string()))?
                .map_err(|e| failed("WAL_ARCHIVE_FAILED", format!("compressing {name}: {e}")))?;
            let entry = backups
                .repo
                .put(&format!("wal/{name}.zst"), &compressed)
                .await?;
            store
                .record_wal_segment(name, &entry.path, entry.size as i64, &entry.blake3)
                .await?;
            // Only once the repository has it and the row says so.
            let _ = tokio::fs::remove_file(&staged).await;
        }
        Ok(names.len())
    }

    /// Forces the current segment out and waits until it is in the
    /// repository: from then on every moment up to now is reachable.
    pub async fn flush(&self, control: &Control, backups: &Backups) -> ControlResult<()> {
        let segment = pg_archive::switch_wal(&self.admin)
            .await
            .map_err(|e| failed("WAL_ARCHIVE_FAILED", format!("switching WAL: {e}")))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.ship(control, backups).await?;
            let shipped = control
                .store()?
                .wal_segments()
                .await?
                .iter()
                .any(|s| s.name >= segment);
            if shipped {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(failed(
                    "WAL_ARCHIVE_FAILED",
                    format!("WAL segment {segment} was not archived within 30 s"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes a base backup into the repository.
    pub async fn base_backup(
        &self,
        control: &Control,
        backups: &Backups,
    ) -> ControlResult<BaseBackupRow> {
        let store = control.store()?;
        let holder = control
            .reconciler()?
            .incarnation()
            .await
            .map_err(|e| ControlError::internal(e.to_string()))?;
        let id = IdKind::BaseBackup.mint();
        let path = format!("base/{id}.tar");
        store.begin_base_backup(&id, &path, holder).await?;
        let mut writer = backups.repo.create(&path).await?;
        let taken = pg_archive::base_backup(&self.binaries, &self.admin, &mut writer).await;
        let flushed = writer.flush().await;
        let outcome = match (taken, flushed) {
            (Ok(info), Ok(())) => match writer.finish().await {
                Ok(entry) => Ok((info, entry)),
                Err(e) => Err(e.to_string()),
            },
            (Err(e), _) => {
                writer.abort().await;
                Err(e.to_string())
            }
            (_, Err(e)) => {
                writer.abort().await;
                Err(e.to_string())
            }
        };
        match outcome {
            Ok((info, entry)) => {
                store
                    .complete_base_backup(
                        &id,
                        entry.size as i64,
                        &entry.blake3,
                        &info.start_wal_file,
                    )
                    .await?;
                tracing::info!(
                    base_backup = id,
                    bytes = entry.size,
                    start = info.start_wal_file,
                    "took a base backup"
                );
            }
            Err(e) => {
                store.fail_base_backup(&id, &e).await?;
                tracing::error!(base_backup = id, error = e, "a base backup failed");
                return Err(failed(
                    "BASE_BACKUP_FAILED",
                    format!("the base backup failed: {e}"),
                ));
            }
        }
        store
            .base_backups()
            .await?
            .into_iter()
            .find(|b| b.id == id)
            .ok_or_else(|| ControlError::internal("a base backup vanished"))
    }

    /// The moments `--to-time` can reach: from the end of the oldest
    /// complete base backup within the window to the newest archived
    /// segment.
    pub async fn window(
        &self,
        control: &Control,
        backups: &Backups,
    ) -> ControlResult<Option<(DateTime<Utc>, DateTime<Utc>)>> {
        let store = control.store()?;
        let horizon = horizon(backups);
        let bases = store.base_backups().await?;
        let start = anchor(&bases, horizon)
            .and_then(|b| b.finished_at)
            .map(|t| t.max(horizon));
        let end = store
            .wal_segments()
            .await?
            .iter()
            .map(|s| s.archived_at)
            .max();
        Ok(match (start, end) {
            (Some(start), Some(end)) if end > start => Some((start, end)),
            _ => None,
        })
    }

    /// Recovers the cluster as it was at `at` into a scratch instance.
    pub async fn recover(
        &self,
        control: &Control,
        backups: &Backups,
        at: DateTime<Utc>,
    ) -> ControlResult<ScratchPostgres> {
        let store = control.store()?;
        let base = store
            .base_backups()
            .await?
            .into_iter()
            .rfind(|b| b.state == "complete" && b.finished_at.is_some_and(|f| f <= at))
            .ok_or_else(|| {
                failed(
                    "PITR_UNAVAILABLE",
                    format!("no base backup finished before {at}"),
                )
            })?;
        let start = base
            .start_wal_file
            .clone()
            .ok_or_else(|| ControlError::internal("a base backup without its start segment"))?;
        let dir = backups
            .scratch("pitr")
            .map_err(|e| ControlError::internal(format!("scratch space: {e}")))?;
        let wal_dir = dir.join("wal");
        let cluster = dir.join("cluster");
        tokio::fs::create_dir_all(&wal_dir)
            .await
            .map_err(|e| ControlError::internal(format!("scratch space: {e}")))?;
        // Every segment from the backup's start, opened and checked.
        let needed: Vec<WalSegmentRow> = store
            .wal_segments()
            .await?
            .into_iter()
            .filter(|s| s.name[..] >= start[..])
            .collect();
        for segment in &needed {
            let compressed = backups.repo.get(&segment_entry(segment)).await?;
            let data =
                tokio::task::spawn_blocking(move || zstd::stream::decode_all(&compressed[..]))
                    .await
                    .map_err(|e| ControlError::internal(e.to_string()))?
                    .map_err(|e| {
                        failed(
                            "BACKUP_DAMAGED",
                            format!("WAL segment {}: {e}", segment.name),
                        )
                    })?;
            tokio::fs::write(wal_dir.join(&segment.name), data)
                .await
                .map_err(|e| ControlError::internal(format!("scratch space: {e}")))?;
        }
        let entry = FileEntry {
            path: base.path.clone().unwrap_or_default(),
            size: base.size_bytes as u64,
            blake3: base.blake3.clone().unwrap_or_default(),
        };
        backups.repo.check(&entry).await?;
        let reader = backups.repo.open(&entry).await?;
        let scratch = pg_archive::ScratchPostgres::recover(
            &self.binaries,
            self.os_user.as_ref(),
            &cluster,
            reader,
            &wal_dir,
            RecoveryTarget::Time(at),
            &self.password,
        )
        .await
        .map_err(|e| failed("PITR_FAILED", format!("recovering to {at}: {e}")));
        // The segments were copied into the recovered cluster as it
        // replayed them.
        let cleanup = if scratch.is_ok() { wal_dir } else { dir };
        let _ = tokio::fs::remove_dir_all(&cleanup).await;
        scratch
    }

    /// Checks that every segment from the oldest base backup's start to the
    /// newest is in the archive, and that each reads back as written.
    pub async fn check_continuity(
        &self,
        control: &Control,
        backups: &Backups,
    ) -> Result<String, String> {
        let store = control.store().map_err(|e| e.to_string())?;
        let bases = store.base_backups().await.map_err(|e| e.to_string())?;
        let Some(start) = anchor(&bases, horizon(backups)).and_then(|b| b.start_wal_file.clone())
        else {
            // Not a damaged archive: the window opens with the first base
            // backup (a failing one is reported by the schedule).
            return Ok(
                "no base backup has finished yet: the point-in-time window is not open".to_string(),
            );
        };
        let segments: Vec<WalSegmentRow> = store
            .wal_segments()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|s| s.name.len() == 24 && s.name[..] >= start[..])
            .collect();
        let mut expected = start.clone();
        for segment in &segments {
            if segment.name != expected {
                return Err(format!(
                    "the WAL archive has a gap: {expected} is missing (next archived: {})",
                    segment.name
                ));
            }
            backups
                .repo
                .check(&segment_entry(segment))
                .await
                .map_err(|e| e.to_string())?;
            expected = next_segment(&segment.name).unwrap_or_default();
        }
        Ok(format!(
            "{} WAL segments from {start}, continuous and intact",
            segments.len()
        ))
    }

    /// Drops base backups past retention (always keeping the newest) and
    /// the segments before the window's base backup (see [`anchor`]).
    pub async fn retain(&self, control: &Control, backups: &Backups) -> ControlResult<()> {
        let store = control.store()?;
        let cutoff = Utc::now()
            - chrono::Duration::from_std(backups.settings.base_retention).unwrap_or_default();
        let bases = store.base_backups().await?;
        let newest_complete = bases
            .iter()
            .filter(|b| b.state == "complete")
            .map(|b| b.id.clone())
            .next_back();
        for base in &bases {
            let old = base.started_at < cutoff || base.state == "failed";
            if old && Some(&base.id) != newest_complete.as_ref() {
                if let Some(path) = &base.path {
                    backups.repo.delete(path).await?;
                }
                store.delete_base_backup(&base.id).await?;
            }
        }
        let kept = store.base_backups().await?;
        let oldest_start = anchor(&kept, horizon(backups)).and_then(|b| b.start_wal_file.clone());
        if let Some(oldest) = oldest_start {
            for segment in store.wal_segments().await? {
                if segment.name.len() >= 24 && segment.name[..24] < oldest[..] {
                    backups.repo.delete(&segment.path).await?;
                    store.delete_wal_segment(&segment.name).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether a base backup is due (none yet, or the newest is older
    /// than the schedule).
    pub async fn base_backup_due(
        &self,
        control: &Control,
        backups: &Backups,
    ) -> ControlResult<bool> {
        let every =
            chrono::Duration::from_std(backups.settings.base_backup_every).unwrap_or_default();
        let newest = control
            .store()?
            .base_backups()
            .await?
            .iter()
            .filter(|b| b.state == "complete")
            .filter_map(|b| b.finished_at)
            .max();
        Ok(newest.is_none_or(|t| t < Utc::now() - every))
    }
}

/// The base backup the point-in-time window starts from: the newest
/// complete one that finished before the window's far end (so every
/// moment of the window is reachable from it), else the oldest complete
/// one. WAL before its start is needed by nothing: an older base backup
/// carries the WAL of its own consistency (`-X fetch`).
fn anchor(bases: &[BaseBackupRow], horizon: DateTime<Utc>) -> Option<&BaseBackupRow> {
    let complete = || bases.iter().filter(|b| b.state == "complete");
    complete()
        .filter(|b| b.finished_at.is_some_and(|f| f <= horizon))
        .max_by_key(|b| b.finished_at)
        .or_else(|| complete().min_by_key(|b| b.finished_at))
}

fn horizon(backups: &Backups) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(backups.settings.pitr_window).unwrap_or_default()
}

fn segment_entry(segment: &WalSegmentRow) -> FileEntry {
    FileEntry {
        path: segment.path.clone(),
        size: segment.size_bytes as u64,
        blake3: segment.blake3.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(id: &str, state: &str, days_ago: i64) -> BaseBackupRow {
        let at = Utc::now() - chrono::Duration::days(days_ago);
        BaseBackupRow {
            id: id.to_string(),
            state: state.to_string(),
            error: None,
            path: None,
            size_bytes: 0,
            blake3: None,
            start_wal_file: Some(format!("00000001000000000000{:04X}", 100 - days_ago)),
            started_at: at,
            finished_at: Some(at),
        }
    }

    #[test]
    fn the_window_starts_from_the_newest_base_backup_before_its_far_end() {
        let horizon = Utc::now() - chrono::Duration::days(7);
        let bases = [
            base("b30", "complete", 30),
            base("b9", "complete", 9),
            base("b8", "failed", 8),
            base("b2", "complete", 2),
        ];
        // Older base backups stay restorable on their own; their WAL goes.
        assert_eq!(anchor(&bases, horizon).map(|b| b.id.as_str()), Some("b9"));
        // A young server: the oldest it has.
        let young = [base("b2", "complete", 2), base("b1", "complete", 1)];
        assert_eq!(anchor(&young, horizon).map(|b| b.id.as_str()), Some("b2"));
        assert!(anchor(&[base("x", "failed", 1)], horizon).is_none());
    }

    #[test]
    fn segments_follow_each_other_across_log_ids() {
        assert_eq!(
            next_segment("000000010000000000000001").as_deref(),
            Some("000000010000000000000002")
        );
        assert_eq!(
            next_segment("0000000100000000000000FF").as_deref(),
            Some("000000010000000100000000")
        );
        assert!(is_archive_file("000000010000000000000001"));
        assert!(is_archive_file("00000002.history"));
        assert!(is_archive_file("000000010000000000000002.00000028.backup"));
        assert!(!is_archive_file("000000010000000000000001.partial"));
    }
}

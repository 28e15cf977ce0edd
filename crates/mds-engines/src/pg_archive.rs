//! Point-in-time recovery of the managed PostgreSQL, engine side: WAL
//! archiving into a staging directory, base backups as one tar stream,
//! and recovery of a base backup plus archived WAL into a throwaway
//! scratch server.
//!
//! - **Archiving** ([`Archiving`], via
//!   [`crate::ManagedPostgres::start_with_options`]): the server copies
//!   each finished WAL segment to `<staging>/<name>` (durably, atomically:
//!   see [`archive_command`]). Moving segments on from there is the
//!   caller's job.
//! - **Base backup** ([`base_backup`]): `pg_basebackup` in tar format to
//!   stdout, with the WAL needed for consistency inside (`-X fetch`).
//! - **Recovery** ([`ScratchPostgres::recover`]): the tar unpacked into a
//!   fresh directory, started on a free loopback port with
//!   `recovery.signal` and a `restore_command` reading a directory of
//!   segments, and handed over once promoted.
//!
//! Every setting is given as `-c` on the command line, never written into
//! the data dir: a base backup of an archiving server thus carries no
//! `archive_command`, and a scratch server archives nothing.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;
use zeroize::Zeroizing;

use crate::postgres::{admin_config, as_user};
use crate::process::{kill_and_wait, kill_tree, processes_in, signal, tail, wait_gone};
use crate::{free_port, EngineError, OsUser, PostgresBinaries};

/// How long a fast stop of a scratch server may take before it is killed.
const SCRATCH_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long killed scratch processes get to go.
const SWEEP_WAIT: Duration = Duration::from_secs(5);
/// The longest a recovery may replay before it is given up. Generous: the
/// time is replay of the archived WAL, which can be large.
const RECOVERY_LIMIT: Duration = Duration::from_secs(4 * 3600);

/// WAL archiving of the managed engine into a local staging directory.
#[derive(Debug, Clone)]
pub struct Archiving {
    /// Where finished segments (`000000010000000000000003`), timeline
    /// histories (`*.history`) and backup histories (`*.backup`) appear.
    /// Created if missing, owned by the engine's OS user, mode 0700.
    /// Files being written there end in `.partial`.
    pub staging: PathBuf,
    /// `archive_timeout`: a segment holding any write is finished (and so
    /// archived) at the latest this many seconds later, which bounds what
    /// a lost server loses. 0 turns the timeout off.
    pub timeout_secs: u32,
}

/// The `-c` settings that turn archiving on, after making the staging
/// directory ready for the user postgres runs as.
pub(crate) fn archive_settings(
    archiving: &Archiving,
    os_user: Option<&OsUser>,
) -> Result<Vec<String>, EngineError> {
    let staging = &archiving.staging;
    fs::create_dir_all(staging).map_err(EngineError::io(format!(
        "create the WAL staging dir {}",
        staging.display()
    )))?;
    if let Some(user) = os_user {
        user.chown(staging)?;
        user.check_can_enter(staging)?;
    }
    fs::set_permissions(staging, fs::Permissions::from_mode(0o700))
        .map_err(EngineError::io(format!("chmod {}", staging.display())))?;
    Ok(vec![
        "archive_mode=on".to_string(),
        format!("archive_timeout={}", archiving.timeout_secs),
        format!("archive_command={}", archive_command(staging)?),
    ])
}

/// The `archive_command` the engine runs (`%p`: the segment's path
/// relative to the data dir, `%f`: its name): copies to
/// `<staging>/%f.partial`, fsyncs it, renames it to `<staging>/%f` and
/// fsyncs the directory, so `<staging>/%f` is only ever complete. When
/// `<staging>/%f` exists already (postgres retries an archiving whose
/// success it did not record), it succeeds if the content is identical
/// and fails if not: a segment is never overwritten.
pub fn archive_command(staging: &Path) -> Result<String, EngineError> {
    let dir = command_quote(staging)?;
    Ok(format!(
        "f=%f; d={dir}; if [ -e \"$d/$f\" ]; then cmp -s %p \"$d/$f\"; \
         else cp %p \"$d/$f.partial\" && sync \"$d/$f.partial\" \
         && mv -f \"$d/$f.partial\" \"$d/$f\" && sync \"$d\"; fi"
    ))
}

/// `path` as one word for `/bin/sh`, inside a command in which postgres
/// replaces `%` sequences (`archive_command`, `restore_command`).
fn command_quote(path: &Path) -> Result<String, EngineError> {
    let text = path.to_str().ok_or_else(|| {
        EngineError::Other(format!(
            "{} is not UTF-8; postgres commands cannot name it",
            path.display()
        ))
    })?;
    Ok(format!("'{}'", text.replace('\'', "'\\''")).replace('%', "%%"))
}

/// Finishes the current WAL segment (`pg_switch_wal()`) and returns its
/// name: the segment archiving delivers next. With nothing written since
/// the last switch no new segment is begun, and the name is that of the
/// last finished one (archived already, or about to be).
pub async fn switch_wal(admin: &tokio_postgres::Config) -> Result<String, EngineError> {
    query_text(admin, "SELECT pg_walfile_name(pg_switch_wal())").await
}

/// The current write position (`pg_current_wal_lsn()`, `0/3000148`).
pub async fn current_wal_lsn(admin: &tokio_postgres::Config) -> Result<String, EngineError> {
    query_text(admin, "SELECT pg_current_wal_lsn()::text").await
}

async fn query_text(admin: &tokio_postgres::Config, sql: &str) -> Result<String, EngineError> {
    let failed = |e: tokio_postgres::Error| EngineError::Other(format!("{sql}: {e}"));
    let (client, conn) = admin.connect(NoTls).await.map_err(failed)?;
    let task = tokio::spawn(conn);
    let row = client.query_one(sql, &[]).await;
    drop(client);
    let _ = task.await;
    row.and_then(|row| row.try_get::<_, String>(0))
        .map_err(failed)
}

/// What [`base_backup`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupInfo {
    /// Where replay of this backup begins (`0/2000028`).
    pub start_lsn: String,
    /// The segment holding `start_lsn`. A recovery from this backup needs
    /// the archived segments from this name on, of this timeline or later
    /// ones.
    pub start_wal_file: String,
    /// Where the backup is consistent: a recovery cannot stop before it.
    pub end_lsn: String,
    pub timeline: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The size of the tar written.
    pub bytes: u64,
}

/// Writes a base backup of the server `admin` reaches into `out`: one tar
/// of the data dir (no additional tablespaces) with the WAL it needs to
/// be consistent, as `pg_basebackup -D - -Ft -X fetch -c fast` writes it
/// (it includes `backup_label` and `backup_manifest`). `admin` must be a
/// superuser (or REPLICATION) login allowed a `replication` connection;
/// the managed engine's `pg_hba.conf` allows its superuser on loopback.
///
/// The start and end positions are pg_basebackup's own report of them
/// (`-v`), the same values `backup_label` records; the segment name is
/// derived from the start with the server's `wal_segment_size`.
///
/// `-X fetch` collects the WAL at the end: the server must not recycle
/// it meanwhile, which with a long backup under heavy writes needs
/// `wal_keep_size` (archiving alone does not hold segments back).
pub async fn base_backup(
    binaries: &PostgresBinaries,
    admin: &tokio_postgres::Config,
    mut out: impl AsyncWrite + Unpin,
) -> Result<BaseBackupInfo, EngineError> {
    let segment_size = wal_segment_size(admin).await?;
    let host = match admin.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(dir)) => dir.display().to_string(),
        None => "127.0.0.1".to_string(),
    };
    let port = admin.get_ports().first().copied().unwrap_or(5432);
    let user = admin
        .get_user()
        .ok_or_else(|| EngineError::Other("base backup: the admin config has no user".into()))?;
    let password = admin
        .get_password()
        .map(|p| Zeroizing::new(String::from_utf8_lossy(p).into_owned()));

    let started_at = Utc::now();
    let mut cmd = Command::new(binaries.program("pg_basebackup"));
    cmd.args(["-D", "-", "-F", "tar", "-X", "fetch", "-c", "fast"])
        .args(["--no-sync", "--verbose", "--no-password", "--label", "mds"])
        .arg("--host")
        .arg(&host)
        .arg("--port")
        .arg(port.to_string())
        .arg("--username")
        .arg(user)
        // The positions are read from its messages.
        .env("LC_ALL", "C")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(password) = &password {
        cmd.env("PGPASSWORD", password.as_str());
    }
    let mut child = cmd.spawn().map_err(EngineError::io("run pg_basebackup"))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(EngineError::Other("pg_basebackup: no pipes".into()));
    };
    let read_messages = async {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        text
    };
    let copy = async {
        // Owned here, so a failed copy closes the pipe and pg_basebackup
        // ends (its stderr with it) instead of waiting to write.
        let mut stdout = stdout;
        let bytes = tokio::io::copy(&mut stdout, &mut out).await?;
        out.flush().await?;
        Ok::<u64, std::io::Error>(bytes)
    };
    let (copied, messages) = tokio::join!(copy, read_messages);
    let messages = String::from_utf8_lossy(&messages).into_owned();
    let bytes = match copied {
        Ok(bytes) => bytes,
        Err(e) => {
            // kill_on_drop ends pg_basebackup.
            return Err(EngineError::Io {
                context: "write the base backup".into(),
                source: e,
            });
        }
    };
    let status = child
        .wait()
        .await
        .map_err(EngineError::io("wait for pg_basebackup"))?;
    if !status.success() {
        return Err(EngineError::Other(format!(
            "pg_basebackup failed ({status}):\n{}",
            messages.trim()
        )));
    }
    let finished_at = Utc::now();

    let unreported = || {
        EngineError::Other(format!(
            "pg_basebackup did not report its WAL positions:\n{}",
            messages.trim()
        ))
    };
    let start = messages
        .lines()
        .find_map(|l| l.split("write-ahead log start point: ").nth(1))
        .ok_or_else(unreported)?;
    // `0/2000028 on timeline 1`
    let mut words = start.split_whitespace();
    let start_lsn = words.next().ok_or_else(unreported)?.to_string();
    let timeline = words
        .nth(2)
        .and_then(|t| t.parse::<u32>().ok())
        .ok_or_else(unreported)?;
    let end_lsn = messages
        .lines()
        .find_map(|l| l.split("write-ahead log end point: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(unreported)?
        .to_string();
    let start_wal_file = wal_file_name(
        timeline,
        parse_lsn(&start_lsn).ok_or_else(unreported)?,
        segment_size,
    )
    .ok_or_else(unreported)?;
    Ok(BaseBackupInfo {
        start_lsn,
        start_wal_file,
        end_lsn,
        timeline,
        started_at,
        finished_at,
        bytes,
    })
}

async fn wal_segment_size(admin: &tokio_postgres::Config) -> Result<u64, EngineError> {
    // pg_settings gives it in bytes (SHOW gives "16MB").
    let text = query_text(
        admin,
        "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'",
    )
    .await?;
    text.parse::<u64>()
        .ok()
        .filter(|size| size.is_power_of_two())
        .ok_or_else(|| EngineError::Other(format!("unexpected wal_segment_size {text:?}")))
}

/// `0/2000028` as a number.
fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let high = u32::from_str_radix(high, 16).ok()?;
    let low = u32::from_str_radix(low, 16).ok()?;
    Some((u64::from(high) << 32) | u64::from(low))
}

/// The name of the segment holding `lsn` (PostgreSQL's `XLogFileName`).
fn wal_file_name(timeline: u32, lsn: u64, segment_size: u64) -> Option<String> {
    let segment = lsn.checked_div(segment_size)?;
    let per_id = 0x1_0000_0000u64.checked_div(segment_size)?;
    Some(format!(
        "{timeline:08X}{:08X}{:08X}",
        segment / per_id,
        segment % per_id
    ))
}

/// Where a recovery stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// With the last transaction committed at or before this time. The
    /// archived WAL must reach past it (a commit after it): a recovery
    /// that runs out of WAL first fails rather than guess.
    Time(DateTime<Utc>),
    /// Through all the WAL given.
    Latest,
}

/// A PostgreSQL recovered from a base backup and archived WAL, promoted,
/// on a free loopback port, for as long as this value lives. Its data
/// dir is `<dir>/data`, its log `<dir>/postgres.log`.
///
/// [`ScratchPostgres::shutdown`] stops it and removes `dir`. Dropping it
/// kills the server but leaves `dir`; [`sweep_scratch`] ends and removes
/// what a killed mds left.
pub struct ScratchPostgres {
    dir: PathBuf,
    port: u16,
    password: Zeroizing<String>,
    /// `None` once stopped.
    child: Option<Child>,
}

impl ScratchPostgres {
    /// Unpacks `base_tar` (a [`base_backup`]) into `<dir>/data`, replays
    /// the segments in `wal_dir` up to `target`, promotes, and returns
    /// once the server accepts writes. `dir` must not exist or be empty.
    /// `password` is the superuser's of the backed-up cluster (the copy is
    /// physical, logins included).
    ///
    /// The caller fills `wal_dir` with the segments the recovery needs
    /// (from the backup's `start_wal_file` on); as root, it is handed to
    /// `os_user`, who runs the server.
    ///
    /// Choose a backup that finished at or before a time target
    /// ([`BaseBackupInfo::finished_at`]). A target before the backup
    /// began (to the second of its `backup_label`) is refused here;
    /// postgres refuses one with a commit between it and the backup's end
    /// ("requested recovery stop point is before consistent recovery
    /// point") and one the WAL does not reach past ("recovery ended before
    /// configured recovery target was reached"): these, and any other
    /// exit of the server, are errors with the end of its log. On error
    /// nothing runs and `dir` is removed.
    pub async fn recover(
        binaries: &PostgresBinaries,
        os_user: Option<&OsUser>,
        dir: &Path,
        base_tar: impl AsyncRead + Unpin,
        wal_dir: &Path,
        target: RecoveryTarget,
        password: &str,
    ) -> Result<ScratchPostgres, EngineError> {
        let empty = fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
        if !empty {
            return Err(EngineError::Other(format!(
                "the scratch dir {} is not empty",
                dir.display()
            )));
        }
        let result =
            Self::recover_into(binaries, os_user, dir, base_tar, wal_dir, target, password).await;
        if result.is_err() {
            // The server was killed (dropped); its processes go first.
            kill_and_wait(&processes_in(&dir.join("data"), "postgres"), SWEEP_WAIT).await;
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        result
    }

    async fn recover_into(
        binaries: &PostgresBinaries,
        os_user: Option<&OsUser>,
        dir: &Path,
        base_tar: impl AsyncRead + Unpin,
        wal_dir: &Path,
        target: RecoveryTarget,
        password: &str,
    ) -> Result<ScratchPostgres, EngineError> {
        let data = dir.join("data");
        for path in [dir, &data] {
            fs::create_dir_all(path)
                .map_err(EngineError::io(format!("create {}", path.display())))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .map_err(EngineError::io(format!("chmod {}", path.display())))?;
        }
        unpack(base_tar, &data).await?;

        let label = fs::read_to_string(data.join("backup_label")).map_err(|_| {
            EngineError::Other("the base backup holds no backup_label: not a base backup".into())
        })?;
        if let (RecoveryTarget::Time(at), Some(started)) = (target, label_start_time(&label)) {
            // Commits before the start are in the files, and replay cannot
            // undo them. (The label's time is truncated to the second, so
            // a target within the second the backup began passes here.)
            if at < started {
                return Err(EngineError::Other(format!(
                    "the target time {at} is before this base backup was taken ({started}); \
                     recover from an earlier backup"
                )));
            }
        }
        fs::write(data.join("recovery.signal"), b"")
            .map_err(EngineError::io("write recovery.signal"))?;
        if let Some(user) = os_user {
            chown_tree(dir, user)?;
            chown_tree(wal_dir, user)?;
            user.check_can_enter(&data)?;
            user.check_can_enter(wal_dir)?;
        }

        let port = free_port()?;
        let log_path = dir.join("postgres.log");
        let log = fs::File::create(&log_path)
            .map_err(EngineError::io(format!("create {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(EngineError::io("duplicate the log handle"))?;
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_string(),
            "unix_socket_directories=".to_string(),
            "archive_mode=off".to_string(),
            format!("restore_command=cp {}/%f %p", command_quote(wal_dir)?),
            "recovery_target_action=promote".to_string(),
            "recovery_target_inclusive=on".to_string(),
            "max_connections=20".to_string(),
            "shared_buffers=32MB".to_string(),
            // A hot standby checks max_connections & co. against the
            // source's (300) and pauses when they are lower; nothing needs
            // to read before the promotion.
            "hot_standby=off".to_string(),
            // The copy is thrown away if its server crashes.
            "fsync=off".to_string(),
            "autovacuum=off".to_string(),
            "logging_collector=off".to_string(),
            "ssl=off".to_string(),
            "cluster_name=mds-scratch".to_string(),
        ];
        if let RecoveryTarget::Time(at) = target {
            settings.push(format!(
                "recovery_target_time={}",
                at.format("%Y-%m-%d %H:%M:%S%.6f+00")
            ));
        }
        let mut cmd = Command::new(binaries.program("postgres"));
        cmd.arg("-D").arg(&data).arg("-p").arg(port.to_string());
        for setting in &settings {
            cmd.arg("-c").arg(setting);
        }
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true);
        as_user(&mut cmd, os_user);
        let child = cmd
            .spawn()
            .map_err(EngineError::io("start the scratch postgres"))?;
        tracing::info!(port, dir = %dir.display(), ?target, "recovering a base backup");

        let mut scratch = ScratchPostgres {
            dir: dir.to_path_buf(),
            port,
            password: Zeroizing::new(password.to_string()),
            child: Some(child),
        };
        // On error, dropping `scratch` kills the server.
        scratch.wait_promoted(&log_path).await?;
        Ok(scratch)
    }

    async fn wait_promoted(&mut self, log_path: &Path) -> Result<(), EngineError> {
        let admin = self.admin_config();
        let began = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(EngineError::Other(format!(
                        "the recovering postgres exited ({status}); the end of {}:\n{}",
                        log_path.display(),
                        tail(log_path, 2000)
                    )));
                }
            }
            if let Ok(false) = in_recovery(&admin).await {
                return Ok(());
            }
            if began.elapsed() > RECOVERY_LIMIT {
                return Err(EngineError::NotReady {
                    engine: "postgres (recovery)",
                    seconds: RECOVERY_LIMIT.as_secs(),
                    log: log_path.display().to_string(),
                    tail: tail(log_path, 2000),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A superuser connection config, database `postgres`.
    pub fn admin_config(&self) -> tokio_postgres::Config {
        admin_config(self.port, &self.password)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory given to [`ScratchPostgres::recover`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server (fast shutdown, killed after 10 s) and removes
    /// its directory.
    pub async fn shutdown(mut self) -> Result<(), EngineError> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal(pid, Signal::SIGINT);
                if tokio::time::timeout(SCRATCH_STOP_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    let killed = kill_tree(pid);
                    wait_gone(&killed, SWEEP_WAIT).await;
                    let _ = child.wait().await;
                }
            }
        }
        let left = processes_in(&self.dir.join("data"), "postgres");
        kill_and_wait(&left, SWEEP_WAIT).await;
        tokio::fs::remove_dir_all(&self.dir)
            .await
            .map_err(EngineError::io(format!("remove {}", self.dir.display())))
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            if let Some(pid) = child.id() {
                kill_tree(pid);
            }
        }
    }
}

async fn in_recovery(admin: &tokio_postgres::Config) -> Result<bool, ()> {
    let Ok(Ok((client, conn))) =
        tokio::time::timeout(Duration::from_secs(2), admin.connect(NoTls)).await
    else {
        return Err(());
    };
    let task = tokio::spawn(conn);
    let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await;
    drop(client);
    let _ = task.await;
    row.and_then(|row| row.try_get(0)).map_err(|_| ())
}

/// Ends every scratch server a killed mds left under `root` (each in
/// `<root>/<name>/data`, found by working directory as the managed
/// engine's leftovers are) and removes every directory under `root`.
/// Returns how many it removed. For a start, before any recovery runs
/// under `root`.
pub async fn sweep_scratch(root: &Path) -> Result<usize, EngineError> {
    let Ok(entries) = fs::read_dir(root) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let pids = processes_in(&path.join("data"), "postgres");
        if !pids.is_empty() {
            tracing::warn!(dir = %path.display(), "ending a scratch postgres an earlier mds left");
            let left = kill_and_wait(&pids, SWEEP_WAIT).await;
            if !left.is_empty() {
                return Err(EngineError::Other(format!(
                    "scratch postgres processes {left:?} in {} do not end",
                    path.display()
                )));
            }
        }
        tokio::fs::remove_dir_all(&path)
            .await
            .map_err(EngineError::io(format!("remove {}", path.display())))?;
        removed += 1;
    }
    Ok(removed)
}

/// Unpacks a tar stream into `data` (the tar crate reads synchronously: a
/// blocking thread reads what this task receives).
async fn unpack(mut base_tar: impl AsyncRead + Unpin, data: &Path) -> Result<(), EngineError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(16);
    let dest = data.to_path_buf();
    let unpacking = tokio::task::spawn_blocking(move || {
        let mut archive = tar::Archive::new(ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        });
        archive.set_preserve_permissions(true);
        archive.set_overwrite(false);
        archive.unpack(&dest)?;
        Ok::<(), std::io::Error>(())
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut ended = false;
    loop {
        let chunk = match base_tar.read(&mut buf).await {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => Ok(buf[..n].to_vec()),
            Err(e) => Err(e),
        };
        let failed = chunk.is_err();
        // A closed channel: the unpacking ended (done or failed); its
        // result says which.
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let unpacked = unpacking
        .await
        .map_err(|e| EngineError::Other(format!("unpacking the base backup: {e}")))?;
    unpacked.map_err(EngineError::io(format!(
        "unpack the base backup into {}",
        data.display()
    )))?;
    if !ended {
        // A tar ends before its stream does (padding): the rest is read
        // too, so a reader that checks its input at the end (a MAC) does.
        tokio::io::copy(&mut base_tar, &mut tokio::io::sink())
            .await
            .map_err(EngineError::io("read the end of the base backup"))?;
    }
    Ok(())
}

/// A [`Read`] over chunks sent from async code.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk?;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `root` and everything below it (symlinks not followed) owned by `user`.
fn chown_tree(root: &Path, user: &OsUser) -> Result<(), EngineError> {
    user.chown(root)?;
    let entries =
        fs::read_dir(root).map_err(EngineError::io(format!("read {}", root.display())))?;
    for entry in entries {
        let entry = entry.map_err(EngineError::io(format!("read {}", root.display())))?;
        let kind = entry
            .file_type()
            .map_err(EngineError::io(format!("stat {}", entry.path().display())))?;
        if kind.is_dir() {
            chown_tree(&entry.path(), user)?;
        } else if kind.is_file() {
            user.chown(&entry.path())?;
        }
    }
    Ok(())
}

/// `START TIME` of a `backup_label` (`2026-12-07 12:48:11 UTC`, in the
/// server's `log_timezone`). `None` when its zone is a name other than
/// UTC or GMT, whose offset a label does not say.
fn label_start_time(label: &str) -> Option<DateTime<Utc>> {
    let value = label
        .lines()
        .find_map(|l| l.strip_prefix("START TIME: "))?
        .trim();
    let (clock, zone) = value.rsplit_once(' ')?;
    let local = NaiveDateTime::parse_from_str(clock, "%Y-%m-%d %H:%M:%S").ok()?;
    let offset_secs: i64 = match zone {
        "UTC" | "GMT" => 0,
        // Zones without an abbreviation print their offset: `+03`, `-0530`.
        _ => {
            let sign = match zone.chars().next()? {
                '+' => 1,
                '-' => -1,
                _ => return None,
            };
            let digits = &zone[1..];
            let (hours, minutes) = match digits.len() {
                2 => (digits.parse::<i64>().ok()?, 0),
                4 => (
                    digits[..2].parse::<i64>().ok()?,
                    digits[2..].parse::<i64>().ok()?,
                ),
                _ => return None,
            };
            sign * (hours * 3600 + minutes * 60)
        }
    };
    Some(local.and_utc() - chrono::Duration::seconds(offset_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_file_names_follow_postgres() {
        let lsn = parse_lsn("0/2000028").unwrap_or_default();
        assert_eq!(
            wal_file_name(1, lsn, 16 << 20).as_deref(),
            Some("000000010000000000000002")
        );
        let lsn = parse_lsn("1A/FF000000").unwrap_or_default();
        assert_eq!(
            wal_file_name(3, lsn, 16 << 20).as_deref(),
            Some("000000030000001A000000FF")
        );
        assert_eq!(parse_lsn("nonsense"), None);
    }

    #[test]
    fn label_times_read_utc_and_offsets() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     START TIME: 2026-12-07 12:48:11 UTC\nLABEL: mds\n";
        assert_eq!(
            label_start_time(label).map(|t| t.to_rfc3339()),
            Some("2026-12-07T12:48:11+00:00".to_string())
        );
        let label = "START TIME: 2026-12-07 15:48:11 +03\n";
        assert_eq!(
            label_start_time(label).map(|t| t.to_rfc3339()),
            Some("2026-12-07T12:48:11+00:00".to_string())
        );
        assert_eq!(
            label_start_time("START TIME: 2026-12-07 13:48:11 CET\n"),
            None
        );
    }

    #[test]
    fn commands_quote_paths_for_the_shell_and_postgres() {
        let quoted = command_quote(Path::new("/a b/it's 100%")).unwrap_or_default();
        assert_eq!(quoted, "'/a b/it'\\''s 100%%'");
    }
}

//! WAL archiving, base backups and point-in-time recovery with real
//! server binaries: a recovery to a time between two commits holds the
//! first and not the second, and one that cannot reach its target fails
//! promptly with the reason.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mds_crypto::MasterKey;
use mds_engines::{
    archive_command, base_backup, find_postgres_binaries, switch_wal, Archiving, BaseBackupInfo,
    ManagedPostgres, OsUser, PostgresBinaries, RecoveryTarget, ScratchPostgres, StartOptions,
};
use tokio_postgres::NoTls;

struct Cluster {
    tmp: tempfile::TempDir,
    binaries: PostgresBinaries,
    os_user: Option<OsUser>,
    pg: ManagedPostgres,
    staging: PathBuf,
}

impl Cluster {
    /// A managed engine archiving into `<tmp>/wal staging` (a space, as
    /// paths may have).
    async fn start() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("mds-pitr-")
            .tempdir()
            .expect("temp dir");
        let engines = tmp.path().join("engines");
        std::fs::create_dir_all(&engines).unwrap();
        let staging = tmp.path().join("wal staging");
        let binaries = find_postgres_binaries().expect("postgres binaries");
        let os_user = OsUser::for_engines(None).expect("engine OS user");
        let key = MasterKey::from_hex(&"42".repeat(32)).unwrap();
        let options = StartOptions {
            public: None,
            archiving: Some(Archiving {
                staging: staging.clone(),
                timeout_secs: 60,
            }),
        };
        let pg = ManagedPostgres::start_with_options(
            &engines,
            binaries.clone(),
            os_user.clone(),
            &key,
            options,
        )
        .await
        .expect("managed postgres starts");
        Self {
            tmp,
            binaries,
            os_user,
            pg,
            staging,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    async fn backup_to(&self, file: &Path) -> BaseBackupInfo {
        let began = Instant::now();
        let out = tokio::fs::File::create(file).await.unwrap();
        let info = base_backup(&self.binaries, &self.pg.admin_config(), out)
            .await
            .expect("base backup");
        println!(
            "base backup: {} bytes in {:?} ({info:?})",
            info.bytes,
            began.elapsed()
        );
        info
    }

    fn password(&self) -> String {
        let config = self.pg.admin_config();
        String::from_utf8(config.get_password().unwrap().to_vec()).unwrap()
    }

    async fn recover(
        &self,
        name: &str,
        backup: &Path,
        wal: &Path,
        target: RecoveryTarget,
    ) -> Result<ScratchPostgres, mds_engines::EngineError> {
        let began = Instant::now();
        let tar = tokio::fs::File::open(backup).await.unwrap();
        let result = ScratchPostgres::recover(
            &self.binaries,
            self.os_user.as_ref(),
            &self.path(name),
            tar,
            wal,
            target,
            &self.password(),
        )
        .await;
        println!("recovery to {target:?}: {:?}", began.elapsed());
        result
    }
}

async fn client(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, conn) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

async fn ids(config: &tokio_postgres::Config) -> Vec<i32> {
    client(config)
        .await
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Copies the finished files of `from` into a new dir `to`, as the
/// caller of a recovery fills its WAL dir.
fn copy_finished(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        if !name.ends_with(".partial") {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_recovery_to_a_time_holds_exactly_what_was_committed_before_it() {
    let cluster = Cluster::start().await;
    let backup = cluster.path("base.tar");
    let info = cluster.backup_to(&backup).await;
    assert_eq!(info.start_wal_file.len(), 24, "{info:?}");

    let admin = cluster.pg.admin_config();
    let db = client(&admin).await;
    db.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let between: DateTime<Utc> = db.query_one("SELECT now()", &[]).await.unwrap().get(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    db.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    let segment = switch_wal(&admin).await.unwrap();
    assert!(
        segment.as_str() >= info.start_wal_file.as_str(),
        "{segment} {info:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster.staging.join(&segment).is_file() {
        assert!(Instant::now() < deadline, "{segment} not archived in 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Readable by mds, written by the engine's user only.
    let meta = std::fs::metadata(&cluster.staging).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    if let Some(user) = &cluster.os_user {
        assert_eq!(meta.uid(), user.uid);
    }
    let names: Vec<String> = std::fs::read_dir(&cluster.staging)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".backup")), "{names:?}");

    let wal = cluster.path("wal dir");
    copy_finished(&cluster.staging, &wal);

    let scratch = cluster
        .recover(
            "scratch at time",
            &backup,
            &wal,
            RecoveryTarget::Time(between),
        )
        .await
        .expect("recovery to a time");
    assert_ne!(scratch.port(), cluster.pg.port());
    assert_eq!(ids(&scratch.admin_config()).await, vec![1]);
    // Promoted: it takes writes.
    client(&scratch.admin_config())
        .await
        .execute("INSERT INTO t VALUES (3)", &[])
        .await
        .unwrap();
    let dir = scratch.dir().to_path_buf();
    scratch.shutdown().await.unwrap();
    assert!(!dir.exists(), "shutdown leaves {}", dir.display());

    let scratch = cluster
        .recover("scratch latest", &backup, &wal, RecoveryTarget::Latest)
        .await
        .expect("recovery to the latest");
    assert_eq!(ids(&scratch.admin_config()).await, vec![1, 2]);
    scratch.shutdown().await.unwrap();

    // The source is untouched.
    assert_eq!(ids(&admin).await, vec![1, 2]);
    cluster.pg.shutdown().await;
}

#[tokio::test]
async fn a_recovery_that_cannot_reach_its_target_fails_promptly_with_the_reason() {
    let cluster = Cluster::start().await;
    let admin = cluster.pg.admin_config();
    let before: DateTime<Utc> = client(&admin)
        .await
        .query_one("SELECT now()", &[])
        .await
        .unwrap()
        .get(0);
    // A backup_label gives its start to the second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let backup = cluster.path("base.tar");
    cluster.backup_to(&backup).await;
    let wal = cluster.path("wal");
    copy_finished(&cluster.staging, &wal);

    // Before the backup: its files hold what replay cannot undo.
    let began = Instant::now();
    let err = cluster
        .recover("early", &backup, &wal, RecoveryTarget::Time(before))
        .await
        .err()
        .expect("a target before the backup fails");
    assert!(err.to_string().contains("before this base backup"), "{err}");
    assert!(!cluster.path("early").exists());

    // Beyond the WAL there is: postgres itself gives up, and says why.
    let later = Utc::now() + chrono::Duration::hours(1);
    let err = cluster
        .recover("late", &backup, &wal, RecoveryTarget::Time(later))
        .await
        .err()
        .expect("a target beyond the WAL fails");
    assert!(
        err.to_string()
            .contains("recovery ended before configured recovery target was reached"),
        "{err}"
    );
    assert!(!cluster.path("late").exists());
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "{:?}",
        began.elapsed()
    );
    cluster.pg.shutdown().await;
}

async fn closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "still listening on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dropped_scratch_server_stops_and_the_sweep_ends_what_a_killed_mds_left() {
    let cluster = Cluster::start().await;
    let backup = cluster.path("base.tar");
    cluster.backup_to(&backup).await;
    let wal = cluster.path("wal");
    copy_finished(&cluster.staging, &wal);
    let root = cluster.path("scratch");
    std::fs::create_dir_all(&root).unwrap();
    let recover = |name: &str| {
        let dir = root.join(name);
        let backup = backup.clone();
        let wal = wal.clone();
        let cluster = &cluster;
        async move {
            ScratchPostgres::recover(
                &cluster.binaries,
                cluster.os_user.as_ref(),
                &dir,
                tokio::fs::File::open(&backup).await.unwrap(),
                &wal,
                RecoveryTarget::Latest,
                &cluster.password(),
            )
            .await
            .expect("recovery")
        }
    };

    let dropped = recover("dropped").await;
    let port = dropped.port();
    drop(dropped);
    closed(port).await;
    assert!(root.join("dropped/data").is_dir());

    // What a killed mds leaves: a server nobody will stop.
    let orphan = recover("orphan").await;
    let port = orphan.port();
    std::mem::forget(orphan);
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the orphan runs");

    assert_eq!(mds_engines::sweep_scratch(&root).await.unwrap(), 2);
    closed(port).await;
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    cluster.pg.shutdown().await;
}

/// Runs `command` as postgres does: `%p`, `%f` and `%%` replaced, through
/// `/bin/sh` in the data dir.
fn run_archive(command: &str, data: &Path, name: &str) -> bool {
    let mut expanded = String::new();
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            expanded.push(c);
            continue;
        }
        match chars.next() {
            Some('p') => expanded.push_str(&format!("pg_wal/{name}")),
            Some('f') => expanded.push_str(name),
            Some('%') => expanded.push('%'),
            other => panic!("unexpected %{other:?} in {command}"),
        }
    }
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&expanded)
        .current_dir(data)
        .status()
        .unwrap()
        .success()
}

#[test]
fn the_archive_copy_is_idempotent_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("pg_wal")).unwrap();
    // A path the shell and postgres's % expansion could both misread.
    let staging = tmp.path().join("it's a 100% $HOME dir");
    std::fs::create_dir_all(&staging).unwrap();
    let name = "000000010000000000000003";
    std::fs::write(data.join("pg_wal").join(name), b"segment one").unwrap();
    let command = archive_command(&staging).unwrap();

    assert!(run_archive(&command, &data, name), "{command}");
    assert_eq!(std::fs::read(staging.join(name)).unwrap(), b"segment one");
    assert!(!staging.join(format!("{name}.partial")).exists());
    // Postgres retries an archiving whose success it did not record.
    assert!(run_archive(&command, &data, name), "a retry fails");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 1);

    std::fs::write(data.join("pg_wal").join(name), b"something else").unwrap();
    assert!(
        !run_archive(&command, &data, name),
        "a different file was accepted"
    );
    assert_eq!(std::fs::read(staging.join(name)).unwrap(), b"segment one");
}

/// Timings with some data: `cargo test -p mds-engines --test pg_archive
/// -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure_a_backup_and_a_replay_with_data() {
    let cluster = Cluster::start().await;
    let admin = cluster.pg.admin_config();
    let db = client(&admin).await;
    let fill = "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g";
    db.batch_execute(&format!("CREATE TABLE t (id int, pad text); {fill}"))
        .await
        .unwrap();
    let backup = cluster.path("base.tar");
    cluster.backup_to(&backup).await;
    let began = Instant::now();
    db.batch_execute(fill).await.unwrap();
    println!("1e6 more rows written in {:?}", began.elapsed());
    let segment = switch_wal(&admin).await.unwrap();
    while !cluster.staging.join(&segment).is_file() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wal = cluster.path("wal");
    copy_finished(&cluster.staging, &wal);
    println!(
        "{} files of WAL archived",
        std::fs::read_dir(&wal).unwrap().count()
    );
    let scratch = cluster
        .recover("scratch", &backup, &wal, RecoveryTarget::Latest)
        .await
        .unwrap();
    let count: i64 = client(&scratch.admin_config())
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2_000_000);
    scratch.shutdown().await.unwrap();
    cluster.pg.shutdown().await;
}

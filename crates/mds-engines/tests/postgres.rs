//! The managed PostgreSQL under its supervisor, with real server binaries:
//! nothing of a server outlives a stop, and nothing an earlier server left
//! blocks the next start.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mds_crypto::MasterKey;
use mds_engines::{find_postgres_binaries, EngineStatus, ManagedPostgres, OsUser};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

struct Cluster {
    _tmp: tempfile::TempDir,
    engines: PathBuf,
    key: MasterKey,
}

impl Cluster {
    fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("mds-engines-")
            .tempdir()
            .expect("temp dir");
        let engines = tmp.path().join("engines");
        std::fs::create_dir_all(&engines).expect("engines dir");
        Self {
            _tmp: tmp,
            engines,
            key: MasterKey::from_hex(&"42".repeat(32)).expect("key"),
        }
    }

    async fn start(&self) -> ManagedPostgres {
        let binaries = find_postgres_binaries().expect("postgres binaries");
        let os_user = OsUser::for_engines(None).expect("engine OS user");
        ManagedPostgres::start(&self.engines, binaries, os_user, &self.key)
            .await
            .expect("managed postgres starts")
    }

    fn data(&self) -> PathBuf {
        std::fs::canonicalize(self.engines.join("postgres/data")).expect("data dir")
    }
}

/// Running (a zombie, which holds nothing, does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s[s.rfind(')')? + 1..]
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// Processes working in `dir` (every process of a postgres server does).
fn working_in(dir: &Path) -> Vec<u32> {
    pids()
        .filter(|p| std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

/// The postmaster's child whose title names `role` (`checkpointer`).
async fn child_named(postmaster: u32, role: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = pids().find(|p| {
            let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 1..]
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                });
            let title = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            ppid == Some(postmaster) && String::from_utf8_lossy(&title).contains(role)
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no {role} under postmaster {postmaster}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).expect("signal");
}

// A frozen checkpointer stands for a shutdown checkpoint that takes longer
// than the grace (20-135 s with ~800 databases): the postmaster waits for
// it, and each child of the postmaster leads its own process group.
#[tokio::test]
async fn a_stop_that_outlasts_its_grace_leaves_no_process_of_the_server() {
    let cluster = Cluster::new();
    let pg = cluster.start().await;
    let data = cluster.data();
    let checkpointer = child_named(pg.pid().expect("postmaster"), "checkpointer").await;
    signal(checkpointer, Signal::SIGSTOP);

    let began = Instant::now();
    pg.shutdown_within(Duration::from_millis(300)).await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "the stop took {:?}",
        began.elapsed()
    );
    assert_eq!(pg.status(), EngineStatus::Stopped);
    let left: Vec<u32> = working_in(&data)
        .into_iter()
        .filter(|p| alive(*p))
        .collect();
    assert!(left.is_empty(), "left running in the data dir: {left:?}");
    assert!(!alive(checkpointer), "the checkpointer outlived the stop");

    // And the next start is not blocked by the old shared memory.
    let again = tokio::time::timeout(Duration::from_secs(30), cluster.start())
        .await
        .expect("the next start is prompt");
    again.shutdown().await;
}

// What a forced stop used to leave: the postmaster killed, its
// checkpointer still attached to the shared memory. The supervisor's
// restart must end it, or every new postmaster fails with "pre-existing
// shared memory block is still in use".
#[tokio::test]
async fn a_restart_ends_what_the_last_postmaster_left_in_its_data_dir() {
    let cluster = Cluster::new();
    let pg = cluster.start().await;
    let postmaster = pg.pid().expect("postmaster");
    let checkpointer = child_named(postmaster, "checkpointer").await;
    signal(checkpointer, Signal::SIGSTOP);
    signal(postmaster, Signal::SIGKILL);

    let mut status = pg.watch_status();
    let back = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if *status.borrow_and_update() == EngineStatus::Running
                && pg.pid().is_some_and(|p| p != postmaster)
            {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
        }
    })
    .await;
    let log =
        std::fs::read_to_string(cluster.engines.join("postgres/postgres.log")).unwrap_or_default();
    assert!(
        back.is_ok(),
        "not running again within 15 s ({:?}); the log ends:\n{}",
        pg.status(),
        &log[log.len().saturating_sub(1500)..]
    );
    assert!(!alive(checkpointer), "the old checkpointer still runs");
    pg.shutdown().await;
}

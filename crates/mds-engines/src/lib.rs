//! Engines host tenants' data: a managed PostgreSQL that mds starts and
//! supervises, or an external server given by URL; and managed
//! redis-servers. Every managed child runs under the one [`Supervisor`].

mod os_user;
pub mod pg_archive;
pub mod pg_logical;
mod pg_public;
mod pooler;
mod postgres;
mod process;
pub use process::raise_fd_limit;
mod redis;
pub mod redis_backup;
pub mod resp;
pub mod supervisor;

pub use os_user::OsUser;
pub use pg_archive::{
    archive_command, base_backup, current_wal_lsn, sweep_scratch, switch_wal, Archiving,
    BaseBackupInfo, RecoveryTarget, ScratchPostgres,
};
pub use pg_public::{GivenTls, HbaRule, PublicEndpoint, PublicListener};
pub use pooler::{
    find_pgbouncer, PoolEntry, PoolMode, PoolStats, Pooler, PoolerFeatures, PoolerOptions,
};
pub use postgres::{
    find_postgres_binaries, ManagedPostgres, PostgresBinaries, PostgresEngine, PublicRules,
    StartOptions,
};
pub use redis::{
    find_redis_server, free_port, parse_memory, redis_major_version, RedisEngine, RedisSpec,
    EVICTION_POLICIES,
};
pub use supervisor::{CrashBudget, Event, Incarnation, Policy, Program, Supervisor};

/// Where an engine is in its life, as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineStatus {
    Starting,
    Running,
    /// Died and is being restarted (`attempt` counts since the last success).
    Restarting {
        attempt: u32,
    },
    /// Runs, but its last `failures` health probes in a row failed (only
    /// for programs probed while they run).
    Unhealthy {
        failures: u32,
    },
    /// Supervision gave up (crash loop); nothing runs.
    Failed {
        reason: String,
    },
    Stopped,
}

impl EngineStatus {
    pub fn label(&self) -> &'static str {
        match self {
            EngineStatus::Starting => "starting",
            EngineStatus::Running => "running",
            EngineStatus::Restarting { .. } => "restarting",
            EngineStatus::Unhealthy { .. } => "unhealthy",
            EngineStatus::Failed { .. } => "failed",
            EngineStatus::Stopped => "stopped",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "PostgreSQL server programs (initdb, postgres) were not found in PATH or \
         /usr/lib/postgresql/*/bin. Install them with `apt-get install -y postgresql` \
         (scripts/install-deps does this), or point mds at a server with --postgres-url"
    )]
    PostgresNotInstalled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("initdb failed ({status}); its output:\n{output}")]
    InitFailed { status: String, output: String },
    #[error("{engine} did not become ready within {seconds} s; the end of {log}:\n{tail}")]
    NotReady {
        engine: &'static str,
        seconds: u64,
        log: String,
        tail: String,
    },
    #[error(
        "the master key does not open this data dir's secrets ({0}); \
         start with the key this data dir was created with (DIR/master.key or MDS_MASTER_KEY)"
    )]
    WrongMasterKey(String),
    #[error(
        "postgres runs as OS user {user:?}, which cannot enter {path}: make it traversable \
         (chmod o+x) or choose another --data-dir"
    )]
    Inaccessible { user: String, path: String },
    #[error("{0}")]
    Other(String),
}

impl EngineError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
        let context = context.into();
        move |source| EngineError::Io { context, source }
    }
}

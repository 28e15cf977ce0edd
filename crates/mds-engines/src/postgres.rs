//! The managed PostgreSQL engine.
//!
//! Layout under the data dir:
//!
//! ```text
//! engines/postgres/          owned by the engine OS user, 0700
//!   data/                    PGDATA
//!   postgres.log             the server's stdout and stderr
//!   tls/                     the public listener's certificate and key
//! engines/postgres.json      port and superuser name (owned by mds)
//! engines/postgres.secret    the superuser password, sealed under the master key
//! ```
//!
//! `initdb` runs into `data.init` and is renamed to `data` only when
//! complete, so a crash during the first start is repaired by the next one.
//! The [`Supervisor`] starts `postgres` in its own process group, polls
//! until a real login succeeds, and restarts it with backoff whenever it
//! dies. Each child of the postmaster leads a session of its own, so a stop
//! that outlasts its grace kills the postmaster's whole tree, and every
//! start first ends whatever still works in the data dir (found through
//! /proc) and waits until the old shared memory is free.
//!
//! With a [`PublicListener`] the server also listens on a public address
//! with TLS; `pg_hba.conf` then says which databases are reachable there
//! from where (see `pg_public.rs`).
//!
//! With [`Archiving`] the server also copies every finished WAL segment
//! into a staging directory, for point-in-time recovery (see
//! `pg_archive.rs`).

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mds_crypto::MasterKey;
use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_postgres::NoTls;
use zeroize::Zeroizing;

use crate::pg_archive::{self, Archiving};
use crate::pg_public::{self, HbaRule, PublicEndpoint, PublicListener};
use crate::process::{processes_in, spawn_logged, stop_foreign, tail};
use crate::supervisor::{Policy, Program, Supervisor};
use crate::{EngineError, EngineStatus, OsUser};

pub(crate) const SUPERUSER: &str = "mds_admin";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A run this long counts as healthy: the next crash restarts without delay.
const STABLE_AFTER: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long a start waits for the processes of the last incarnation to
/// let go of its shared memory after they were killed.
const SHM_WAIT: Duration = Duration::from_secs(10);

/// The directory holding `initdb` and `postgres` of one PostgreSQL version.
#[derive(Debug, Clone)]
pub struct PostgresBinaries {
    pub bin_dir: PathBuf,
}

impl PostgresBinaries {
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// Looks in PATH, then in `/usr/lib/postgresql/<newest>/bin`.
pub fn find_postgres_binaries() -> Result<PostgresBinaries, EngineError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if let Ok(real) = fs::canonicalize(&initdb) {
                if let Some(bin_dir) = real.parent() {
                    if has_both(bin_dir) {
                        return Ok(PostgresBinaries {
                            bin_dir: bin_dir.to_path_buf(),
                        });
                    }
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin_dir)| PostgresBinaries { bin_dir })
        .ok_or(EngineError::PostgresNotInstalled)
}

/// Where tenant and control-plane databases live.
#[derive(Clone)]
pub enum PostgresEngine {
    Managed(ManagedPostgres),
    /// An existing server, reached with a superuser (or CREATEDB+CREATEROLE)
    /// login.
    External(Box<tokio_postgres::Config>),
}

impl PostgresEngine {
    /// A superuser connection config, database `postgres`.
    pub fn admin_config(&self) -> tokio_postgres::Config {
        match self {
            PostgresEngine::Managed(m) => m.admin_config(),
            PostgresEngine::External(config) => (**config).clone(),
        }
    }

    /// The managed engine's status; an external server is assumed up (its
    /// reachability shows through the store instead).
    pub fn status(&self) -> EngineStatus {
        match self {
            PostgresEngine::Managed(m) => m.status(),
            PostgresEngine::External(_) => EngineStatus::Running,
        }
    }

    pub async fn shutdown(&self) {
        if let PostgresEngine::Managed(m) = self {
            m.shutdown().await;
        }
    }
}

/// A supervised PostgreSQL server. Cheap to clone; all clones share one
/// supervisor.
#[derive(Clone)]
pub struct ManagedPostgres {
    inner: Arc<Inner>,
}

struct Inner {
    port: u16,
    password: Zeroizing<String>,
    supervisor: Supervisor,
    log_path: PathBuf,
    public: Option<PublicEndpoint>,
    hba_path: PathBuf,
    os_user: Option<OsUser>,
    /// The public rules `pg_hba.conf` holds now; the lock serialises
    /// changes to it.
    hba: tokio::sync::Mutex<Vec<HbaRule>>,
}

struct Launch {
    binaries: PostgresBinaries,
    data: PathBuf,
    home: PathBuf,
    log_path: PathBuf,
    port: u16,
    os_user: Option<OsUser>,
    admin: tokio_postgres::Config,
    /// The public host with the certificate and key it serves.
    public: Option<(IpAddr, PathBuf, PathBuf)>,
    /// More `-c name=value` settings (WAL archiving).
    settings: Vec<String>,
}

/// What a start may add to the plain loopback server.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Also listen on a public address (TLS only).
    pub public: Option<PublicListener>,
    /// Archive every finished WAL segment into a staging directory.
    pub archiving: Option<Archiving>,
}

impl ManagedPostgres {
    /// Initialises the cluster on first use, starts it, and returns once a
    /// superuser login works.
    pub async fn start(
        engines_dir: &Path,
        binaries: PostgresBinaries,
        os_user: Option<OsUser>,
        master_key: &MasterKey,
    ) -> Result<Self, EngineError> {
        Self::start_with(engines_dir, binaries, os_user, master_key, None).await
    }

    /// [`ManagedPostgres::start`], also listening on a public address
    /// (TLS only, nothing admitted there until [`PublicRules::apply`]).
    pub async fn start_with(
        engines_dir: &Path,
        binaries: PostgresBinaries,
        os_user: Option<OsUser>,
        master_key: &MasterKey,
        public: Option<PublicListener>,
    ) -> Result<Self, EngineError> {
        let options = StartOptions {
            public,
            archiving: None,
        };
        Self::start_with_options(engines_dir, binaries, os_user, master_key, options).await
    }

    /// [`ManagedPostgres::start`] with a public listener and/or WAL
    /// archiving ([`StartOptions`]).
    pub async fn start_with_options(
        engines_dir: &Path,
        binaries: PostgresBinaries,
        os_user: Option<OsUser>,
        master_key: &MasterKey,
        options: StartOptions,
    ) -> Result<Self, EngineError> {
        let StartOptions { public, archiving } = options;
        if let Some(listener) = &public {
            pg_public::check_host(listener)?;
        }
        let home = engines_dir.join("postgres");
        let data = home.join("data");
        let meta_path = engines_dir.join("postgres.json");
        let secret_path = engines_dir.join("postgres.secret");
        prepare_home(engines_dir, &home, os_user.as_ref())?;
        let settings = match &archiving {
            Some(archiving) => pg_archive::archive_settings(archiving, os_user.as_ref())?,
            None => Vec::new(),
        };

        if !data.join("PG_VERSION").is_file() {
            initdb(&binaries, &home, os_user.as_ref(), &secret_path, master_key).await?;
        }
        let password = open_password(&secret_path, master_key)?;
        let port = choose_port(&meta_path)?;

        // Loopback only until the stored allowlists are applied again.
        let hba_path = data.join("pg_hba.conf");
        pg_public::write_owned(
            &hba_path,
            pg_public::render(&[])?.as_bytes(),
            os_user.as_ref(),
        )?;
        let (tls, endpoint) = match &public {
            Some(listener) => {
                let (cert, key, self_signed) =
                    pg_public::tls_material(&home, listener, os_user.as_ref())?;
                let endpoint = PublicEndpoint {
                    host: listener.host,
                    name: listener
                        .name
                        .clone()
                        .unwrap_or_else(|| listener.host.to_string()),
                    port,
                    self_signed,
                };
                (Some((listener.host, cert, key)), Some(endpoint))
            }
            None => (None, None),
        };

        let admin = admin_config(port, &password);
        let log_path = home.join("postgres.log");
        let launch = Launch {
            binaries,
            data,
            home,
            log_path: log_path.clone(),
            port,
            os_user: os_user.clone(),
            admin,
            public: tls,
            settings,
        };

        let supervisor = Supervisor::start(Postgres { launch }, policy());
        let engine = Self {
            inner: Arc::new(Inner {
                port,
                password,
                supervisor,
                log_path,
                public: endpoint,
                hba_path,
                os_user,
                hba: tokio::sync::Mutex::new(Vec::new()),
            }),
        };
        engine.wait_running(READY_TIMEOUT).await?;
        if let Some(endpoint) = &engine.inner.public {
            engine.check_public_listener(endpoint).await?;
        }
        Ok(engine)
    }

    /// PostgreSQL serves on without an address it could not bind (the
    /// port taken there): said at start, not found out by a client.
    async fn check_public_listener(&self, endpoint: &PublicEndpoint) -> Result<(), EngineError> {
        if endpoint.host.is_unspecified() {
            return Ok(());
        }
        let connect = tokio::net::TcpStream::connect((endpoint.host, endpoint.port));
        match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(_)) => Ok(()),
            outcome => {
                self.shutdown().await;
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                Err(EngineError::Other(format!(
                    "postgres does not listen on the public address {}:{} ({why}); is \
                     the port taken there? The end of {}:\n{}",
                    endpoint.host,
                    endpoint.port,
                    self.inner.log_path.display(),
                    tail(&self.inner.log_path, 2000)
                )))
            }
        }
    }

    /// The public listener, when the engine has one.
    pub fn public_endpoint(&self) -> Option<&PublicEndpoint> {
        self.inner.public.as_ref()
    }

    /// Holds the right to change the public rules until dropped: a caller
    /// reads what they should be and applies them under it, so two changes
    /// never interleave.
    pub async fn public_rules(&self) -> PublicRules<'_> {
        PublicRules {
            engine: self,
            current: self.inner.hba.lock().await,
        }
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.inner.supervisor.pid()
    }

    pub fn admin_config(&self) -> tokio_postgres::Config {
        admin_config(self.inner.port, &self.inner.password)
    }

    pub fn status(&self) -> EngineStatus {
        self.inner.supervisor.status()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<EngineStatus> {
        self.inner.supervisor.watch_status()
    }

    async fn wait_running(&self, limit: Duration) -> Result<(), EngineError> {
        match self.inner.supervisor.wait_running(limit).await {
            Ok(()) => Ok(()),
            Err(_) => {
                self.shutdown().await;
                Err(EngineError::NotReady {
                    engine: "postgres",
                    seconds: limit.as_secs(),
                    log: self.inner.log_path.display().to_string(),
                    tail: tail(&self.inner.log_path, 2000),
                })
            }
        }
    }

    /// Stops the server cleanly (fast shutdown), then waits for the
    /// supervisor to finish.
    pub async fn shutdown(&self) {
        self.inner.supervisor.stop().await;
    }

    /// [`ManagedPostgres::shutdown`] with another grace than the default
    /// 20 s: once it has passed, every process of the server is killed.
    pub async fn shutdown_within(&self, grace: Duration) {
        self.inner.supervisor.stop_within(grace).await;
    }
}

/// The right to change the public lines of `pg_hba.conf`
/// ([`ManagedPostgres::public_rules`]).
pub struct PublicRules<'a> {
    engine: &'a ManagedPostgres,
    current: tokio::sync::MutexGuard<'a, Vec<HbaRule>>,
}

impl PublicRules<'_> {
    /// What the public listener admits now.
    pub fn current(&self) -> &[HbaRule] {
        &self.current
    }

    /// Makes the public listener admit exactly `rules` (sorted, without
    /// duplicates) and returns once new connections are checked against
    /// them. Nothing is written when they are what the file holds;
    /// `Ok(true)` when they changed.
    pub async fn apply(&mut self, mut rules: Vec<HbaRule>) -> Result<bool, EngineError> {
        rules.sort();
        rules.dedup();
        if *self.current == rules {
            return Ok(false);
        }
        let inner = &self.engine.inner;
        let text = pg_public::render(&rules)?;
        let before = fs::read(&inner.hba_path).map_err(EngineError::io(format!(
            "read {}",
            inner.hba_path.display()
        )))?;
        pg_public::write_owned(&inner.hba_path, text.as_bytes(), inner.os_user.as_ref())?;
        if let Err(e) = self.reload().await {
            // The server keeps the rules it had when a file does not load;
            // the file says so too.
            let _ = pg_public::write_owned(&inner.hba_path, &before, inner.os_user.as_ref());
            return Err(e);
        }
        *self.current = rules;
        Ok(true)
    }

    /// Checks the file as the server reads it, reloads, and waits until a
    /// new session sees the reload (`pg_conf_load_time` is the
    /// postmaster's, inherited by every backend it forks after).
    async fn reload(&self) -> Result<(), EngineError> {
        let config = self.engine.admin_config();
        let failed =
            |e: tokio_postgres::Error| EngineError::Other(format!("reloading pg_hba.conf: {e}"));
        let (client, conn) = config.connect(NoTls).await.map_err(failed)?;
        let task = tokio::spawn(conn);
        let result = async {
            let bad = client
                .query(
                    "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL",
                    &[],
                )
                .await?;
            if let Some(row) = bad.first() {
                let line: Option<i32> = row.get(0);
                let error: String = row.get(1);
                return Ok(Err(EngineError::Other(format!(
                    "the pg_hba.conf mds wrote does not load (line {}: {error})",
                    line.unwrap_or_default()
                ))));
            }
            let loaded_at: f64 = client
                .query_one(
                    "SELECT extract(epoch FROM pg_conf_load_time())::float8",
                    &[],
                )
                .await?
                .get(0);
            client.execute("SELECT pg_reload_conf()", &[]).await?;
            Ok(Ok(loaded_at))
        }
        .await;
        drop(client);
        let _ = task.await;
        let loaded_at = result.map_err(failed)??;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (client, conn) = config.connect(NoTls).await.map_err(failed)?;
            let task = tokio::spawn(conn);
            let now: Result<f64, _> = client
                .query_one(
                    "SELECT extract(epoch FROM pg_conf_load_time())::float8",
                    &[],
                )
                .await
                .map(|row| row.get(0));
            drop(client);
            let _ = task.await;
            if now.map_err(failed)? > loaded_at {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EngineError::Other(
                    "postgres did not reload pg_hba.conf within 10 s".to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub(crate) fn admin_config(port: u16, password: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .password(password)
        .dbname("postgres")
        .application_name("mds")
        .connect_timeout(Duration::from_secs(3));
    config
}

/// Creates the engine's home, owned by the OS user it runs as.
fn prepare_home(
    engines_dir: &Path,
    home: &Path,
    os_user: Option<&OsUser>,
) -> Result<(), EngineError> {
    fs::create_dir_all(home).map_err(EngineError::io(format!("create {}", home.display())))?;
    if let Some(user) = os_user {
        // Root runs mds; the engine user only needs to pass through these.
        for dir in [engines_dir.parent().unwrap_or(engines_dir), engines_dir] {
            let mode = fs::metadata(dir)
                .map_err(EngineError::io(format!("stat {}", dir.display())))?
                .permissions()
                .mode();
            fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o7777) | 0o001))
                .map_err(EngineError::io(format!("chmod {}", dir.display())))?;
        }
        user.chown(home)?;
        user.check_can_enter(home)?;
    }
    fs::set_permissions(home, fs::Permissions::from_mode(0o700))
        .map_err(EngineError::io(format!("chmod {}", home.display())))?;
    Ok(())
}

async fn initdb(
    binaries: &PostgresBinaries,
    home: &Path,
    os_user: Option<&OsUser>,
    secret_path: &Path,
    master_key: &MasterKey,
) -> Result<(), EngineError> {
    let staging = home.join("data.init");
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .map_err(EngineError::io(format!("remove {}", staging.display())))?;
    }
    let password = mds_crypto::random_password(40);
    let pwfile = home.join("initdb.pw");
    mds_crypto::write_secret_file(&pwfile, password.as_bytes())
        .map_err(EngineError::io(format!("write {}", pwfile.display())))?;
    if let Some(user) = os_user {
        user.chown(&pwfile)?;
    }
    tracing::info!(bin = %binaries.bin_dir.display(), "initialising managed postgres (first start)");
    let mut cmd = Command::new(binaries.program("initdb"));
    cmd.arg("-D")
        .arg(&staging)
        .arg("--username")
        .arg(SUPERUSER)
        .arg("--pwfile")
        .arg(&pwfile)
        .args(["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"])
        .current_dir(home)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    as_user(&mut cmd, os_user);
    let output = cmd.output().await.map_err(EngineError::io("run initdb"));
    let _ = fs::remove_file(&pwfile);
    let output = output?;
    if !output.status.success() {
        return Err(EngineError::InitFailed {
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    // The password is saved before the cluster is published as `data`, so
    // a cluster never exists without its password.
    let sealed = master_key.seal("engine:postgres:superuser", password.as_bytes());
    mds_crypto::write_secret_file(secret_path, &sealed)
        .map_err(EngineError::io(format!("write {}", secret_path.display())))?;
    fs::rename(&staging, home.join("data"))
        .map_err(EngineError::io("publish initialised cluster"))?;
    Ok(())
}

fn open_password(
    secret_path: &Path,
    master_key: &MasterKey,
) -> Result<Zeroizing<String>, EngineError> {
    let sealed = fs::read(secret_path).map_err(EngineError::io(format!(
        "read the superuser password {}",
        secret_path.display()
    )))?;
    master_key
        .open_string("engine:postgres:superuser", &sealed)
        .map_err(|_| EngineError::WrongMasterKey(secret_path.display().to_string()))
}

/// The port recorded at first start, or a free one now (and recorded).
fn choose_port(meta_path: &Path) -> Result<u16, EngineError> {
    let recorded = fs::read(meta_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| v.get("port")?.as_u64())
        .and_then(|p| u16::try_from(p).ok());
    if let Some(port) = recorded {
        return Ok(port);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(EngineError::io("find a free loopback port"))?
        .port();
    let meta = serde_json::json!({ "port": port, "superuser": SUPERUSER });
    fs::write(meta_path, meta.to_string())
        .map_err(EngineError::io(format!("write {}", meta_path.display())))?;
    Ok(port)
}

pub(crate) fn as_user(cmd: &mut Command, os_user: Option<&OsUser>) {
    if let Some(user) = os_user {
        cmd.uid(user.uid).gid(user.gid);
    }
}

/// A postmaster left by an earlier mds that died without stopping it:
/// stopped as cleanly as it allows (fast shutdown, so its checkpoint is
/// written). What it leaves is then swept by [`Program::leftovers`].
async fn stop_leftover(data: &Path) {
    let Some((pid, _)) = read_postmaster_pid(data) else {
        return;
    };
    // The pid file may name a pid that is now another program's: only a
    // postgres working in this data dir is ours.
    if processes_in(data, "postgres").contains(&pid) {
        tracing::warn!(pid, "stopping a postgres left running by an earlier mds");
        stop_foreign(pid, Signal::SIGINT, STOP_GRACE).await;
    }
}

/// The postmaster's pid and its System V shared-memory segment id, from
/// `postmaster.pid` (line 1, and the second number of line 7).
fn read_postmaster_pid(data: &Path) -> Option<(u32, Option<u64>)> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse::<u32>().ok()?;
    let shmid = lines
        .nth(5)
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
    Some((pid, shmid))
}

/// How many processes are still attached to System V segment `shmid`
/// (`None`: no such segment). A postmaster refuses to start while any
/// process of its previous incarnation holds it ("pre-existing shared
/// memory block is still in use").
fn shm_attached(shmid: u64) -> Option<u64> {
    let table = fs::read_to_string("/proc/sysvipc/shm").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1)?.parse::<u64>().ok()? == shmid).then(|| fields.get(6)?.parse().ok())?
    })
}

fn spawn(launch: &Launch) -> Result<Child, EngineError> {
    let mut cmd = Command::new(launch.binaries.program("postgres"));
    let host = launch.public.as_ref().map(|(host, _, _)| *host);
    cmd.arg("-D")
        .arg(&launch.data)
        .arg("-p")
        .arg(launch.port.to_string())
        .arg("-c")
        .arg(format!(
            "listen_addresses={}",
            pg_public::listen_addresses(host)
        ));
    if let Some((_, cert, key)) = &launch.public {
        cmd.args(["-c", "ssl=on", "-c"])
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()));
    }
    cmd.args([
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=300",
        "-c",
        "password_encryption=scram-sha-256",
    ]);
    for setting in &launch.settings {
        cmd.arg("-c").arg(setting);
    }
    spawn_logged(
        cmd,
        &launch.home,
        &launch.log_path,
        launch.os_user.as_ref(),
        "postgres",
    )
}

/// The managed PostgreSQL as the supervisor runs it.
struct Postgres {
    launch: Launch,
}

impl Program for Postgres {
    type Run = Child;

    fn name(&self) -> String {
        "postgres".to_string()
    }

    async fn start(&self) -> Result<Child, String> {
        // Processes of the last incarnation were killed (the sweep); their
        // attachment to its shared memory goes as the kernel reaps them.
        if let Some(shmid) = read_postmaster_pid(&self.launch.data).and_then(|(_, id)| id) {
            let deadline = Instant::now() + SHM_WAIT;
            while shm_attached(shmid).is_some_and(|n| n > 0) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(n) = shm_attached(shmid).filter(|n| *n > 0) {
                return Err(format!(
                    "{n} processes still hold the shared memory (id {shmid}) of an \
                     earlier postgres of this data dir"
                ));
            }
        }
        spawn(&self.launch).map_err(|e| e.to_string())
    }

    /// Ready: a real superuser login runs a query.
    async fn probe(&self, _run: &Child) -> bool {
        let Ok(Ok((client, conn))) =
            tokio::time::timeout(Duration::from_secs(2), self.launch.admin.connect(NoTls)).await
        else {
            return false;
        };
        let task = tokio::spawn(conn);
        let ok = client.simple_query("SELECT 1").await.is_ok();
        drop(client);
        let _ = task.await;
        ok
    }

    async fn prepare(&self) {
        stop_leftover(&self.launch.data).await;
    }

    /// Every process working in the data dir: the postmaster changes into
    /// it, and each child it forks (each leading a session of its own)
    /// inherits it.
    fn leftovers(&self) -> Vec<u32> {
        processes_in(&self.launch.data, "postgres")
    }
}

fn policy() -> Policy {
    Policy {
        ready_timeout: READY_TIMEOUT,
        probe_every: Duration::from_millis(25),
        health_every: None,
        backoff_min: BACKOFF_MIN,
        backoff_max: BACKOFF_MAX,
        stable_after: STABLE_AFTER,
        // A platform without its database is down whatever it does, so
        // it keeps trying (at the backoff's pace).
        crash_budget: None,
        first_start_must_succeed: false,
        // Fast shutdown: sessions are cut, the checkpoint is written.
        stop_signal: Signal::SIGINT,
        signal_group: false,
        stop_grace: STOP_GRACE,
        ..Policy::default()
    }
}

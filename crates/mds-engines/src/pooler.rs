//! The connection pooler in front of the managed PostgreSQL: pgbouncer
//! (1.24, which `scripts/build-pgbouncer` builds from Debian 13's source
//! package), supervised like the other engines (ARCHITECTURE.md says why
//! pgbouncer rather than a pooler of our own). Everything else in mds
//! speaks to it through [`Pooler`]: the entries it serves, their stats,
//! and closing a database's connections, so it can be replaced.
//!
//! - **Auth.** `auth_type = scram-sha-256` against `users.txt`, which holds
//!   each tenant role's SCRAM verifier as PostgreSQL stores it (never a
//!   password; the file is 0600, the engine user's). pgbouncer then logs in
//!   to the server with the key the client proved (SCRAM pass-through), so
//!   a role reaches through it exactly what it reaches directly: another
//!   tenant's database name is refused by PostgreSQL itself (no CONNECT).
//! - **Entries.** One `[databases]` entry per pooled binding, named as its
//!   database, with its mode, `pool_size` = `max_db_connections` (a tenant
//!   never holds more server connections than its pool) and
//!   `max_db_client_connections` (nor more client connections than its
//!   limit, so one tenant's storm cannot take every client slot).
//! - **Prepared statements.** `max_prepared_statements` lets protocol-level
//!   named prepared statements work in transaction mode (pgbouncer
//!   prepares them again on whichever server connection a client gets).
//! - **Versions.** An older pgbouncer (Debian 12's 1.18) still runs, with
//!   what it lacks left out of the config and said in the log: no
//!   per-binding client limit, no prepared statements across transactions.
//! - **Changes** rewrite both files whole (temporary file, rename) and
//!   `RELOAD` over the admin console: connections of other entries stay.
//! - **Layout:** `DIR/engines/pooler/` holds `pgbouncer.ini`, `users.txt`,
//!   `port` (chosen once, kept, so injected URLs outlive restarts) and
//!   `pgbouncer.log`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::pg_public::write_owned;
use crate::process::{processes_in, spawn_logged, stop_foreign, tail};
use crate::supervisor::{Policy, Program, Supervisor};
use crate::{EngineError, EngineStatus, OsUser};

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(5);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The console user mds administers pgbouncer as. Tenant roles are
/// `bnd_...`, so it can never be one of theirs.
const ADMIN_USER: &str = "mds_pooler";
const INI: &str = "pgbouncer.ini";
const USERS: &str = "users.txt";
const LOG: &str = "pgbouncer.log";

/// How one binding's clients share server connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per transaction (the default).
    Transaction,
    /// A server connection per client connection, reset after.
    Session,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// One pooled binding: its database, which is also its role's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub database: String,
    /// The roles that may log in to it, each with its SCRAM verifier as
    /// in `pg_authid`: the binding's current login role, and during a
    /// rotation its previous or next one.
    pub logins: Vec<(String, String)>,
    pub mode: PoolMode,
    /// Server connections at most.
    pub size: u32,
    /// Client connections at most.
    pub max_clients: u32,
}

/// One pool's numbers, from `SHOW POOLS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub database: String,
    pub clients_active: i64,
    pub clients_waiting: i64,
    pub servers_active: i64,
    pub servers_idle: i64,
    /// How long the oldest waiting client has waited.
    pub max_wait_ms: i64,
}

/// What the pooler is started with.
pub struct PoolerOptions {
    pub binary: PathBuf,
    /// `DIR/engines/pooler`.
    pub dir: PathBuf,
    pub os_user: Option<OsUser>,
    /// The managed engine, on loopback.
    pub upstream_port: u16,
    /// Client connections at most, all tenants together.
    pub max_clients: u32,
    /// The console password (derived from the master key by the caller).
    pub admin_password: Zeroizing<String>,
}

/// The pgbouncer to run: `MDS_PGBOUNCER`, else the one
/// `scripts/build-pgbouncer` built (as root in /usr/local/lib/mds, else
/// in ~/.local/share/mds), else one in PATH or where Debian puts it.
pub fn find_pgbouncer() -> Result<PathBuf, EngineError> {
    if let Some(given) = std::env::var_os("MDS_PGBOUNCER") {
        let given = PathBuf::from(given);
        return if given.is_file() {
            Ok(given)
        } else {
            Err(EngineError::Other(format!(
                "MDS_PGBOUNCER={}: no such file",
                given.display()
            )))
        };
    }
    const BUILT: &str = "mds/pgbouncer/bin/pgbouncer";
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    let built = [Some(PathBuf::from("/usr/local/lib")), data_home]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(BUILT));
    let in_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("pgbouncer"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    built
        .chain(in_path)
        .chain([PathBuf::from("/usr/sbin/pgbouncer")])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            EngineError::Other(
                "pgbouncer was not found (MDS_PGBOUNCER, /usr/local/lib/mds, \
                 ~/.local/share/mds, PATH, /usr/sbin); scripts/install-deps builds it"
                    .to_string(),
            )
        })
}

/// What the pgbouncer being run can do, from its `--version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolerFeatures {
    /// `max_db_client_connections` (1.24).
    pub client_limit: bool,
    /// `max_prepared_statements` (1.21).
    pub prepared_statements: bool,
}

impl PoolerFeatures {
    /// From `pgbouncer --version` (`PgBouncer 1.24.1`); an unreadable one
    /// is taken as the oldest mds runs with.
    pub fn of_version(text: &str) -> Self {
        let version = text
            .split_whitespace()
            .skip_while(|w| *w != "PgBouncer")
            .nth(1)
            .map(|v| {
                v.split('.')
                    .take(2)
                    .map(|n| n.parse::<u32>().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let at_least = |major: u32, minor: u32| {
            (
                version.first().copied().unwrap_or(0),
                version.get(1).copied().unwrap_or(0),
            ) >= (major, minor)
        };
        Self {
            client_limit: at_least(1, 24),
            prepared_statements: at_least(1, 21),
        }
    }

    async fn of_binary(binary: &Path) -> Result<(Self, String), EngineError> {
        let out = Command::new(binary)
            .arg("--version")
            .output()
            .await
            .map_err(EngineError::io(format!(
                "run {} --version",
                binary.display()
            )))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let first = text.lines().next().unwrap_or_default().trim().to_string();
        Ok((Self::of_version(&text), first))
    }
}

/// The supervised pooler. Cheap to clone.
#[derive(Clone)]
pub struct Pooler {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    port: u16,
    upstream_port: u16,
    max_clients: u32,
    os_user: Option<OsUser>,
    admin_password: Zeroizing<String>,
    /// Made once per start, so a rewrite does not salt a new one.
    admin_verifier: String,
    features: PoolerFeatures,
    /// `PgBouncer 1.24.1`.
    version: String,
    supervisor: Supervisor,
    /// The entries last written, under the lock every change holds.
    entries: Mutex<Vec<PoolEntry>>,
}

impl Pooler {
    /// Starts pgbouncer with no tenant entries (the provisioner applies
    /// them next) and returns once its console answers.
    pub async fn start(options: PoolerOptions) -> Result<Self, EngineError> {
        let dir = options.dir;
        fs::create_dir_all(&dir).map_err(EngineError::io(format!("create {}", dir.display())))?;
        // One left by a killed mds would hold the port this one keeps.
        stop_leftover(&dir).await;
        let port = keep_port(&dir)?;
        if let Some(user) = &options.os_user {
            user.chown(&dir)?;
            user.check_can_enter(&dir)?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(EngineError::io(format!("chmod {}", dir.display())))?;
        let (features, version) = PoolerFeatures::of_binary(&options.binary).await?;
        if !features.client_limit || !features.prepared_statements {
            tracing::warn!(
                binary = %options.binary.display(),
                version,
                "this pgbouncer predates 1.24: per-binding client limits are not enforced{}; \
                 scripts/build-pgbouncer builds 1.24",
                if features.prepared_statements {
                    ""
                } else {
                    " and named prepared statements do not survive a transaction"
                }
            );
        }
        let files = Files {
            features,
            dir: dir.clone(),
            port,
            upstream_port: options.upstream_port,
            max_clients: options.max_clients,
            os_user: options.os_user.clone(),
            admin_verifier: postgres_protocol::password::scram_sha_256(
                options.admin_password.as_bytes(),
            ),
        };
        files.write(&[])?;
        let launch = Launch {
            binary: options.binary,
            dir: dir.clone(),
            os_user: options.os_user.clone(),
            port,
        };
        let supervisor = Supervisor::start(launch, policy());
        if let Err(status) = supervisor.wait_running(READY_TIMEOUT).await {
            supervisor.stop().await;
            return Err(EngineError::NotReady {
                engine: "pgbouncer",
                seconds: READY_TIMEOUT.as_secs(),
                log: format!("{} ({})", dir.join(LOG).display(), status.label()),
                tail: tail(&dir.join(LOG), 1500),
            });
        }
        let pooler = Self {
            inner: Arc::new(Inner {
                dir,
                port,
                upstream_port: options.upstream_port,
                max_clients: options.max_clients,
                os_user: options.os_user,
                admin_password: options.admin_password,
                admin_verifier: files.admin_verifier,
                features,
                version,
                supervisor,
                entries: Mutex::new(Vec::new()),
            }),
        };
        Ok(pooler)
    }

    /// Where clients connect (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    pub fn status(&self) -> EngineStatus {
        self.inner.supervisor.status()
    }

    pub fn pid(&self) -> Option<u32> {
        self.inner.supervisor.pid()
    }

    /// Client connections at most, all tenants together.
    pub fn max_clients(&self) -> u32 {
        self.inner.max_clients
    }

    pub fn features(&self) -> PoolerFeatures {
        self.inner.features
    }

    /// As the binary says it (`PgBouncer 1.24.1`).
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// Serves exactly `entries` from now on: rewrites the files and
    /// reloads when they changed. Other pools' connections stay; a
    /// removed entry's clients are closed ([`Pooler::close`]) first.
    pub async fn apply(&self, mut entries: Vec<PoolEntry>) -> Result<(), EngineError> {
        entries.sort_by(|a, b| a.database.cmp(&b.database));
        entries.dedup_by(|a, b| a.database == b.database);
        let mut current = self.inner.entries.lock().await;
        if *current == entries {
            return Ok(());
        }
        for gone in current
            .iter()
            .filter(|old| !entries.iter().any(|e| e.database == old.database))
        {
            // Best effort: the entry goes either way.
            if let Err(e) = self.console(&format!("KILL {}", gone.database)).await {
                tracing::debug!(database = %gone.database, error = %e, "closing a pool");
            }
        }
        self.files().write(&entries)?;
        // A restarting pgbouncer reads the files when it starts; a running
        // one is told. Only then is the list current: a failed reload is
        // tried again by the next sync.
        if self.status() == EngineStatus::Running {
            self.console("RELOAD").await?;
        }
        *current = entries;
        Ok(())
    }

    /// Closes every client and server connection of `database` and holds
    /// new clients until [`Pooler::resume`] (before its data is replaced
    /// or dropped). Nothing to do when it is not pooled.
    pub async fn close(&self, database: &str) -> Result<(), EngineError> {
        if !self.serves(database).await {
            return Ok(());
        }
        self.console(&format!("KILL {database}")).await
    }

    /// Lets clients of `database` in again after [`Pooler::close`].
    pub async fn resume(&self, database: &str) -> Result<(), EngineError> {
        if !self.serves(database).await {
            return Ok(());
        }
        match self.console(&format!("RESUME {database}")).await {
            // Not paused (a restart in between cleared it): nothing is
            // held. pgbouncer says "database X is not paused".
            Err(EngineError::Other(message)) if message.contains("not paused") => Ok(()),
            other => other,
        }
    }

    async fn serves(&self, database: &str) -> bool {
        self.inner
            .entries
            .lock()
            .await
            .iter()
            .any(|e| e.database == database)
    }

    /// Every tenant pool's numbers (the console's own is left out).
    pub async fn pools(&self) -> Result<Vec<PoolStats>, EngineError> {
        let rows = self.console_rows("SHOW POOLS").await?;
        Ok(rows
            .into_iter()
            .filter(|row| row.get("database").is_some_and(|d| d != "pgbouncer"))
            .map(|row| {
                let n = |name: &str| {
                    row.get(name)
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0)
                };
                PoolStats {
                    database: row.get("database").cloned().unwrap_or_default(),
                    clients_active: n("cl_active"),
                    clients_waiting: n("cl_waiting"),
                    servers_active: n("sv_active"),
                    servers_idle: n("sv_idle") + n("sv_used") + n("sv_tested"),
                    max_wait_ms: n("maxwait") * 1000 + n("maxwait_us") / 1000,
                }
            })
            .collect())
    }

    /// Stops pgbouncer (server shutdown): its clients are cut.
    pub async fn shutdown(&self) {
        self.inner.supervisor.stop().await;
    }

    fn files(&self) -> Files {
        Files {
            features: self.inner.features,
            dir: self.inner.dir.clone(),
            port: self.inner.port,
            upstream_port: self.inner.upstream_port,
            max_clients: self.inner.max_clients,
            os_user: self.inner.os_user.clone(),
            admin_verifier: self.inner.admin_verifier.clone(),
        }
    }

    /// Runs one console command; its error in pgbouncer's words.
    async fn console(&self, command: &str) -> Result<(), EngineError> {
        self.console_rows(command).await.map(|_| ())
    }

    async fn console_rows(
        &self,
        command: &str,
    ) -> Result<Vec<std::collections::HashMap<String, String>>, EngineError> {
        let run = async {
            let (client, connection) = admin_config(self.inner.port, &self.inner.admin_password)
                .connect(tokio_postgres::NoTls)
                .await?;
            let task = tokio::spawn(connection);
            let result = client.simple_query(command).await;
            drop(client);
            let _ = task.await;
            result
        };
        let messages = tokio::time::timeout(ADMIN_TIMEOUT, run)
            .await
            .map_err(|_| EngineError::Other(format!("pgbouncer console: {command} timed out")))?
            .map_err(|e| {
                EngineError::Other(match e.as_db_error() {
                    Some(db) => format!("pgbouncer: {}", db.message()),
                    None => format!("pgbouncer console: {e}"),
                })
            })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    row.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            (
                                c.name().to_string(),
                                row.get(i).unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }
}

fn admin_config(port: u16, password: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(ADMIN_USER)
        .password(password)
        .dbname("pgbouncer")
        .connect_timeout(Duration::from_secs(2));
    config
}

/// The port kept in `dir/port` when it is still free, else a new one
/// (written down).
fn keep_port(dir: &Path) -> Result<u16, EngineError> {
    let path = dir.join("port");
    let kept = fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse::<u16>().ok())
        .filter(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    if let Some(port) = kept {
        return Ok(port);
    }
    let port = crate::free_port()?;
    fs::write(&path, format!("{port}\n"))
        .map_err(EngineError::io(format!("write {}", path.display())))?;
    Ok(port)
}

/// What the two files are rendered from.
struct Files {
    features: PoolerFeatures,
    dir: PathBuf,
    port: u16,
    upstream_port: u16,
    max_clients: u32,
    os_user: Option<OsUser>,
    admin_verifier: String,
}

impl Files {
    fn write(&self, entries: &[PoolEntry]) -> Result<(), EngineError> {
        let mut users = format!("\"{ADMIN_USER}\" \"{}\"\n", self.admin_verifier);
        for e in entries {
            check_word(&e.database)?;
            for (role, verifier) in &e.logins {
                check_word(role)?;
                if verifier.contains('"') || !verifier.starts_with("SCRAM-SHA-256$") {
                    return Err(EngineError::Other(format!(
                        "role {role}: not a SCRAM verifier; the pooler takes no other"
                    )));
                }
                users.push_str(&format!("\"{role}\" \"{verifier}\"\n"));
            }
        }
        // Users first: an entry whose user is not there yet cannot log in.
        write_owned(
            &self.dir.join(USERS),
            users.as_bytes(),
            self.os_user.as_ref(),
        )?;
        write_owned(
            &self.dir.join(INI),
            self.render(entries).as_bytes(),
            self.os_user.as_ref(),
        )
    }

    fn render(&self, entries: &[PoolEntry]) -> String {
        let mut ini = String::from("; Written by mds; changes are overwritten.\n[databases]\n");
        for e in entries {
            ini.push_str(&format!(
                "{db} = host=127.0.0.1 port={port} dbname={db} pool_mode={mode} \
                 pool_size={size} max_db_connections={size}",
                db = e.database,
                port = self.upstream_port,
                mode = e.mode.as_str(),
                size = e.size,
            ));
            if self.features.client_limit {
                ini.push_str(&format!(" max_db_client_connections={}", e.max_clients));
            }
            ini.push('\n');
        }
        // Why each setting:
        // - no unix socket: nothing of it in /tmp, loopback TCP only;
        // - connections are not logged one by one: a storm of them would
        //   flood the log;
        // - idle server connections go after a minute: a tenant's pool
        //   shrinks back when its storm is over;
        // - extra_float_digits is what JDBC sends; ignoring it is safe;
        // - a client counts against its database's client limit from its
        //   startup packet on, before it has proved anything: one that
        //   never finishes logging in gives its slot back after 10 s, not
        //   pgbouncer's 60 (a loopback SCRAM exchange takes milliseconds).
        ini.push_str(&format!(
            "[pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             listen_backlog = 4096\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {users}\n\
             admin_users = {ADMIN_USER}\n\
             pool_mode = transaction\n\
             max_client_conn = {max_clients}\n\
             default_pool_size = 10\n\
             server_reset_query = DISCARD ALL\n\
             server_idle_timeout = 60\n\
             server_login_retry = 1\n\
             client_login_timeout = 10\n\
             ignore_startup_parameters = extra_float_digits\n\
             log_connections = 0\n\
             log_disconnections = 0\n\
             log_pooler_errors = 1\n",
            port = self.port,
            users = self.dir.join(USERS).display(),
            max_clients = self.max_clients,
        ));
        if self.features.prepared_statements {
            // Named prepared statements in transaction mode: each server
            // connection keeps this many (LRU); pgbouncer prepares one
            // again where a client's next transaction lands.
            ini.push_str("max_prepared_statements = 200\n");
        }
        ini
    }
}

/// Database and role names go into the config unquoted: only the words
/// mds makes (`bnd_...`) pass.
fn check_word(name: &str) -> Result<(), EngineError> {
    if !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err(EngineError::Other(format!(
            "{name:?} cannot be a pooled database name"
        )))
    }
}

/// Stops any pgbouncer still running in `dir` (left by a killed mds).
async fn stop_leftover(dir: &Path) {
    for pid in processes_in(dir, "pgbouncer") {
        tracing::warn!(pid, dir = %dir.display(), "stopping a pgbouncer left by an earlier mds");
        // SIGTERM: immediate shutdown (its clients reconnect to ours).
        stop_foreign(pid, Signal::SIGTERM, STOP_GRACE).await;
    }
}

struct Launch {
    binary: PathBuf,
    dir: PathBuf,
    os_user: Option<OsUser>,
    port: u16,
}

impl Program for Launch {
    type Run = Child;

    fn name(&self) -> String {
        "pgbouncer".to_string()
    }

    async fn start(&self) -> Result<Child, String> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg(self.dir.join(INI));
        spawn_logged(
            cmd,
            &self.dir,
            &self.dir.join(LOG),
            self.os_user.as_ref(),
            "pgbouncer",
        )
        .map_err(|e| e.to_string())
    }

    /// Ready: it accepts connections on its port.
    async fn probe(&self, _run: &Child) -> bool {
        matches!(
            tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(("127.0.0.1", self.port)),
            )
            .await,
            Ok(Ok(_))
        )
    }

    async fn prepare(&self) {
        stop_leftover(&self.dir).await;
    }

    fn leftovers(&self) -> Vec<u32> {
        processes_in(&self.dir, "pgbouncer")
    }
}

fn policy() -> Policy {
    Policy {
        ready_timeout: READY_TIMEOUT,
        probe_every: Duration::from_millis(5),
        health_every: None,
        // Restarted at once after a crash: clients wait for it.
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_secs(2),
        stable_after: Duration::ZERO,
        crash_budget: None,
        first_start_must_succeed: false,
        // SIGINT: safe shutdown, waiting for transactions in flight.
        stop_signal: Signal::SIGINT,
        signal_group: false,
        stop_grace: STOP_GRACE,
        ..Policy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_follow_the_version() {
        let new = PoolerFeatures::of_version("PgBouncer 1.24.1\nlibevent 2.1.12-stable\n");
        assert!(new.client_limit && new.prepared_statements);
        let old = PoolerFeatures::of_version("PgBouncer 1.18.0\n");
        assert!(!old.client_limit && !old.prepared_statements);
        let mid = PoolerFeatures::of_version("PgBouncer 1.21.0");
        assert!(!mid.client_limit && mid.prepared_statements);
        assert!(PoolerFeatures::of_version("PgBouncer 2.0.0").client_limit);
        let unreadable = PoolerFeatures::of_version("");
        assert!(!unreadable.client_limit && !unreadable.prepared_statements);
    }

    #[test]
    fn only_mds_words_are_pooled() {
        for ok in ["bnd_01hx", "a", "mds_spare_x"] {
            assert!(check_word(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "x y", "x=1", "x;y", "\"x\"", &"a".repeat(64)] {
            assert!(check_word(bad).is_err(), "{bad}");
        }
    }
}

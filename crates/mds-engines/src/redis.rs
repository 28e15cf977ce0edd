//! Managed Redis: one supervised `redis-server` per binding, on its own
//! loopback port, with its own ACL user (the default user is off), AOF with
//! `appendfsync everysec`, and a memory limit.
//!
//! Besides the tenant's user, each instance has mds's own `mds-admin` user
//! (all commands), for backups; RDB files are written only when mds asks
//! (`save ""`; durability is the AOF's), so a snapshot's file is never
//! replaced under it (see `redis_backup`).
//!
//! Layout: `DIR/engines/redis/<binding>/` holds `redis.conf` (the
//! passwords only as SHA-256 hashes), the AOF and RDB files, `redis.pid` and
//! `redis.log`. Each instance runs under the [`Supervisor`]: one that dies
//! is restarted with backoff from the same files; one left by a killed mds
//! is stopped and restarted.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::process::{processes_in, spawn_logged, stop_foreign, tail};
use crate::resp::{auth_ping, Resp};
use crate::supervisor::{Policy, Program, Supervisor};
use crate::{EngineError, EngineStatus, OsUser};

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What one instance must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSpec {
    pub binding_id: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Other (user, password) logins meanwhile: a rotation's next one, or
    /// the replaced one in its grace period. Every login reaches the same
    /// keys; a login dropped from the list is deleted, which ends its
    /// connections.
    pub also: Vec<(String, String)>,
    /// The password of [`ADMIN_USER`]: never the tenant's (the provisioner
    /// derives it from the master key and the binding id).
    pub admin_password: String,
    pub maxmemory_bytes: u64,
    pub eviction: String,
}

/// What a tenant login may do: every command but the administrative ones
/// (CONFIG, ACL, SHUTDOWN, DEBUG, MODULE, replication...), on every key:
/// the instance is theirs, its settings are not.
const TENANT_RULES: [&str; 4] = ["~*", "&*", "+@all", "-@admin"];

impl RedisSpec {
    /// Every tenant login, the current one first.
    pub fn logins(&self) -> impl Iterator<Item = (&String, &String)> {
        std::iter::once((&self.user, &self.password)).chain(self.also.iter().map(|(u, p)| (u, p)))
    }

    /// Whether `other` differs from this only in its logins: a change made
    /// live (ACL SETUSER and DELUSER), with no restart, and no connection
    /// cut but those of a login that goes.
    fn same_but_logins(&self, other: &RedisSpec) -> bool {
        let strip = |s: &RedisSpec| RedisSpec {
            user: String::new(),
            password: String::new(),
            also: Vec::new(),
            ..s.clone()
        };
        strip(self) == strip(other)
    }
}

fn password_hash(password: &str) -> String {
    format!("#{}", hex::encode(Sha256::digest(password.as_bytes())))
}

/// mds's own user on every managed instance (backups: BGSAVE, INFO, CLIENT
/// LIST, DUMP...). A hyphen, which tenants' user names never have.
pub const ADMIN_USER: &str = "mds-admin";

/// The eviction policies Redis knows.
pub const EVICTION_POLICIES: &[&str] = &[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

/// The major version `binary --version` reports ("7" of `v=7.0.15`).
pub fn redis_major_version(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    let major = version.split('.').next()?;
    (!major.is_empty() && major.chars().all(|c| c.is_ascii_digit())).then(|| major.to_string())
}

/// `redis-server` in PATH.
pub fn find_redis_server() -> Result<PathBuf, EngineError> {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("redis-server"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            EngineError::Other(
                "redis-server was not found in PATH; install it with \
                 `apt-get install -y redis-server` (scripts/install-deps does this)"
                    .to_string(),
            )
        })
}

/// A free loopback port, for a new instance.
pub fn free_port() -> Result<u16, EngineError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(EngineError::io("find a free loopback port"))
}

struct Instance {
    spec: RedisSpec,
    supervisor: Supervisor,
}

/// The supervisor of every managed Redis instance of this server.
#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

struct Inner {
    binary: PathBuf,
    root: PathBuf,
    os_user: Option<OsUser>,
    /// Every instance, under one lock; `None` once the engine has shut
    /// down, so that nothing starts an instance nobody would stop.
    instances: Mutex<Option<HashMap<String, Instance>>>,
    /// One lock per instance, held for a whole operation on it (start,
    /// stop, snapshot, data swap), so that those never interleave.
    ops: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl RedisEngine {
    pub fn new(
        binary: PathBuf,
        root: PathBuf,
        os_user: Option<OsUser>,
    ) -> Result<Self, EngineError> {
        fs::create_dir_all(&root).map_err(EngineError::io(format!("create {}", root.display())))?;
        if os_user.is_some() {
            fs::set_permissions(&root, fs::Permissions::from_mode(0o711))
                .map_err(EngineError::io(format!("chmod {}", root.display())))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                binary,
                root,
                os_user,
                instances: Mutex::new(Some(HashMap::new())),
                ops: std::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    pub(crate) fn dir(&self, binding_id: &str) -> PathBuf {
        self.inner.root.join(binding_id)
    }

    pub(crate) fn binary(&self) -> &Path {
        &self.inner.binary
    }

    pub(crate) fn os_user(&self) -> Option<&OsUser> {
        self.inner.os_user.as_ref()
    }

    /// Waits for, and holds, the instance's operation lock.
    pub(crate) async fn lock_instance(&self, binding_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut ops = self
                .inner
                .ops
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ops.entry(binding_id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The spec of a running instance of this engine.
    pub(crate) async fn running_spec(&self, binding_id: &str) -> Result<RedisSpec, EngineError> {
        self.inner
            .instances
            .lock()
            .await
            .as_ref()
            .and_then(|instances| instances.get(binding_id))
            .filter(|instance| instance.supervisor.status() == EngineStatus::Running)
            .map(|instance| instance.spec.clone())
            .ok_or_else(|| {
                EngineError::Other(format!(
                    "the redis-server of binding {binding_id} is not running"
                ))
            })
    }

    /// Makes the instance run as `spec` says (starting or restarting it)
    /// and returns once its user can log in and PING.
    pub async fn ensure_running(&self, spec: &RedisSpec) -> Result<(), EngineError> {
        let _op = self.lock_instance(&spec.binding_id).await;
        self.ensure_running_locked(spec).await
    }

    /// [`RedisEngine::ensure_running`], the instance's lock held.
    pub(crate) async fn ensure_running_locked(&self, spec: &RedisSpec) -> Result<(), EngineError> {
        let mut guard = self.inner.instances.lock().await;
        let Some(instances) = guard.as_mut() else {
            return Err(EngineError::Other("mds is shutting down".to_string()));
        };
        if let Some(existing) = instances.get_mut(&spec.binding_id) {
            if existing.supervisor.status() == EngineStatus::Running {
                if existing.spec == *spec {
                    return Ok(());
                }
                if existing.spec.same_but_logins(spec) {
                    // A rotation's step: logins come and go live; the
                    // config follows for the next start.
                    let dir = self.dir(&spec.binding_id);
                    self.write_config(&dir, spec)?;
                    apply_logins(&existing.spec, spec).await?;
                    existing.spec = spec.clone();
                    return Ok(());
                }
            }
        }
        if let Some(old) = instances.remove(&spec.binding_id) {
            stop_instance(old).await;
        }
        let dir = self.dir(&spec.binding_id);
        self.write_config(&dir, spec)?;
        let launch = Launch {
            binary: self.inner.binary.clone(),
            dir: dir.clone(),
            os_user: self.inner.os_user.clone(),
            spec: spec.clone(),
        };
        let supervisor = Supervisor::start(launch, policy());
        let mut status = supervisor.watch_status();
        instances.insert(
            spec.binding_id.clone(),
            Instance {
                spec: spec.clone(),
                supervisor,
            },
        );
        drop(guard);
        let ready = matches!(
            tokio::time::timeout(
                READY_TIMEOUT,
                status.wait_for(|s| *s == EngineStatus::Running)
            )
            .await,
            Ok(Ok(_))
        );
        if ready {
            Ok(())
        } else {
            Err(EngineError::NotReady {
                engine: "redis-server",
                seconds: READY_TIMEOUT.as_secs(),
                log: dir.join("redis.log").display().to_string(),
                tail: tail(&dir.join("redis.log"), 1500),
            })
        }
    }

    /// Stops an instance cleanly (its data stays on disk).
    pub async fn stop(&self, binding_id: &str) {
        let _op = self.lock_instance(binding_id).await;
        self.stop_locked(binding_id).await;
    }

    /// [`RedisEngine::stop`], the instance's lock held.
    pub(crate) async fn stop_locked(&self, binding_id: &str) {
        let instance = self
            .inner
            .instances
            .lock()
            .await
            .as_mut()
            .and_then(|instances| instances.remove(binding_id));
        if let Some(instance) = instance {
            stop_instance(instance).await;
        } else {
            stop_leftover(&self.dir(binding_id)).await;
        }
    }

    /// Stops an instance and deletes its data.
    pub async fn remove(&self, binding_id: &str) -> Result<(), EngineError> {
        let _op = self.lock_instance(binding_id).await;
        self.stop_locked(binding_id).await;
        let dir = self.dir(binding_id);
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(EngineError::io(format!("remove {}", dir.display())))?;
        }
        Ok(())
    }

    /// Stops every instance (server shutdown).
    pub async fn shutdown(&self) {
        let instances = self.inner.instances.lock().await.take().unwrap_or_default();
        for (_, instance) in instances {
            stop_instance(instance).await;
        }
        // Also any instance of this data dir that no supervisor owns (left
        // by a killed mds and not yet adopted): nothing must outlive us.
        for entry in fs::read_dir(&self.inner.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            stop_leftover(&entry.path()).await;
        }
    }

    fn write_config(&self, dir: &Path, spec: &RedisSpec) -> Result<(), EngineError> {
        if spec
            .logins()
            .any(|(user, password)| user == ADMIN_USER || *password == spec.admin_password)
        {
            return Err(EngineError::Other(format!(
                "binding {}: the tenant's user and password must not be mds's own",
                spec.binding_id
            )));
        }
        fs::create_dir_all(dir).map_err(EngineError::io(format!("create {}", dir.display())))?;
        let tenants: String = spec
            .logins()
            .map(|(user, password)| {
                format!(
                    "user {user} on {} {}\n",
                    password_hash(password),
                    TENANT_RULES.join(" ")
                )
            })
            .collect();
        let admin_hash = hex::encode(Sha256::digest(spec.admin_password.as_bytes()));
        let config = format!(
            "# Written by mds; changes are overwritten.\n\
             bind 127.0.0.1\n\
             port {port}\n\
             protected-mode yes\n\
             daemonize no\n\
             dir {dir}\n\
             pidfile {dir}/redis.pid\n\
             logfile \"\"\n\
             appendonly yes\n\
             appendfsync everysec\n\
             save \"\"\n\
             maxmemory {maxmemory}\n\
             maxmemory-policy {eviction}\n\
             enable-protected-configs no\n\
             enable-debug-command no\n\
             enable-module-command no\n\
             user default off\n\
             {tenants}\
             user {ADMIN_USER} on #{admin_hash} ~* &* +@all\n",
            port = spec.port,
            dir = dir.display(),
            maxmemory = spec.maxmemory_bytes,
            eviction = spec.eviction,
        );
        let path = dir.join("redis.conf");
        fs::write(&path, config).map_err(EngineError::io(format!("write {}", path.display())))?;
        if let Some(user) = &self.inner.os_user {
            for entry in fs::read_dir(dir)
                .map_err(EngineError::io("list an instance dir"))?
                .flatten()
            {
                user.chown(&entry.path())?;
            }
            user.chown(dir)?;
            user.check_can_enter(dir)?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(EngineError::io(format!("chmod {}", dir.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(EngineError::io(format!("chmod {}", path.display())))?;
        Ok(())
    }
}

async fn stop_instance(instance: Instance) {
    instance.supervisor.stop().await;
}

/// Stops any redis-server still running in `dir`: one left by an mds that
/// was killed, even one killed before the server wrote its pid file. Every
/// instance runs with its own directory as working directory, so /proc
/// tells which ones are there.
async fn stop_leftover(dir: &Path) {
    for pid in processes_in(dir, "redis-server") {
        tracing::warn!(pid, dir = %dir.display(), "stopping a redis-server left by an earlier mds");
        stop_foreign(pid, Signal::SIGTERM, STOP_GRACE).await;
    }
}

struct Launch {
    binary: PathBuf,
    dir: PathBuf,
    os_user: Option<OsUser>,
    spec: RedisSpec,
}

/// Makes a running instance's tenant logins those of `new`: each one set
/// (its password, its rules), then those of `old` that are gone deleted,
/// which ends their connections.
async fn apply_logins(old: &RedisSpec, new: &RedisSpec) -> Result<(), EngineError> {
    let mut admin = Resp::login("127.0.0.1", new.port, ADMIN_USER, &new.admin_password)
        .await
        .map_err(EngineError::Other)?;
    let fail = |what: &str, e: String| EngineError::Other(format!("{what}: {e}"));
    for (user, password) in new.logins() {
        let hash = password_hash(password);
        // `resetpass`, not `reset`: a login that stays keeps its rules (and
        // its connections) as they are.
        let mut args = vec![
            "ACL",
            "SETUSER",
            user.as_str(),
            "on",
            "resetpass",
            hash.as_str(),
        ];
        args.extend(TENANT_RULES);
        admin
            .call(&args)
            .await
            .map_err(|e| fail("ACL SETUSER", e.to_string()))?
            .ok()
            .map_err(|e| fail("ACL SETUSER", e))?;
    }
    for (user, _) in old.logins() {
        if !new.logins().any(|(u, _)| u == user) {
            admin
                .call(&["ACL", "DELUSER", user])
                .await
                .map_err(|e| fail("ACL DELUSER", e.to_string()))?
                .ok()
                .map_err(|e| fail("ACL DELUSER", e))?;
        }
    }
    Ok(())
}

fn spawn(launch: &Launch) -> Result<Child, EngineError> {
    let mut cmd = Command::new(&launch.binary);
    cmd.arg(launch.dir.join("redis.conf"));
    spawn_logged(
        cmd,
        &launch.dir,
        &launch.dir.join("redis.log"),
        launch.os_user.as_ref(),
        "redis-server",
    )
}

impl Program for Launch {
    type Run = Child;

    fn name(&self) -> String {
        format!("redis-server {}", self.spec.binding_id)
    }

    async fn start(&self) -> Result<Child, String> {
        spawn(self).map_err(|e| e.to_string())
    }

    /// Ready: mds's own user logs in and gets PONG. (Not the tenant's:
    /// its passwords change live with rotations; the provisioner checks
    /// each of them once the instance runs.)
    async fn probe(&self, _run: &Child) -> bool {
        auth_ping(
            "127.0.0.1",
            self.spec.port,
            ADMIN_USER,
            &self.spec.admin_password,
        )
        .await
        .is_ok()
    }

    async fn prepare(&self) {
        stop_leftover(&self.dir).await;
    }

    fn leftovers(&self) -> Vec<u32> {
        processes_in(&self.dir, "redis-server")
    }
}

fn policy() -> Policy {
    Policy {
        ready_timeout: READY_TIMEOUT,
        // A refused connection costs microseconds; an attach waits for this.
        probe_every: Duration::from_millis(5),
        health_every: None,
        backoff_min: BACKOFF_MIN,
        backoff_max: BACKOFF_MAX,
        // One ready run resets the backoff.
        stable_after: Duration::ZERO,
        crash_budget: None,
        first_start_must_succeed: false,
        // redis-server flushes the AOF and exits.
        stop_signal: Signal::SIGTERM,
        signal_group: false,
        stop_grace: STOP_GRACE,
        ..Policy::default()
    }
}

/// `256mb`, `1gb`, `512kb`, `1048576` -> bytes; at least 1 MiB.
pub fn parse_memory(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = lower
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| lower.split_at(i))
        .unwrap_or((lower.as_str(), ""));
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1024,
        "m" | "mb" => 1024 * 1024,
        "g" | "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    let bytes = n.checked_mul(factor)?;
    (bytes >= 1024 * 1024).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        for (text, bytes) in [
            ("256mb", Some(256 << 20)),
            ("1GB", Some(1 << 30)),
            ("2048kb", Some(2 << 20)),
            ("1048576", Some(1 << 20)),
            ("1kb", None),
            ("12xb", None),
            ("", None),
            ("-5mb", None),
            ("99999999999999999999gb", None),
        ] {
            assert_eq!(parse_memory(text), bytes, "{text}");
        }
    }
}

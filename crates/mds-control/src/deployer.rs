//! Deployments at run time: packing a sandbox's workspace into a release,
//! running each environment's active version, and routing requests to it.
//!
//! - **Releases.** Publishing runs `tar` jailed over the sandbox's
//!   workspace and streams it into the release store (tar+zstd, named by
//!   SHA-256). Unpacking runs `tar` jailed over the instance's workspace.
//!   mds itself never walks a tenant's tree.
//! - **Instances.** A dynamic version runs as a jailed process (the same
//!   isolation as a sandbox) with the environment's variables and `PORT`.
//!   A task per instance supervises it: health checks, restarts after a
//!   crash with backoff, `error` after the crashloop budget.
//! - **Switching.** A promote starts the new instance and waits for it to
//!   pass its health check; only then does the route change (under a lock
//!   that pickers also take, so that every request in flight is counted)
//!   and the old instance drains and stops. A failing release never gets
//!   traffic. A deployment with a volume stops the old instance first: one
//!   writer per volume.
//! - **Router.** `<deployment>.<environment>.localhost` (Host header) on
//!   the API listener goes to a healthy instance, or to the files of a
//!   static release. Desired state (which version is active where) is in
//!   Postgres; after a restart, [`Deployer::restore`] starts it again.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mds_core::ids::IdKind;
use mds_core::kinds::{ReleaseKind, UnknownValue};
use mds_core::names;
use mds_engines::supervisor::{CrashBudget, Event, Incarnation, Policy, Program, Supervisor};
use mds_engines::EngineStatus;
use mds_runtime::artifact::{ArtifactError, Artifacts, Stored};
use mds_runtime::instance::{free_port, probe, LogRing};
use mds_runtime::jail::Mount;
use mds_runtime::sandbox::{forward_lines, Output, Process, Sandboxes, Spawn};
use mds_store::{AttachError, DeploymentRow, EnvironmentRow, ProjectRow, StoreError, VersionRow};
use nix::sys::signal::Signal;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::boot::{Assembled, Place, Target};
use crate::{Control, ControlError};

/// How long a new instance has to pass its health check, unless the
/// deployment's `metadata.health_check_grace_sec` says otherwise.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
const MAX_GRACE_SECS: u64 = 600;
/// A running instance is checked this often; this many failures in a row
/// make it `unhealthy` (out of the route until it passes again).
const HEALTH_EVERY: Duration = Duration::from_secs(2);
const UNHEALTHY_AFTER: u32 = 3;
/// Crashes allowed within [`CRASH_WINDOW`] before an instance is `error`.
const CRASH_BUDGET: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(300);
/// How long a stopping instance may finish the requests it has.
const DRAIN: Duration = Duration::from_secs(30);

/// (deployment id, environment id)
type RouteKey = (String, String);

/// What serving a version can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "version {version_number} did not pass its health check: {reason}; it gets no \
         traffic and the active version keeps serving"
    )]
    HealthCheckFailed {
        version_number: i32,
        version_id: String,
        instance_id: String,
        reason: String,
        logs: Vec<String>,
    },
    #[error("this version's release artifact is no longer in the release store; publish again")]
    ArtifactGone { sha256: String },
    #[error("volume {volume_id} is attached to {holder}; detach it first")]
    VolumeInUse { volume_id: String, holder: String },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("{0}")]
    Internal(String),
}

pub type DeployResult<T> = Result<T, DeployError>;

impl DeployError {
    fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
}

impl From<StoreError> for DeployError {
    fn from(e: StoreError) -> Self {
        Self::Control(e.into())
    }
}

impl From<DeployError> for ControlError {
    fn from(e: DeployError) -> Self {
        let message = e.to_string();
        match e {
            DeployError::HealthCheckFailed {
                version_id,
                instance_id,
                logs,
                ..
            } => ControlError::failed("HEALTH_CHECK_FAILED", message).with_details(
                serde_json::json!({
                    "version_id": version_id,
                    "instance_id": instance_id,
                    "logs": logs,
                }),
            ),
            DeployError::ArtifactGone { sha256 } => ControlError::gone("ARTIFACT_GONE", message)
                .with_details(serde_json::json!({ "artifact_sha256": sha256 })),
            DeployError::VolumeInUse { .. } => ControlError::conflict("VOLUME_IN_USE", message),
            DeployError::Control(e) => e,
            DeployError::Internal(cause) => ControlError::Internal(cause),
        }
    }
}

/// Where requests for one (deployment, environment) go.
enum Route {
    Static {
        root: PathBuf,
        entrypoint: Option<String>,
    },
    Dynamic(Vec<Arc<Live>>),
}

/// A runtime instance of this process.
pub struct Live {
    pub id: String,
    pub deployment_id: String,
    pub environment_id: String,
    pub version_id: String,
    port: AtomicU16,
    healthy: AtomicBool,
    stopping: AtomicBool,
    inflight: AtomicUsize,
    pub logs: Arc<LogRing>,
    /// Runs its process: set right after the instance is made.
    supervisor: OnceLock<Supervisor>,
}

impl Live {
    /// Waits until its first health check passed, or why it never will.
    async fn wait_healthy(&self, grace: Duration) -> Result<(), String> {
        let Some(supervisor) = self.supervisor.get() else {
            return Err("it was not started".to_string());
        };
        // The supervisor bounds readiness by the grace itself.
        match supervisor
            .wait_running(grace + Duration::from_secs(10))
            .await
        {
            Ok(()) => Ok(()),
            Err(EngineStatus::Failed { reason }) => Err(reason),
            Err(_) => Err("it stopped".to_string()),
        }
    }

    fn note(&self, line: impl Into<String>) {
        self.logs.push(format!("[mds] {}", line.into()));
    }
}

pub struct Deployer {
    pub artifacts: Artifacts,
    /// Workspaces of instances (by instance id) and unpacked static
    /// releases (by version id).
    runner: Sandboxes,
    pub max_release_bytes: u64,
    /// Versions per deployment whose artifacts are kept (besides active
    /// and previous ones).
    keep_releases: i64,
    routes: RwLock<HashMap<RouteKey, Route>>,
    /// `slug.environment` (and `slug` for production) to a route.
    hosts: RwLock<HashMap<String, RouteKey>>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// One promote at a time per (deployment, environment).
    locks: Mutex<HashMap<RouteKey, Arc<tokio::sync::Mutex<()>>>>,
    unpacked: Mutex<HashSet<String>>,
    /// Static releases are unpacked one at a time (two promotes of one
    /// version must not unpack into one directory at once).
    unpacking: tokio::sync::Mutex<()>,
    /// `:port` after hosts in public URLs.
    url_port: String,
    /// The API's own host label, if `--public-url` is a `*.localhost`
    /// name: never routed to a deployment.
    own_label: Option<String>,
    /// Round robin among healthy instances.
    turn: AtomicUsize,
}

impl Deployer {
    pub fn new(
        artifacts: Artifacts,
        runner: Sandboxes,
        max_release_bytes: u64,
        keep_releases: u32,
        public_url: &str,
    ) -> Self {
        let authority = public_url
            .split_once("://")
            .map_or(public_url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let own_label = deployment_label(authority);
        let port = authority
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, p)| format!(":{p}"))
            .unwrap_or_default();
        Self {
            artifacts,
            runner,
            max_release_bytes,
            keep_releases: i64::from(keep_releases.max(1)),
            routes: RwLock::default(),
            hosts: RwLock::default(),
            live: Mutex::default(),
            locks: Mutex::default(),
            unpacked: Mutex::default(),
            unpacking: tokio::sync::Mutex::new(()),
            url_port: port,
            own_label,
            turn: AtomicUsize::new(0),
        }
    }

    /// Where a deployment's environment answers.
    pub fn public_url(&self, slug: &str, environment: &str) -> String {
        format!(
            "http://{slug}.{}.localhost{}",
            names::environment_slug(environment),
            self.url_port
        )
    }

    /// The live instance `id`, if it runs in this process.
    pub fn live(&self, id: &str) -> Option<Arc<Live>> {
        self.live.lock().expect("never poisoned").get(id).cloned()
    }

    fn lock_for(&self, key: &RouteKey) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("never poisoned")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Live instances of (deployment, environment) not already stopping.
    fn current(&self, key: &RouteKey) -> Vec<Arc<Live>> {
        self.live
            .lock()
            .expect("never poisoned")
            .values()
            .filter(|l| {
                (&l.deployment_id, &l.environment_id) == (&key.0, &key.1)
                    && !l.stopping.load(Ordering::SeqCst)
            })
            .cloned()
            .collect()
    }

    fn set_route(&self, key: &RouteKey, slug: &str, environment: &str, route: Route) {
        self.routes
            .write()
            .expect("never poisoned")
            .insert(key.clone(), route);
        let mut hosts = self.hosts.write().expect("never poisoned");
        hosts.insert(
            format!("{slug}.{}", names::environment_slug(environment)),
            key.clone(),
        );
        if environment == "production" {
            hosts.insert(slug.to_string(), key.clone());
        }
    }

    /// Takes the routes `which` picks off the air.
    fn drop_routes(&self, which: impl Fn(&RouteKey) -> bool) {
        self.routes
            .write()
            .expect("never poisoned")
            .retain(|key, _| !which(key));
        self.hosts
            .write()
            .expect("never poisoned")
            .retain(|_, key| !which(key));
    }

    /// Packs `dir` (relative to `/workspace`) of a sandbox into a release.
    /// Returns the stored artifact, or the build log's reason.
    pub async fn pack(
        &self,
        sandboxes: &Sandboxes,
        sandbox_id: &str,
        dir: &str,
    ) -> Result<Stored, String> {
        let mut process = sandboxes
            .spawn(
                sandbox_id,
                Spawn {
                    env: Vec::new(),
                    argv: ["tar", "-c", "-f", "-", "-C", dir, "."]
                        .map(String::from)
                        .to_vec(),
                    mounts: Vec::new(),
                    stdin: false,
                    networked: false,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let stdout = process.child.stdout.take().expect("piped");
        let stderr = process.child.stderr.take().expect("piped");
        let errors = tokio::spawn(read_capped(stderr));
        let stored = self.artifacts.store(stdout, self.max_release_bytes).await;
        if stored.is_err() {
            process.signal(Signal::SIGKILL);
        }
        let status = process.child.wait().await.map_err(|e| e.to_string())?;
        let errors = errors.await.unwrap_or_default();
        let stored = stored.map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("tar failed ({status}): {}", errors.trim()));
        }
        Ok(stored)
    }

    /// Unpacks a release into the workspace `id` (made afresh), jailed.
    async fn unpack(&self, id: &str, sha256: &str) -> DeployResult<()> {
        let _ = self.runner.remove(id).await;
        self.runner
            .prepare(id)
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        let mut process = self
            .runner
            .spawn(
                id,
                Spawn {
                    env: Vec::new(),
                    argv: [
                        "tar",
                        "-x",
                        "-f",
                        "-",
                        "-C",
                        "/workspace",
                        "--no-same-owner",
                        "--delay-directory-restore",
                    ]
                    .map(String::from)
                    .to_vec(),
                    mounts: Vec::new(),
                    stdin: true,
                    networked: false,
                },
            )
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        let stdin = process.child.stdin.take().expect("piped");
        let stderr = process.child.stderr.take().expect("piped");
        let errors = tokio::spawn(read_capped(stderr));
        let written = self.artifacts.unpack_into(sha256, stdin).await;
        let status = process.child.wait().await;
        match written {
            Err(ArtifactError::Gone(_)) => return Err(artifact_gone(sha256)),
            Err(e) => return Err(DeployError::internal(e)),
            Ok(()) => {}
        }
        match status {
            Ok(s) if s.success() => Ok(()),
            other => Err(DeployError::Internal(format!(
                "unpacking the release failed ({other:?}): {}",
                errors.await.unwrap_or_default().trim()
            ))),
        }
    }

    /// The files of a static release, unpacked once per run of mds, with
    /// symbolic links removed (the router serves files as mds).
    async fn static_root(&self, version: &VersionRow) -> DeployResult<PathBuf> {
        let sha = version.artifact_sha256.as_deref().unwrap_or_default();
        let _one_at_a_time = self.unpacking.lock().await;
        let done = self
            .unpacked
            .lock()
            .expect("never poisoned")
            .contains(&version.id);
        if !done {
            self.unpack(&version.id, sha).await?;
            let cleaned = self
                .runner
                .run(
                    &version.id,
                    mds_runtime::sandbox::Command {
                        env: Vec::new(),
                        cwd: None,
                        // Only files and directories are served: links
                        // could lead out, FIFOs would block a reader.
                        command: "chmod -R u+rwX /workspace && \
                                  find /workspace ! -type f ! -type d -delete",
                        timeout: Duration::from_secs(60),
                        mounts: Vec::new(),
                        networked: false,
                    },
                    None,
                )
                .await
                .map_err(|e| DeployError::Internal(e.to_string()))?;
            if cleaned.exit_code != 0 {
                return Err(DeployError::Internal(format!(
                    "cleaning the release: {}",
                    cleaned.stderr
                )));
            }
            self.unpacked
                .lock()
                .expect("never poisoned")
                .insert(version.id.clone());
        }
        Ok(self.runner.workspace(&version.id))
    }

    /// Collects the artifacts of versions past retention (and of publishes
    /// cut short an hour ago or more). Their versions stay listed; serving
    /// one again is 410.
    pub async fn collect_releases(&self, control: &Control) -> DeployResult<usize> {
        let retention = control
            .store()?
            .artifact_retention(self.keep_releases)
            .await?;
        let named: HashSet<String> = retention.iter().map(|(sha, _)| sha.clone()).collect();
        let keep: HashSet<String> = retention
            .into_iter()
            .filter_map(|(sha, keep)| keep.then_some(sha))
            .collect();
        let artifacts = self.artifacts.clone();
        tokio::task::spawn_blocking(move || {
            artifacts.collect(&keep, &named, Duration::from_secs(3600))
        })
        .await
        .map_err(DeployError::internal)?
        .map_err(DeployError::internal)
    }

    /// Removes a static release's files (its deployment is gone).
    pub async fn forget_release(&self, version_id: &str) {
        let _one_at_a_time = self.unpacking.lock().await;
        self.unpacked
            .lock()
            .expect("never poisoned")
            .remove(version_id);
        let _ = self.runner.remove(version_id).await;
    }

    /// Makes `version` serve in `env`: for a dynamic one, a new instance
    /// that passed its health check replaces the old; the route changes
    /// only then. `record` writes the switch to Postgres (a promote); a
    /// restore after restart only acts on what is recorded.
    pub async fn serve(
        &self,
        control: &Control,
        deployment: &DeploymentRow,
        project: &ProjectRow,
        env: &EnvironmentRow,
        version: &VersionRow,
        record: bool,
    ) -> DeployResult<()> {
        let key = (deployment.id.clone(), env.id.clone());
        let lock = self.lock_for(&key);
        let _one_at_a_time = lock.lock().await;
        let store = control.store()?;
        let sha = version.artifact_sha256.as_deref().unwrap_or_default();
        if !self.artifacts.exists(sha) {
            return Err(artifact_gone(sha));
        }
        let old = self.current(&key);
        // A kind this server does not know is refused, never run.
        let kind: ReleaseKind =
            version
                .kind
                .parse()
                .map_err(|e: UnknownValue| ControlError::Unsupported {
                    code: "UNKNOWN_KIND",
                    message: e.to_string(),
                })?;
        if kind == ReleaseKind::Static {
            let root = self.static_root(version).await?;
            if record {
                store
                    .activate_version(&deployment.id, &env.id, &version.id)
                    .await?;
            }
            self.set_route(
                &key,
                &deployment.slug,
                &env.name,
                Route::Static {
                    root,
                    entrypoint: version.entrypoint.clone(),
                },
            );
            for instance in old {
                self.stop_later(control, instance);
            }
            return Ok(());
        }

        let claims = store.volume_claims(&deployment.id, &env.id).await?;
        let follows_volume = !claims.is_empty();
        if follows_volume {
            // One writer per volume: the old instance lets go first.
            for instance in &old {
                self.stop(control, instance, true).await;
            }
        }
        let started = self.start(control, deployment, project, env, version).await;
        let outcome = match started {
            Ok(live) => match live.wait_healthy(grace_of(deployment)).await {
                Ok(()) => Ok(live),
                Err(reason) => {
                    let tail = live.logs.tail(20);
                    self.stop(control, &live, false).await;
                    Err(DeployError::HealthCheckFailed {
                        version_number: version.version_number,
                        version_id: version.id.clone(),
                        instance_id: live.id.clone(),
                        reason,
                        logs: tail,
                    })
                }
            },
            Err(e) => Err(e),
        };
        let live = match outcome {
            Ok(live) => live,
            Err(e) => {
                if follows_volume && !old.is_empty() {
                    self.restart_previous(control, deployment, project, env, &old)
                        .await;
                }
                return Err(e);
            }
        };
        if record {
            if let Err(e) = store
                .activate_version(&deployment.id, &env.id, &version.id)
                .await
            {
                self.stop(control, &live, false).await;
                return Err(e.into());
            }
        }
        self.set_route(
            &key,
            &deployment.slug,
            &env.name,
            Route::Dynamic(vec![live]),
        );
        for instance in old {
            if !follows_volume {
                self.stop_later(control, instance);
            }
        }
        Ok(())
    }

    /// After a failed switch of a deployment with a volume (whose old
    /// instance was stopped first), brings the old version back.
    async fn restart_previous(
        &self,
        control: &Control,
        deployment: &DeploymentRow,
        project: &ProjectRow,
        env: &EnvironmentRow,
        old: &[Arc<Live>],
    ) {
        let Ok(store) = control.store() else { return };
        for instance in old {
            let Ok(Some(version)) = store.version(&deployment.id, &instance.version_id).await
            else {
                continue;
            };
            if let Ok(live) = self
                .start(control, deployment, project, env, &version)
                .await
            {
                let key = (deployment.id.clone(), env.id.clone());
                self.set_route(
                    &key,
                    &deployment.slug,
                    &env.name,
                    Route::Dynamic(vec![live]),
                );
            }
        }
    }

    /// Starts an instance of `version` in `env` and its supervisor.
    async fn start(
        &self,
        control: &Control,
        deployment: &DeploymentRow,
        project: &ProjectRow,
        env: &EnvironmentRow,
        version: &VersionRow,
    ) -> DeployResult<Arc<Live>> {
        let store = control.store()?;
        let id = IdKind::Instance.mint();
        store
            .create_instance(
                &id,
                &deployment.tenant_id,
                &deployment.id,
                &env.id,
                &version.id,
            )
            .await?;
        let live = Arc::new(Live {
            id: id.clone(),
            deployment_id: deployment.id.clone(),
            environment_id: env.id.clone(),
            version_id: version.id.clone(),
            port: AtomicU16::new(0),
            healthy: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            logs: Arc::default(),
            supervisor: OnceLock::new(),
        });
        let prepared = async {
            self.unpack(&id, version.artifact_sha256.as_deref().unwrap_or_default())
                .await?;
            self.lease_volumes(control, deployment, env, &id).await
        }
        .await;
        let mounts = match prepared {
            Ok(mounts) => mounts,
            Err(e) => {
                let _ = store
                    .set_instance_state(&id, "error", None, Some(&e.to_string()), None)
                    .await;
                let _ = store.release_holder(&id).await;
                let _ = self.runner.remove(&id).await;
                return Err(e);
            }
        };
        self.live
            .lock()
            .expect("never poisoned")
            .insert(id.clone(), live.clone());
        let grace = grace_of(deployment);
        let boot = Boot {
            control: control.clone(),
            project: project.clone(),
            env: env.clone(),
            command: version.runtime_command.clone().unwrap_or_default(),
            health_path: version
                .health_check_path
                .clone()
                .unwrap_or_else(|| "/".to_string()),
            mounts,
        };
        let program = InstanceProgram {
            live: live.clone(),
            boot,
        };
        let span = tracing::info_span!(
            "instance",
            instance = %id,
            deployment = %deployment.id,
            environment = %env.name
        );
        let supervisor = span.in_scope(|| Supervisor::start(program, instance_policy(grace)));
        let _ = live.supervisor.set(supervisor);
        Ok(live)
    }

    /// Takes the leases of the volumes the deployment mounts in `env`.
    async fn lease_volumes(
        &self,
        control: &Control,
        deployment: &DeploymentRow,
        env: &EnvironmentRow,
        instance_id: &str,
    ) -> DeployResult<Vec<Mount>> {
        let store = control.store()?;
        let volumes = control.volumes()?;
        let mut mounts = Vec::new();
        for claim in store.volume_claims(&deployment.id, &env.id).await? {
            let Some(volume) = store
                .volume(&deployment.tenant_id, &claim.volume_id)
                .await?
            else {
                continue;
            };
            volumes
                .materialize(&volume.id, &volume.backend, volume.size_bytes as u64)
                .await
                .map_err(DeployError::internal)?;
            match store
                .attach_volume(
                    &IdKind::Attachment.mint(),
                    &volume.id,
                    "instance",
                    instance_id,
                    &claim.mount_path,
                )
                .await
            {
                Ok(_) => mounts.push(Mount {
                    host: volumes.data_path(&volume.id),
                    inside: claim.mount_path,
                    writable: true,
                }),
                Err(AttachError::InUse(holder)) => {
                    return Err(DeployError::VolumeInUse {
                        volume_id: volume.id.clone(),
                        holder: format!("{} {}", holder.holder_kind, holder.holder_id),
                    })
                }
                Err(AttachError::Store(e)) => return Err(e.into()),
            }
        }
        Ok(mounts)
    }

    fn stop_later(&self, control: &Control, instance: Arc<Live>) {
        let control = control.clone();
        tokio::spawn(
            async move {
                if let Ok(deployer) = control.deployer() {
                    deployer.stop(&control, &instance, true).await;
                }
            }
            .in_current_span(),
        );
    }

    /// Stops an instance: out of the route, its requests finish (when
    /// `drain`), its process ends, its volume leases end, its workspace
    /// goes. Its row stays, `destroyed`.
    pub async fn stop(&self, control: &Control, instance: &Arc<Live>, drain: bool) {
        {
            // Under the lock pickers take: a request either was counted
            // before this, or never picks this instance.
            let _routes = self.routes.write().expect("never poisoned");
            instance.stopping.store(true, Ordering::SeqCst);
            instance.healthy.store(false, Ordering::SeqCst);
        }
        if drain {
            let deadline = Instant::now() + DRAIN;
            while instance.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(supervisor) = instance.supervisor.get() {
            // Its requests are done: no grace for the process.
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                supervisor.stop_within(Duration::ZERO),
            )
            .await;
        }
        if let Ok(store) = control.store() {
            let _ = store
                .set_instance_state(&instance.id, "stopped", None, None, None)
                .await;
            let _ = store.release_holder(&instance.id).await;
            let _ = self.runner.remove(&instance.id).await;
            let _ = store
                .set_instance_state(&instance.id, "destroyed", None, None, None)
                .await;
        }
        self.live
            .lock()
            .expect("never poisoned")
            .remove(&instance.id);
    }

    /// Stops every instance of a deployment and takes it off the air.
    /// Stops a deployment's instances, deletes it with its versions, and
    /// removes its static files. Data services are not touched.
    pub async fn remove(&self, control: &Control, row: &DeploymentRow) -> DeployResult<()> {
        self.stop_deployment(control, &row.id).await;
        let versions = control.store()?.versions(&row.id, None).await?;
        control.store()?.delete_deployment(&row.id).await?;
        for version in versions {
            self.forget_release(&version.id).await;
        }
        tracing::info!(deployment = row.id, "deployment deleted");
        Ok(())
    }

    /// A project is going: so are its deployments (code, not data).
    pub async fn remove_project(
        &self,
        control: &Control,
        project: &ProjectRow,
    ) -> DeployResult<()> {
        for row in control
            .store()?
            .deployments(&project.tenant_id, Some(&project.id))
            .await?
        {
            self.remove(control, &row).await?;
        }
        Ok(())
    }

    /// An environment is going: nothing serves in it any more.
    pub async fn retire_environment(
        &self,
        control: &Control,
        environment_id: &str,
    ) -> DeployResult<()> {
        control
            .store()?
            .deactivate_environment(environment_id)
            .await?;
        self.stop_environment(control, environment_id).await;
        Ok(())
    }

    pub async fn stop_deployment(&self, control: &Control, deployment_id: &str) {
        self.drop_routes(|(d, _)| d == deployment_id);
        self.stop_where(control, |l| l.deployment_id == deployment_id)
            .await;
    }

    /// Stops every instance in an environment and takes it off the air.
    pub async fn stop_environment(&self, control: &Control, environment_id: &str) {
        self.drop_routes(|(_, e)| e == environment_id);
        self.stop_where(control, |l| l.environment_id == environment_id)
            .await;
    }

    async fn stop_where(&self, control: &Control, which: impl Fn(&Live) -> bool) {
        let instances: Vec<Arc<Live>> = self
            .live
            .lock()
            .expect("never poisoned")
            .values()
            .filter(|l| which(l))
            .cloned()
            .collect();
        for instance in instances {
            self.stop(control, &instance, true).await;
        }
    }

    /// Kills every instance (mds is stopping; rows are retired at the next
    /// start).
    pub fn kill_every(&self) {
        self.runner.kill_every();
    }

    /// At start: instances of the last run died with it; every active
    /// version of every deployment that is not stopped is served again.
    pub async fn restore(&self, control: &Control) {
        let Ok(store) = control.store() else { return };
        match store.retire_last_run().await {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(n = ids.len(), "retired the instances of the last run")
            }
            Err(e) => tracing::warn!(error = %e, "retiring the instances of the last run"),
            _ => {}
        }
        let actives = match store.all_active_versions().await {
            Ok(actives) => actives,
            Err(e) => {
                tracing::warn!(error = %e, "listing active versions");
                return;
            }
        };
        for active in actives {
            self.serve_again(control, &active).await;
        }
    }

    /// Replaces every instance serving in environment `environment_id`
    /// with a new one of the same version, one deployment at a time; each
    /// new instance serves only once healthy and the old one drains, so no
    /// request fails. New instances boot with the environment's variables
    /// as they are now (a credential rotation). Returns how many.
    pub async fn restart_environment(&self, control: &Control, environment_id: &str) -> usize {
        let Ok(store) = control.store() else { return 0 };
        let actives = match store.all_active_versions().await {
            Ok(actives) => actives,
            Err(e) => {
                tracing::warn!(error = %e, "listing active versions");
                return 0;
            }
        };
        let mut restarted = 0;
        for active in actives
            .iter()
            .filter(|a| a.environment_id == environment_id)
        {
            if self.serve_again(control, active).await {
                restarted += 1;
            }
        }
        restarted
    }

    /// Serves an active version again (at start, or to restart it); true
    /// when it serves.
    async fn serve_again(&self, control: &Control, active: &mds_store::EnvironmentActive) -> bool {
        let Ok(store) = control.store() else {
            return false;
        };
        let restored = async {
            let deployment = store
                .deployment_any_tenant(&active.deployment_id)
                .await?
                .ok_or_else(|| ControlError::not_found("deployment", &active.deployment_id))?;
            let project_id = deployment.project_id.clone().unwrap_or_default();
            let project = store
                .project(&deployment.tenant_id, &project_id)
                .await?
                .ok_or_else(|| ControlError::not_found("project", &project_id))?;
            let env = store
                .environment(&project.id, &active.environment_id)
                .await?
                .ok_or_else(|| ControlError::not_found("environment", &active.environment_id))?;
            let version = store
                .version(&deployment.id, &active.active_version_id)
                .await?
                .ok_or_else(|| ControlError::not_found("version", &active.active_version_id))?;
            self.serve(control, &deployment, &project, &env, &version, false)
                .await
        }
        .await;
        match restored {
            Ok(()) => {
                tracing::info!(
                    deployment = active.deployment_id,
                    environment = active.environment,
                    "serving again"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    deployment = active.deployment_id,
                    environment = active.environment,
                    error = e.to_string(),
                    "could not serve the active version"
                );
                false
            }
        }
    }
}

/// Where a request for a host goes.
pub enum Pick {
    /// Not a deployment's host: the API's.
    Api,
    /// A deployment's host that no deployment serves (the label).
    Unknown(String),
    /// The deployment serves there, but no instance is healthy now.
    NoHealthyInstance,
    /// The files of a static release.
    Static {
        root: PathBuf,
        entrypoint: Option<String>,
    },
    /// A healthy instance, with this request counted on it.
    Instance(InFlight),
}

/// A request in flight to an instance, counted until dropped: an instance
/// being switched out drains only the requests it can see.
pub struct InFlight(Arc<Live>);

impl InFlight {
    pub fn port(&self) -> u16 {
        self.0.port.load(Ordering::SeqCst)
    }

    pub fn instance_id(&self) -> &str {
        &self.0.id
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Deployer {
    /// A connection to `127.0.0.1:port` in the network of instance `id`
    /// (the router's way in).
    pub async fn connect_instance(&self, id: &str, port: u16) -> std::io::Result<TcpStream> {
        self.runner.connect(id, port).await
    }

    /// Where a request with this `Host` goes: round robin among the
    /// healthy instances of the deployment's environment, or its static
    /// files.
    pub fn pick(&self, host: &str) -> Pick {
        let Some(label) = deployment_label(host) else {
            return Pick::Api;
        };
        if self.own_label.as_ref() == Some(&label) {
            return Pick::Api;
        }
        let key = self
            .hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&label)
            .cloned();
        let Some(key) = key else {
            return Pick::Unknown(label);
        };
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        match routes.get(&key) {
            None => Pick::Unknown(label),
            Some(Route::Static { root, entrypoint }) => Pick::Static {
                root: root.clone(),
                entrypoint: entrypoint.clone(),
            },
            Some(Route::Dynamic(instances)) => {
                let healthy: Vec<&Arc<Live>> = instances
                    .iter()
                    .filter(|l| l.healthy.load(Ordering::SeqCst))
                    .collect();
                if healthy.is_empty() {
                    return Pick::NoHealthyInstance;
                }
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                let pick = healthy[turn % healthy.len()].clone();
                // Counted under the lock that a switch takes: the old
                // instance drains only requests it can see.
                pick.inflight.fetch_add(1, Ordering::SeqCst);
                Pick::Instance(InFlight(pick))
            }
        }
    }
}

fn artifact_gone(sha256: &str) -> DeployError {
    DeployError::ArtifactGone {
        sha256: sha256.to_string(),
    }
}

/// A process's stderr, up to 64 KiB.
async fn read_capped(stream: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let _ = stream.take(64 << 10).read_to_end(&mut kept).await;
    String::from_utf8_lossy(&kept).into_owned()
}

/// What an instance's supervisor needs to boot it (again).
struct Boot {
    control: Control,
    project: ProjectRow,
    env: EnvironmentRow,
    command: String,
    health_path: String,
    mounts: Vec<Mount>,
}

impl Boot {
    /// The variables of a boot (`mds_control::boot` has the precedence)
    /// and the service ports they name.
    async fn env(&self, live: &Live, port: u16) -> DeployResult<Assembled> {
        let place = Place {
            project: &self.project,
            env: &self.env,
        };
        let target = Target::Instance {
            deployment_id: &live.deployment_id,
            version_id: &live.version_id,
            instance_id: &live.id,
            port,
        };
        Ok(self.control.boot_env(Some(place), target).await?)
    }
}

async fn set_state(
    live: &Live,
    boot: &Boot,
    state: &str,
    port: Option<u16>,
    error: Option<&str>,
    restarts: Option<i32>,
) {
    if let Ok(store) = boot.control.store() {
        if let Err(e) = store
            .set_instance_state(&live.id, state, port.map(i32::from), error, restarts)
            .await
        {
            tracing::warn!(instance = live.id, error = %e, "recording an instance's state");
        }
    }
}

/// How long a new instance of `deployment` has to pass its health check.
fn grace_of(deployment: &DeploymentRow) -> Duration {
    deployment.metadata["health_check_grace_sec"]
        .as_u64()
        .map(|s| Duration::from_secs(s.clamp(1, MAX_GRACE_SECS)))
        .unwrap_or(DEFAULT_GRACE)
}

/// How the supervisor runs an instance: its first health check within the
/// grace or it fails (no traffic ever reaches it), checked every few
/// seconds while it runs, restarted after a crash with backoff, `error`
/// after the crashloop budget.
fn instance_policy(grace: Duration) -> Policy {
    Policy {
        ready_timeout: grace,
        // Often: a refused connection costs microseconds, and every
        // millisecond here is a millisecond of a switch.
        probe_every: Duration::from_millis(10),
        health_every: Some(HEALTH_EVERY),
        unhealthy_after: UNHEALTHY_AFTER,
        backoff_min: Duration::from_millis(250),
        backoff_max: Duration::from_secs(8),
        stable_after: CRASH_WINDOW,
        crash_budget: Some(CrashBudget {
            crashes: CRASH_BUDGET,
            window: CRASH_WINDOW,
        }),
        first_start_must_succeed: true,
        // A stop comes after the instance's requests drained.
        stop_signal: Signal::SIGKILL,
        signal_group: true,
        stop_grace: Duration::ZERO,
    }
}

/// One incarnation of an instance: its jailed process and its port.
struct InstanceRun {
    port: u16,
    process: Process,
}

impl Incarnation for InstanceRun {
    fn child(&mut self) -> &mut tokio::process::Child {
        &mut self.process.child
    }
}

/// A runtime instance as a program for the supervisor.
struct InstanceProgram {
    live: Arc<Live>,
    boot: Boot,
}

impl InstanceProgram {
    async fn record(&self, state: &str, error: Option<&str>, restarts: Option<i32>) {
        let port = Some(self.live.port.load(Ordering::SeqCst)).filter(|p| *p != 0);
        set_state(&self.live, &self.boot, state, port, error, restarts).await;
    }
}

impl Program for InstanceProgram {
    type Run = InstanceRun;

    fn name(&self) -> String {
        format!("instance {}", self.live.id)
    }

    async fn start(&self) -> Result<InstanceRun, String> {
        let live = &self.live;
        let deployer = self.boot.control.deployer().map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| e.to_string())?;
        let assembled = self.boot.env(live, port).await.map_err(|e| e.to_string())?;
        let egress = self.boot.project.network_egress == "allow";
        deployer
            .runner
            .connect_services(&live.id, &assembled.endpoints, egress)
            .await
            .map_err(|e| e.to_string())?;
        let mut process = deployer
            .runner
            .spawn(
                &live.id,
                Spawn {
                    env: assembled.pairs(),
                    argv: vec!["/bin/sh".into(), "-c".into(), self.boot.command.clone()],
                    mounts: self.boot.mounts.clone(),
                    stdin: false,
                    networked: true,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        live.port.store(port, Ordering::SeqCst);
        live.note(format!("starting `{}` with PORT={port}", self.boot.command));
        let (lines_tx, mut lines_rx) = mpsc::channel(256);
        if let Some(stdout) = process.child.stdout.take() {
            tokio::spawn(forward_lines(stdout, lines_tx.clone(), Output::Stdout));
        }
        if let Some(stderr) = process.child.stderr.take() {
            tokio::spawn(forward_lines(stderr, lines_tx, Output::Stderr));
        }
        let logs = live.logs.clone();
        tokio::spawn(async move {
            while let Some(line) = lines_rx.recv().await {
                match line {
                    Output::Stdout(l) | Output::Stderr(l) => logs.push(l),
                }
            }
        });
        Ok(InstanceRun { port, process })
    }

    async fn probe(&self, run: &InstanceRun) -> bool {
        let Ok(deployer) = self.boot.control.deployer() else {
            return false;
        };
        let connect = deployer.runner.connect(&self.live.id, run.port);
        probe(
            connect,
            run.port,
            &self.boot.health_path,
            Duration::from_secs(2),
        )
        .await
    }

    async fn observe(&self, event: Event) {
        let live = &self.live;
        match event {
            Event::Started { .. } => self.record("starting", None, None).await,
            Event::Ready { .. } | Event::Healthy => {
                live.healthy.store(true, Ordering::SeqCst);
                live.note(if event == Event::Healthy {
                    "healthy again"
                } else {
                    "healthy"
                });
                self.record("healthy", None, None).await;
            }
            Event::Unhealthy { failures } => {
                live.healthy.store(false, Ordering::SeqCst);
                live.note(format!("unhealthy: {failures} health checks failed"));
                self.record("unhealthy", Some("health checks failing"), None)
                    .await;
            }
            Event::NotReady { reason } | Event::Exited { reason } => {
                live.healthy.store(false, Ordering::SeqCst);
                live.note(format!("exited or failed its health check: {reason}"));
            }
            Event::StartFailed { reason } => live.note(format!("could not start: {reason}")),
            Event::Restarting {
                delay,
                restarts,
                reason,
            } => {
                live.note(format!("{reason}; restarting in {} ms", delay.as_millis()));
                let restarts = i32::try_from(restarts).unwrap_or(i32::MAX);
                self.record("unhealthy", Some(&reason), Some(restarts))
                    .await;
            }
            Event::GaveUp { reason } => {
                live.healthy.store(false, Ordering::SeqCst);
                live.note(&reason);
                self.record("error", Some(&reason), None).await;
            }
            Event::Stopped { .. } => live.healthy.store(false, Ordering::SeqCst),
        }
    }
}

/// `slug.environment` from a host `slug.environment.localhost[:port]`.
pub fn deployment_label(host: &str) -> Option<String> {
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let host = host.trim_end_matches('.');
    // Every API request passes here: allocate only for a deployment's host.
    const SUFFIX: &str = ".localhost";
    let cut = host
        .len()
        .checked_sub(SUFFIX.len())
        .filter(|&cut| cut > 0)?;
    let (label, suffix) = (host.get(..cut)?, host.get(cut..)?);
    suffix
        .eq_ignore_ascii_case(SUFFIX)
        .then(|| label.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_a_deployment_and_environment() {
        assert_eq!(
            deployment_label("shop.staging.localhost:8080").as_deref(),
            Some("shop.staging")
        );
        assert_eq!(deployment_label("Shop.localhost").as_deref(), Some("shop"));
        assert_eq!(deployment_label("localhost:8080"), None);
        assert_eq!(deployment_label(".localhost"), None);
        assert_eq!(
            deployment_label("Shop.Staging.LOCALHOST.:80").as_deref(),
            Some("shop.staging")
        );
        assert_eq!(deployment_label("127.0.0.1:8080"), None);
        assert_eq!(deployment_label("example.com"), None);
    }
}

//! The control layer: the domain operations of mds, between the HTTP
//! routes (`mds-server`) and the engines, the store and the runtime.
//!
//! It owns what more than one surface needs: resolving a project and
//! environment ([`projects`]), the variable store with its sealing
//! contexts and its one validator ([`variables`]), and the one boot-env
//! assembler ([`boot`]) behind `GET /env`, sandboxes and runtime
//! instances; end-user auth realms ([`realms`]) and their sessions
//! ([`sessions`]). It knows no HTTP: errors are [`ControlError`]s, which the
//! server maps to statuses and MIOSA codes in one place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use mds_auth::mail::Mailer;
use mds_core::kinds::BindingState;
use mds_crypto::MasterKey;
use mds_engines::PostgresEngine;
use mds_provision::Reconciler;
use mds_runtime::sandbox::Sandboxes;
use mds_runtime::volume::Volumes;
use mds_storage::Storage;
use mds_store::{BindingRow, Store};

pub mod attach;
pub mod audit;
pub mod backups;
pub mod boot;
mod caller;
pub mod deployer;
pub mod deployments;
mod error;
pub mod pools;
pub mod previews;
pub mod projects;
pub mod public_networking;
pub mod realms;
pub mod references;
pub mod rotation;
pub mod runtime_env;
pub mod sandboxes;
pub mod sessions;
pub mod standalone;
pub mod variables;
pub mod volumes;

pub use caller::Caller;
pub use error::{AuthRefusal, ControlError, ControlResult};

/// Whether a binding serves: `running` (a state this server does not know
/// is not).
pub fn is_running(binding: &BindingRow) -> bool {
    matches!(
        mds_provision::binding_state(binding),
        Ok(BindingState::Running)
    )
}

/// What a sandbox booted with, kept until its next boot.
#[derive(Debug)]
pub struct Booted {
    /// Its variables: (name, value), sorted by name.
    pub vars: Vec<(String, String)>,
    /// The host loopback ports of its data services, forwarded into its
    /// network namespace.
    pub endpoints: Vec<u16>,
    /// Whether it reaches the outside (its project's `network_egress`).
    pub egress: bool,
    pub project_id: Option<String>,
}

pub type BootEnv = Arc<Booted>;

/// The platform's parts, shared by every request and background task.
/// Cheap to clone.
#[derive(Clone)]
pub struct Control(Arc<Shared>);

pub struct Shared {
    pub master_key: Arc<MasterKey>,
    /// The end-user auth API's hasher, mailer and realm cache.
    pub auth: realms::AuthRuntime,
    /// Set once the engine is up and migrations are applied.
    store: OnceLock<Store>,
    engine: OnceLock<PostgresEngine>,
    reconciler: OnceLock<Reconciler>,
    storage: OnceLock<Storage>,
    engine_version: OnceLock<String>,
    redis_version: OnceLock<String>,
    sandboxes: OnceLock<Sandboxes>,
    volumes: OnceLock<Volumes>,
    deployer: OnceLock<deployer::Deployer>,
    backups: OnceLock<backups::Backups>,
    /// The audit log's writer (none with `--audit off`).
    audit: OnceLock<audit::Audit>,
    /// The environment each running sandbox booted with, by id: what its
    /// commands get until its next boot.
    pub boots: Mutex<HashMap<String, BootEnv>>,
}

impl std::ops::Deref for Control {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Control {
    pub fn new(master_key: MasterKey, mailer: Mailer) -> Self {
        Self(Arc::new(Shared {
            master_key: Arc::new(master_key),
            auth: realms::AuthRuntime::new(mailer),
            store: OnceLock::new(),
            engine: OnceLock::new(),
            reconciler: OnceLock::new(),
            storage: OnceLock::new(),
            engine_version: OnceLock::new(),
            redis_version: OnceLock::new(),
            sandboxes: OnceLock::new(),
            volumes: OnceLock::new(),
            deployer: OnceLock::new(),
            backups: OnceLock::new(),
            audit: OnceLock::new(),
            boots: Mutex::default(),
        }))
    }

    /// Marks the platform ready: from now on the API serves.
    pub fn set_ready(
        &self,
        engine: PostgresEngine,
        engine_version: String,
        store: Store,
        reconciler: Reconciler,
        storage: Storage,
    ) {
        let _ = self.storage.set(storage);
        let _ = self.engine.set(engine);
        let _ = self.engine_version.set(engine_version);
        let _ = self.reconciler.set(reconciler);
        let _ = self.store.set(store);
    }

    /// The managed Redis's major version, once known.
    pub fn set_redis_version(&self, version: String) {
        let _ = self.redis_version.set(version);
    }

    pub fn set_sandboxes(&self, sandboxes: Sandboxes) {
        let _ = self.sandboxes.set(sandboxes);
    }

    pub fn set_volumes(&self, volumes: Volumes) {
        let _ = self.volumes.set(volumes);
    }

    pub fn set_audit(&self, audit: audit::Audit) {
        let _ = self.audit.set(audit);
    }

    /// The audit log, unless it is off.
    pub fn audit(&self) -> Option<&audit::Audit> {
        self.audit.get()
    }

    /// Records one audit event (nothing when the log is off).
    pub fn record(&self, event: mds_store::NewAuditEvent) {
        if let Some(audit) = self.audit.get() {
            audit.record(event);
        }
    }

    pub fn set_deployer(&self, deployer: deployer::Deployer) {
        let _ = self.deployer.set(deployer);
    }

    pub fn deployer(&self) -> ControlResult<&deployer::Deployer> {
        self.deployer
            .get()
            .ok_or_else(|| ControlError::unavailable("deployments are starting"))
    }

    pub fn store(&self) -> ControlResult<&Store> {
        self.store.get().ok_or_else(ControlError::starting)
    }

    pub fn reconciler(&self) -> ControlResult<&Reconciler> {
        self.reconciler.get().ok_or_else(ControlError::starting)
    }

    pub fn storage(&self) -> ControlResult<&Storage> {
        self.storage.get().ok_or_else(ControlError::starting)
    }

    pub fn sandboxes(&self) -> ControlResult<&Sandboxes> {
        self.sandboxes.get().ok_or_else(ControlError::starting)
    }

    pub fn volumes(&self) -> ControlResult<&Volumes> {
        self.volumes.get().ok_or_else(ControlError::starting)
    }

    pub fn engine(&self) -> Option<&PostgresEngine> {
        self.engine.get()
    }

    /// The managed Redis's major version ("7"); `None` for an external one.
    pub fn redis_version(&self) -> Option<String> {
        self.redis_version.get().cloned()
    }

    /// The Postgres engine's major version ("15").
    pub fn engine_version(&self) -> String {
        self.engine_version.get().cloned().unwrap_or_default()
    }

    pub fn is_ready(&self) -> bool {
        self.store.get().is_some()
    }

    /// Ready, and the database reachable right now.
    pub fn is_connected(&self) -> bool {
        self.store.get().is_some_and(Store::is_connected)
    }
}

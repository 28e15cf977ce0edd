//! What every handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use mds_auth::mail::Mailer;
use mds_crypto::MasterKey;
use mds_engines::PostgresEngine;
use mds_provision::Reconciler;
use mds_runtime::sandbox::Sandboxes;
use mds_runtime::volume::Volumes;
use mds_storage::Storage;
use mds_store::Store;

use crate::error::ApiError;

/// The variables a sandbox booted with: (name, value), sorted by name.
pub type BootEnv = Arc<Vec<(String, String)>>;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// Requests served, by status class (1xx..5xx), for `/metrics`.
#[derive(Default)]
pub struct RequestCounts(pub [std::sync::atomic::AtomicU64; 5]);

impl RequestCounts {
    pub fn record(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub struct Shared {
    pub master_key: Arc<MasterKey>,
    /// The end-user auth API's hasher, mailer and realm cache.
    pub auth: crate::realm::AuthRuntime,
    pub max_body_bytes: usize,
    pub requests: RequestCounts,
    /// Set once the engine is up and migrations are applied.
    store: OnceLock<Store>,
    engine: OnceLock<PostgresEngine>,
    reconciler: OnceLock<Reconciler>,
    storage: OnceLock<Storage>,
    engine_version: OnceLock<String>,
    sandboxes: OnceLock<Sandboxes>,
    volumes: OnceLock<Volumes>,
    deployer: OnceLock<crate::deploy::Deployer>,
    /// The environment each running sandbox booted with, by id: what its
    /// commands get until its next boot.
    pub boots: Mutex<HashMap<String, BootEnv>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(master_key: MasterKey, max_body_bytes: usize, mailer: Mailer) -> Self {
        Self(Arc::new(Shared {
            master_key: Arc::new(master_key),
            auth: crate::realm::AuthRuntime::new(mailer),
            max_body_bytes,
            requests: RequestCounts::default(),
            store: OnceLock::new(),
            engine: OnceLock::new(),
            reconciler: OnceLock::new(),
            storage: OnceLock::new(),
            engine_version: OnceLock::new(),
            sandboxes: OnceLock::new(),
            volumes: OnceLock::new(),
            deployer: OnceLock::new(),
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

    pub fn reconciler(&self) -> Result<&Reconciler, ApiError> {
        self.reconciler
            .get()
            .ok_or_else(|| ApiError::unavailable("mds is starting; retry shortly"))
    }

    pub fn storage(&self) -> Result<&Storage, ApiError> {
        self.storage
            .get()
            .ok_or_else(|| ApiError::unavailable("mds is starting; retry shortly"))
    }

    pub fn set_sandboxes(&self, sandboxes: Sandboxes) {
        let _ = self.sandboxes.set(sandboxes);
    }

    pub fn set_volumes(&self, volumes: Volumes) {
        let _ = self.volumes.set(volumes);
    }

    pub fn set_deployer(&self, deployer: crate::deploy::Deployer) {
        let _ = self.deployer.set(deployer);
    }

    pub fn deployer(&self) -> Result<&crate::deploy::Deployer, ApiError> {
        self.deployer
            .get()
            .ok_or_else(|| ApiError::unavailable("deployments are starting"))
    }

    pub fn volumes(&self) -> Result<&Volumes, ApiError> {
        self.volumes
            .get()
            .ok_or_else(|| ApiError::unavailable("mds is starting; retry shortly"))
    }

    pub fn sandboxes(&self) -> Result<&Sandboxes, ApiError> {
        self.sandboxes
            .get()
            .ok_or_else(|| ApiError::unavailable("mds is starting; retry shortly"))
    }

    pub fn store(&self) -> Result<&Store, ApiError> {
        self.store
            .get()
            .ok_or_else(|| ApiError::unavailable("mds is starting; retry shortly"))
    }

    pub fn engine(&self) -> Option<&PostgresEngine> {
        self.engine.get()
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

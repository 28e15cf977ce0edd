//! Control-plane metadata on Postgres (database `mds_control`).
//!
//! Everything another replica would need lives here: projects,
//! environments, sealed variables, API-key hashes and idempotency records.
//! Values that must stay secret arrive already sealed; this crate never sees
//! a plaintext credential.

mod api_keys;
mod audit;
mod auth;
mod backup_index;
mod backups;
mod cache;
mod data_services;
mod deployments;
mod error;
mod idempotency;
mod migrations;
mod projects;
mod public_networking;
pub mod quote;
mod runtime_env;
mod sandboxes;
mod settings;
mod storage;
mod variables;
mod volumes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::NoTls;

pub use api_keys::{ApiKeyRow, NewApiKeyRow};
pub use audit::{AuditAnchor, AuditEventRow, AuditFields, AuditQuery, NewAuditEvent};
pub use auth::{
    LogoutScope, MailRow, NewUser, Refresh, SigningKeyRow, UserKey, UserPatch, UserRow,
};
pub use backup_index::{
    BucketIndex, ExportedKey, ExportedUser, HoldRow, ImportReport, IndexedObject, RealmExport,
    RestoreReport,
};
pub use backups::{
    item_paths, Abandoned, BaseBackupRow, DueEnvironment, NewRestorePoint, RestorePointItemRow,
    RestorePointRow, RestoreRow, WalSegmentRow,
};
pub use data_services::{
    BindingRow, DataServiceRow, MissingBinding, NewBinding, NewDataService, PoolChange,
    PooledBinding,
};
pub use deployments::{
    DeploymentPatch, DeploymentRow, EnvironmentActive, InstanceRow, NewDeployment, NewVersion,
    VersionRow, VolumeClaim,
};
pub use error::StoreError;
pub use idempotency::{IdempotencyBegin, IdempotencyKey, StoredResponse};
pub use projects::{EnvironmentRow, NewEnvironment, NewProject, ProjectPatch, ProjectRow};
pub use public_networking::{PublicAccessRow, PublicEndpointRow};
pub use runtime_env::{NewRuntimeEnv, RuntimeEnvFilter, RuntimeEnvRow};
pub use sandboxes::{NewSandbox, SandboxRow};
pub use storage::{
    BucketRow, Manifest, NewBucket, NewObject, ObjectRow, PartRow, PutCondition, StorageRule,
    UploadRow,
};
pub use variables::{VariableRow, VariableScope};
pub use volumes::{AttachError, AttachmentRow, NewVolume, SnapshotRow, VolumeRow};

/// The control-plane database's name.
pub const CONTROL_DATABASE: &str = "mds_control";

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A pool of connections to the control-plane database, with a coherent
/// cache of hot rows in front of it.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    cache: Arc<cache::Cache>,
    listener: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Store {
    /// Connects with `config` (which names the control database) and checks
    /// that one connection works.
    pub async fn connect(
        mut config: tokio_postgres::Config,
        max_connections: usize,
    ) -> Result<Self> {
        // NOTICEs (such as "already exists, skipping") are not news.
        config.options("-c client_min_messages=warning");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Short timeouts: while the engine restarts, callers get a quick 503
        // they can retry instead of a hung request.
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(Duration::from_secs(5)),
                create: Some(Duration::from_secs(3)),
                recycle: Some(Duration::from_secs(3)),
            })
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let cache = Arc::new(cache::Cache::default());
        let store = Self {
            pool,
            cache: cache.clone(),
            listener: Arc::new(Mutex::new(None)),
        };
        store.ping().await?;
        let listener = tokio::spawn(cache::listen(config, cache));
        *store.listener.lock().expect("listener lock") = Some(listener);
        Ok(store)
    }

    /// Closes every pooled connection (before the engine stops).
    pub fn close(&self) {
        if let Some(listener) = self.listener.lock().expect("listener lock").take() {
            listener.abort();
        }
        self.pool.close();
    }

    /// Whether this replica holds a live connection to the database (its
    /// cache listener); cheap enough for every health check.
    pub fn is_connected(&self) -> bool {
        self.cache.is_listening()
    }

    /// Waits up to `limit` for [`is_connected`](Self::is_connected).
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The server's major version, e.g. "15".
    pub async fn server_version(&self) -> Result<String> {
        let client = self.client().await?;
        let row = client.query_one("SHOW server_version_num", &[]).await?;
        let num: String = row.get(0);
        Ok(num
            .parse::<u32>()
            .map(|n| (n / 10000).to_string())
            .unwrap_or(num))
    }

    /// One round trip: is the database answering?
    pub async fn ping(&self) -> Result<()> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }
}

/// Creates database `name` on the server `admin` points at unless it exists.
/// `CREATE DATABASE` cannot run in a transaction, and two replicas may race
/// here: a duplicate error from the loser is success.
pub async fn ensure_database(admin: &tokio_postgres::Config, name: &str) -> Result<()> {
    let (client, connection) = admin.connect(NoTls).await?;
    let conn_task = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        let sql = format!("CREATE DATABASE {}", quote::ident(name));
        match client.batch_execute(&sql).await {
            Ok(()) => tracing::info!(database = name, "created control-plane database"),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(client);
    let _ = conn_task.await;
    Ok(())
}

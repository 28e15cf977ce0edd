//! Provisioning: data services are desired state in the store; the
//! [`Reconciler`] makes the engines match it.
//!
//! Every pass: (1) add bindings for environments created after a service
//! was attached; (2) lease the bindings whose observed state differs from
//! the desired one and converge each with ordered, idempotent operations;
//! (3) record the outcome, or the error and when to retry. A crash at any
//! point leaves rows that the next pass (on any replica) picks up again.

mod postgres;
mod redis_external;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use mds_core::env::PostgresAccess;
use mds_core::ids::IdKind;
use mds_core::names;
use mds_crypto::MasterKey;
use mds_engines::{PostgresEngine, RedisEngine, RedisSpec};
use mds_store::{BindingRow, DataServiceRow, NewBinding, Store};
use tokio::sync::Notify;
use zeroize::Zeroizing;

pub use postgres::harden_engine;

/// The prefix of a storage binding's S3 access key id; the rest is the
/// binding's ULID, so the key names its binding without a lookup table.
pub const STORAGE_KEY_PREFIX: &str = "MDS";

pub fn storage_access_key_id(binding_id: &str) -> String {
    let ulid = binding_id.strip_prefix("bnd_").unwrap_or(binding_id);
    format!("{STORAGE_KEY_PREFIX}{ulid}")
}

/// The binding an S3 access key id names, if it has the shape of one.
pub fn storage_key_binding(access_key_id: &str) -> Option<String> {
    let ulid = access_key_id.strip_prefix(STORAGE_KEY_PREFIX)?;
    let id = format!("bnd_{ulid}");
    IdKind::Binding.matches(&id).then_some(id)
}

/// The volume of a `volume` binding: `vol_` and the binding's ULID.
pub fn binding_volume(binding_id: &str) -> String {
    format!(
        "vol_{}",
        binding_id.strip_prefix("bnd_").unwrap_or(binding_id)
    )
}

/// A volume data service's volumes, unless its config says otherwise.
pub const DEFAULT_VOLUME_BYTES: i64 = 1 << 30;

/// A storage binding's bucket: its resource name (unique on the server) in
/// bucket characters, `project--environment`.
pub fn binding_bucket(resource_name: &str) -> String {
    let name: String = resource_name
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.len() < 3 {
        format!("{name}-bucket")
    } else {
        name
    }
}
pub use redis_external::ExternalRedis;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("engine: {}", describe(.0))]
    Engine(#[from] tokio_postgres::Error),
    #[error("store: {0}")]
    Store(#[from] mds_store::StoreError),
    #[error("the binding's password cannot be opened with this master key")]
    Sealed,
    #[error("unknown data-service kind {0:?}")]
    UnknownKind(String),
    #[error("{0}")]
    Redis(String),
}

impl From<mds_engines::EngineError> for ProvisionError {
    fn from(e: mds_engines::EngineError) -> Self {
        ProvisionError::Redis(e.to_string())
    }
}

/// The server's own words for a database error ("db error" says nothing).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Password length: 43 alphanumerics carry 256 bits.
const PASSWORD_LEN: usize = 43;
const CLAIM_BATCH: i64 = 32;
const LEASE_SECS: f64 = 120.0;
const IDLE_RESCAN: Duration = Duration::from_secs(5);
/// A Redis without a size gets 64 MiB.
pub const DEFAULT_REDIS_MEMORY: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    engine: PostgresEngine,
    master_key: Arc<MasterKey>,
    wake: Notify,
    connection_limit: i32,
    /// How many empty databases to keep ready for new bindings.
    spares: i64,
    /// Managed Redis, when redis-server is installed.
    redis: Option<RedisEngine>,
    /// An existing Redis (`--redis-url`): bindings become ACL users there.
    redis_external: Option<ExternalRedis>,
    /// How often running bindings are checked with their own credentials.
    drift_check: Duration,
    spares_wake: Notify,
    /// The S3 endpoint storage bindings inject.
    s3_endpoint: String,
    /// The API's public URL, under which auth bindings serve.
    api_url: String,
    /// What new volumes are made of: `ext4` or `dir`.
    volume_backend: String,
}

/// Where Redis bindings live.
pub enum RedisHosting {
    /// One supervised redis-server each.
    Managed(RedisEngine),
    /// ACL users on an existing server (`--redis-url`).
    External(ExternalRedis),
    /// redis-server is not installed: Redis bindings fail saying so.
    Unavailable,
}

/// Tunables of provisioning.
pub struct Settings {
    /// CONNECTION LIMIT of each tenant Postgres role.
    pub connection_limit: i32,
    /// Empty Postgres databases kept ready for new bindings.
    pub spares: usize,
    /// How often running bindings are checked with their own credentials.
    pub drift_check: Duration,
    /// The S3 endpoint's URL, injected by storage bindings.
    pub s3_endpoint: String,
    /// The API's public URL: auth bindings serve at
    /// `API_URL/auth/v1/PROJECT/ENVIRONMENT`.
    pub api_url: String,
    /// What new volumes are made of: `ext4` (root with loop devices) or
    /// `dir`.
    pub volume_backend: String,
}

/// Arbitrary, fixed: the advisory lock of the replica that tops up spares.
const SPARES_LOCK: i64 = 0x006d_6473_7370_6172;

fn password_context(binding_id: &str) -> String {
    format!("binding:{binding_id}:password")
}

impl Reconciler {
    pub fn new(
        store: Store,
        engine: PostgresEngine,
        master_key: Arc<MasterKey>,
        redis: RedisHosting,
        settings: Settings,
    ) -> Self {
        let (redis, redis_external) = match redis {
            RedisHosting::Managed(engine) => (Some(engine), None),
            RedisHosting::External(external) => (None, Some(external)),
            RedisHosting::Unavailable => (None, None),
        };
        Self {
            inner: Arc::new(Inner {
                store,
                engine,
                master_key,
                wake: Notify::new(),
                connection_limit: settings.connection_limit,
                spares: settings.spares as i64,
                spares_wake: Notify::new(),
                redis,
                redis_external,
                drift_check: settings.drift_check,
                s3_endpoint: settings.s3_endpoint,
                api_url: settings.api_url.trim_end_matches('/').to_string(),
                volume_backend: settings.volume_backend,
            }),
        }
    }

    /// Asks for a pass now (after desired state changed).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Runs passes until the task is dropped: on every wake, and every few
    /// seconds to retry errors and adopt work of replicas that died. A
    /// second task keeps the spare databases topped up, off the path of
    /// any attach.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let keeper = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = keeper.top_up_spares().await {
                    tracing::warn!(error = %e, "could not top up spare databases");
                }
                tokio::select! {
                    _ = keeper.inner.spares_wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        });
        let checker = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(checker.inner.drift_check).await;
                if let Err(e) = checker.check_drift().await {
                    tracing::debug!(error = %e, "drift check incomplete");
                }
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            this.adopt().await;
            loop {
                match this.pass().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(bindings = n, "reconciler pass"),
                    Err(e) => tracing::warn!(error = %e, "reconciler pass failed; will retry"),
                }
                tokio::select! {
                    _ = this.inner.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_RESCAN) => {}
                }
            }
        })
    }

    /// Brings back the engine processes of running bindings (managed Redis)
    /// after this server started; a failure marks the binding for retry.
    async fn adopt(&self) {
        let Ok(bindings) = self.inner.store.running_bindings(Some("redis")).await else {
            return;
        };
        join_all(bindings.iter().map(|(service, binding)| async move {
            if let Err(e) = self.converge_redis(service, binding).await {
                tracing::warn!(binding = binding.id, error = %e, "could not restart a redis instance");
                let _ = self
                    .inner
                    .store
                    .binding_failed(&binding.id, &e.to_string(), 0.5)
                    .await;
            }
        }))
        .await;
    }

    /// Logs in to every running binding with its own credentials; one that
    /// fails (a database dropped behind mds's back, an external Redis that
    /// lost its ACL users, a dead instance) goes back to the reconciler.
    async fn check_drift(&self) -> Result<(), ProvisionError> {
        let store = &self.inner.store;
        for (service, binding) in store.running_bindings(None).await? {
            let password = self.password(&binding)?;
            let (host, port) = self.binding_endpoint(&service, &binding);
            let check = match service.kind.as_str() {
                "postgres" => postgres::verify(&host, port, &binding.resource_name, &password)
                    .await
                    .map_err(|e| describe(&e)),
                "redis" => {
                    mds_engines::resp::auth_ping(&host, port, &binding.resource_name, &password)
                        .await
                }
                _ => Ok(()),
            };
            if let Err(reason) = check {
                tracing::warn!(binding = binding.id, %reason, "a running binding stopped answering; repairing it");
                let reason = format!("repairing: {reason}");
                store.binding_drifted(&binding.id, &reason).await?;
                let _ = store.add_binding_event(&binding.id, "drift", &reason).await;
                self.wake();
            }
        }
        Ok(())
    }

    /// Stops the engine processes this server supervises.
    pub async fn shutdown(&self) {
        if let Some(redis) = &self.inner.redis {
            redis.shutdown().await;
        }
    }

    /// One pass; returns how many bindings it worked on.
    pub async fn pass(&self) -> Result<usize, ProvisionError> {
        let store = &self.inner.store;
        for missing in store.missing_bindings().await? {
            let service = (!missing.env_prefix.is_empty()).then_some(missing.service_name.as_str());
            let binding = self.new_binding(
                &missing.project_slug,
                &missing.environment_id,
                &missing.environment_slug,
                service,
            );
            store.add_binding(&missing.service_id, &binding).await?;
        }
        let mut worked = 0;
        loop {
            let due = store.claim_due_bindings(CLAIM_BATCH, LEASE_SECS).await?;
            if due.is_empty() {
                store.sweep_deleted_services().await?;
                return Ok(worked);
            }
            worked += due.len();
            join_all(
                due.iter()
                    .map(|(service, binding)| self.converge(service, binding)),
            )
            .await;
            // New bindings may have taken spares.
            self.inner.spares_wake.notify_one();
        }
    }

    async fn top_up_spares(&self) -> Result<(), ProvisionError> {
        if self.inner.spares == 0 {
            return Ok(());
        }
        let admin = postgres::Admin::connect(&self.inner.engine.admin_config()).await?;
        // The lock goes with this connection when it is dropped.
        if !admin.try_lock(SPARES_LOCK).await? {
            tracing::debug!("another replica tops up the spares");
            return Ok(());
        }
        admin.drop_unfinished_spares().await?;
        admin.sweep_spare_roles().await?;
        let have = admin.spare_count().await?;
        tracing::debug!(have, want = self.inner.spares, "topping up spare databases");
        for _ in have..self.inner.spares {
            admin.create_spare().await?;
        }
        Ok(())
    }

    /// A binding for `environment`, with a fresh sealed password.
    pub fn new_binding(
        &self,
        project_slug: &str,
        environment_id: &str,
        environment_slug: &str,
        service_name: Option<&str>,
    ) -> NewBinding {
        let id = IdKind::Binding.mint();
        let password = mds_crypto::random_password(PASSWORD_LEN);
        NewBinding {
            sealed_password: self
                .inner
                .master_key
                .seal(&password_context(&id), password.as_bytes()),
            resource_name: names::resource_name(project_slug, environment_slug, service_name),
            environment_id: environment_id.to_string(),
            id,
        }
    }

    pub fn password(&self, binding: &BindingRow) -> Result<Zeroizing<String>, ProvisionError> {
        self.inner
            .master_key
            .open_string(&password_context(&binding.id), &binding.sealed_password)
            .map_err(|_| ProvisionError::Sealed)
    }

    /// Where tenants reach the engine.
    pub fn endpoint(&self) -> (String, u16) {
        let admin = self.inner.engine.admin_config();
        let host = match admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        (host, port)
    }

    /// Where a binding's clients connect: the shared Postgres server, an
    /// external Redis, or the binding's own redis-server.
    pub fn binding_endpoint(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> (String, u16) {
        match (service.kind.as_str(), &self.inner.redis_external) {
            ("redis", Some(external)) => (external.host.clone(), external.port),
            ("redis", None) => (
                "127.0.0.1".to_string(),
                binding.port.unwrap_or_default() as u16,
            ),
            _ => self.endpoint(),
        }
    }

    /// The variables a running binding injects: (name, value, secret), the
    /// URL first.
    pub fn binding_variables(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Vec<(String, String, bool)>, ProvisionError> {
        let password = self.password(binding)?;
        match service.kind.as_str() {
            "postgres" => {
                let (host, port) = self.endpoint();
                Ok(PostgresAccess {
                    host: &host,
                    port,
                    user: &binding.resource_name,
                    password: &password,
                    database: &binding.resource_name,
                }
                .variables(&service.env_prefix))
            }
            "redis" => {
                let (host, port) = self.binding_endpoint(service, binding);
                let url = format!(
                    "redis://{}:{}@{host}:{port}/0",
                    mds_core::env::url_encode(&binding.resource_name),
                    mds_core::env::url_encode(&password)
                );
                let prefix = &service.env_prefix;
                let mut vars = vec![(format!("{prefix}REDIS_URL"), url, true)];
                if self.inner.redis_external.is_some() {
                    // On a shared server each binding owns a key prefix.
                    vars.push((
                        format!("{prefix}REDIS_KEY_PREFIX"),
                        redis_external::key_prefix(&binding.resource_name),
                        false,
                    ));
                }
                Ok(vars)
            }
            "storage" => {
                let bucket = binding_bucket(&binding.resource_name);
                let prefix = &service.env_prefix;
                let endpoint = &self.inner.s3_endpoint;
                let key_id = storage_access_key_id(&binding.id);
                let mut vars = vec![
                    (format!("{prefix}STORAGE_BUCKET"), bucket, false),
                    (format!("{prefix}STORAGE_ENDPOINT"), endpoint.clone(), false),
                    (format!("{prefix}STORAGE_KEY_ID"), key_id.clone(), false),
                    (
                        format!("{prefix}STORAGE_KEY_SECRET"),
                        password.to_string(),
                        true,
                    ),
                ];
                // Stock AWS SDKs read these names; only the first storage
                // service of a project sets them.
                if prefix.is_empty() {
                    vars.extend([
                        ("AWS_ENDPOINT_URL_S3".to_string(), endpoint.clone(), false),
                        ("AWS_ACCESS_KEY_ID".to_string(), key_id, false),
                        (
                            "AWS_SECRET_ACCESS_KEY".to_string(),
                            password.to_string(),
                            true,
                        ),
                        ("AWS_REGION".to_string(), "us-east-1".to_string(), false),
                    ]);
                }
                Ok(vars)
            }
            "auth" => {
                if !mds_auth::AuthConfig::from_stored(&service.config).enabled {
                    return Ok(Vec::new());
                }
                let url = self.auth_url(service, binding);
                let prefix = &service.env_prefix;
                Ok(vec![
                    (
                        format!("{prefix}AUTH_JWKS_URL"),
                        format!("{url}/.well-known/jwks.json"),
                        false,
                    ),
                    (format!("{prefix}AUTH_URL"), url, false),
                    (
                        format!("{prefix}AUTH_JWT_SECRET"),
                        self.auth_jwt_secret(&binding.id).to_string(),
                        true,
                    ),
                ])
            }
            "volume" => {
                let prefix = &service.env_prefix;
                Ok(vec![
                    (
                        format!("{prefix}VOLUME_ID"),
                        binding_volume(&binding.id),
                        false,
                    ),
                    (
                        format!("{prefix}VOLUME_NAME"),
                        binding.resource_name.clone(),
                        false,
                    ),
                ])
            }
            other => Err(ProvisionError::UnknownKind(other.to_string())),
        }
    }

    /// Gives a `volume` binding its volume (a row: the filesystem is made
    /// where it is first attached), or removes the row. Its data is
    /// removed by the server that holds it.
    async fn converge_volume(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Option<&'static str>, ProvisionError> {
        let store = &self.inner.store;
        let id = binding_volume(&binding.id);
        match binding.desired.as_str() {
            "deleted" => {
                store.delete_binding_volume(&binding.id).await?;
                Ok(None)
            }
            desired => {
                if store.binding_volume(&binding.id).await?.is_none() {
                    let size = service.config["size_bytes"]
                        .as_i64()
                        .unwrap_or(DEFAULT_VOLUME_BYTES)
                        .clamp(1 << 20, 500 << 30);
                    let tenant = store.project_tenant(&service.project_id).await?;
                    let created = store
                        .create_volume(&mds_store::NewVolume {
                            id: &id,
                            tenant_id: &tenant,
                            project_id: Some(&service.project_id),
                            binding_id: Some(&binding.id),
                            name: &binding.resource_name,
                            size_bytes: size,
                            backend: &self.inner.volume_backend,
                        })
                        .await;
                    match created {
                        Ok(()) => {}
                        // Made by a pass that raced this one.
                        Err(mds_store::StoreError::Conflict { .. })
                            if store.binding_volume(&binding.id).await?.is_some() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Some(if desired == "running" {
                    "running"
                } else {
                    "stopped"
                }))
            }
        }
    }

    /// Where an auth binding's end-user API is: `AUTH_URL`, also the
    /// issuer of its tokens.
    pub fn auth_url(&self, service: &DataServiceRow, binding: &BindingRow) -> String {
        format!(
            "{}/auth/v1/{}/{}",
            self.inner.api_url, service.project_id, binding.environment_id
        )
    }

    /// An auth binding's `AUTH_JWT_SECRET`: 64 hex characters derived from
    /// the master key, whose UTF-8 bytes are the HS256 key.
    pub fn auth_jwt_secret(&self, binding_id: &str) -> Zeroizing<String> {
        let key = self
            .inner
            .master_key
            .derive(&format!("auth:{binding_id}:jwt-secret"));
        Zeroizing::new(hex::encode(*key))
    }

    /// The sealing context of an auth signing key.
    pub fn signing_key_context(kid: &str) -> String {
        format!("auth-signing-key:{kid}")
    }

    /// Gives an auth binding its ES256 keys (one active, one standby), so
    /// switching a project to ES256 or rotating needs no other step. Its
    /// users and sessions go with the binding row.
    async fn converge_auth(
        &self,
        binding: &BindingRow,
    ) -> Result<Option<&'static str>, ProvisionError> {
        match binding.desired.as_str() {
            "deleted" => Ok(None),
            desired => {
                let present = self.inner.store.signing_keys(&binding.id, 0.0).await?;
                for state in ["active", "standby"] {
                    if !present.iter().any(|k| k.state == state) {
                        let (kid, private, jwk) = mds_auth::jwt::new_es256_key();
                        let sealed = self
                            .inner
                            .master_key
                            .seal(&Self::signing_key_context(&kid), &private);
                        self.inner
                            .store
                            .add_signing_key(&binding.id, &kid, state, &sealed, &jwk)
                            .await?;
                    }
                }
                Ok(Some(if desired == "running" {
                    "running"
                } else {
                    "stopped"
                }))
            }
        }
    }

    /// Creates (or removes) a storage binding's bucket. Its S3 keys are
    /// the binding's id and password, so nothing else needs making.
    async fn converge_storage(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Option<&'static str>, ProvisionError> {
        let store = &self.inner.store;
        let existing = store.binding_bucket(&binding.id).await?;
        match binding.desired.as_str() {
            "deleted" => {
                if let Some(bucket) = existing {
                    // Its objects go too; their chunks are collected later.
                    store.delete_bucket(&bucket.id, true, 0.0).await?;
                }
                Ok(None)
            }
            desired => {
                if existing.is_none() {
                    let id = IdKind::Bucket.mint();
                    let name = binding_bucket(&binding.resource_name);
                    store
                        .create_bucket(&mds_store::NewBucket {
                            id: &id,
                            name: &name,
                            project_id: Some(&service.project_id),
                            binding_id: Some(&binding.id),
                            visibility: "private",
                        })
                        .await?;
                }
                Ok(Some(if desired == "running" {
                    "running"
                } else {
                    "stopped"
                }))
            }
        }
    }

    fn redis(&self) -> Result<&RedisEngine, ProvisionError> {
        self.inner.redis.as_ref().ok_or_else(|| {
            ProvisionError::Redis(
                "redis-server is not installed on this server; install it with \
                 `apt-get install -y redis-server`"
                    .to_string(),
            )
        })
    }

    /// Runs (or stops, or removes) a binding's own redis-server, or its ACL
    /// user on an external Redis.
    async fn converge_redis(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Option<&'static str>, ProvisionError> {
        if let Some(external) = &self.inner.redis_external {
            let password = self.password(binding)?;
            return external
                .converge(&binding.resource_name, &password, &binding.desired)
                .await
                .map_err(ProvisionError::Redis);
        }
        let redis = self.redis()?;
        match binding.desired.as_str() {
            "deleted" => {
                redis.remove(&binding.id).await?;
                Ok(None)
            }
            "stopped" => {
                redis.stop(&binding.id).await;
                Ok(Some("stopped"))
            }
            _ => {
                let port = match binding.port {
                    Some(port) => port as u16,
                    None => {
                        let port = mds_engines::free_port()?;
                        self.inner
                            .store
                            .set_binding_port(&binding.id, i32::from(port))
                            .await?;
                        port
                    }
                };
                let spec = RedisSpec {
                    binding_id: binding.id.clone(),
                    port,
                    user: binding.resource_name.clone(),
                    password: self.password(binding)?.to_string(),
                    maxmemory_bytes: service.config["maxmemory_bytes"]
                        .as_u64()
                        .unwrap_or(DEFAULT_REDIS_MEMORY),
                    eviction: service.config["eviction"]
                        .as_str()
                        .unwrap_or("noeviction")
                        .to_string(),
                };
                // Ready means AUTH and PING with the binding's own user.
                redis.ensure_running(&spec).await?;
                Ok(Some("running"))
            }
        }
    }

    async fn converge(&self, service: &DataServiceRow, binding: &BindingRow) {
        let store = &self.inner.store;
        let outcome = match service.kind.as_str() {
            "postgres" => self.converge_postgres(binding).await,
            "redis" => self.converge_redis(service, binding).await,
            "storage" => self.converge_storage(service, binding).await,
            "auth" => self.converge_auth(binding).await,
            "volume" => self.converge_volume(service, binding).await,
            other => Err(ProvisionError::UnknownKind(other.to_string())),
        };
        let recorded = match outcome {
            Ok(Some(state)) => {
                let _ = store
                    .add_binding_event(&binding.id, "provision", state)
                    .await;
                store.binding_reached(&binding.id, state).await
            }
            Ok(None) => {
                let _ = store
                    .add_binding_event(&binding.id, "provision", "deleted")
                    .await;
                store.remove_binding(&binding.id, &binding.service_id).await
            }
            Err(e) => {
                let retry = (0.5 * 2f64.powi(binding.attempts.min(7))).min(60.0);
                tracing::warn!(binding = binding.id, error = %e, retry_secs = retry, "provisioning failed");
                let _ = store
                    .add_binding_event(&binding.id, "error", &e.to_string())
                    .await;
                store
                    .binding_failed(&binding.id, &e.to_string(), retry)
                    .await
            }
        };
        if let Err(e) = recorded {
            // The lease expires and another pass retries.
            tracing::warn!(binding = binding.id, error = %e, "could not record a binding's state");
        }
    }

    /// Returns the state reached, or `None` once the binding is gone.
    async fn converge_postgres(
        &self,
        binding: &BindingRow,
    ) -> Result<Option<&'static str>, ProvisionError> {
        let admin = postgres::Admin::connect(&self.inner.engine.admin_config()).await?;
        let name = &binding.resource_name;
        match binding.desired.as_str() {
            "deleted" => {
                admin.remove(name).await?;
                Ok(None)
            }
            desired => {
                let login = desired == "running";
                let password = self.password(binding)?;
                admin
                    .converge(name, &password, login, self.inner.connection_limit)
                    .await?;
                if !login {
                    admin.disconnect_role(name).await?;
                    return Ok(Some("stopped"));
                }
                // Ready means connectable: a real login with the binding's
                // own credentials.
                let (host, port) = self.endpoint();
                postgres::verify(&host, port, name, &password).await?;
                Ok(Some("running"))
            }
        }
    }

    /// Restarts a binding: closes every session of a Postgres role (its
    /// server is shared), or restarts a Redis instance (data kept).
    pub async fn restart(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), ProvisionError> {
        if matches!(service.kind.as_str(), "storage" | "auth" | "volume") {
            // No sessions to close: requests are independent.
            return Ok(());
        }
        if service.kind == "redis" {
            if let Some(external) = &self.inner.redis_external {
                return external
                    .disconnect(&binding.resource_name)
                    .await
                    .map_err(ProvisionError::Redis);
            }
            self.redis()?.stop(&binding.id).await;
            self.converge_redis(service, binding).await?;
            return Ok(());
        }
        let admin = postgres::Admin::connect(&self.inner.engine.admin_config()).await?;
        admin.disconnect_role(&binding.resource_name).await?;
        Ok(())
    }

    /// Drops a binding's data now (a purge), then its row.
    pub async fn remove_now(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), ProvisionError> {
        if service.kind == "volume" {
            self.inner.store.delete_binding_volume(&binding.id).await?;
            self.inner
                .store
                .remove_binding(&binding.id, &binding.service_id)
                .await?;
            return Ok(());
        }
        if service.kind == "auth" {
            // Users, sessions, keys and mail go with the row (cascade).
            self.inner
                .store
                .remove_binding(&binding.id, &binding.service_id)
                .await?;
            return Ok(());
        }
        if service.kind == "storage" {
            let mut deleting = binding.clone();
            deleting.desired = "deleted".to_string();
            self.converge_storage(service, &deleting).await?;
            self.inner
                .store
                .remove_binding(&binding.id, &binding.service_id)
                .await?;
            return Ok(());
        }
        if service.kind == "redis" {
            match &self.inner.redis_external {
                Some(external) => external
                    .converge(&binding.resource_name, "", "deleted")
                    .await
                    .map(|_| ())
                    .map_err(ProvisionError::Redis)?,
                None => self.redis()?.remove(&binding.id).await?,
            }
            self.inner
                .store
                .remove_binding(&binding.id, &binding.service_id)
                .await?;
            return Ok(());
        }
        let admin = postgres::Admin::connect(&self.inner.engine.admin_config()).await?;
        admin.remove(&binding.resource_name).await?;
        self.inner
            .store
            .remove_binding(&binding.id, &binding.service_id)
            .await?;
        Ok(())
    }
}

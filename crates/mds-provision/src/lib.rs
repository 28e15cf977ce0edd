//! Provisioning: data services are desired state in the store; the
//! [`Reconciler`] makes the engines match it, through one provisioner per
//! kind behind one trait ([`Provisioner`]): `postgres.rs`, `redis.rs`
//! (managed and external), `storage.rs`, `auth.rs`, `volume.rs`.
//!
//! Every pass: (1) add bindings for environments created after a service
//! was attached; (2) lease the bindings whose observed state differs from
//! the desired one and converge each with ordered, idempotent operations;
//! (3) record the outcome, or the error and when to retry. A crash at any
//! point leaves rows that the next pass (on any replica) picks up again.
//!
//! Kinds and states are strings only in the rows: every public operation
//! parses them first ([`ServiceKind`], [`BindingState`], [`Desired`]), and a
//! value this server does not know is an error recorded on the binding,
//! never an action. Leases name the server incarnation that holds them
//! (migration 0014), so a server that died holds nothing once it starts
//! again, or once its heartbeat stops.

mod auth;
mod postgres;
mod redis;
mod redis_external;
mod storage;
mod volume;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use mds_core::kinds::{BindingState, Desired, ServiceKind, UnknownValue};
use mds_core::names;
use mds_crypto::MasterKey;
use mds_engines::PostgresEngine;
use mds_store::{BindingRow, DataServiceRow, NewBinding, Store};
use tokio::sync::{Notify, OnceCell};
use tracing::Instrument;
use zeroize::Zeroizing;

pub use postgres::{harden_engine, POOL_MODES};
pub use redis::DEFAULT_REDIS_MEMORY;
pub use redis_external::ExternalRedis;
pub use storage::{
    binding_bucket, service_bucket, storage_access_key_id, storage_key_binding, STORAGE_KEY_PREFIX,
};
pub use volume::{binding_volume, DEFAULT_VOLUME_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("engine: {}", describe(.0))]
    Engine(#[from] tokio_postgres::Error),
    #[error("store: {0}")]
    Store(#[from] mds_store::StoreError),
    #[error("the binding's password cannot be opened with this master key")]
    Sealed,
    /// `data_services.kind` names no kind this server provisions.
    #[error("{0}; this server does nothing with it")]
    UnknownKind(UnknownValue),
    /// `bindings.state` or `bindings.desired` holds a word this server
    /// does not know.
    #[error("{0}; this server does nothing with it")]
    UnknownState(UnknownValue),
    /// An engine process of mds's own (redis-server, the pooler) failed.
    #[error("{0}")]
    Process(String),
}

impl From<mds_engines::EngineError> for ProvisionError {
    fn from(e: mds_engines::EngineError) -> Self {
        ProvisionError::Process(e.to_string())
    }
}

/// The server's own words for a database error ("db error" says nothing).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The kind of a service row, or the error that names the bad word.
pub fn service_kind(service: &DataServiceRow) -> Result<ServiceKind, ProvisionError> {
    service.kind.parse().map_err(ProvisionError::UnknownKind)
}

/// What a binding row should be, or the error that names the bad word.
pub fn binding_desired(binding: &BindingRow) -> Result<Desired, ProvisionError> {
    binding
        .desired
        .parse()
        .map_err(ProvisionError::UnknownState)
}

/// What a binding row has, or the error that names the bad word.
pub fn binding_state(binding: &BindingRow) -> Result<BindingState, ProvisionError> {
    binding.state.parse().map_err(ProvisionError::UnknownState)
}

/// A variable a binding injects: (name, value, secret).
pub type Injected = (String, String, bool);

/// What every provisioner reads: the store and the master key that opens
/// binding passwords.
pub(crate) struct Ctx {
    store: Store,
    master_key: Arc<MasterKey>,
}

impl Ctx {
    fn password(&self, binding: &BindingRow) -> Result<Zeroizing<String>, ProvisionError> {
        self.open_password(binding, &binding.sealed_password)
    }

    /// One of a binding's sealed passwords (current, previous, pending).
    fn open_password(
        &self,
        binding: &BindingRow,
        sealed: &[u8],
    ) -> Result<Zeroizing<String>, ProvisionError> {
        self.master_key
            .open_string(&password_context(&binding.id), sealed)
            .map_err(|_| ProvisionError::Sealed)
    }
}

/// A binding's current numbers: (name, value).
pub type Metrics = Vec<(&'static str, f64)>;

/// One kind's provisioner. The reconciler picks one with an exhaustive
/// `match` on [`ServiceKind`] (`with_provisioner!`), after parsing the
/// rows, so none of these ever sees a kind or state it does not know.
pub(crate) trait Provisioner {
    /// Makes the engine match `desired`; returns the state reached, or
    /// `None` once the binding's data is gone. Idempotent: a crash at any
    /// point is repaired by calling it again.
    async fn converge(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
        desired: Desired,
    ) -> Result<Option<BindingState>, ProvisionError>;

    /// Drops the binding's data now (a purge); the row is the caller's.
    async fn remove_now(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), ProvisionError> {
        self.converge(ctx, service, binding, Desired::Deleted)
            .await
            .map(|_| ())
    }

    /// Closes the binding's client sessions; data and credentials stay.
    /// Kinds without sessions (storage, auth, volumes: each request stands
    /// alone) have nothing to close.
    async fn restart(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
        desired: Desired,
    ) -> Result<(), ProvisionError> {
        let _ = (ctx, service, binding, desired);
        Ok(())
    }

    /// Where the binding's clients connect.
    fn endpoint(&self, binding: &BindingRow) -> (String, u16);

    /// The variables a running binding injects, the URL first.
    fn variables(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Vec<Injected>, ProvisionError>;

    /// The binding's current numbers from its engine (sizes, sessions,
    /// counters), by name. Kinds without an engine of their own report
    /// none.
    async fn metrics(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Metrics, ProvisionError> {
        let _ = (ctx, service, binding);
        Ok(Vec::new())
    }

    /// Uses the binding with its own credentials (the drift check); the
    /// error says what failed. Kinds whose data lives in mds itself
    /// (storage, auth, volumes) cannot drift behind its back.
    async fn check(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), String> {
        let _ = (ctx, service, binding);
        Ok(())
    }
}

/// The one place a kind picks its provisioner: `$p` is bound to it in
/// `$body`. Exhaustive, with no default arm.
macro_rules! with_provisioner {
    ($inner:expr, $kind:expr, $p:ident => $body:expr) => {
        match $kind {
            ServiceKind::Postgres => {
                let $p = &$inner.postgres;
                $body
            }
            ServiceKind::Redis => {
                let $p = &$inner.redis;
                $body
            }
            ServiceKind::Storage => {
                let $p = &$inner.storage;
                $body
            }
            ServiceKind::Auth => {
                let $p = &$inner.auth;
                $body
            }
            ServiceKind::Volume => {
                let $p = &$inner.volume;
                $body
            }
        }
    };
}

/// Password length: 43 alphanumerics carry 256 bits.
const PASSWORD_LEN: usize = 43;
const CLAIM_BATCH: i64 = 32;
/// How long a lease lasts if its holder stays alive but never records an
/// outcome (a hung engine call).
const LEASE_SECS: f64 = 120.0;
/// How often an incarnation says it is alive...
const HEARTBEAT: Duration = Duration::from_secs(2);
/// ...and after how long without a heartbeat its leases are taken over.
const HEARTBEAT_STALE_SECS: f64 = 10.0;
const IDLE_RESCAN: Duration = Duration::from_secs(5);
/// The slow fallback of [`Reconciler::wait_settled`], for notifications
/// lost while the listener reconnects.
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// The file in the data dir that holds this server's id.
const SERVER_ID_FILE: &str = "server-id";

#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Ctx,
    postgres: postgres::PostgresProvisioner,
    redis: RedisHosting,
    storage: storage::StorageProvisioner,
    auth: auth::AuthProvisioner,
    volume: volume::VolumeProvisioner,
    wake: Notify,
    /// How many empty databases to keep ready for new bindings.
    spares: i64,
    spares_wake: Notify,
    /// How often running bindings are checked with their own credentials.
    drift_check: Duration,
    /// This server's id (its data dir's), and the incarnation of this
    /// start once registered: the holder its leases name.
    server_id: String,
    incarnation: OnceCell<i64>,
}

/// Where Redis bindings live.
pub enum RedisHosting {
    /// One supervised redis-server each.
    Managed(mds_engines::RedisEngine),
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
    /// This server's lasting id ([`server_id`]); its leases name it.
    pub server_id: String,
    /// The pooler in front of the managed engine (none with
    /// `--postgres-url`).
    pub pooler: Option<mds_engines::Pooler>,
    /// Server connections of a binding whose pool size is not set.
    pub default_pool_size: u32,
    /// Client connections of a binding whose client limit is not set.
    pub default_pool_max_clients: u32,
}

/// Arbitrary, fixed: the advisory lock of the replica that tops up spares.
const SPARES_LOCK: i64 = 0x006d_6473_7370_6172;

fn password_context(binding_id: &str) -> String {
    format!("binding:{binding_id}:password")
}

/// This server's id, kept in `DIR/server-id` (made at the first start).
/// Replicas have data dirs of their own, hence ids of their own; a start
/// on the same data dir is the same server, which takes over the leases
/// of its earlier run at once.
pub fn server_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(SERVER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!(
        "srv_{}",
        mds_crypto::random_password(26).to_ascii_lowercase()
    );
    // Written whole or not at all: a torn id would be another server.
    let partial = data_dir.join(format!("{SERVER_ID_FILE}.partial"));
    std::fs::write(&partial, format!("{id}\n"))?;
    std::fs::rename(&partial, &path)?;
    Ok(id)
}

impl Reconciler {
    pub fn new(
        store: Store,
        engine: PostgresEngine,
        master_key: Arc<MasterKey>,
        redis: RedisHosting,
        settings: Settings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ctx: Ctx { store, master_key },
                postgres: postgres::PostgresProvisioner {
                    engine,
                    connection_limit: settings.connection_limit,
                    pooler: settings.pooler,
                    default_pool_size: settings.default_pool_size,
                    default_pool_max_clients: settings.default_pool_max_clients,
                    pool_sync: tokio::sync::Mutex::new(()),
                },
                redis,
                storage: storage::StorageProvisioner {
                    s3_endpoint: settings.s3_endpoint,
                },
                auth: auth::AuthProvisioner {
                    api_url: settings.api_url.trim_end_matches('/').to_string(),
                },
                volume: volume::VolumeProvisioner {
                    backend: settings.volume_backend,
                },
                wake: Notify::new(),
                spares: settings.spares as i64,
                spares_wake: Notify::new(),
                drift_check: settings.drift_check,
                server_id: settings.server_id,
                incarnation: OnceCell::new(),
            }),
        }
    }

    fn store(&self) -> &Store {
        &self.inner.ctx.store
    }

    /// Asks for a pass now (after desired state changed).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Registers this start (see [`incarnation`](Self::incarnation)), then
    /// [`spawn`](Self::spawn)s the passes. Called before the API says
    /// ready, so that no binding reads `running` for an engine process
    /// this start has not brought back yet.
    pub async fn start(&self) -> Result<tokio::task::JoinHandle<()>, ProvisionError> {
        self.incarnation().await?;
        // Pooled URLs of running bindings work again before the API is
        // ready (the pooler starts empty). A failure is retried by the
        // drift check, not fatal: direct URLs and the API work meanwhile.
        if let Err(e) = self.sync_pooler().await {
            tracing::error!(error = %e, "could not give the pooler its databases; retried");
        }
        Ok(self.spawn())
    }

    /// The pooler, when there is one.
    pub fn pooler(&self) -> Option<&mds_engines::Pooler> {
        self.inner.postgres.pooler.as_ref()
    }

    /// Makes the pooler serve the bindings as the store has them now
    /// (after their pool settings changed).
    pub async fn sync_pooler(&self) -> Result<(), ProvisionError> {
        self.inner.postgres.sync_pooler(&self.inner.ctx).await
    }

    /// How a Postgres binding's `DATABASE_URL` reaches it, for `mds env
    /// explain`: `pooled, transaction`, or `direct` and why.
    pub fn pool_note(&self, binding: &BindingRow) -> String {
        match (self.pooler(), self.is_pooled(binding)) {
            (None, _) => "direct: this server runs no pooler".to_string(),
            (Some(_), false) => "direct: pool off".to_string(),
            (Some(_), true) => format!("pooled, {}", binding.pool_mode),
        }
    }

    /// The pool size a binding has (its own, else the default).
    pub fn pool_size(&self, binding: &BindingRow) -> u32 {
        self.inner.postgres.pool_size(binding.pool_size)
    }

    /// The client limit a binding has on the pooler (its own, else the
    /// default), when the pooler enforces one.
    pub fn pool_client_limit(&self, binding: &BindingRow) -> Option<u32> {
        self.pooler()
            .filter(|p| p.features().client_limit)
            .map(|_| {
                self.inner
                    .postgres
                    .pool_max_clients(binding.pool_max_clients)
            })
    }

    /// The most client connections one binding may be given: every client
    /// slot the pooler has.
    pub fn max_pool_max_clients(&self) -> u32 {
        self.pooler().map_or(1, |p| p.max_clients())
    }

    /// Whether a Postgres binding's `DATABASE_URL` goes through the pooler.
    pub fn is_pooled(&self, binding: &BindingRow) -> bool {
        self.inner.postgres.pooler_endpoint(binding).is_some()
    }

    /// The most server connections a binding's pool may have: its role's
    /// connection limit.
    pub fn max_pool_size(&self) -> u32 {
        u32::try_from(self.inner.postgres.connection_limit).unwrap_or(1)
    }

    /// This start's incarnation, registered on first use: earlier
    /// incarnations of this server end (their leases are free at once),
    /// and running bindings served by an engine process of their own
    /// (managed Redis) become `starting` until they answer again. Why not
    /// bring those processes back before the API is ready: start-up would
    /// then wait on every instance (an AOF to load each), and one that
    /// cannot start would hold back every other kind. `starting` keeps
    /// start-up fast and `running` true.
    pub async fn incarnation(&self) -> Result<i64, ProvisionError> {
        let id = self
            .inner
            .incarnation
            .get_or_try_init(|| async {
                let store = self.store();
                let id = store.begin_incarnation(&self.inner.server_id).await?;
                if let RedisHosting::Managed(_) = self.inner.redis {
                    let kind = ServiceKind::Redis;
                    let n = store.mark_bindings_starting(kind.as_str()).await?;
                    if n > 0 {
                        tracing::info!(bindings = n, "bringing back redis instances");
                    }
                }
                Ok::<_, ProvisionError>(id)
            })
            .await?;
        Ok(*id)
    }

    /// Runs passes until the task is dropped: on every wake, and every few
    /// seconds to retry errors and adopt work of replicas that died. A
    /// second task keeps the spare databases topped up, off the path of
    /// any attach; a third checks running bindings for drift; a fourth
    /// beats this incarnation's heart.
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
        let heart = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let Some(&id) = heart.inner.incarnation.get() else {
                    continue;
                };
                match heart.store().incarnation_heartbeat(id).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        incarnation = id,
                        "this server's incarnation was ended by another; its leases may be \
                         taken over"
                    ),
                    Err(e) => tracing::debug!(error = %e, "heartbeat missed"),
                }
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
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

    /// Records an error on a binding whose row this server cannot act on
    /// (or could not act for); the reason is what the API shows.
    async fn record_error(&self, binding: &BindingRow, error: &ProvisionError, retry_secs: f64) {
        let store = self.store();
        let _ = store
            .add_binding_event(&binding.id, "error", &error.to_string())
            .await;
        if let Err(e) = store
            .binding_failed(&binding.id, &error.to_string(), retry_secs)
            .await
        {
            tracing::warn!(binding = binding.id, error = %e, "could not record a binding's error");
        }
    }

    /// Logs in to every running binding with its own credentials; one that
    /// fails (a database dropped behind mds's back, an external Redis that
    /// lost its ACL users, a dead instance) goes back to the reconciler.
    async fn check_drift(&self) -> Result<(), ProvisionError> {
        // The pooler again too: a sync that failed (its console briefly
        // away) is made good here. Unchanged entries cost no reload.
        if let Err(e) = self.sync_pooler().await {
            tracing::warn!(error = %e, "could not bring the pooler up to date; retried");
        }
        let store = self.store();
        for (service, binding) in store.running_bindings(None).await? {
            let kind = match service_kind(&service) {
                Ok(kind) => kind,
                Err(e) => {
                    tracing::warn!(binding = binding.id, error = %e, "a binding of an unknown kind");
                    self.record_error(&binding, &e, 60.0).await;
                    continue;
                }
            };
            let ctx = &self.inner.ctx;
            let check = with_provisioner!(self.inner, kind, p => {
                p.check(ctx, &service, &binding).await
            });
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

    /// Stops the engine processes this server supervises, and ends this
    /// incarnation so that its leases are free at once.
    pub async fn shutdown(&self) {
        if let Some(&id) = self.inner.incarnation.get() {
            if let Err(e) = self.store().end_incarnation(id).await {
                tracing::debug!(error = %e, "could not end this incarnation; its leases expire");
            }
        }
        if let RedisHosting::Managed(redis) = &self.inner.redis {
            redis.shutdown().await;
        }
    }

    /// One pass; returns how many bindings it worked on.
    pub async fn pass(&self) -> Result<usize, ProvisionError> {
        let incarnation = self.incarnation().await?;
        let store = self.store();
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
            let due = store
                .claim_due_bindings(CLAIM_BATCH, LEASE_SECS, incarnation, HEARTBEAT_STALE_SECS)
                .await?;
            if due.is_empty() {
                store.sweep_deleted_services().await?;
                return Ok(worked);
            }
            worked += due.len();
            join_all(due.iter().map(|(service, binding)| {
                // Each binding's log lines name it and its service,
                // which the attach that made it logged with its
                // request's id.
                let span = tracing::info_span!(
                    "converge",
                    binding = %binding.id,
                    service = %service.id,
                    kind = %service.kind
                );
                self.converge(service, binding).instrument(span)
            }))
            .await;
            // New bindings may have taken spares.
            self.inner.spares_wake.notify_one();
        }
    }

    /// Waits until every binding of the service settles (reaches what it
    /// should be, or fails: a first error is often a race that the retry
    /// clears) or `limit` passes; true when settled. Wakes on every change
    /// of a binding's state, this replica's writes and other replicas'
    /// notifications alike, and looks again every 250 ms in case a
    /// notification was lost.
    pub async fn wait_settled(
        &self,
        service_id: &str,
        limit: Duration,
    ) -> Result<bool, ProvisionError> {
        let store = self.store();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Enabled before the read: a change after it wakes this wait.
            let changed = store.binding_changes().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut settled = true;
            for binding in store.bindings(service_id).await? {
                let desired = binding_desired(&binding)?;
                if !binding_state(&binding)?.is_settled(desired) {
                    settled = false;
                    break;
                }
            }
            if settled {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(SETTLE_POLL.min(deadline - now)) => {}
            }
        }
    }

    async fn top_up_spares(&self) -> Result<(), ProvisionError> {
        if self.inner.spares == 0 {
            return Ok(());
        }
        let admin = self.inner.postgres.admin().await?;
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
        let id = mds_core::ids::IdKind::Binding.mint();
        let password = mds_crypto::random_password(PASSWORD_LEN);
        NewBinding {
            sealed_password: self
                .inner
                .ctx
                .master_key
                .seal(&password_context(&id), password.as_bytes()),
            resource_name: names::resource_name(project_slug, environment_slug, service_name),
            environment_id: environment_id.to_string(),
            id,
        }
    }

    pub fn password(&self, binding: &BindingRow) -> Result<Zeroizing<String>, ProvisionError> {
        self.inner.ctx.password(binding)
    }

    /// One of a binding's sealed passwords (its previous or pending one).
    pub fn open_password(
        &self,
        binding: &BindingRow,
        sealed: &[u8],
    ) -> Result<Zeroizing<String>, ProvisionError> {
        self.inner.ctx.open_password(binding, sealed)
    }

    /// A new password for `binding`, sealed as its passwords are.
    pub fn seal_password(&self, binding_id: &str, password: &str) -> Vec<u8> {
        self.inner
            .ctx
            .master_key
            .seal(&password_context(binding_id), password.as_bytes())
    }

    /// A fresh random password of the length bindings get.
    pub fn new_password() -> Zeroizing<String> {
        mds_crypto::random_password(PASSWORD_LEN)
    }

    /// Makes the engine match a running binding's row now, outside the
    /// passes (the steps of a rotation): its logins, the pooler's users,
    /// and a real login with each set of credentials. Idempotent, like
    /// every converge.
    pub async fn converge_now(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), ProvisionError> {
        let kind = service_kind(service)?;
        let ctx = &self.inner.ctx;
        with_provisioner!(self.inner, kind, p => {
            p.converge(ctx, service, binding, Desired::Running).await
        })?;
        Ok(())
    }

    /// Where tenants reach the shared Postgres engine.
    pub fn endpoint(&self) -> (String, u16) {
        self.inner.postgres.engine_endpoint()
    }

    /// Where a binding's clients connect: the shared Postgres server, an
    /// external Redis or the binding's own redis-server, the S3 endpoint,
    /// the API. A volume has none (`("", 0)`), and neither has a kind this
    /// server does not know (its variables are an error).
    pub fn binding_endpoint(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> (String, u16) {
        match service_kind(service) {
            Ok(kind) => with_provisioner!(self.inner, kind, p => p.endpoint(binding)),
            Err(e) => {
                tracing::warn!(binding = binding.id, error = %e, "no endpoint");
                (String::new(), 0)
            }
        }
    }

    /// The variables a running binding injects: (name, value, secret), the
    /// URL first.
    pub fn binding_variables(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Vec<Injected>, ProvisionError> {
        let kind = service_kind(service)?;
        let ctx = &self.inner.ctx;
        with_provisioner!(self.inner, kind, p => p.variables(ctx, service, binding))
    }

    /// Where an auth binding's end-user API is: `AUTH_URL`, also the
    /// issuer of its tokens.
    pub fn auth_url(&self, service: &DataServiceRow, binding: &BindingRow) -> String {
        self.inner.auth.url(service, binding)
    }

    /// An auth binding's `AUTH_JWT_SECRET`: 64 hex characters derived from
    /// the master key, whose UTF-8 bytes are the HS256 key.
    pub fn auth_jwt_secret(&self, binding_id: &str, generation: i32) -> Zeroizing<String> {
        auth::jwt_secret(&self.inner.ctx.master_key, binding_id, generation)
    }

    /// The sealing context of an auth signing key.
    pub fn signing_key_context(kid: &str) -> String {
        auth::signing_key_context(kid)
    }

    /// Converges one leased binding and records the outcome.
    async fn converge(&self, service: &DataServiceRow, binding: &BindingRow) {
        let store = self.store();
        let ctx = &self.inner.ctx;
        let outcome = match (service_kind(service), binding_desired(binding)) {
            (Ok(kind), Ok(desired)) => {
                with_provisioner!(self.inner, kind, p => {
                    p.converge(ctx, service, binding, desired).await
                })
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let recorded = match outcome {
            Ok(Some(state)) => {
                let _ = store
                    .add_binding_event(&binding.id, "provision", state.as_str())
                    .await;
                store.binding_reached(&binding.id, state.as_str()).await
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
                self.record_error(binding, &e, retry).await;
                Ok(())
            }
        };
        if let Err(e) = recorded {
            // Its incarnation's lease holds until this server stops; then
            // (or on its heartbeat's end) another pass retries.
            tracing::warn!(binding = binding.id, error = %e, "could not record a binding's state");
        }
    }

    /// Parses a binding's kind and desired state for an operation the API
    /// asked for; an unknown word is recorded on the binding and returned.
    async fn parsed(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(ServiceKind, Desired), ProvisionError> {
        let parsed = service_kind(service).and_then(|k| Ok((k, binding_desired(binding)?)));
        if let Err(e) = &parsed {
            tracing::error!(binding = binding.id, error = %e, "refusing to act on a binding");
            self.record_error(binding, e, 60.0).await;
        }
        parsed
    }

    /// Restarts a binding: closes every session of a Postgres role (its
    /// server is shared), restarts a Redis instance (data kept), or does
    /// nothing for kinds without sessions.
    pub async fn restart(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), ProvisionError> {
        let (kind, desired) = self.parsed(service, binding).await?;
        let ctx = &self.inner.ctx;
        with_provisioner!(self.inner, kind, p => {
            p.restart(ctx, service, binding, desired).await
        })
    }

    /// A running binding's current numbers from its engine.
    pub async fn binding_metrics(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Metrics, ProvisionError> {
        let (kind, _) = self.parsed(service, binding).await?;
        let ctx = &self.inner.ctx;
        with_provisioner!(self.inner, kind, p => p.metrics(ctx, service, binding).await)
    }

    /// Drops a binding's data now (a purge), then its row.
    pub async fn remove_now(
        &self,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), ProvisionError> {
        let (kind, _) = self.parsed(service, binding).await?;
        let ctx = &self.inner.ctx;
        with_provisioner!(self.inner, kind, p => p.remove_now(ctx, service, binding).await)?;
        self.store()
            .remove_binding(&binding.id, &binding.service_id)
            .await?;
        Ok(())
    }
}

/// `(host, port)` of an `http://` or `https://` URL's authority.
fn url_host_port(url: &str) -> (String, u16) {
    let (default_port, rest) = match url.split_once("://") {
        Some(("https", rest)) => (443, rest),
        Some((_, rest)) => (80, rest),
        None => (80, url),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.find(']') {
        // [v6]:port
        Some(end) => (&authority[..=end], authority[end + 1..].strip_prefix(':')),
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(default_port);
    (host.to_string(), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_authorities() {
        let cases = [
            ("http://127.0.0.1:9000", ("127.0.0.1", 9000)),
            ("https://api.example.com/x", ("api.example.com", 443)),
            ("http://localhost", ("localhost", 80)),
            ("http://[::1]:8080/a", ("[::1]", 8080)),
        ];
        for (url, (host, port)) in cases {
            assert_eq!(url_host_port(url), (host.to_string(), port), "{url}");
        }
    }

    #[test]
    fn a_server_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = server_id(dir.path()).unwrap();
        assert!(first.starts_with("srv_") && first.len() == 30, "{first}");
        assert_eq!(server_id(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(server_id(other.path()).unwrap(), first);
    }
}

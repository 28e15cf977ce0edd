//! Start-up and shutdown, in order:
//!
//! 1. lock the data dir (a second server on it refuses to start);
//! 2. load or create the master key;
//! 3. listen, so `/healthz` answers 503 while the rest starts;
//! 4. start the managed postgres (or use `--postgres-url`), create
//!    `mds_control`, apply migrations;
//! 5. make sure an admin key exists; serve;
//! 6. on SIGTERM/SIGINT: stop accepting, drain, stop the engine.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mds_core::ids::IdKind;
use mds_core::scopes::Scopes;
use mds_core::tenancy::DEFAULT_TENANT_ID;
use mds_crypto::MasterKey;
use mds_engines::{GivenTls, ManagedPostgres, OsUser, PostgresEngine, PublicListener};
use mds_provision::{Reconciler, RedisHosting, Settings};
use mds_store::{NewApiKeyRow, Store, CONTROL_DATABASE};
use nix::fcntl::{Flock, FlockArg};

use mds_auth::mail::Mailer;

use crate::state::AppState;

pub const ADMIN_KEY_FILE: &str = "admin-api-key";
pub const SERVER_INFO_FILE: &str = "server.json";
const LOCK_FILE: &str = "mds.lock";
const ADMIN_BOOTSTRAPPED: &str = "admin_key_bootstrapped";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// An existing server to use instead of the managed one.
    pub postgres_url: Option<String>,
    /// The OS account engines run as when mds runs as root.
    pub engine_os_user: Option<String>,
    pub master_key_hex: Option<String>,
    pub admin_api_key: Option<String>,
    pub max_body_bytes: usize,
    pub max_db_connections: usize,
    /// CONNECTION LIMIT of each tenant database role.
    pub tenant_connection_limit: i32,
    /// Empty databases kept ready so that an attach only renames one.
    pub postgres_spares: usize,
    /// An existing Redis 6+ (admin login) to host Redis bindings as ACL
    /// users, instead of managed redis-server processes.
    pub redis_url: Option<String>,
    /// How often running bindings are checked with their own credentials.
    pub drift_check: Duration,
    /// The S3 endpoint's listener.
    pub s3_listen: SocketAddr,
    /// The largest object a single PUT (or a multipart upload) may store.
    pub max_object_bytes: u64,
    /// How often unreferenced chunks are collected.
    pub storage_gc_every: Duration,
    /// How long an unreferenced chunk is kept (reads in flight, writes
    /// committing) before collection.
    pub storage_grace: Duration,
    /// Blob chunks on this S3-compatible service instead of the data dir.
    pub blob_s3_url: Option<String>,
    /// The API's URL as apps reach it (behind a proxy, say); by default
    /// the listen address. `AUTH_URL` is under it.
    pub public_url: Option<String>,
    /// Auth mail over SMTP (`smtp://` or `smtps://`), sent as `smtp_from`.
    pub smtp_url: Option<String>,
    pub smtp_from: String,
    /// The largest release (tar stream of a workspace) a publish packs.
    pub max_release_bytes: u64,
    /// Versions per deployment whose artifacts are kept, besides the
    /// active and previous ones of each environment.
    pub keep_releases: u32,
    /// The managed Postgres also listens here, TLS only, for databases
    /// with public networking enabled.
    pub public_host: Option<std::net::IpAddr>,
    /// What clients use to reach the public listener, when not
    /// `public_host` (a wildcard, NAT); in answers and the certificate.
    pub public_hostname: Option<String>,
    /// The certificate chain and key (PEM) the public listener serves;
    /// without them a self-signed pair is made at first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Restore points, drills, base backups and PITR.
    pub backups: mds_control::backups::BackupSettings,
    /// Longest a managed engine's WAL waits before it is archived.
    pub wal_archive_timeout_secs: u32,
    /// Server connections of a binding's pool unless it sets its own.
    pub pool_size: u32,
    /// Client connections the pooler accepts in all.
    pub pooler_max_clients: u32,
    /// Client connections one binding may hold on the pooler unless it
    /// sets its own limit.
    pub pool_max_clients: u32,
    /// Whether the API appends to the audit log (off only to measure it).
    pub audit: bool,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// How often expired previews are looked for.
    pub expiry_check: Duration,
    /// Whether sandboxes and runtime instances get network namespaces of
    /// their own (off only to measure it; needs root).
    pub network_isolation: bool,
}

/// Runs the server until SIGTERM or SIGINT. `on_ready` is called once the
/// API serves, with the address it listens on.
pub async fn run(config: ServerConfig, on_ready: impl FnOnce(&Ready)) -> anyhow::Result<()> {
    // Installed first, so a signal during start-up still stops the engine.
    let shutdown = shutdown_signal()?;
    let data_dir = prepare_data_dir(&config.data_dir)?;
    let _lock = lock_data_dir(&data_dir)?;

    let (master_key, created) = MasterKey::load_or_create(
        &data_dir.join("master.key"),
        config.master_key_hex.as_deref(),
    )
    .context("loading the master key")?;
    if created {
        tracing::info!(path = %data_dir.join("master.key").display(), "created the master key");
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let mailer = match &config.smtp_url {
        Some(url) => Mailer::smtp(url, &config.smtp_from).map_err(|e| anyhow::anyhow!(e))?,
        None => Mailer::sink(),
    };
    let state = AppState::new(master_key, config.max_body_bytes, mailer);
    let app =
        crate::routes::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    let url = format!("http://{addr}");
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| url.clone())
        .trim_end_matches('/')
        .to_string();
    let s3_listener = tokio::net::TcpListener::bind(config.s3_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--s3-listen)", config.s3_listen))?;
    let s3_endpoint = format!("http://{}", s3_listener.local_addr()?);
    write_server_info(&data_dir, &url, &s3_endpoint)?;
    // Before the API answers ready, so whoever waits for that finds it.
    let admin = crate::s3_keys::admin_credentials(&state.master_key);
    write_admin_s3_credentials(&data_dir, &admin, &s3_endpoint)?;
    tracing::info!(%url, %s3_endpoint, "listening; starting engines");

    let started = start_platform(&config, &data_dir, &state, &s3_endpoint, &public_url).await;
    let engine = match started {
        Ok(engine) => engine,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = fs::remove_file(data_dir.join(SERVER_INFO_FILE));
            return Err(e);
        }
    };

    on_ready(&Ready {
        s3_url: s3_endpoint.clone(),
        url: url.clone(),
        data_dir: data_dir.clone(),
        admin_key: state_admin_key_note(&data_dir, &config),
    });
    spawn_housekeeping(state.clone());
    let s3_server = {
        let keys = crate::s3_keys::ServerKeys {
            state: state.clone(),
            admin,
        };
        let storage = state.storage().map_err(|e| anyhow::anyhow!(e))?;
        let collector = storage.spawn_collector(config.storage_gc_every);
        let service = mds_storage::s3::gateway(storage.clone(), std::sync::Arc::new(keys));
        let mut stop = stop_tx.subscribe();
        let server = tokio::spawn(mds_storage::s3::serve(s3_listener, service, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }));
        (server, collector)
    };

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
        Err(_) => tracing::warn!("HTTP connections did not drain in 10 s"),
        _ => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), s3_server.0).await;
    s3_server.1.abort();
    // Sandbox commands end with mds; then volumes are unmounted cleanly.
    if let Ok(sandboxes) = state.sandboxes() {
        sandboxes.kill_every();
    }
    if let Ok(deployer) = state.deployer() {
        deployer.kill_every();
    }
    if let Ok(volumes) = state.volumes() {
        volumes.unmount_all().await;
    }
    if let Ok(reconciler) = state.reconciler() {
        reconciler.shutdown().await;
        if let Some(pooler) = reconciler.pooler() {
            pooler.shutdown().await;
        }
    }
    // What the audit writer holds is stored before the database goes.
    if let Some(audit) = state.control().audit() {
        if tokio::time::timeout(Duration::from_secs(5), audit.flush())
            .await
            .is_err()
        {
            tracing::error!("audit events still queued at shutdown were not stored");
        }
    }
    if let Ok(store) = state.store() {
        store.close();
    }
    engine.shutdown().await;
    let _ = fs::remove_file(data_dir.join(SERVER_INFO_FILE));
    tracing::info!("stopped");
    Ok(())
}

/// What `mds up` tells the person who started it.
pub struct Ready {
    pub url: String,
    /// The S3 endpoint.
    pub s3_url: String,
    pub data_dir: PathBuf,
    /// Where the admin key is, or how it was given.
    pub admin_key: String,
}

fn state_admin_key_note(data_dir: &Path, config: &ServerConfig) -> String {
    if config.admin_api_key.is_some() {
        "from MDS_ADMIN_API_KEY".to_string()
    } else {
        data_dir.join(ADMIN_KEY_FILE).display().to_string()
    }
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
    }
    let dir = fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    if !dir.is_dir() {
        bail!("data dir {} is not a directory", dir.display());
    }
    Ok(dir)
}

/// Holds an exclusive lock on `DIR/mds.lock` for the life of the process;
/// the kernel releases it if the process dies, however it dies.
fn lock_data_dir(dir: &Path) -> anyhow::Result<Flock<fs::File>> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            let _ = fs::write(&path, std::process::id().to_string());
            Ok(lock)
        }
        Err((_, _)) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another mds server (pid {}) is using data dir {}; stop it first, or start this \
                 one with another --data-dir",
                holder.trim(),
                dir.display()
            )
        }
    }
}

/// `DIR/s3-admin.env` (0600): the admin S3 key as the variables AWS tools
/// read.
fn write_admin_s3_credentials(
    dir: &Path,
    (id, secret): &(String, String),
    s3_endpoint: &str,
) -> anyhow::Result<()> {
    let path = dir.join(crate::s3_keys::ADMIN_CREDENTIALS_FILE);
    let text = format!(
        "AWS_ENDPOINT_URL_S3={s3_endpoint}\nAWS_ACCESS_KEY_ID={id}\nAWS_SECRET_ACCESS_KEY={secret}\n\
         AWS_REGION=us-east-1\n"
    );
    mds_crypto::write_secret_file(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn write_server_info(dir: &Path, url: &str, s3_url: &str) -> anyhow::Result<()> {
    let info = mds_api_types::ServerInfo {
        s3_url: Some(s3_url.to_string()),
        url: url.to_string(),
        pid: std::process::id(),
    };
    let path = dir.join(SERVER_INFO_FILE);
    fs::write(&path, serde_json::to_vec_pretty(&info)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn start_platform(
    config: &ServerConfig,
    data_dir: &Path,
    state: &AppState,
    s3_endpoint: &str,
    public_url: &str,
) -> anyhow::Result<PostgresEngine> {
    let server_id = mds_provision::server_id(data_dir).context("reading DIR/server-id")?;
    let public = public_listener(config)?;
    let engine = match &config.postgres_url {
        Some(_) if public.is_some() => {
            bail!(
                "--public-host opens the managed postgres; with --postgres-url, networking is \
                 that server's to configure"
            )
        }
        Some(url) => {
            let pg: tokio_postgres::Config = url
                .parse()
                .context("--postgres-url is not a valid postgres URL")?;
            PostgresEngine::External(Box::new(pg))
        }
        None => {
            let binaries = mds_engines::find_postgres_binaries()?;
            let os_user = OsUser::for_engines(config.engine_os_user.as_deref())?;
            let engines_dir = data_dir.join("engines");
            fs::create_dir_all(&engines_dir)?;
            fs::set_permissions(&engines_dir, fs::Permissions::from_mode(0o711))?;
            let options = mds_engines::StartOptions {
                public,
                archiving: Some(mds_engines::Archiving {
                    staging: engines_dir.join("wal-staging"),
                    timeout_secs: config.wal_archive_timeout_secs.max(1),
                }),
            };
            PostgresEngine::Managed(
                ManagedPostgres::start_with_options(
                    &engines_dir,
                    binaries,
                    os_user,
                    &state.master_key,
                    options,
                )
                .await
                .context("starting the managed postgres")?,
            )
        }
    };
    let result = async {
        let admin = engine.admin_config();
        mds_store::ensure_database(&admin, CONTROL_DATABASE)
            .await
            .context("creating the control-plane database")?;
        let mut control = admin.clone();
        control.dbname(CONTROL_DATABASE);
        let store = Store::connect(control, config.max_db_connections)
            .await
            .context("connecting to the control-plane database")?;
        if !store.wait_connected(Duration::from_secs(10)).await {
            bail!("the control-plane database accepts queries but not LISTEN");
        }
        let applied = store.migrate().await.context("applying migrations")?;
        tracing::info!(applied, "control-plane schema is current");
        bootstrap_admin_key(&store, data_dir, config.admin_api_key.as_deref()).await?;
        mds_provision::harden_engine(
            &admin,
            CONTROL_DATABASE,
            matches!(engine, PostgresEngine::Managed(_)),
        )
        .await
        .context("closing the control-plane database to tenants")?;
        if let PostgresEngine::Managed(managed) = &engine {
            // The stored allowlists, again: every start writes pg_hba.conf
            // with loopback only.
            if let Err(e) = mds_control::public_networking::apply(&store, managed).await {
                tracing::error!(error = %e, "applying public networking; retried on changes");
            }
        }
        let version = store.server_version().await?;
        Ok::<_, anyhow::Error>((store, version))
    }
    .await;
    match result {
        Ok((store, version)) => {
            let redis = match external_redis(config)? {
                Some(external) => RedisHosting::External(external),
                None => managed_redis(data_dir, state)
                    .map(RedisHosting::Managed)
                    .unwrap_or(RedisHosting::Unavailable),
            };
            let pooler = match &engine {
                PostgresEngine::Managed(managed) => {
                    start_pooler(config, data_dir, state, managed.port()).await
                }
                PostgresEngine::External(_) => None,
            };
            let reconciler = Reconciler::new(
                store.clone(),
                engine.clone(),
                state.master_key.clone(),
                redis,
                Settings {
                    connection_limit: config.tenant_connection_limit,
                    spares: config.postgres_spares,
                    drift_check: config.drift_check,
                    s3_endpoint: s3_endpoint.to_string(),
                    api_url: public_url.to_string(),
                    volume_backend: mds_runtime::volume::default_backend().to_string(),
                    server_id,
                    pooler: pooler.clone(),
                    default_pool_size: config.pool_size,
                    default_pool_max_clients: config.pool_max_clients,
                },
            );
            let storage = match mds_storage::Storage::open(
                store.clone(),
                mds_storage::StorageConfig {
                    dir: data_dir.join("storage"),
                    max_object_bytes: config.max_object_bytes,
                    grace: config.storage_grace,
                    remote: config.blob_s3_url.clone(),
                },
                &state.master_key,
            ) {
                Ok(storage) => storage,
                Err(e) => {
                    engine.shutdown().await;
                    return Err(anyhow::Error::new(e).context("opening the blob store"));
                }
            };
            // Before the API serves: sandboxes and volumes of the last run
            // are cleaned up and mounted.
            if let Err(e) = open_sandboxes(data_dir, state, &store, config, public_url).await {
                engine.shutdown().await;
                return Err(e.context("opening sandboxes and volumes"));
            }
            // Repairs whatever a crash left half-done, then follows changes.
            if let Err(e) = reconciler.start().await {
                engine.shutdown().await;
                return Err(anyhow::Error::new(e).context("starting the reconciler"));
            }
            if config.audit {
                let audit = mds_control::audit::Audit::start(store.clone(), &state.master_key);
                mds_control::audit::spawn_retention(
                    store.clone(),
                    audit.clone(),
                    config.audit_retention,
                );
                state.control().set_audit(audit);
            }
            state.set_ready(engine.clone(), version, store, reconciler, storage);
            if let Err(e) = open_backups(config, data_dir, state, &engine) {
                engine.shutdown().await;
                return Err(e.context("opening the backup repository"));
            }
            mds_control::public_networking::spawn_follow(state.control().clone());
            mds_control::previews::spawn_expiry(state.control().clone(), config.expiry_check);
            // Deployments serve again once their bindings can be resolved.
            let restoring = state.clone();
            tokio::spawn(async move {
                if let Ok(deployer) = restoring.deployer() {
                    deployer.restore(&restoring).await;
                }
            });
            Ok(engine)
        }
        Err(e) => {
            engine.shutdown().await;
            Err(e)
        }
    }
}

/// The pooler in front of the managed engine. One that cannot start
/// leaves DATABASE_URL direct, said loudly: data services still work.
async fn start_pooler(
    config: &ServerConfig,
    data_dir: &Path,
    state: &AppState,
    upstream_port: u16,
) -> Option<mds_engines::Pooler> {
    let started = async {
        let binary = mds_engines::find_pgbouncer()?;
        let fds = mds_engines::raise_fd_limit();
        if fds < u64::from(config.pooler_max_clients) + 100 {
            tracing::warn!(
                fds,
                max_clients = config.pooler_max_clients,
                "the open-files limit is below what --pooler-max-clients needs"
            );
        }
        mds_engines::Pooler::start(mds_engines::PoolerOptions {
            binary,
            dir: data_dir.join("engines").join("pooler"),
            os_user: OsUser::for_engines(config.engine_os_user.as_deref())?,
            upstream_port,
            max_clients: config.pooler_max_clients,
            admin_password: zeroize::Zeroizing::new(hex::encode(
                *state.master_key.derive("pooler:console"),
            )),
        })
        .await
    }
    .await;
    match started {
        Ok(pooler) => {
            tracing::info!(port = pooler.port(), "the pooler serves");
            Some(pooler)
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "no pooler: DATABASE_URL stays direct (install pgbouncer: scripts/install-deps)"
            );
            None
        }
    }
}

/// The backup repository and, on the managed engine, its WAL archive;
/// then the background work (which first cleans up after a crash).
fn open_backups(
    config: &ServerConfig,
    data_dir: &Path,
    state: &AppState,
    engine: &PostgresEngine,
) -> anyhow::Result<()> {
    let archive = match engine {
        PostgresEngine::Managed(_) => {
            let admin = engine.admin_config();
            Some(mds_control::backups::archive::Archive {
                staging: data_dir.join("engines").join("wal-staging"),
                binaries: mds_engines::find_postgres_binaries()?,
                os_user: OsUser::for_engines(config.engine_os_user.as_deref())?,
                password: String::from_utf8_lossy(admin.get_password().unwrap_or_default())
                    .to_string(),
                admin,
                shipping: tokio::sync::Mutex::new(()),
            })
        }
        PostgresEngine::External(_) => None,
    };
    let backups = mds_control::backups::Backups::open(
        config.backups.clone(),
        data_dir,
        &state.master_key,
        archive,
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(warning) = backups.disk_warning() {
        tracing::warn!("{warning}");
    }
    state.control().set_backups(backups);
    mds_control::backups::spawn(state.control().clone());
    Ok(())
}

/// `--public-host` with `--public-hostname` and `--tls-cert`/`--tls-key`
/// (both or neither).
fn public_listener(config: &ServerConfig) -> anyhow::Result<Option<PublicListener>> {
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(GivenTls {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    match config.public_host {
        Some(host) => Ok(Some(PublicListener {
            host,
            name: config.public_hostname.clone(),
            tls,
        })),
        None if tls.is_some() || config.public_hostname.is_some() => bail!(
            "--public-hostname, --tls-cert and --tls-key are for the public listener: add \
             --public-host"
        ),
        None => Ok(None),
    }
}

/// `--redis-url`: Redis bindings become ACL users on that server. Checked
/// at start-up, so a wrong URL fails loudly.
fn external_redis(config: &ServerConfig) -> anyhow::Result<Option<mds_provision::ExternalRedis>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let external = mds_provision::ExternalRedis::parse(url).map_err(anyhow::Error::msg)?;
    Ok(Some(external))
}

/// Managed Redis, when redis-server is installed; without it, Redis
/// bindings fail with a message saying how to install it.
fn managed_redis(data_dir: &Path, state: &AppState) -> Option<mds_engines::RedisEngine> {
    let binary = match mds_engines::find_redis_server() {
        Ok(binary) => binary,
        Err(e) => {
            tracing::info!("managed Redis is off: {e}");
            return None;
        }
    };
    if let Some(version) = mds_engines::redis_major_version(&binary) {
        state.set_redis_version(version);
    }
    // Redis runs as its own account (Debian's `redis`), apart from postgres.
    let os_user = OsUser::for_engines(Some("redis"))
        .or_else(|_| OsUser::for_engines(Some("nobody")))
        .ok()?;
    match mds_engines::RedisEngine::new(binary, data_dir.join("engines/redis"), os_user) {
        Ok(engine) => Some(engine),
        Err(e) => {
            tracing::error!(error = %e, "managed Redis is off");
            None
        }
    }
}

/// The first start mints an admin key and writes it to `DIR/admin-api-key`
/// (0600); `MDS_ADMIN_API_KEY` instead names the key, on every start.
async fn bootstrap_admin_key(
    store: &Store,
    data_dir: &Path,
    given: Option<&str>,
) -> anyhow::Result<()> {
    let admin_scopes = Scopes::admin().into_vec();
    if let Some(token) = given {
        if !token.starts_with(mds_crypto::API_KEY_PREFIX) || token.len() < 32 {
            bail!("MDS_ADMIN_API_KEY must start with \"msk_\" and be at least 32 characters long");
        }
        let hash = mds_crypto::hash_api_key(token);
        let id = IdKind::ApiKey.mint();
        store
            .ensure_api_key(&NewApiKeyRow {
                id: &id,
                tenant_id: DEFAULT_TENANT_ID,
                name: "admin (MDS_ADMIN_API_KEY)",
                token_hash: &hash,
                token_prefix: &token[..10],
                scopes: &admin_scopes,
                expires_at: None,
            })
            .await?;
        store
            .set_setting(ADMIN_BOOTSTRAPPED, &serde_json::json!(true))
            .await?;
        return Ok(());
    }
    if store.setting(ADMIN_BOOTSTRAPPED).await?.is_some() {
        return Ok(());
    }
    let minted = mds_crypto::new_api_key();
    let path = data_dir.join(ADMIN_KEY_FILE);
    // File first: a crash before the insert leaves an unused file that the
    // next start overwrites, never a key nobody can read.
    mds_crypto::write_secret_file(&path, format!("{}\n", *minted.token).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    let id = IdKind::ApiKey.mint();
    store
        .insert_api_key(&NewApiKeyRow {
            id: &id,
            tenant_id: DEFAULT_TENANT_ID,
            name: "admin",
            token_hash: &minted.hash,
            token_prefix: &minted.prefix,
            scopes: &admin_scopes,
            expires_at: None,
        })
        .await?;
    store
        .set_setting(ADMIN_BOOTSTRAPPED, &serde_json::json!(true))
        .await?;
    // Printed once, on the start that created it.
    println!("Admin API key (shown once; also in {}):", path.display());
    println!("  {}", *minted.token);
    Ok(())
}

/// Sandboxes keep their workspaces in `DIR/sandboxes`, volumes their data
/// in `DIR/volumes`, releases `DIR/releases` and runtime instances
/// `DIR/instances`; as root, sandbox
/// commands run as `nobody`, who may pass through `DIR` (not list it).
/// Workspaces of sandboxes that are gone (a crash mid-destroy) are removed;
/// the processes of the others died with the last server, and their next
/// command boots them again.
async fn open_sandboxes(
    data_dir: &Path,
    state: &AppState,
    store: &Store,
    config: &ServerConfig,
    public_url: &str,
) -> anyhow::Result<()> {
    let user = if nix::unistd::Uid::effective().is_root() {
        let nobody = nix::unistd::User::from_name("nobody")?
            .context("there is no `nobody` account for sandbox processes")?;
        let mode = fs::metadata(data_dir)?.permissions().mode();
        fs::set_permissions(
            data_dir,
            fs::Permissions::from_mode((mode & 0o7777) | 0o001),
        )?;
        Some((nobody.uid.as_raw(), nobody.gid.as_raw()))
    } else {
        None
    };
    let isolate = config.network_isolation;
    if isolate && user.is_none() {
        tracing::warn!(
            "mds is not root, so it cannot give sandboxes and runtime instances network \
             namespaces of their own: they share this host's network, every loopback port included"
        );
    }
    let root = data_dir.join("sandboxes");
    let sandboxes = mds_runtime::sandbox::Sandboxes::new(&root, user, isolate)?;
    if let Err(e) = sandboxes.available() {
        tracing::warn!(error = %e, "sandboxes are unavailable");
    }
    let kept = store.kept_sandbox_ids().await?;
    for entry in fs::read_dir(&root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Dot names are the jail's own (its /etc, egress mounts).
        if !kept.contains(&name) && !name.starts_with('.') {
            tracing::info!(
                sandbox = name,
                "removing the workspace of a sandbox that is gone"
            );
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    state.set_sandboxes(sandboxes);

    // Volumes: ext4 images are mounted again (a reboot unmounts them).
    let jail = state
        .sandboxes()
        .ok()
        .and_then(|s| s.available().ok().cloned());
    let volumes = mds_runtime::volume::Volumes::new(&data_dir.join("volumes"), user, jail)?;
    let known = store.volumes(None, None).await?;
    for entry in fs::read_dir(data_dir.join("volumes"))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !known.iter().any(|v| v.id == name) {
            tracing::info!(volume = name, "removing the data of a volume that is gone");
            if let Err(e) = volumes.remove(&name).await {
                tracing::warn!(volume = name, error = %e, "could not remove a volume's data");
            }
        }
    }
    for volume in known {
        if let Err(e) = volumes
            .materialize(&volume.id, &volume.backend, volume.size_bytes as u64)
            .await
        {
            tracing::warn!(volume = volume.id, error = %e, "could not mount a volume");
        }
    }
    state.set_volumes(volumes);

    // Deployments: releases are kept; instance workspaces are ephemeral
    // (their processes died with the last run).
    let instances = data_dir.join("instances");
    if instances.exists() {
        mds_runtime::sandbox::Sandboxes::end_leftovers(&instances);
        fs::remove_dir_all(&instances)
            .with_context(|| format!("clearing {}", instances.display()))?;
    }
    let runner = mds_runtime::sandbox::Sandboxes::new(&instances, user, isolate)?;
    let artifacts = mds_runtime::artifact::Artifacts::open(&data_dir.join("releases"))
        .context("opening the release store")?;
    state.set_deployer(mds_control::deployer::Deployer::new(
        artifacts,
        runner,
        config.max_release_bytes,
        config.keep_releases,
        public_url,
    ));
    Ok(())
}

fn spawn_housekeeping(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Ok(store) = state.store() {
                match store.purge_idempotency().await {
                    Ok(n) if n > 0 => tracing::info!(n, "purged expired idempotency records"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purging idempotency records"),
                }
                if let Err(e) = store.sweep_auth().await {
                    tracing::warn!(error = %e, "sweeping auth rate windows and tokens");
                }
                if let Ok(deployer) = state.deployer() {
                    match deployer.collect_releases(&state).await {
                        Ok(n) if n > 0 => tracing::info!(n, "collected release artifacts"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "collecting releases"),
                    }
                }
            }
        }
    });
}

fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

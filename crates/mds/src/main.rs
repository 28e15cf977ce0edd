//! `mds`: the server (`mds up`, `mds server`) and a CLI for its API.

mod audit;
mod auth;
mod backups;
mod boot;
mod client;
mod commands;
mod credentials;
mod deploy;
mod output;
mod sandbox;
mod storage;
mod volumes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mds_core::spans::parse_span;

#[derive(Parser)]
#[command(
    name = "mds",
    version,
    about = "Durable data services for ephemeral compute"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// How the CLI finds the server and its key: flags, then `MIOSA_BASE_URL`
/// and `MIOSA_API_KEY` (the SDK's names), then the local data dir.
#[derive(Args, Clone)]
pub struct Global {
    /// The mds API, e.g. http://127.0.0.1:7070 [env: MIOSA_BASE_URL]
    #[arg(long, global = true)]
    server: Option<String>,
    /// API key (msk_...) [env: MIOSA_API_KEY]
    #[arg(long, global = true)]
    api_key: Option<String>,
    /// The local data dir, for finding a server and its admin key
    #[arg(long, global = true, env = "MDS_DATA_DIR", default_value = ".mds")]
    data_dir: PathBuf,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run mds with defaults and say what to do next
    Up(ServeArgs),
    /// Run the mds server
    Server(ServeArgs),
    /// Manage projects
    #[command(subcommand)]
    Projects(commands::Projects),
    /// Manage a project's environments
    #[command(subcommand)]
    Envs(commands::Envs),
    /// Manage shared variables of a project environment
    #[command(subcommand)]
    Vars(commands::Vars),
    /// Manage API keys
    #[command(subcommand)]
    Keys(commands::Keys),
    /// Attach a data service (postgres, redis, storage, auth) to a project
    Attach(boot::Attach),
    /// List or delete a project's data services
    #[command(subcommand)]
    Data(boot::Data),
    /// Show what a process of (project, environment) gets at boot
    Env(boot::Env),
    /// Boot a command with a project environment's variables
    Run(boot::Run),
    /// Open psql on a project environment's database
    Psql(boot::Psql),
    /// Open redis-cli on a project environment's Redis
    RedisCli(boot::RedisCli),
    /// List, copy, delete and presign objects in a project environment's
    /// bucket
    #[command(subcommand)]
    Storage(storage::Storage),
    /// Enable and configure end-user auth; list users, captured mail
    #[command(subcommand)]
    Auth(auth::Auth),
    /// Create sandboxes that boot with a project environment's variables,
    /// run commands in them, destroy them
    #[command(subcommand)]
    Sandbox(sandbox::Sandbox),
    /// Create volumes and attach them to sandboxes; snapshot and restore
    #[command(subcommand)]
    Volumes(volumes::Volumes),
    /// Publish a sandbox as a deployment version; promote, roll back,
    /// instances and logs
    #[command(subcommand)]
    Deploy(deploy::Deploy),
    /// Restore points of an environment's services: take, list, drill
    #[command(subcommand)]
    Backup(backups::Backup),
    /// Restore an environment's services from a restore point or to a
    /// moment (Postgres); non-destructive, undoable
    Restore(backups::Restore),
    /// Rotate data-service credentials with overlap
    #[command(subcommand)]
    Credentials(credentials::Credentials),
    /// Read the audit log (who changed or revealed what), or verify its
    /// chain
    Audit(audit::Audit),
    /// Whether the server serves, and where its backups go
    Status,
}

#[derive(Args)]
struct ServeArgs {
    /// Listen address
    #[arg(long, env = "MDS_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Use this PostgreSQL server (superuser, or CREATEDB and CREATEROLE)
    /// instead of a managed one
    #[arg(long, env = "MDS_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// OS account that managed engines run as when mds runs as root
    /// [default: postgres, else nobody]
    #[arg(long, env = "MDS_ENGINE_OS_USER")]
    engine_os_user: Option<String>,
    /// Largest request body accepted, in bytes
    #[arg(long, env = "MDS_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Connections to the control-plane database
    #[arg(long, env = "MDS_DB_CONNECTIONS", default_value_t = 16)]
    db_connections: usize,
    /// Most sessions one tenant database role may hold
    #[arg(long, env = "MDS_TENANT_CONNECTION_LIMIT", default_value_t = 20)]
    tenant_connection_limit: i32,
    /// Empty databases kept ready so that attaching Postgres is a rename
    /// (0 turns this off)
    #[arg(long, env = "MDS_POSTGRES_SPARES", default_value_t = 4)]
    postgres_spares: usize,
    /// Host Redis bindings as ACL users (with key prefixes) on this
    /// existing Redis 6+ server, instead of one managed redis-server each
    #[arg(long, env = "MDS_REDIS_URL")]
    redis_url: Option<String>,
    /// Seconds between checks that every running binding still answers its
    /// own credentials (failures are repaired)
    #[arg(long, env = "MDS_DRIFT_CHECK_SECS", default_value_t = 30)]
    drift_check_secs: u64,
    /// Address of the S3 endpoint [default: the API's address, port + 1;
    /// any free port when the API's port is 0]
    #[arg(long, env = "MDS_S3_LISTEN")]
    s3_listen: Option<SocketAddr>,
    /// Largest object one upload may store, in bytes (5 GiB, as S3's
    /// single PUT)
    #[arg(long, env = "MDS_MAX_OBJECT_BYTES", default_value_t = 5 << 30)]
    max_object_bytes: u64,
    /// Seconds between collections of unreferenced blob chunks
    #[arg(long, env = "MDS_STORAGE_GC_SECS", default_value_t = 60)]
    storage_gc_secs: u64,
    /// Seconds an unreferenced chunk is kept before it may be collected
    #[arg(long, env = "MDS_STORAGE_GRACE_SECS", default_value_t = 300)]
    storage_grace_secs: u64,
    /// Keep blob chunks on an S3-compatible service (MinIO, Garage, AWS...)
    /// instead of the data dir: http(s)://KEY:SECRET@host:port/bucket[/prefix]
    #[arg(long, env = "MDS_S3_URL")]
    s3_url: Option<String>,
    /// The API's URL as apps reach it, when that is not the listen
    /// address (a proxy, a container port); AUTH_URL is under it
    #[arg(long, env = "MDS_PUBLIC_URL")]
    public_url: Option<String>,
    /// Send auth mail (email confirmation, password recovery) over SMTP:
    /// smtp://user:pass@host:587?tls=required or smtps://user:pass@host.
    /// Without it, non-production environments keep mail in a sink
    /// (`mds auth mail`)
    #[arg(long, env = "MDS_SMTP_URL")]
    smtp_url: Option<String>,
    /// The sender of auth mail
    #[arg(
        long,
        env = "MDS_SMTP_FROM",
        default_value = "mds <no-reply@localhost>"
    )]
    smtp_from: String,
    /// The largest release a publish packs (the workspace's tar stream)
    #[arg(long, env = "MDS_MAX_RELEASE_BYTES", default_value_t = 2 << 30)]
    max_release_bytes: u64,
    /// Versions per deployment whose release artifacts are kept (besides
    /// each environment's active and previous one); older ones are
    /// collected and can no longer be rolled back to
    #[arg(long, env = "MDS_KEEP_RELEASES", default_value_t = 20)]
    keep_releases: u32,
    /// Also serve the managed PostgreSQL on this address (its port is the
    /// engine's), TLS only, to the databases whose public networking is
    /// enabled and the sources they allow [default: off]
    #[arg(long, env = "MDS_PUBLIC_HOST")]
    public_host: Option<std::net::IpAddr>,
    /// The name or address clients use to reach --public-host (a DNS
    /// name, an address behind NAT; needed with 0.0.0.0) [default: the
    /// --public-host address]
    #[arg(long, env = "MDS_PUBLIC_HOSTNAME", requires = "public_host")]
    public_hostname: Option<String>,
    /// The certificate chain (PEM) of the public listener [default: a
    /// self-signed one made at first start]
    #[arg(long, env = "MDS_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, env = "MDS_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where backups go: a directory, or
    /// s3://KEY:SECRET@host:port/bucket/prefix (http(s):// also)
    /// [default: DIR/backups, which does not survive losing the disk]
    #[arg(long, env = "MDS_BACKUP_URL")]
    backup_url: Option<String>,
    /// How often each environment gets a restore point (30s, 6h, 1d)
    #[arg(long, env = "MDS_BACKUP_SCHEDULE", default_value = "1d", value_parser = parse_span)]
    backup_schedule: std::time::Duration,
    /// How often the newest restore points are restored in a drill
    #[arg(long, env = "MDS_DRILL_SCHEDULE", default_value = "1d", value_parser = parse_span)]
    drill_schedule: std::time::Duration,
    /// How often the managed engine gets a base backup
    #[arg(long, env = "MDS_BASE_BACKUP_SCHEDULE", default_value = "1d", value_parser = parse_span)]
    base_backup_schedule: std::time::Duration,
    /// How far back point-in-time recovery reaches
    #[arg(long, env = "MDS_PITR_WINDOW", default_value = "7d", value_parser = parse_span)]
    pitr_window: std::time::Duration,
    /// How long base backups are kept
    #[arg(long, env = "MDS_BASE_BACKUP_RETENTION", default_value = "30d", value_parser = parse_span)]
    base_backup_retention: std::time::Duration,
    /// How long restore points are kept, unless an environment says
    /// otherwise (`mds backup retention`)
    #[arg(long, env = "MDS_BACKUP_RETENTION", default_value = "30d", value_parser = parse_span)]
    backup_retention: std::time::Duration,
    /// Longest the managed engine's WAL waits before it is archived: at
    /// most this much of the newest writes is not yet in the repository
    #[arg(long, env = "MDS_WAL_ARCHIVE_TIMEOUT", default_value = "60s", value_parser = parse_span)]
    wal_archive_timeout: std::time::Duration,
    /// Server connections of each Postgres binding's pool, unless the
    /// binding sets its own (at most --tenant-connection-limit)
    #[arg(long, env = "MDS_POOL_SIZE", default_value_t = 10)]
    pool_size: u32,
    /// Client connections the pooler accepts, all tenants together
    #[arg(long, env = "MDS_POOLER_MAX_CLIENTS", default_value_t = 12000)]
    pooler_max_clients: u32,
    /// Client connections one Postgres binding may hold on the pooler,
    /// unless the binding sets its own limit (at most
    /// --pooler-max-clients): one tenant's storm cannot take every slot
    #[arg(long, env = "MDS_POOL_MAX_CLIENTS", default_value_t = 1000)]
    pool_max_clients: u32,
    /// Append every change and every reveal of secrets to the audit log
    /// (`false` only to measure what the log costs)
    #[arg(long, env = "MDS_AUDIT", default_value_t = true, action = clap::ArgAction::Set)]
    audit: bool,
    /// How long audit events are kept (trimmed hourly; the chain stays
    /// verifiable from the new start)
    #[arg(long, env = "MDS_AUDIT_RETENTION", default_value = "365d", value_parser = parse_span)]
    audit_retention: std::time::Duration,
    /// How often environments whose ttl ran out are looked for (and
    /// purged, a restore point of their data taken first)
    #[arg(long, env = "MDS_EXPIRY_CHECK", default_value = "60s", value_parser = parse_span)]
    expiry_check: std::time::Duration,
    /// Give each sandbox and runtime instance a network namespace of its
    /// own, reaching only its data services (needs root). `false` shares
    /// the host's network, every loopback port included: only to measure
    /// what isolation costs
    #[arg(long, env = "MDS_NETWORK_ISOLATION", default_value_t = true, action = clap::ArgAction::Set)]
    network_isolation: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => serve(&cli.global, args, true),
        Command::Server(args) => serve(&cli.global, args, false),
        Command::Projects(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Envs(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Vars(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Keys(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Attach(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Data(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Env(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Run(cmd) => commands::run_with_code(&cli.global, |c| cmd.run(c)),
        Command::Psql(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::RedisCli(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Storage(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Auth(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Sandbox(cmd) => commands::run_with_code(&cli.global, |c| cmd.run(c)),
        Command::Volumes(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Deploy(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Backup(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Audit(cmd) => commands::run_with_code(&cli.global, |c| cmd.run(c)),
        Command::Restore(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Credentials(cmd) => commands::run(&cli.global, |c| cmd.run(c)),
        Command::Status => commands::run(&cli.global, backups::status),
    }
}

fn serve(global: &Global, args: ServeArgs, friendly: bool) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MDS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = mds_server::ServerConfig {
        data_dir: global.data_dir.clone(),
        listen: args.listen,
        postgres_url: args.postgres_url,
        engine_os_user: args.engine_os_user,
        master_key_hex: std::env::var("MDS_MASTER_KEY").ok(),
        admin_api_key: std::env::var("MDS_ADMIN_API_KEY").ok(),
        max_body_bytes: args.max_body_bytes,
        max_db_connections: args.db_connections.max(2),
        tenant_connection_limit: args.tenant_connection_limit.max(1),
        postgres_spares: args.postgres_spares,
        redis_url: args.redis_url,
        drift_check: std::time::Duration::from_secs(args.drift_check_secs.max(1)),
        s3_listen: args.s3_listen.unwrap_or_else(|| {
            let mut s3 = args.listen;
            if s3.port() != 0 {
                s3.set_port(s3.port().wrapping_add(1));
            }
            s3
        }),
        max_object_bytes: args.max_object_bytes.max(1),
        storage_gc_every: std::time::Duration::from_secs(args.storage_gc_secs.max(1)),
        storage_grace: std::time::Duration::from_secs(args.storage_grace_secs),
        blob_s3_url: args.s3_url,
        public_url: args.public_url,
        smtp_url: args.smtp_url,
        smtp_from: args.smtp_from,
        max_release_bytes: args.max_release_bytes.max(1),
        keep_releases: args.keep_releases.max(1),
        public_host: args.public_host,
        public_hostname: args.public_hostname,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        backups: mds_server::BackupSettings {
            url: args.backup_url,
            schedule: args.backup_schedule,
            drill_every: args.drill_schedule,
            base_backup_every: args.base_backup_schedule,
            pitr_window: args.pitr_window,
            base_retention: args.base_backup_retention,
            retention_days: (args.backup_retention.as_secs() / 86400).clamp(1, 3650) as i32,
        },
        wal_archive_timeout_secs: args.wal_archive_timeout.as_secs().min(u64::from(u32::MAX))
            as u32,
        pool_size: args
            .pool_size
            .clamp(1, args.tenant_connection_limit.max(1) as u32),
        pooler_max_clients: args.pooler_max_clients.max(1),
        pool_max_clients: args
            .pool_max_clients
            .clamp(1, args.pooler_max_clients.max(1)),
        audit: args.audit,
        audit_retention: args.audit_retention,
        expiry_check: args.expiry_check,
        network_isolation: args.network_isolation,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(mds_server::run(config, |ready| {
        if friendly {
            println!();
            println!("mds is running at {}", ready.url);
            println!("  data dir:      {}", ready.data_dir.display());
            println!("  admin API key: {}", ready.admin_key);
            println!(
                "  S3 endpoint:   {} (admin S3 key in {})",
                ready.s3_url,
                ready.data_dir.join("s3-admin.env").display()
            );
            println!();
            println!("Try it (in another terminal):");
            println!(
                "  export MIOSA_BASE_URL={} MIOSA_API_KEY=$(cat {})",
                ready.url,
                ready.data_dir.join(mds_server::ADMIN_KEY_FILE).display()
            );
            println!("  mds projects create my-app");
            println!("  mds vars set -p my-app -e staging API_BASE=https://staging.example.com");
            println!("  mds attach storage -p my-app && mds run -p my-app -e staging -- env");
            println!();
        } else {
            println!("mds listening on {}", ready.url);
        }
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

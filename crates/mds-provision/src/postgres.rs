//! The Postgres provisioner: one database and one login role per binding,
//! on a shared engine. Each step is idempotent and safe to repeat after a
//! crash at any point. Identifiers and literals go through
//! `mds_store::quote`; passwords are sent as SCRAM verifiers, never in
//! clear.

use std::time::Duration;

use std::collections::HashMap;

use mds_core::env::PostgresAccess;
use mds_core::kinds::{BindingState, Desired};
use mds_core::names;
use mds_engines::{PoolEntry, PoolMode, Pooler, PostgresEngine};
use mds_store::{quote, BindingRow, DataServiceRow};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use zeroize::Zeroizing;

use crate::{describe, Ctx, Injected, Metrics, ProvisionError, Provisioner};

/// Postgres bindings: a database and a login role each, on the shared
/// engine, reached through the pooler when there is one.
pub(crate) struct PostgresProvisioner {
    pub engine: PostgresEngine,
    /// CONNECTION LIMIT of each tenant role.
    pub connection_limit: i32,
    /// In front of the managed engine; `None` with `--postgres-url`.
    pub pooler: Option<Pooler>,
    /// Server connections of a binding whose `pool_size` is not set.
    pub default_pool_size: u32,
    /// Client connections of a binding whose `pool_max_clients` is not set.
    pub default_pool_max_clients: u32,
    /// Held from reading the bindings to applying them, so that a sync
    /// never applies a list older than one already applied.
    pub pool_sync: tokio::sync::Mutex<()>,
}

/// The pool mode words a binding may have (`bindings.pool_mode`).
pub const POOL_MODES: [&str; 3] = ["transaction", "session", "off"];

impl PostgresProvisioner {
    pub async fn admin(&self) -> Result<Admin, tokio_postgres::Error> {
        Admin::connect(&self.engine.admin_config()).await
    }

    /// Where tenants reach the engine.
    pub fn engine_endpoint(&self) -> (String, u16) {
        let admin = self.engine.admin_config();
        let host = match admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        (host, port)
    }

    /// Where the binding's `DATABASE_URL` points when it is pooled: the
    /// pooler, unless there is none or the binding's mode is `off`.
    pub fn pooler_endpoint(&self, binding: &BindingRow) -> Option<(String, u16)> {
        let pooler = self.pooler.as_ref()?;
        (binding.pool_mode != "off").then(|| ("127.0.0.1".to_string(), pooler.port()))
    }

    /// A binding's pool size: its own (`bindings.pool_size`), else the
    /// server's default.
    pub fn pool_size(&self, own: Option<i32>) -> u32 {
        own.and_then(|s| u32::try_from(s).ok())
            .unwrap_or(self.default_pool_size)
    }

    /// A binding's client limit on the pooler: its own
    /// (`bindings.pool_max_clients`), else the server's default.
    pub fn pool_max_clients(&self, own: Option<i32>) -> u32 {
        own.and_then(|n| u32::try_from(n).ok())
            .unwrap_or(self.default_pool_max_clients)
    }

    /// Makes the pooler serve every Postgres binding that should run, with
    /// its role's current verifier. A binding whose mode is `off` is
    /// served too (in session mode): clients that still hold its pooled
    /// URL keep working until their next boot.
    pub async fn sync_pooler(&self, ctx: &Ctx) -> Result<(), ProvisionError> {
        let Some(pooler) = &self.pooler else {
            return Ok(());
        };
        let _sync = self.pool_sync.lock().await;
        let bindings = ctx.store.pooled_bindings().await?;
        let roles: Vec<Vec<String>> = bindings
            .iter()
            .map(|b| {
                b.generations
                    .iter()
                    .map(|g| names::login_role(&b.database, *g))
                    .collect()
            })
            .collect();
        let names: Vec<&str> = roles.iter().flatten().map(String::as_str).collect();
        let verifiers = self.admin().await?.verifiers(&names).await?;
        let entries = bindings
            .iter()
            .zip(&roles)
            .filter_map(|(b, roles)| {
                let logins: Vec<(String, String)> = roles
                    .iter()
                    .filter_map(|r| Some((r.clone(), verifiers.get(r)?.clone())))
                    .collect();
                Some(PoolEntry {
                    database: b.database.clone(),
                    logins: (!logins.is_empty()).then_some(logins)?,
                    mode: match b.mode.as_str() {
                        "transaction" => PoolMode::Transaction,
                        _ => PoolMode::Session,
                    },
                    size: self.pool_size(b.size),
                    max_clients: self.pool_max_clients(b.max_clients),
                })
            })
            .collect();
        pooler.apply(entries).await?;
        Ok(())
    }

    /// Closes the pooled connections of a database (before it is dropped).
    async fn close_pool(&self, name: &str) -> Result<(), ProvisionError> {
        if let Some(pooler) = &self.pooler {
            pooler.close(name).await?;
        }
        Ok(())
    }
}

impl Provisioner for PostgresProvisioner {
    /// The database's size, its sessions, and its transaction and block
    /// counters since the engine's statistics were last reset.
    async fn metrics(
        &self,
        _ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Metrics, ProvisionError> {
        let admin = self.admin().await?;
        let row = admin
            .client
            .query_one(
                "SELECT pg_database_size(d.datname)::float8,
                        (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname)::float8,
                        s.xact_commit::float8, s.xact_rollback::float8,
                        s.blks_hit::float8, s.blks_read::float8, s.deadlocks::float8
                 FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid
                 WHERE d.datname = $1",
                &[&binding.resource_name],
            )
            .await?;
        Ok(vec![
            ("database_size_bytes", row.get(0)),
            ("connections", row.get(1)),
            ("xact_commit", row.get(2)),
            ("xact_rollback", row.get(3)),
            ("blocks_hit", row.get(4)),
            ("blocks_read", row.get(5)),
            ("deadlocks", row.get(6)),
        ])
    }

    async fn converge(
        &self,
        ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
        desired: Desired,
    ) -> Result<Option<BindingState>, ProvisionError> {
        let admin = self.admin().await?;
        let name = &binding.resource_name;
        let login = match desired {
            Desired::Deleted => {
                // Its pooled connections first: none may outlive the data.
                self.close_pool(name).await?;
                admin.remove(name).await?;
                self.sync_pooler(ctx).await?;
                return Ok(None);
            }
            Desired::Running => true,
            Desired::Stopped => false,
        };
        let logins = logins(ctx, binding)?;
        admin
            .converge_logins(name, &logins, login, self.connection_limit)
            .await?;
        if !login {
            self.sync_pooler(ctx).await?;
            for (role, _) in &logins {
                admin.disconnect_role(role).await?;
            }
            return Ok(Some(BindingState::Stopped));
        }
        self.sync_pooler(ctx).await?;
        // Ready means connectable: a real login with each of the binding's
        // credentials, direct and (when pooled) through the pooler.
        let (host, port) = self.engine_endpoint();
        for (role, password) in &logins {
            verify(&host, port, role, name, password).await?;
            if let Some((host, port)) = self.pooler_endpoint(binding) {
                verify(&host, port, role, name, password).await?;
            }
        }
        Ok(Some(BindingState::Running))
    }

    /// The server is shared: a restart ends the role's sessions.
    async fn restart(
        &self,
        _ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
        _desired: Desired,
    ) -> Result<(), ProvisionError> {
        let name = &binding.resource_name;
        self.close_pool(name).await?;
        let admin = self.admin().await?;
        let mut ended = Ok(());
        for generation in binding.live_generations() {
            ended = ended.and(
                admin
                    .disconnect_role(&names::login_role(name, generation))
                    .await,
            );
        }
        if let Some(pooler) = &self.pooler {
            pooler.resume(name).await?;
        }
        ended?;
        Ok(())
    }

    fn endpoint(&self, _binding: &BindingRow) -> (String, u16) {
        self.engine_endpoint()
    }

    fn variables(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Vec<Injected>, ProvisionError> {
        let password = ctx.password(binding)?;
        let (host, port) = self.engine_endpoint();
        let pooler = self.pooler_endpoint(binding);
        let user = names::login_role(&binding.resource_name, binding.credential_generation);
        Ok(PostgresAccess {
            host: &host,
            port,
            user: &user,
            password: &password,
            database: &binding.resource_name,
            pooler: pooler.as_ref().map(|(host, port)| (host.as_str(), *port)),
        }
        .variables(&service.env_prefix))
    }

    async fn check(
        &self,
        ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<(), String> {
        let password = ctx.password(binding).map_err(|e| e.to_string())?;
        let (host, port) = self.engine_endpoint();
        let (user, db) = (
            names::login_role(&binding.resource_name, binding.credential_generation),
            &binding.resource_name,
        );
        verify(&host, port, &user, db, &password)
            .await
            .map_err(|e| describe(&e))?;
        // And the way DATABASE_URL goes. A failure there is the pooler's
        // (its entry, or a restart under way): it is synced and tried once
        // more before the binding counts as drifted.
        if let Some((host, port)) = self.pooler_endpoint(binding) {
            if verify(&host, port, &user, db, &password).await.is_err() {
                self.sync_pooler(ctx).await.map_err(|e| e.to_string())?;
                verify(&host, port, &user, db, &password)
                    .await
                    .map_err(|e| format!("through the pooler: {}", describe(&e)))?;
            }
        }
        Ok(())
    }
}

/// The roles that may log in to a binding's database now, with their
/// passwords: the current generation's first, then the previous one's (in
/// its grace period) and the pending one's (a rotation under way).
pub(crate) fn logins(
    ctx: &Ctx,
    binding: &BindingRow,
) -> Result<Vec<(String, Zeroizing<String>)>, ProvisionError> {
    let name = &binding.resource_name;
    let generation = binding.credential_generation;
    let mut logins = vec![(names::login_role(name, generation), ctx.password(binding)?)];
    for (sealed, generation) in [
        (&binding.previous_sealed_password, generation - 1),
        (&binding.pending_sealed_password, generation + 1),
    ] {
        if let Some(sealed) = sealed {
            logins.push((
                names::login_role(name, generation),
                ctx.open_password(binding, sealed)?,
            ));
        }
    }
    Ok(logins)
}

/// Spare databases and roles are named `mds_spare_<ulid>`, and
/// `mds_making_<ulid>` while being made.
const SPARE_PREFIX: &str = "mds_spare_";
const MAKING_PREFIX: &str = "mds_making_";

pub(crate) struct Admin {
    client: Client,
    _conn: tokio::task::JoinHandle<()>,
}

impl Admin {
    pub async fn connect(config: &tokio_postgres::Config) -> Result<Self, tokio_postgres::Error> {
        let (client, conn) = config.connect(NoTls).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            client,
            _conn: task,
        })
    }

    /// Makes the role and database exist, owned and reachable only by the
    /// role. A new binding takes a spare (an empty database made ahead of
    /// time) when one is ready, which turns ~55 ms of CREATE DATABASE into
    /// two renames.
    pub async fn converge(
        &self,
        name: &str,
        password: &str,
        login: bool,
        connection_limit: i32,
    ) -> Result<(), tokio_postgres::Error> {
        if login && !self.role_exists(name).await? && !self.database_exists(name).await? {
            self.claim_spare(name).await?;
        }
        let role = quote::ident(name);
        // 1. The role: no privilege beyond logging in to its database.
        self.upsert_role(name, password, login, connection_limit)
            .await?;
        // 2. The database, owned by the role (outside a transaction, as
        //    CREATE DATABASE must be).
        if !self.database_exists(name).await? {
            match self
                .client
                .batch_execute(&format!("CREATE DATABASE {role} OWNER {role}"))
                .await
            {
                Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {}
                other => other?,
            }
        }
        // 3. Only its role may connect (every new database grants CONNECT
        //    and TEMP to PUBLIC by default).
        self.client
            .batch_execute(&format!(
                "ALTER DATABASE {role} OWNER TO {role};
                 REVOKE ALL ON DATABASE {role} FROM PUBLIC;
                 GRANT CONNECT, TEMPORARY ON DATABASE {role} TO {role};"
            ))
            .await?;
        Ok(())
    }

    /// Makes role `name` exist with these attributes and no privilege
    /// beyond logging in. The stored verifier stays while it opens with
    /// the password: the pooler authenticates with a copy of it.
    async fn upsert_role(
        &self,
        name: &str,
        password: &str,
        login: bool,
        connection_limit: i32,
    ) -> Result<(), tokio_postgres::Error> {
        let role = quote::ident(name);
        let verifier = match self.verifiers(&[name]).await?.remove(name) {
            Some(current) if mds_crypto::scram::verifier_matches(&current, password) => current,
            _ => postgres_protocol::password::scram_sha_256(password.as_bytes()),
        };
        let verifier = quote::literal(&verifier);
        let login = if login { "LOGIN" } else { "NOLOGIN" };
        let attributes = format!(
            "{login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT {connection_limit} PASSWORD {verifier}"
        );
        if self.role_exists(name).await? {
            self.client
                .batch_execute(&format!("ALTER ROLE {role} WITH {attributes}"))
                .await?;
        } else {
            match self
                .client
                .batch_execute(&format!("CREATE ROLE {role} WITH {attributes}"))
                .await
            {
                Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {
                    self.client
                        .batch_execute(&format!("ALTER ROLE {role} WITH {attributes}"))
                        .await?
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// The SCRAM verifiers of these roles, as stored (`pg_authid`). On a
    /// server where mds may not read them (an external one), none.
    pub async fn verifiers(
        &self,
        names: &[&str],
    ) -> Result<HashMap<String, String>, tokio_postgres::Error> {
        let rows = match self
            .client
            .query(
                "SELECT rolname::text, rolpassword FROM pg_authid
                 WHERE rolname = ANY($1) AND rolpassword LIKE 'SCRAM-SHA-256$%'",
                &[&names],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn role_exists(&self, name: &str) -> Result<bool, tokio_postgres::Error> {
        Ok(self
            .client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await?
            .is_some())
    }

    async fn database_exists(&self, name: &str) -> Result<bool, tokio_postgres::Error> {
        Ok(self
            .client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some())
    }

    /// Renames a spare database and its role to `name`. Replicas may race
    /// for the same spare: the loser's rename fails and it tries another.
    /// A crash between the two renames is repaired by `converge` (which
    /// creates the role and hands it the database) and the sweep (which
    /// drops the spare role left owning nothing).
    async fn claim_spare(&self, name: &str) -> Result<bool, tokio_postgres::Error> {
        for attempt in 0..3i64 {
            let spare: Option<String> = self
                .client
                .query_opt(
                    "SELECT datname::text FROM pg_database WHERE datname LIKE 'mds\\_spare\\_%'
                     ORDER BY datname OFFSET $1 LIMIT 1",
                    &[&attempt],
                )
                .await?
                .map(|r| r.get(0));
            let Some(spare) = spare else {
                return Ok(false);
            };
            let renamed = self
                .client
                .batch_execute(&format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote::ident(&spare),
                    quote::ident(name)
                ))
                .await;
            match renamed {
                Ok(()) => {
                    if self.role_exists(&spare).await? {
                        self.client
                            .batch_execute(&format!(
                                "ALTER ROLE {} RENAME TO {}",
                                quote::ident(&spare),
                                quote::ident(name)
                            ))
                            .await?;
                    }
                    return Ok(true);
                }
                // Taken by another claim ("does not exist", or "tuple
                // concurrently updated" when both renamed at once), or
                // busy: try the next one.
                Err(e)
                    if e.code() == Some(&SqlState::UNDEFINED_DATABASE)
                        || e.code() == Some(&SqlState::OBJECT_IN_USE)
                        || e.code() == Some(&SqlState::INTERNAL_ERROR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Makes one spare: an empty database and its NOLOGIN owner, closed to
    /// everyone else. It is built under a `mds_making_` name and renamed
    /// only when complete, so a claim never sees (or races with) a spare
    /// still being made.
    pub async fn create_spare(&self) -> Result<(), tokio_postgres::Error> {
        let id = mds_core::ids::IdKind::Binding
            .mint()
            .trim_start_matches("bnd_")
            .to_ascii_lowercase();
        let making = quote::ident(&format!("{MAKING_PREFIX}{id}"));
        let ready = quote::ident(&format!("{SPARE_PREFIX}{id}"));
        // One statement at a time: CREATE DATABASE refuses to run inside
        // the implicit transaction of a multi-statement batch.
        for statement in [
            format!("CREATE ROLE {making} NOLOGIN"),
            format!("CREATE DATABASE {making} OWNER {making}"),
            format!("REVOKE ALL ON DATABASE {making} FROM PUBLIC"),
            format!("ALTER ROLE {making} RENAME TO {ready}"),
            format!("ALTER DATABASE {making} RENAME TO {ready}"),
        ] {
            self.client.batch_execute(&statement).await?;
        }
        Ok(())
    }

    /// Drops spares left half-made by a keeper that died. Only the keeper
    /// holding the spares lock calls this, before making any.
    pub async fn drop_unfinished_spares(&self) -> Result<(), tokio_postgres::Error> {
        let databases = self
            .client
            .query(
                "SELECT datname::text FROM pg_database WHERE datname LIKE 'mds\\_making\\_%'",
                &[],
            )
            .await?;
        for row in databases {
            let name: String = row.get(0);
            self.client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote::ident(&name)
                ))
                .await?;
        }
        let roles = self
            .client
            .query(
                "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'mds\\_making\\_%'",
                &[],
            )
            .await?;
        for row in roles {
            let name: String = row.get(0);
            self.client
                .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote::ident(&name)))
                .await?;
        }
        Ok(())
    }

    pub async fn spare_count(&self) -> Result<i64, tokio_postgres::Error> {
        Ok(self
            .client
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'mds\\_spare\\_%'",
                &[],
            )
            .await?
            .get(0))
    }

    /// Drops spare roles whose database is gone (a crash mid-claim, or a
    /// crash mid-creation).
    pub async fn sweep_spare_roles(&self) -> Result<(), tokio_postgres::Error> {
        let orphans = self
            .client
            .query(
                "SELECT rolname::text FROM pg_roles r WHERE rolname LIKE 'mds\\_spare\\_%'
                   AND NOT EXISTS (SELECT 1 FROM pg_database d WHERE d.datdba = r.oid)",
                &[],
            )
            .await?;
        for row in orphans {
            let name: String = row.get(0);
            self.client
                .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote::ident(&name)))
                .await?;
        }
        Ok(())
    }

    /// Holds a session-level advisory lock, so one replica tops up spares.
    pub async fn try_lock(&self, key: i64) -> Result<bool, tokio_postgres::Error> {
        Ok(self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?
            .get(0))
    }

    /// Ends every session of the role.
    pub async fn disconnect_role(&self, name: &str) -> Result<(), tokio_postgres::Error> {
        self.client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&name],
            )
            .await?;
        Ok(())
    }

    /// Drops the database (ending its sessions) and the role.
    pub async fn remove(&self, name: &str) -> Result<(), tokio_postgres::Error> {
        let ident = quote::ident(name);
        self.client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"))
            .await?;
        for generation in [1, 2] {
            let login = names::login_role(name, generation);
            self.disconnect_role(&login).await?;
            self.client
                .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote::ident(&login)))
                .await?;
        }
        self.disconnect_role(name).await?;
        self.client
            .batch_execute(&format!("DROP ROLE IF EXISTS {ident}"))
            .await?;
        Ok(())
    }

    /// Makes a binding's login roles match `logins` (role, password): the
    /// owner `name` logs in only while it is one of them; each other is a
    /// member of the owner that acts as it (so what it makes, the owner
    /// owns), may connect to its database, and logs in while `login`. A
    /// turn-taking role that is not in `logins` may not log in, and its
    /// sessions end: the previous credentials after their grace period.
    pub async fn converge_logins(
        &self,
        name: &str,
        logins: &[(String, Zeroizing<String>)],
        login: bool,
        connection_limit: i32,
    ) -> Result<(), tokio_postgres::Error> {
        let owner = logins.iter().find(|(role, _)| role == name);
        let owner_password = owner
            .or(logins.first())
            .map(|(_, p)| p.as_str())
            .unwrap_or("");
        self.converge(
            name,
            owner_password,
            login && owner.is_some(),
            connection_limit,
        )
        .await?;
        let owner_q = quote::ident(name);
        for (role, password) in logins.iter().filter(|(role, _)| role != name) {
            self.upsert_role(role, password, login, connection_limit)
                .await?;
            let role_q = quote::ident(role);
            self.client
                .batch_execute(&format!(
                    "GRANT {owner_q} TO {role_q};
                     ALTER ROLE {role_q} SET role = {owner_l};
                     GRANT CONNECT, TEMPORARY ON DATABASE {owner_q} TO {role_q};",
                    owner_l = quote::literal(name)
                ))
                .await?;
        }
        for generation in [1, 2] {
            let role = names::login_role(name, generation);
            if !logins.iter().any(|(r, _)| *r == role) && self.role_exists(&role).await? {
                self.client
                    .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote::ident(&role)))
                    .await?;
                self.disconnect_role(&role).await?;
            }
        }
        if owner.is_none() {
            self.disconnect_role(name).await?;
        }
        Ok(())
    }
}

/// Logs in as the binding and runs `SELECT 1`.
pub(crate) async fn verify(
    host: &str,
    port: u16,
    user: &str,
    database: &str,
    password: &str,
) -> Result<(), tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(database)
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = config.connect(NoTls).await?;
    let task = tokio::spawn(conn);
    let result = client.simple_query("SELECT 1").await.map(|_| ());
    drop(client);
    let _ = task.await;
    result
}

/// Closes the databases tenants must never reach to every role but the
/// superuser: the control plane always; on a managed engine, also
/// `postgres` and `template1`.
pub async fn harden_engine(
    admin: &tokio_postgres::Config,
    control_database: &str,
    managed: bool,
) -> Result<(), tokio_postgres::Error> {
    let admin = Admin::connect(admin).await?;
    let mut databases = vec![control_database];
    if managed {
        databases.extend(["postgres", "template1"]);
    }
    for db in databases {
        admin
            .client
            .batch_execute(&format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC",
                quote::ident(db)
            ))
            .await?;
    }
    Ok(())
}

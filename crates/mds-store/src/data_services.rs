//! Data services and bindings: the desired state the reconciler converges
//! the engines to.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use crate::{Result, Store};

#[derive(Debug, Clone)]
pub struct DataServiceRow {
    pub id: String,
    pub project_id: String,
    pub kind: String,
    pub name: String,
    pub env_prefix: String,
    pub environment_id: Option<String>,
    pub config: Value,
    pub deleting: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Made without a project (`POST /databases`, `POST /storage/buckets`);
    /// it lives in the tenant's hidden project until attached to one.
    pub standalone: bool,
}

#[derive(Debug, Clone)]
pub struct BindingRow {
    pub id: String,
    pub service_id: String,
    pub environment_id: String,
    pub environment_name: String,
    pub desired: String,
    pub state: String,
    pub last_error: Option<String>,
    pub attempts: i32,
    pub resource_name: String,
    pub sealed_password: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ready_at: Option<DateTime<Utc>>,
    /// The port of the binding's own engine process (managed Redis).
    pub port: Option<i32>,
    /// Postgres: `transaction`, `session` or `off` (migration 0023).
    pub pool_mode: String,
    /// Postgres: its server connections at most; `None`: the default.
    pub pool_size: Option<i32>,
    /// Postgres: its client connections to the pooler at most; `None`:
    /// the default (migration 0024).
    pub pool_max_clients: Option<i32>,
    /// Rotation (migration 0028): how many times its credentials were
    /// replaced, and when the current ones were made (`None`: with it).
    pub credential_generation: i32,
    pub credentials_at: Option<DateTime<Utc>>,
    /// Those of the next generation, made to work before they are current.
    pub pending_sealed_password: Option<Vec<u8>>,
    /// Those of the last generation, valid until `previous_until`.
    pub previous_sealed_password: Option<Vec<u8>>,
    pub previous_until: Option<DateTime<Utc>>,
}

impl BindingRow {
    /// The generations whose credentials work now: the current one, the
    /// previous one in its grace period, the pending one of a rotation.
    pub fn live_generations(&self) -> Vec<i32> {
        let mut live = vec![self.credential_generation];
        if self.previous_sealed_password.is_some() {
            live.push(self.credential_generation - 1);
        }
        if self.pending_sealed_password.is_some() {
            live.push(self.credential_generation + 1);
        }
        live
    }
}

/// A change of a binding's pool settings: `None` keeps a setting,
/// `Some(None)` returns it to the server's default.
#[derive(Debug, Default, Clone, Copy)]
pub struct PoolChange<'a> {
    pub mode: Option<&'a str>,
    pub size: Option<Option<i32>>,
    pub max_clients: Option<Option<i32>>,
}

impl PoolChange<'_> {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.size.is_none() && self.max_clients.is_none()
    }
}

/// One binding the pooler serves ([`Store::pooled_bindings`]).
#[derive(Debug, Clone)]
pub struct PooledBinding {
    pub database: String,
    /// Its credential generations that may log in (see
    /// [`BindingRow::live_generations`]).
    pub generations: Vec<i32>,
    pub mode: String,
    pub size: Option<i32>,
    pub max_clients: Option<i32>,
}

pub struct NewDataService {
    pub id: String,
    pub project_id: String,
    pub kind: String,
    pub name: String,
    pub env_prefix: String,
    pub environment_id: Option<String>,
    pub config: Value,
    pub standalone: bool,
}

pub struct NewBinding {
    pub id: String,
    pub environment_id: String,
    pub resource_name: String,
    pub sealed_password: Vec<u8>,
}

/// A (service, environment) pair that should have a binding and has none.
#[derive(Debug, Clone)]
pub struct MissingBinding {
    pub service_id: String,
    pub service_name: String,
    pub env_prefix: String,
    pub project_slug: String,
    pub environment_id: String,
    pub environment_slug: String,
}

pub(crate) const SERVICE_COLUMNS: &str =
    "s.id, s.project_id, s.kind, s.name, s.env_prefix, s.environment_id, \
     s.config, s.deleting, s.created_at, s.updated_at, s.standalone";
/// How many columns `SERVICE_COLUMNS` and `BINDING_COLUMNS` name: where a
/// joined row's next part starts.
pub(crate) const SERVICE_COLUMN_COUNT: usize = 11;
pub(crate) const BINDING_COLUMN_COUNT: usize = 22;
pub(crate) const BINDING_COLUMNS: &str =
    "b.id, b.service_id, b.environment_id, e.name, b.desired, b.state, \
     b.last_error, b.attempts, b.resource_name, b.sealed_password, b.created_at, b.updated_at, \
     b.ready_at, b.port, b.pool_mode, b.pool_size, b.pool_max_clients, \
     b.credential_generation, b.credentials_at, b.pending_sealed_password, \
     b.previous_sealed_password, b.previous_until";

pub(crate) fn service_from_row(row: &Row) -> DataServiceRow {
    DataServiceRow {
        id: row.get(0),
        project_id: row.get(1),
        kind: row.get(2),
        name: row.get(3),
        env_prefix: row.get(4),
        environment_id: row.get(5),
        config: row.get(6),
        deleting: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
        standalone: row.get(10),
    }
}

pub(crate) fn binding_from_row(row: &Row, at: usize) -> BindingRow {
    BindingRow {
        id: row.get(at),
        service_id: row.get(at + 1),
        environment_id: row.get(at + 2),
        environment_name: row.get(at + 3),
        desired: row.get(at + 4),
        state: row.get(at + 5),
        last_error: row.get(at + 6),
        attempts: row.get(at + 7),
        resource_name: row.get(at + 8),
        sealed_password: row.get(at + 9),
        created_at: row.get(at + 10),
        updated_at: row.get(at + 11),
        ready_at: row.get(at + 12),
        port: row.get(at + 13),
        pool_mode: row.get(at + 14),
        pool_size: row.get(at + 15),
        pool_max_clients: row.get(at + 16),
        credential_generation: row.get(at + 17),
        credentials_at: row.get(at + 18),
        pending_sealed_password: row.get(at + 19),
        previous_sealed_password: row.get(at + 20),
        previous_until: row.get(at + 21),
    }
}

async fn insert_binding(
    client: &impl deadpool_postgres::GenericClient,
    service_id: &str,
    b: &NewBinding,
) -> Result<bool> {
    let n = client
        .execute(
            "INSERT INTO bindings (id, service_id, environment_id, resource_name, sealed_password,
                 kind, pool_mode, pool_size, pool_max_clients)
             SELECT $1, $2, $3, $4, $5, s.kind, COALESCE(s.config->>'pool_mode', 'transaction'),
                    (s.config->>'pool_size')::int, (s.config->>'pool_max_clients')::int
             FROM data_services s WHERE s.id = $2 AND NOT s.deleting
             ON CONFLICT (service_id, environment_id) DO NOTHING",
            &[
                &b.id,
                &service_id,
                &b.environment_id,
                &b.resource_name,
                &b.sealed_password,
            ],
        )
        .await?;
    Ok(n > 0)
}

/// Refuses, as a conflict on `data_services_prefix_key`, a service whose
/// injected names another service of its kind in `project_id` already
/// injects in one of `environments` (two `DATABASE_URL`s in one
/// environment). Holds the project's row lock to the end of the
/// transaction, so attaches to one project check one after another.
async fn check_prefix_free(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: &str,
    kind: &str,
    env_prefix: &str,
    environments: &[&str],
    except_service: Option<&str>,
) -> Result<()> {
    tx.execute(
        "SELECT 1 FROM projects WHERE id = $1 FOR UPDATE",
        &[&project_id],
    )
    .await?;
    // A service bound everywhere is in every environment, even one whose
    // binding the reconciler has not made yet.
    let clash = tx
        .query_opt(
            "SELECT 1 FROM data_services s
             WHERE s.project_id = $1 AND s.kind = $2 AND s.env_prefix = $3
               AND s.id IS DISTINCT FROM $5
               AND ((s.environment_id IS NULL AND NOT s.deleting)
                    OR EXISTS (SELECT 1 FROM bindings b
                               WHERE b.service_id = s.id AND b.environment_id = ANY($4)))
             LIMIT 1",
            &[
                &project_id,
                &kind,
                &env_prefix,
                &environments,
                &except_service,
            ],
        )
        .await?;
    match clash {
        Some(_) => Err(crate::StoreError::Conflict {
            constraint: "data_services_prefix_key".to_string(),
        }),
        None => Ok(()),
    }
}

impl Store {
    /// Records a service and its first bindings in one transaction.
    pub async fn create_data_service(
        &self,
        service: &NewDataService,
        bindings: &[NewBinding],
    ) -> Result<DataServiceRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let environments: Vec<&str> = bindings.iter().map(|b| b.environment_id.as_str()).collect();
        check_prefix_free(
            &tx,
            &service.project_id,
            &service.kind,
            &service.env_prefix,
            &environments,
            None,
        )
        .await?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO data_services AS s (id, project_id, kind, name, env_prefix, environment_id, config, standalone)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     RETURNING {SERVICE_COLUMNS}"
                ),
                &[
                    &service.id,
                    &service.project_id,
                    &service.kind,
                    &service.name,
                    &service.env_prefix,
                    &service.environment_id,
                    &service.config,
                    &service.standalone,
                ],
            )
            .await?;
        for binding in bindings {
            insert_binding(&tx, &service.id, binding).await?;
        }
        tx.commit().await?;
        Ok(service_from_row(&row))
    }

    /// The project's services (those being deleted included), oldest first.
    pub async fn data_services(&self, project_id: &str) -> Result<Vec<DataServiceRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SERVICE_COLUMNS} FROM data_services s WHERE s.project_id = $1
                     ORDER BY s.created_at, s.id"
                ),
                &[&project_id],
            )
            .await?;
        Ok(rows.iter().map(service_from_row).collect())
    }

    /// Every service of a tenant, optionally of one kind and project.
    pub async fn tenant_data_services(
        &self,
        tenant_id: &str,
        kinds: &[&str],
        project_id: Option<&str>,
    ) -> Result<Vec<DataServiceRow>> {
        let client = self.client().await?;
        let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        let rows = client
            .query(
                &format!(
                    "SELECT {SERVICE_COLUMNS} FROM data_services s JOIN projects p ON p.id = s.project_id
                     WHERE p.tenant_id = $1 AND s.kind = ANY($2) AND ($3::text IS NULL OR p.id = $3)
                     ORDER BY s.created_at, s.id"
                ),
                &[&tenant_id, &kinds, &project_id],
            )
            .await?;
        Ok(rows.iter().map(service_from_row).collect())
    }

    /// A service by id, if it belongs to the tenant.
    pub async fn data_service(&self, tenant_id: &str, id: &str) -> Result<Option<DataServiceRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {SERVICE_COLUMNS} FROM data_services s JOIN projects p ON p.id = s.project_id
                     WHERE p.tenant_id = $1 AND s.id = $2"
                ),
                &[&tenant_id, &id],
            )
            .await?;
        Ok(row.as_ref().map(service_from_row))
    }

    /// A service's bindings, with their environments' names.
    pub async fn bindings(&self, service_id: &str) -> Result<Vec<BindingRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {BINDING_COLUMNS} FROM bindings b JOIN environments e ON e.id = b.environment_id
                     WHERE b.service_id = $1 ORDER BY e.is_default DESC, e.created_at, e.id"
                ),
                &[&service_id],
            )
            .await?;
        Ok(rows.iter().map(|r| binding_from_row(r, 0)).collect())
    }

    /// Every binding of an environment, with its service.
    pub async fn environment_bindings(
        &self,
        environment_id: &str,
    ) -> Result<Vec<(DataServiceRow, BindingRow)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SERVICE_COLUMNS}, {BINDING_COLUMNS}
                     FROM bindings b
                     JOIN data_services s ON s.id = b.service_id
                     JOIN environments e ON e.id = b.environment_id
                     WHERE b.environment_id = $1 AND NOT s.deleting
                     ORDER BY s.created_at, s.id"
                ),
                &[&environment_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    service_from_row(r),
                    binding_from_row(r, SERVICE_COLUMN_COUNT),
                )
            })
            .collect())
    }

    /// Sets what every binding of a service should be (running, stopped,
    /// deleted) and wakes them for the reconciler.
    pub async fn set_service_desired(&self, service_id: &str, desired: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if desired == "deleted" {
            tx.execute(
                "UPDATE data_services SET deleting = true, updated_at = now() WHERE id = $1",
                &[&service_id],
            )
            .await?;
        }
        tx.execute(
            "UPDATE bindings SET desired = $2, attempts = 0, next_attempt_at = now(), updated_at = now()
             WHERE service_id = $1",
            &[&service_id, &desired],
        )
        .await?;
        tx.commit().await?;
        self.bindings_changed();
        Ok(())
    }

    /// Sets what one binding should be (a service's member in one
    /// environment: running or stopped) and wakes it for the reconciler.
    /// False when the binding or its service is being deleted.
    pub async fn set_binding_desired(&self, binding_id: &str, desired: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE bindings b SET desired = $2, attempts = 0, next_attempt_at = now(), updated_at = now()
                 FROM data_services s
                 WHERE b.id = $1 AND s.id = b.service_id AND NOT s.deleting AND b.desired <> 'deleted'",
                &[&binding_id, &desired],
            )
            .await?;
        drop(client);
        self.bindings_changed();
        Ok(n > 0)
    }

    /// Deletes one member of a service (its binding in one environment).
    /// The service's home moves to a remaining member, so the member is not
    /// made again; the last member takes the service with it. False when
    /// it was being deleted already.
    pub async fn remove_member(&self, service_id: &str, binding_id: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT b.environment_id, s.environment_id FROM bindings b
                 JOIN data_services s ON s.id = b.service_id
                 WHERE b.id = $1 AND s.id = $2 AND NOT s.deleting AND b.desired <> 'deleted'
                 FOR UPDATE OF s",
                &[&binding_id, &service_id],
            )
            .await?
        else {
            return Ok(false);
        };
        let (member_env, home): (String, Option<String>) = (row.get(0), row.get(1));
        let other: Option<String> = tx
            .query_opt(
                "SELECT environment_id FROM bindings
                 WHERE service_id = $1 AND id <> $2 AND desired <> 'deleted'
                 ORDER BY created_at LIMIT 1",
                &[&service_id, &binding_id],
            )
            .await?
            .map(|r| r.get(0));
        match other {
            None => {
                tx.execute(
                    "UPDATE data_services SET deleting = true, updated_at = now() WHERE id = $1",
                    &[&service_id],
                )
                .await?;
            }
            Some(next) if home.as_deref() == Some(member_env.as_str()) => {
                tx.execute(
                    "UPDATE data_services SET environment_id = $2, updated_at = now() WHERE id = $1",
                    &[&service_id, &next],
                )
                .await?;
            }
            Some(_) => {}
        }
        tx.execute(
            "UPDATE bindings SET desired = 'deleted', attempts = 0, next_attempt_at = now(), updated_at = now()
             WHERE id = $1",
            &[&binding_id],
        )
        .await?;
        tx.commit().await?;
        self.bindings_changed();
        Ok(true)
    }

    /// Pairs of (live service, live environment in its scope) that have no
    /// binding yet: environments created after the service was attached.
    pub async fn missing_bindings(&self) -> Result<Vec<MissingBinding>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT s.id, s.name, s.env_prefix, p.slug, e.id, e.slug
                 FROM data_services s
                 JOIN projects p ON p.id = s.project_id
                 JOIN environments e ON e.project_id = s.project_id AND e.deleted_at IS NULL
                 WHERE NOT s.deleting
                   AND (s.environment_id IS NULL OR s.environment_id = e.id)
                   AND NOT EXISTS (SELECT 1 FROM bindings b
                                   WHERE b.service_id = s.id AND b.environment_id = e.id)",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MissingBinding {
                service_id: r.get(0),
                service_name: r.get(1),
                env_prefix: r.get(2),
                project_slug: r.get(3),
                environment_id: r.get(4),
                environment_slug: r.get(5),
            })
            .collect())
    }

    /// Forgets services being deleted that have no binding left (repairs a
    /// pass that stopped between the two steps).
    pub async fn sweep_deleted_services(&self) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM data_services s WHERE s.deleting
                   AND NOT EXISTS (SELECT 1 FROM bindings b WHERE b.service_id = s.id)",
                &[],
            )
            .await?)
    }

    /// Adds a binding unless the pair has one; false when it had.
    pub async fn add_binding(&self, service_id: &str, binding: &NewBinding) -> Result<bool> {
        let client = self.client().await?;
        insert_binding(&client, service_id, binding).await
    }

    /// Binds an existing service in one more environment (the SDK's
    /// service of the same name in another environment); false when it is
    /// bound there already.
    pub async fn add_environment_binding(
        &self,
        service: &DataServiceRow,
        binding: &NewBinding,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        check_prefix_free(
            &tx,
            &service.project_id,
            &service.kind,
            &service.env_prefix,
            &[binding.environment_id.as_str()],
            Some(&service.id),
        )
        .await?;
        let added = insert_binding(&tx, &service.id, binding).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Moves a standalone service, its one binding and its bucket into a
    /// project environment, under the name and prefix it has there. The
    /// engine-side database, role and bucket keep their names. `None` when
    /// it is no longer standalone (someone attached it first).
    pub async fn adopt_data_service(
        &self,
        service: &DataServiceRow,
        project_id: &str,
        environment_id: &str,
        name: &str,
        env_prefix: &str,
    ) -> Result<Option<DataServiceRow>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        check_prefix_free(
            &tx,
            project_id,
            &service.kind,
            env_prefix,
            &[environment_id],
            Some(&service.id),
        )
        .await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE data_services AS s
                     SET project_id = $2, environment_id = $3, name = $4, env_prefix = $5,
                         standalone = false, updated_at = now()
                     WHERE s.id = $1 AND s.standalone AND NOT s.deleting
                     RETURNING {SERVICE_COLUMNS}"
                ),
                &[
                    &service.id,
                    &project_id,
                    &environment_id,
                    &name,
                    &env_prefix,
                ],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE bindings SET environment_id = $2, updated_at = now() WHERE service_id = $1",
            &[&service.id, &environment_id],
        )
        .await?;
        tx.execute(
            "UPDATE storage_buckets SET project_id = $2
             WHERE binding_id IN (SELECT id FROM bindings WHERE service_id = $1)",
            &[&service.id, &project_id],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(service_from_row(&row)))
    }

    /// Leases up to `limit` bindings that need work to `incarnation`, so
    /// that no other replica works on them for `lease_secs`. A lease held
    /// by an incarnation that ended (a clean stop, or the next start of
    /// the same server) or whose heartbeat is older than `stale_secs` is
    /// taken over at once: its holder is gone.
    pub async fn claim_due_bindings(
        &self,
        limit: i64,
        lease_secs: f64,
        incarnation: i64,
        stale_secs: f64,
    ) -> Result<Vec<(DataServiceRow, BindingRow)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "WITH due AS (
                         SELECT d.id FROM bindings d
                         WHERE d.state <> d.desired AND d.next_attempt_at <= now()
                           AND (d.lease_until IS NULL OR d.lease_until < now()
                                OR (d.lease_holder IS NOT NULL AND d.lease_holder <> $3
                                    AND NOT EXISTS (
                                        SELECT 1 FROM server_incarnations i
                                        WHERE i.id = d.lease_holder AND i.ended_at IS NULL
                                          AND i.heartbeat_at > now() - make_interval(secs => $4))))
                         ORDER BY d.next_attempt_at
                         LIMIT $1
                         FOR UPDATE SKIP LOCKED
                     ), claimed AS (
                         UPDATE bindings SET lease_until = now() + make_interval(secs => $2),
                             lease_holder = $3
                         WHERE id IN (SELECT id FROM due)
                         RETURNING *
                     )
                     SELECT {SERVICE_COLUMNS}, {BINDING_COLUMNS}
                     FROM claimed b
                     JOIN data_services s ON s.id = b.service_id
                     JOIN environments e ON e.id = b.environment_id"
                ),
                &[&limit, &lease_secs, &incarnation, &stale_secs],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    service_from_row(r),
                    binding_from_row(r, SERVICE_COLUMN_COUNT),
                )
            })
            .collect())
    }

    /// Records a new incarnation of server `server_id` (one per start) and
    /// ends its earlier ones, whose leases are then free at once. Only one
    /// server runs on a data dir (its lock), so an earlier incarnation of
    /// the same id is dead. Incarnations ended or silent for a day are
    /// forgotten.
    pub async fn begin_incarnation(&self, server_id: &str) -> Result<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO server_incarnations (server_id) VALUES ($1) RETURNING id",
                &[&server_id],
            )
            .await?
            .get(0);
        let ended = tx
            .execute(
                "UPDATE server_incarnations SET ended_at = now()
                 WHERE server_id = $1 AND id <> $2 AND ended_at IS NULL",
                &[&server_id, &id],
            )
            .await?;
        tx.execute(
            "DELETE FROM server_incarnations
             WHERE coalesce(ended_at, heartbeat_at) < now() - interval '1 day'",
            &[],
        )
        .await?;
        tx.commit().await?;
        if ended > 0 {
            tracing::info!(
                server_id,
                incarnation = id,
                "took over the leases of this server's last run"
            );
        }
        Ok(id)
    }

    /// Says that `incarnation` is alive; false if it was ended.
    pub async fn incarnation_heartbeat(&self, incarnation: i64) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE server_incarnations SET heartbeat_at = now()
                 WHERE id = $1 AND ended_at IS NULL",
                &[&incarnation],
            )
            .await?
            > 0)
    }

    /// Ends `incarnation` (a clean stop) and releases its leases.
    pub async fn end_incarnation(&self, incarnation: i64) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE server_incarnations SET ended_at = now() WHERE id = $1",
            &[&incarnation],
        )
        .await?;
        tx.execute(
            "UPDATE bindings SET lease_until = NULL, lease_holder = NULL WHERE lease_holder = $1",
            &[&incarnation],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks running bindings of `kind` whose engine process this server
    /// must bring back (managed Redis after a start) as `starting`, due
    /// now, so that none reads `running` before it answers again; returns
    /// how many.
    pub async fn mark_bindings_starting(&self, kind: &str) -> Result<u64> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE bindings SET state = 'starting', attempts = 0, next_attempt_at = now(),
                     updated_at = now()
                 WHERE kind = $1 AND state = 'running' AND desired = 'running'",
                &[&kind],
            )
            .await?;
        self.bindings_changed();
        Ok(n)
    }

    /// What changes of bindings' states wake: writes of this replica, and
    /// `binding:` notifications of every replica while the listener is
    /// connected. Wait on it with `notified()` enabled before reading the
    /// rows, and with a slow fallback poll.
    pub fn binding_changes(&self) -> &tokio::sync::Notify {
        &self.cache.bindings_changed
    }

    fn bindings_changed(&self) {
        self.cache.bindings_changed.notify_waiters();
    }

    /// Records what the engine now has, and releases the lease.
    pub async fn binding_reached(&self, id: &str, state: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE bindings SET state = $2, last_error = NULL, attempts = 0, lease_until = NULL,
                     lease_holder = NULL,
                     ready_at = CASE WHEN $2 = 'running' THEN coalesce(ready_at, now()) ELSE ready_at END,
                     updated_at = now()
                 WHERE id = $1",
                &[&id, &state],
            )
            .await?;
        self.bindings_changed();
        Ok(())
    }

    /// Records a failed attempt; the next one waits `retry_secs`.
    pub async fn binding_failed(&self, id: &str, error: &str, retry_secs: f64) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE bindings SET state = 'error', last_error = $2, attempts = attempts + 1,
                     next_attempt_at = now() + make_interval(secs => $3), lease_until = NULL,
                     lease_holder = NULL, updated_at = now()
                 WHERE id = $1",
                &[&id, &error, &retry_secs],
            )
            .await?;
        self.bindings_changed();
        Ok(())
    }

    /// Forgets a binding whose resources are gone, and its service once it
    /// has none left and is being deleted.
    pub async fn remove_binding(&self, binding_id: &str, service_id: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Bindings of one service are removed concurrently: the row lock
        // makes the last one see that none is left.
        tx.execute(
            "SELECT 1 FROM data_services WHERE id = $1 FOR UPDATE",
            &[&service_id],
        )
        .await?;
        tx.execute("DELETE FROM bindings WHERE id = $1", &[&binding_id])
            .await?;
        tx.execute(
            "DELETE FROM data_services s WHERE s.id = $1 AND s.deleting
               AND NOT EXISTS (SELECT 1 FROM bindings b WHERE b.service_id = s.id)",
            &[&service_id],
        )
        .await?;
        tx.commit().await?;
        self.bindings_changed();
        Ok(())
    }

    pub async fn add_binding_event(
        &self,
        binding_id: &str,
        stream: &str,
        line: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO binding_events (binding_id, stream, line) VALUES ($1, $2, $3)",
                &[&binding_id, &stream, &line],
            )
            .await?;
        Ok(())
    }

    /// The newest `limit` events of a service's bindings, oldest first.
    pub async fn binding_events(
        &self,
        service_id: &str,
        limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, String, String)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT at, stream, line FROM (
                     SELECT ev.id, ev.at, ev.stream, ev.line FROM binding_events ev
                     JOIN bindings b ON b.id = ev.binding_id
                     WHERE b.service_id = $1 ORDER BY ev.id DESC LIMIT $2
                 ) recent ORDER BY id",
                &[&service_id, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// A service's events after event `after` (`None`: the newest
    /// `limit`), oldest first, as (id, at, stream, line): what a log stream
    /// sends next.
    pub async fn binding_events_after(
        &self,
        service_id: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, DateTime<Utc>, String, String)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, at, stream, line FROM (
                     SELECT ev.id, ev.at, ev.stream, ev.line FROM binding_events ev
                     JOIN bindings b ON b.id = ev.binding_id
                     WHERE b.service_id = $1 AND ev.id > COALESCE($2::bigint, 0)
                     ORDER BY CASE WHEN $2::bigint IS NULL THEN -ev.id ELSE ev.id END
                     LIMIT $3
                 ) page ORDER BY id",
                &[&service_id, &after, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Sends a running binding whose resource no longer answers back to the
    /// reconciler.
    pub async fn binding_drifted(&self, id: &str, reason: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE bindings SET state = 'provisioning', last_error = $2,
                     next_attempt_at = now(), updated_at = now()
                 WHERE id = $1 AND state = 'running'",
                &[&id, &reason],
            )
            .await?;
        self.bindings_changed();
        Ok(())
    }

    /// How many bindings there are, by (kind, state): for `/metrics`.
    pub async fn binding_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT s.kind, b.state, count(*) FROM bindings b
                 JOIN data_services s ON s.id = b.service_id
                 GROUP BY s.kind, b.state ORDER BY 1, 2",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Records the port a binding's engine process listens on.
    pub async fn set_binding_port(&self, binding_id: &str, port: i32) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE bindings SET port = $2, updated_at = now() WHERE id = $1",
                &[&binding_id, &port],
            )
            .await?;
        Ok(())
    }

    /// Every binding (of services of `kind`, or of all) that should be and
    /// was running: what a starting server brings back up, and what the
    /// drift check verifies.
    pub async fn running_bindings(
        &self,
        kind: Option<&str>,
    ) -> Result<Vec<(DataServiceRow, BindingRow)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SERVICE_COLUMNS}, {BINDING_COLUMNS}
                     FROM bindings b
                     JOIN data_services s ON s.id = b.service_id
                     JOIN environments e ON e.id = b.environment_id
                     WHERE ($1::text IS NULL OR s.kind = $1)
                       AND b.desired = 'running' AND b.state = 'running'"
                ),
                &[&kind],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    service_from_row(r),
                    binding_from_row(r, SERVICE_COLUMN_COUNT),
                )
            })
            .collect())
    }

    /// One binding with its service.
    pub async fn binding_with_service(
        &self,
        binding_id: &str,
    ) -> Result<Option<(DataServiceRow, BindingRow)>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {SERVICE_COLUMNS}, {BINDING_COLUMNS}
                     FROM bindings b
                     JOIN data_services s ON s.id = b.service_id
                     JOIN environments e ON e.id = b.environment_id
                     WHERE b.id = $1"
                ),
                &[&binding_id],
            )
            .await?;
        Ok(row.map(|r| {
            (
                service_from_row(&r),
                binding_from_row(&r, SERVICE_COLUMN_COUNT),
            )
        }))
    }

    /// Whether anything still binds data in this environment.
    pub async fn environment_has_bindings(&self, environment_id: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM bindings WHERE environment_id = $1 LIMIT 1",
                &[&environment_id],
            )
            .await?
            .is_some())
    }

    /// Sets the pooling of a service's bindings: the one in
    /// `environment_id`, or every one (and the service's default for
    /// bindings made later). Returns the bindings changed.
    pub async fn set_binding_pool(
        &self,
        service_id: &str,
        environment_id: Option<&str>,
        change: &PoolChange<'_>,
    ) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "UPDATE bindings
                 SET pool_mode = COALESCE($3, pool_mode),
                     pool_size = CASE WHEN $4 THEN $5 ELSE pool_size END,
                     pool_max_clients = CASE WHEN $6 THEN $7 ELSE pool_max_clients END,
                     updated_at = now()
                 WHERE service_id = $1 AND ($2::text IS NULL OR environment_id = $2)",
                &[
                    &service_id,
                    &environment_id,
                    &change.mode,
                    &change.size.is_some(),
                    &change.size.flatten(),
                    &change.max_clients.is_some(),
                    &change.max_clients.flatten(),
                ],
            )
            .await?;
        if environment_id.is_none() {
            let mut defaults = serde_json::Map::new();
            if let Some(mode) = change.mode {
                defaults.insert("pool_mode".into(), mode.into());
            }
            if let Some(size) = change.size {
                defaults.insert("pool_size".into(), size.into());
            }
            if let Some(max_clients) = change.max_clients {
                defaults.insert("pool_max_clients".into(), max_clients.into());
            }
            tx.execute(
                "UPDATE data_services SET config = config || $2, updated_at = now() WHERE id = $1",
                &[&service_id, &Value::Object(defaults)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// What the pooler serves: every Postgres binding that should run, by
    /// its database name, with its pool settings.
    pub async fn pooled_bindings(&self) -> Result<Vec<PooledBinding>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT resource_name, pool_mode, pool_size, pool_max_clients,
                        array_remove(ARRAY[credential_generation,
                            CASE WHEN previous_sealed_password IS NOT NULL
                                 THEN credential_generation - 1 END,
                            CASE WHEN pending_sealed_password IS NOT NULL
                                 THEN credential_generation + 1 END], NULL)
                 FROM bindings
                 WHERE kind = 'postgres' AND desired = 'running'
                 ORDER BY resource_name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PooledBinding {
                database: r.get(0),
                mode: r.get(1),
                size: r.get(2),
                max_clients: r.get(3),
                generations: r.get(4),
            })
            .collect())
    }

    /// Starts a rotation of a binding's credentials: `pending` sealed,
    /// held by `incarnation`. False when one is under way (pending, or the
    /// previous credentials still in their grace period).
    pub async fn begin_rotation(
        &self,
        binding_id: &str,
        pending: &[u8],
        incarnation: i64,
    ) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "UPDATE bindings SET pending_sealed_password = $2, rotation_holder = $3
                     WHERE id = $1 AND previous_sealed_password IS NULL
                       AND (pending_sealed_password IS NULL
                            OR rotation_holder IS NULL OR {})",
                    crate::backups::holder_gone("rotation_holder")
                ),
                &[&binding_id, &pending, &incarnation],
            )
            .await?;
        self.bindings_changed();
        Ok(n == 1)
    }

    /// The pending credentials become current; the current ones stay
    /// valid until `until`.
    pub async fn commit_rotation(&self, binding_id: &str, until: DateTime<Utc>) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE bindings SET previous_sealed_password = sealed_password,
                     previous_until = $2, sealed_password = pending_sealed_password,
                     pending_sealed_password = NULL, rotation_holder = NULL,
                     credential_generation = credential_generation + 1,
                     credentials_at = now(), updated_at = now()
                 WHERE id = $1 AND pending_sealed_password IS NOT NULL",
                &[&binding_id, &until],
            )
            .await?;
        self.bindings_changed();
        Ok(n == 1)
    }

    /// Drops a rotation's pending credentials (it failed, or its server
    /// died before the switch): the current ones stay.
    pub async fn abandon_rotation(&self, binding_id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE bindings SET pending_sealed_password = NULL, rotation_holder = NULL
                 WHERE id = $1",
                &[&binding_id],
            )
            .await?;
        self.bindings_changed();
        Ok(())
    }

    /// Ends the grace period of a binding's previous credentials.
    pub async fn end_grace(&self, binding_id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE bindings SET previous_sealed_password = NULL, previous_until = NULL
                 WHERE id = $1",
                &[&binding_id],
            )
            .await?;
        self.bindings_changed();
        Ok(())
    }

    /// Running bindings with rotation work due: previous credentials past
    /// their grace period, or pending ones whose server died.
    pub async fn rotations_due(&self) -> Result<Vec<(DataServiceRow, BindingRow)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SERVICE_COLUMNS}, {BINDING_COLUMNS}
                     FROM bindings b JOIN data_services s ON s.id = b.service_id
                     JOIN environments e ON e.id = b.environment_id
                     WHERE (b.previous_until <= now())
                        OR (b.pending_sealed_password IS NOT NULL
                            AND (b.rotation_holder IS NULL OR {}))",
                    crate::backups::holder_gone("b.rotation_holder")
                ),
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    service_from_row(r),
                    binding_from_row(r, SERVICE_COLUMN_COUNT),
                )
            })
            .collect())
    }

    /// Every Postgres binding by its database name: (binding id, project
    /// id, environment name), for labelling the pooler's numbers.
    pub async fn postgres_binding_labels(
        &self,
    ) -> Result<std::collections::HashMap<String, (String, String, String)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT b.resource_name, b.id, s.project_id, e.name
                 FROM bindings b
                 JOIN data_services s ON s.id = b.service_id
                 JOIN environments e ON e.id = b.environment_id
                 WHERE b.kind = 'postgres'",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect())
    }
}

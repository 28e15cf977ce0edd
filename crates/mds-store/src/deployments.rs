//! Deployments (migration 0013): the app, its immutable versions, which
//! version is active in each environment, its volumes, and the runtime
//! instances that run it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use crate::{Result, Store};

#[derive(Debug, Clone)]
pub struct DeploymentRow {
    pub id: String,
    pub tenant_id: String,
    pub project_id: Option<String>,
    pub name: String,
    pub slug: String,
    pub run_command: Option<String>,
    pub build_command: Option<String>,
    pub port: Option<i32>,
    pub health_check_path: Option<String>,
    pub stopped: bool,
    pub linked_database_id: Option<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const DEPLOYMENT_COLUMNS: &str = "id, tenant_id, project_id, name, slug, run_command, \
     build_command, port, health_check_path, stopped, linked_database_id, metadata, created_at, \
     updated_at";

fn deployment_from_row(r: &Row) -> DeploymentRow {
    DeploymentRow {
        id: r.get(0),
        tenant_id: r.get(1),
        project_id: r.get(2),
        name: r.get(3),
        slug: r.get(4),
        run_command: r.get(5),
        build_command: r.get(6),
        port: r.get(7),
        health_check_path: r.get(8),
        stopped: r.get(9),
        linked_database_id: r.get(10),
        metadata: r.get(11),
        created_at: r.get(12),
        updated_at: r.get(13),
    }
}

pub struct NewDeployment<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub project_id: Option<&'a str>,
    pub name: &'a str,
    pub slug: &'a str,
    pub run_command: Option<&'a str>,
    pub build_command: Option<&'a str>,
    pub port: Option<i32>,
    pub health_check_path: Option<&'a str>,
    pub metadata: &'a Value,
}

/// Fields a PATCH may change (None: unchanged).
#[derive(Debug, Default)]
pub struct DeploymentPatch {
    pub name: Option<String>,
    pub run_command: Option<String>,
    pub build_command: Option<String>,
    pub port: Option<i32>,
    pub health_check_path: Option<String>,
    pub linked_database_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct VersionRow {
    pub id: String,
    pub deployment_id: String,
    pub tenant_id: String,
    pub version_number: i32,
    pub kind: String,
    pub state: String,
    pub source_sandbox_id: Option<String>,
    pub output_path: Option<String>,
    pub entrypoint: Option<String>,
    pub artifact_sha256: Option<String>,
    pub artifact_bytes: Option<i64>,
    pub manifest: Value,
    pub runtime_command: Option<String>,
    pub runtime_port: Option<i32>,
    pub health_check_path: Option<String>,
    pub build_log: String,
    pub promoted_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    pub ready_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const VERSION_COLUMNS: &str = "id, deployment_id, tenant_id, version_number, kind, state, \
     source_sandbox_id, output_path, entrypoint, artifact_sha256, artifact_bytes, manifest, \
     runtime_command, runtime_port, health_check_path, build_log, promoted_at, archived_at, \
     ready_at, created_at, updated_at";

fn version_from_row(r: &Row) -> VersionRow {
    VersionRow {
        id: r.get(0),
        deployment_id: r.get(1),
        tenant_id: r.get(2),
        version_number: r.get(3),
        kind: r.get(4),
        state: r.get(5),
        source_sandbox_id: r.get(6),
        output_path: r.get(7),
        entrypoint: r.get(8),
        artifact_sha256: r.get(9),
        artifact_bytes: r.get(10),
        manifest: r.get(11),
        runtime_command: r.get(12),
        runtime_port: r.get(13),
        health_check_path: r.get(14),
        build_log: r.get(15),
        promoted_at: r.get(16),
        archived_at: r.get(17),
        ready_at: r.get(18),
        created_at: r.get(19),
        updated_at: r.get(20),
    }
}

pub struct NewVersion<'a> {
    pub id: &'a str,
    pub deployment_id: &'a str,
    pub tenant_id: &'a str,
    pub kind: &'a str,
    pub source_sandbox_id: &'a str,
    pub output_path: Option<&'a str>,
    pub entrypoint: Option<&'a str>,
    pub runtime_command: Option<&'a str>,
    pub runtime_port: Option<i32>,
    pub health_check_path: Option<&'a str>,
}

/// The version serving in one environment of a deployment.
#[derive(Debug, Clone)]
pub struct EnvironmentActive {
    pub deployment_id: String,
    pub environment_id: String,
    pub environment: String,
    pub active_version_id: String,
    pub previous_version_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const ACTIVE_COLUMNS: &str = "a.deployment_id, a.environment_id, e.name, a.active_version_id, \
     a.previous_version_id, a.updated_at";

fn active_from_row(r: &Row) -> EnvironmentActive {
    EnvironmentActive {
        deployment_id: r.get(0),
        environment_id: r.get(1),
        environment: r.get(2),
        active_version_id: r.get(3),
        previous_version_id: r.get(4),
        updated_at: r.get(5),
    }
}

#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub id: String,
    pub tenant_id: String,
    pub deployment_id: String,
    pub environment_id: String,
    pub environment: String,
    pub version_id: String,
    pub state: String,
    pub desired_state: String,
    pub port: Option<i32>,
    pub restart_count: i32,
    pub error_message: Option<String>,
    pub last_health_check_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const INSTANCE_COLUMNS: &str = "i.id, i.tenant_id, i.deployment_id, i.environment_id, e.name, \
     i.version_id, i.state, i.desired_state, i.port, i.restart_count, i.error_message, \
     i.last_health_check_at, i.started_at, i.stopped_at, i.created_at, i.updated_at";
const INSTANCE_FROM: &str = "runtime_instances i JOIN environments e ON e.id = i.environment_id";

fn instance_from_row(r: &Row) -> InstanceRow {
    InstanceRow {
        id: r.get(0),
        tenant_id: r.get(1),
        deployment_id: r.get(2),
        environment_id: r.get(3),
        environment: r.get(4),
        version_id: r.get(5),
        state: r.get(6),
        desired_state: r.get(7),
        port: r.get(8),
        restart_count: r.get(9),
        error_message: r.get(10),
        last_health_check_at: r.get(11),
        started_at: r.get(12),
        stopped_at: r.get(13),
        created_at: r.get(14),
        updated_at: r.get(15),
    }
}

/// A volume a deployment mounts in an environment.
#[derive(Debug, Clone)]
pub struct VolumeClaim {
    pub volume_id: String,
    pub mount_path: String,
}

impl Store {
    pub async fn create_deployment(&self, new: &NewDeployment<'_>) -> Result<DeploymentRow> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO deployments (id, tenant_id, project_id, name, slug, run_command,
                         build_command, port, health_check_path, metadata)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     RETURNING {DEPLOYMENT_COLUMNS}"
                ),
                &[
                    &new.id,
                    &new.tenant_id,
                    &new.project_id,
                    &new.name,
                    &new.slug,
                    &new.run_command,
                    &new.build_command,
                    &new.port,
                    &new.health_check_path,
                    new.metadata,
                ],
            )
            .await?;
        Ok(deployment_from_row(&row))
    }

    /// A tenant's deployment by id or slug.
    pub async fn deployment(
        &self,
        tenant_id: &str,
        id_or_slug: &str,
    ) -> Result<Option<DeploymentRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
                     WHERE tenant_id = $1 AND (id = $2 OR slug = $2)
                     ORDER BY (id = $2) DESC LIMIT 1"
                ),
                &[&tenant_id, &id_or_slug],
            )
            .await?;
        Ok(row.as_ref().map(deployment_from_row))
    }

    /// A deployment by id, whoever's it is (mds's own supervisor).
    pub async fn deployment_any_tenant(&self, id: &str) -> Result<Option<DeploymentRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(deployment_from_row))
    }

    pub async fn deployments(
        &self,
        tenant_id: &str,
        project_id: Option<&str>,
    ) -> Result<Vec<DeploymentRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
                     WHERE tenant_id = $1 AND ($2::text IS NULL OR project_id = $2)
                     ORDER BY created_at"
                ),
                &[&tenant_id, &project_id],
            )
            .await?;
        Ok(rows.iter().map(deployment_from_row).collect())
    }

    pub async fn update_deployment(
        &self,
        id: &str,
        patch: &DeploymentPatch,
    ) -> Result<Option<DeploymentRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE deployments SET
                         name = COALESCE($2, name),
                         run_command = COALESCE($3, run_command),
                         build_command = COALESCE($4, build_command),
                         port = COALESCE($5, port),
                         health_check_path = COALESCE($6, health_check_path),
                         linked_database_id = COALESCE($7, linked_database_id),
                         updated_at = now()
                     WHERE id = $1 RETURNING {DEPLOYMENT_COLUMNS}"
                ),
                &[
                    &id,
                    &patch.name,
                    &patch.run_command,
                    &patch.build_command,
                    &patch.port,
                    &patch.health_check_path,
                    &patch.linked_database_id,
                ],
            )
            .await?;
        Ok(row.as_ref().map(deployment_from_row))
    }

    /// Links a deployment to a project if it has none yet; returns the
    /// project it ends up with.
    pub async fn adopt_project(&self, id: &str, project_id: &str) -> Result<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "UPDATE deployments SET project_id = COALESCE(project_id, $2), updated_at = now()
                 WHERE id = $1 RETURNING project_id",
                &[&id, &project_id],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn set_deployment_stopped(&self, id: &str, stopped: bool) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE deployments SET stopped = $2, updated_at = now() WHERE id = $1",
                &[&id, &stopped],
            )
            .await?;
        Ok(())
    }

    pub async fn delete_deployment(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM deployments WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    /// Records a version in state `created` with the deployment's next
    /// number (numbers are never reused, even after a failed publish).
    pub async fn create_version(&self, new: &NewVersion<'_>) -> Result<VersionRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let number: i32 = tx
            .query_one(
                "UPDATE deployments SET version_counter = version_counter + 1, updated_at = now()
                 WHERE id = $1 RETURNING version_counter",
                &[&new.deployment_id],
            )
            .await?
            .get(0);
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO deployment_versions (id, deployment_id, tenant_id, version_number,
                         kind, state, source_sandbox_id, output_path, entrypoint, runtime_command,
                         runtime_port, health_check_path)
                     VALUES ($1, $2, $3, $4, $5, 'created', $6, $7, $8, $9, $10, $11)
                     RETURNING {VERSION_COLUMNS}"
                ),
                &[
                    &new.id,
                    &new.deployment_id,
                    &new.tenant_id,
                    &number,
                    &new.kind,
                    &new.source_sandbox_id,
                    &new.output_path,
                    &new.entrypoint,
                    &new.runtime_command,
                    &new.runtime_port,
                    &new.health_check_path,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(version_from_row(&row))
    }

    /// Moves a version through its build: `building`, then `ready` (with
    /// its artifact) or `failed`. The log is appended.
    pub async fn finish_version_stage(
        &self,
        id: &str,
        state: &str,
        artifact: Option<(&str, i64, &Value)>,
        log: &str,
    ) -> Result<VersionRow> {
        let client = self.client().await?;
        let (sha, bytes, manifest) = match artifact {
            Some((sha, bytes, manifest)) => (Some(sha), Some(bytes), Some(manifest)),
            None => (None, None, None),
        };
        let row = client
            .query_one(
                &format!(
                    "UPDATE deployment_versions SET state = $2,
                         artifact_sha256 = COALESCE($3, artifact_sha256),
                         artifact_bytes = COALESCE($4, artifact_bytes),
                         manifest = COALESCE($5, manifest),
                         build_log = build_log || $6,
                         ready_at = CASE WHEN $2 = 'ready' THEN now() ELSE ready_at END,
                         updated_at = now()
                     WHERE id = $1 RETURNING {VERSION_COLUMNS}"
                ),
                &[&id, &state, &sha, &bytes, &manifest, &log],
            )
            .await?;
        Ok(version_from_row(&row))
    }

    pub async fn version(&self, deployment_id: &str, id: &str) -> Result<Option<VersionRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM deployment_versions
                     WHERE deployment_id = $1 AND id = $2"
                ),
                &[&deployment_id, &id],
            )
            .await?;
        Ok(row.as_ref().map(version_from_row))
    }

    /// A deployment's versions, newest first.
    pub async fn versions(
        &self,
        deployment_id: &str,
        state: Option<&str>,
    ) -> Result<Vec<VersionRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM deployment_versions
                     WHERE deployment_id = $1 AND ($2::text IS NULL OR state = $2)
                     ORDER BY version_number DESC"
                ),
                &[&deployment_id, &state],
            )
            .await?;
        Ok(rows.iter().map(version_from_row).collect())
    }

    /// Every artifact a version names, and whether the release store keeps
    /// it: it does for the newest `retain` versions of each deployment and
    /// for every version active, or active before (a rollback's target),
    /// in some environment.
    pub async fn artifact_retention(&self, retain: i64) -> Result<Vec<(String, bool)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT artifact_sha256, bool_or(keep) FROM (
                     SELECT v.artifact_sha256,
                            row_number() OVER (PARTITION BY v.deployment_id
                                               ORDER BY v.version_number DESC) <= $1
                            OR EXISTS (SELECT 1 FROM deployment_environments a
                                       WHERE a.active_version_id = v.id
                                          OR a.previous_version_id = v.id) AS keep
                     FROM deployment_versions v WHERE v.artifact_sha256 IS NOT NULL
                 ) x GROUP BY artifact_sha256",
                &[&retain],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Which version serves in each environment of a deployment.
    pub async fn active_versions(&self, deployment_id: &str) -> Result<Vec<EnvironmentActive>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ACTIVE_COLUMNS} FROM deployment_environments a
                     JOIN environments e ON e.id = a.environment_id
                     WHERE a.deployment_id = $1 ORDER BY e.name"
                ),
                &[&deployment_id],
            )
            .await?;
        Ok(rows.iter().map(active_from_row).collect())
    }

    /// What should run everywhere: every active version of every deployment
    /// that is not stopped.
    pub async fn all_active_versions(&self) -> Result<Vec<EnvironmentActive>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ACTIVE_COLUMNS} FROM deployment_environments a
                     JOIN environments e ON e.id = a.environment_id
                     JOIN deployments d ON d.id = a.deployment_id
                     WHERE NOT d.stopped"
                ),
                &[],
            )
            .await?;
        Ok(rows.iter().map(active_from_row).collect())
    }

    /// Makes `version_id` the active version of (deployment, environment),
    /// remembering the one it replaces as the previous. Versions no longer
    /// active anywhere turn `archived`; the new one is `ready` (again).
    /// Returns the version it replaced.
    pub async fn activate_version(
        &self,
        deployment_id: &str,
        environment_id: &str,
        version_id: &str,
    ) -> Result<Option<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let before: Option<String> = tx
            .query_opt(
                "SELECT active_version_id FROM deployment_environments
                 WHERE deployment_id = $1 AND environment_id = $2 FOR UPDATE",
                &[&deployment_id, &environment_id],
            )
            .await?
            .map(|r| r.get(0));
        if before.as_deref() != Some(version_id) {
            tx.execute(
                "INSERT INTO deployment_environments (deployment_id, environment_id,
                     active_version_id, previous_version_id)
                 VALUES ($1, $2, $3, NULL)
                 ON CONFLICT (deployment_id, environment_id) DO UPDATE
                 SET previous_version_id = deployment_environments.active_version_id,
                     active_version_id = EXCLUDED.active_version_id, updated_at = now()",
                &[&deployment_id, &environment_id, &version_id],
            )
            .await?;
        }
        tx.execute(
            "UPDATE deployment_versions SET state = 'ready', promoted_at = now(),
                 archived_at = NULL, updated_at = now()
             WHERE id = $1",
            &[&version_id],
        )
        .await?;
        tx.execute(
            "UPDATE deployment_versions v SET state = 'archived', archived_at = now(),
                 updated_at = now()
             WHERE v.deployment_id = $1 AND v.state = 'ready' AND v.promoted_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM deployment_environments a
                               WHERE a.active_version_id = v.id)",
            &[&deployment_id],
        )
        .await?;
        tx.commit().await?;
        Ok(before.filter(|b| b != version_id))
    }

    /// Nothing serves in the environment any more (it is being deleted).
    pub async fn deactivate_environment(&self, environment_id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM deployment_environments WHERE environment_id = $1",
                &[&environment_id],
            )
            .await?;
        Ok(())
    }

    pub async fn create_instance(
        &self,
        id: &str,
        tenant_id: &str,
        deployment_id: &str,
        environment_id: &str,
        version_id: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO runtime_instances (id, tenant_id, deployment_id, environment_id,
                     version_id, state)
                 VALUES ($1, $2, $3, $4, $5, 'provisioning')",
                &[
                    &id,
                    &tenant_id,
                    &deployment_id,
                    &environment_id,
                    &version_id,
                ],
            )
            .await?;
        Ok(())
    }

    /// Records an instance's state (and, when given, its port, error and
    /// restart count). `started_at`/`stopped_at`/`last_health_check_at`
    /// follow the state.
    pub async fn set_instance_state(
        &self,
        id: &str,
        state: &str,
        port: Option<i32>,
        error: Option<&str>,
        restart_count: Option<i32>,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE runtime_instances SET state = $2,
                     port = COALESCE($3, port),
                     error_message = CASE WHEN $2 IN ('healthy', 'starting') THEN NULL
                                          ELSE COALESCE($4, error_message) END,
                     restart_count = COALESCE($5, restart_count),
                     started_at = CASE WHEN $2 = 'starting' THEN now() ELSE started_at END,
                     stopped_at = CASE WHEN $2 IN ('stopped', 'error') THEN now()
                                       ELSE stopped_at END,
                     last_health_check_at = CASE WHEN $2 IN ('healthy', 'unhealthy') THEN now()
                                                 ELSE last_health_check_at END,
                     desired_state = CASE WHEN $2 IN ('stopped', 'destroyed') THEN 'stopped'
                                          ELSE desired_state END,
                     updated_at = now()
                 WHERE id = $1 AND state <> 'destroyed'",
                &[&id, &state, &port, &error, &restart_count],
            )
            .await?;
        Ok(())
    }

    pub async fn instances(&self, deployment_id: &str) -> Result<Vec<InstanceRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM {INSTANCE_FROM}
                     WHERE i.deployment_id = $1 ORDER BY i.created_at"
                ),
                &[&deployment_id],
            )
            .await?;
        Ok(rows.iter().map(instance_from_row).collect())
    }

    pub async fn instance(&self, deployment_id: &str, id: &str) -> Result<Option<InstanceRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM {INSTANCE_FROM}
                     WHERE i.deployment_id = $1 AND i.id = $2"
                ),
                &[&deployment_id, &id],
            )
            .await?;
        Ok(row.as_ref().map(instance_from_row))
    }

    /// Instances a previous run of mds left not destroyed: their processes
    /// died with it. Marks them destroyed, ends their volume leases, fails
    /// the publishes it left unfinished, and returns the instances' ids.
    pub async fn retire_last_run(&self) -> Result<Vec<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "UPDATE runtime_instances SET state = 'destroyed', desired_state = 'stopped',
                     stopped_at = COALESCE(stopped_at, now()), updated_at = now(),
                     error_message = COALESCE(error_message, 'mds restarted')
                 WHERE state <> 'destroyed' RETURNING id",
                &[],
            )
            .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        // A publish cut short by the restart will not finish.
        tx.execute(
            "UPDATE deployment_versions SET state = 'failed', updated_at = now(),
                 build_log = build_log || 'failed: interrupted by a restart of mds\n'
             WHERE state IN ('created', 'building')",
            &[],
        )
        .await?;
        tx.execute(
            "UPDATE volume_attachments SET released_at = now()
             WHERE holder_kind = 'instance' AND holder_id = ANY($1) AND released_at IS NULL",
            &[&ids],
        )
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn add_volume_claim(
        &self,
        deployment_id: &str,
        environment_id: &str,
        volume_id: &str,
        mount_path: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO deployment_volumes (deployment_id, environment_id, volume_id,
                     mount_path)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (deployment_id, environment_id, volume_id) DO UPDATE
                 SET mount_path = EXCLUDED.mount_path",
                &[&deployment_id, &environment_id, &volume_id, &mount_path],
            )
            .await?;
        Ok(())
    }

    pub async fn volume_claims(
        &self,
        deployment_id: &str,
        environment_id: &str,
    ) -> Result<Vec<VolumeClaim>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT volume_id, mount_path FROM deployment_volumes
                 WHERE deployment_id = $1 AND environment_id = $2 ORDER BY mount_path",
                &[&deployment_id, &environment_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| VolumeClaim {
                volume_id: r.get(0),
                mount_path: r.get(1),
            })
            .collect())
    }
}

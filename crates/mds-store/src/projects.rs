//! Projects and their environments.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct ProjectRow {
    pub id: String,
    pub tenant_id: String,
    pub workspace_id: String,
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub metadata: Value,
    pub attribution: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The tenant's hidden holder of standalone databases and buckets.
    pub standalone: bool,
    /// `allow` or `none`: whether its sandboxes and instances reach the
    /// outside (migration 0029).
    pub network_egress: String,
    /// Live environments, oldest first.
    pub environments: Vec<EnvironmentRow>,
}

#[derive(Debug, Clone)]
pub struct EnvironmentRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub slug: String,
    pub kind: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it is purged (previews with a TTL; migration 0026).
    pub expires_at: Option<DateTime<Utc>>,
    /// What was asked of its data when made `--from` another, and how far
    /// it got (migration 0027); `data_state` is `copying`, `ready` or
    /// `failed`, none for an environment made empty.
    pub data_copy: Option<Value>,
    pub data_state: Option<String>,
    /// A scheduled credential rotation (migration 0028): every so many
    /// seconds, with this grace period.
    pub rotate_every_secs: Option<i64>,
    pub rotate_grace_secs: Option<i64>,
}

pub struct NewProject {
    pub id: String,
    pub tenant_id: String,
    pub workspace_id: String,
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub metadata: Value,
    pub attribution: Value,
    pub standalone: bool,
    pub network_egress: String,
}

pub struct NewEnvironment {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub kind: String,
    pub is_default: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// Filled from another environment: starts `copying`.
    pub data_copy: Option<Value>,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Default)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<Value>,
    pub network_egress: Option<String>,
}

const PROJECT_COLUMNS: &str = "p.id, p.tenant_id, p.workspace_id, p.slug, p.name, p.description, \
     p.metadata, p.attribution, p.created_at, p.updated_at, p.standalone, p.network_egress";
const ENVIRONMENT_COLUMNS: &str =
    "e.id, e.project_id, e.name, e.slug, e.kind, e.is_default, e.created_at, e.updated_at, \
     e.expires_at, e.data_copy, e.data_state, e.rotate_every_secs, e.rotate_grace_secs";

fn project_from_row(row: &Row) -> ProjectRow {
    ProjectRow {
        id: row.get(0),
        tenant_id: row.get(1),
        workspace_id: row.get(2),
        slug: row.get(3),
        name: row.get(4),
        description: row.get(5),
        metadata: row.get(6),
        attribution: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
        standalone: row.get(10),
        network_egress: row.get(11),
        environments: Vec::new(),
    }
}

/// Reads an environment from `row` starting at column `at`.
fn environment_from_row(row: &Row, at: usize) -> EnvironmentRow {
    EnvironmentRow {
        id: row.get(at),
        project_id: row.get(at + 1),
        name: row.get(at + 2),
        slug: row.get(at + 3),
        kind: row.get(at + 4),
        is_default: row.get(at + 5),
        created_at: row.get(at + 6),
        updated_at: row.get(at + 7),
        expires_at: row.get(at + 8),
        data_copy: row.get(at + 9),
        data_state: row.get(at + 10),
        rotate_every_secs: row.get(at + 11),
        rotate_grace_secs: row.get(at + 12),
    }
}

/// Folds `project LEFT JOIN environments` rows (ordered by project) into
/// projects with their environments.
fn fold_projects(rows: &[Row]) -> Vec<ProjectRow> {
    let mut projects: Vec<ProjectRow> = Vec::new();
    for row in rows {
        let id: &str = row.get(0);
        if projects.last().is_none_or(|p| p.id != id) {
            projects.push(project_from_row(row));
        }
        let env_id: Option<&str> = row.get(12);
        if env_id.is_some() {
            let project = projects.last_mut().expect("pushed above");
            project.environments.push(environment_from_row(row, 12));
        }
    }
    projects
}

impl Store {
    /// Inserts a project and its first environments in one transaction.
    pub async fn create_project(
        &self,
        project: &NewProject,
        environments: &[NewEnvironment],
    ) -> Result<Arc<ProjectRow>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO projects (id, tenant_id, workspace_id, slug, name, description, metadata, attribution, standalone, network_egress)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &project.id,
                &project.tenant_id,
                &project.workspace_id,
                &project.slug,
                &project.name,
                &project.description,
                &project.metadata,
                &project.attribution,
                &project.standalone,
                &project.network_egress,
            ],
        )
        .await?;
        for env in environments {
            insert_environment(&tx, &project.id, env).await?;
        }
        tx.commit().await?;
        drop(client);
        self.project(&project.tenant_id, &project.id)
            .await?
            .ok_or_else(|| StoreError::Config("project vanished after insert".into()))
    }

    /// A project by id or slug, with its live environments: from the cache,
    /// else in one query.
    pub async fn project(
        &self,
        tenant_id: &str,
        id_or_slug: &str,
    ) -> Result<Option<Arc<ProjectRow>>> {
        if let Some(row) = self.cache.project(tenant_id, id_or_slug) {
            return Ok(Some(row));
        }
        let ticket = self.cache.ticket();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {PROJECT_COLUMNS}, {ENVIRONMENT_COLUMNS}
                 FROM projects p
                 LEFT JOIN environments e ON e.project_id = p.id AND e.deleted_at IS NULL
                 WHERE p.tenant_id = $1 AND (p.id = $2 OR p.slug = $2)
                 ORDER BY e.is_default DESC, e.created_at, e.id"
            ))
            .await?;
        let rows = client.query(&stmt, &[&tenant_id, &id_or_slug]).await?;
        let Some(row) = fold_projects(&rows).into_iter().next().map(Arc::new) else {
            return Ok(None);
        };
        if let Some(ticket) = ticket {
            self.cache
                .put_project(ticket, tenant_id, id_or_slug, row.clone());
        }
        Ok(Some(row))
    }

    /// The tenant's holder of standalone databases and buckets, if made.
    pub async fn standalone_project(&self, tenant_id: &str) -> Result<Option<Arc<ProjectRow>>> {
        let client = self.client().await?;
        let id: Option<String> = client
            .query_opt(
                "SELECT id FROM projects WHERE tenant_id = $1 AND standalone",
                &[&tenant_id],
            )
            .await?
            .map(|row| row.get(0));
        drop(client);
        match id {
            Some(id) => self.project(tenant_id, &id).await,
            None => Ok(None),
        }
    }

    /// A page of projects, newest first, and the total count.
    pub async fn projects(
        &self,
        tenant_id: &str,
        workspace_id: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ProjectRow>, i64)> {
        let client = self.client().await?;
        let total: i64 = client
            .query_one(
                "SELECT count(*) FROM projects
                 WHERE tenant_id = $1 AND NOT standalone AND ($2::text IS NULL OR workspace_id = $2)",
                &[&tenant_id, &workspace_id],
            )
            .await?
            .get(0);
        let rows = client
            .query(
                &format!(
                    "WITH page AS (
                         SELECT * FROM projects
                         WHERE tenant_id = $1 AND NOT standalone
                           AND ($2::text IS NULL OR workspace_id = $2)
                         ORDER BY created_at DESC, id DESC OFFSET $3 LIMIT $4
                     )
                     SELECT {PROJECT_COLUMNS}, {ENVIRONMENT_COLUMNS}
                     FROM page p
                     LEFT JOIN environments e ON e.project_id = p.id AND e.deleted_at IS NULL
                     ORDER BY p.created_at DESC, p.id DESC, e.is_default DESC, e.created_at, e.id"
                ),
                &[&tenant_id, &workspace_id, &offset, &limit],
            )
            .await?;
        Ok((fold_projects(&rows), total))
    }

    /// Applies `patch`; `None` when the project does not exist.
    pub async fn update_project(
        &self,
        tenant_id: &str,
        id: &str,
        patch: &ProjectPatch,
    ) -> Result<Option<Arc<ProjectRow>>> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE projects SET
                     name = coalesce($3, name),
                     slug = coalesce($4, slug),
                     description = coalesce($5, description),
                     metadata = coalesce($6, metadata),
                     network_egress = coalesce($7, network_egress),
                     updated_at = now()
                 WHERE tenant_id = $1 AND id = $2",
                &[
                    &tenant_id,
                    &id,
                    &patch.name,
                    &patch.slug,
                    &patch.description,
                    &patch.metadata,
                    &patch.network_egress,
                ],
            )
            .await?;
        drop(client);
        self.forget_project(id);
        if updated == 0 {
            return Ok(None);
        }
        self.project(tenant_id, id).await
    }

    /// Deletes a project and everything it owns; false when it did not exist.
    pub async fn delete_project(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM projects WHERE tenant_id = $1 AND id = $2",
                &[&tenant_id, &id],
            )
            .await?;
        self.forget_project(id);
        Ok(n > 0)
    }

    /// Drops a project from this replica's cache at once (the database's
    /// notification tells the other replicas).
    fn forget_project(&self, id: &str) {
        self.cache.invalidate(&format!("project:{id}"));
    }

    pub async fn create_environment(
        &self,
        project_id: &str,
        env: &NewEnvironment,
    ) -> Result<EnvironmentRow> {
        let client = self.client().await?;
        insert_environment(&client, project_id, env).await?;
        drop(client);
        self.forget_project(project_id);
        self.environment(project_id, &env.id)
            .await?
            .ok_or_else(|| StoreError::Config("environment vanished after insert".into()))
    }

    /// A live environment of a project, by id, name or slug.
    pub async fn environment(
        &self,
        project_id: &str,
        reference: &str,
    ) -> Result<Option<EnvironmentRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {ENVIRONMENT_COLUMNS} FROM environments e
                 WHERE e.project_id = $1 AND e.deleted_at IS NULL
                   AND (e.id = $2 OR e.name = $2 OR e.slug = $2)
                 ORDER BY (e.id = $2) DESC, (e.name = $2) DESC
                 LIMIT 1"
            ))
            .await?;
        let row = client.query_opt(&stmt, &[&project_id, &reference]).await?;
        Ok(row.map(|r| environment_from_row(&r, 0)))
    }

    /// The project's default environment.
    pub async fn default_environment(&self, project_id: &str) -> Result<Option<EnvironmentRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {ENVIRONMENT_COLUMNS} FROM environments e
                     WHERE e.project_id = $1 AND e.deleted_at IS NULL AND e.is_default"
                ),
                &[&project_id],
            )
            .await?;
        Ok(row.map(|r| environment_from_row(&r, 0)))
    }

    pub async fn rename_environment(
        &self,
        env_id: &str,
        name: &str,
        slug: &str,
    ) -> Result<Option<EnvironmentRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE environments e SET name = $2, slug = $3, updated_at = now()
                     WHERE e.id = $1 AND e.deleted_at IS NULL
                     RETURNING {ENVIRONMENT_COLUMNS}"
                ),
                &[&env_id, &name, &slug],
            )
            .await?;
        let row = row.map(|r| environment_from_row(&r, 0));
        if let Some(env) = &row {
            self.forget_project(&env.project_id);
        }
        Ok(row)
    }

    /// Sets when an environment is purged (`None`: never).
    pub async fn set_environment_expiry(
        &self,
        env_id: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Option<EnvironmentRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE environments e SET expires_at = $2, updated_at = now()
                     WHERE e.id = $1 AND e.deleted_at IS NULL
                     RETURNING {ENVIRONMENT_COLUMNS}"
                ),
                &[&env_id, &expires_at],
            )
            .await?;
        let row = row.map(|r| environment_from_row(&r, 0));
        if let Some(env) = &row {
            self.forget_project(&env.project_id);
        }
        Ok(row)
    }

    /// Leases environments whose data copy is unfinished and not being
    /// done (new, or its holder gone: a kill -9) to `incarnation`; with
    /// `only`, that one environment. With their project's tenant.
    pub async fn claim_environment_copies(
        &self,
        incarnation: i64,
        only: Option<&str>,
    ) -> Result<Vec<(String, EnvironmentRow)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "UPDATE environments e SET data_holder = $1
                     FROM projects p
                     WHERE p.id = e.project_id AND e.data_state = 'copying'
                       AND e.deleted_at IS NULL AND ($2::text IS NULL OR e.id = $2)
                       AND (e.data_holder IS NULL OR {})
                     RETURNING p.tenant_id, {ENVIRONMENT_COLUMNS}",
                    crate::backups::holder_gone("e.data_holder")
                ),
                &[&incarnation, &only],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), environment_from_row(r, 1)))
            .collect())
    }

    /// Records how far an environment's copy got; with `state`, it ends
    /// (`ready` or `failed`) and its lease goes.
    pub async fn set_environment_copy(
        &self,
        env_id: &str,
        data_copy: &Value,
        state: Option<&str>,
    ) -> Result<Option<EnvironmentRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE environments e SET data_copy = $2,
                         data_state = coalesce($3, e.data_state),
                         data_holder = CASE WHEN $3::text IS NULL THEN e.data_holder END,
                         updated_at = now()
                     WHERE e.id = $1 AND e.deleted_at IS NULL
                     RETURNING {ENVIRONMENT_COLUMNS}"
                ),
                &[&env_id, &data_copy, &state],
            )
            .await?;
        let row = row.map(|r| environment_from_row(&r, 0));
        if let Some(env) = &row {
            self.forget_project(&env.project_id);
        }
        Ok(row)
    }

    /// Sets (or with `None` ends) an environment's scheduled rotation.
    pub async fn set_environment_rotation(
        &self,
        env_id: &str,
        every_secs: Option<i64>,
        grace_secs: Option<i64>,
    ) -> Result<Option<EnvironmentRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE environments e SET rotate_every_secs = $2, rotate_grace_secs = $3,
                         updated_at = now()
                     WHERE e.id = $1 AND e.deleted_at IS NULL
                     RETURNING {ENVIRONMENT_COLUMNS}"
                ),
                &[&env_id, &every_secs, &grace_secs],
            )
            .await?;
        let row = row.map(|r| environment_from_row(&r, 0));
        if let Some(env) = &row {
            self.forget_project(&env.project_id);
        }
        Ok(row)
    }

    /// Live environments with a scheduled rotation whose running bindings
    /// include credentials older than it: (tenant, environment).
    pub async fn rotations_scheduled_due(&self) -> Result<Vec<(String, EnvironmentRow)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT p.tenant_id, {ENVIRONMENT_COLUMNS} FROM environments e
                     JOIN projects p ON p.id = e.project_id
                     WHERE e.rotate_every_secs IS NOT NULL AND e.deleted_at IS NULL
                       AND EXISTS (
                           SELECT 1 FROM bindings b
                           WHERE b.environment_id = e.id AND b.desired = 'running'
                             AND b.state = 'running' AND b.kind <> 'volume'
                             AND b.previous_sealed_password IS NULL
                             AND b.pending_sealed_password IS NULL
                             AND coalesce(b.credentials_at, b.created_at)
                                 <= now() - make_interval(secs => e.rotate_every_secs))"
                ),
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), environment_from_row(r, 1)))
            .collect())
    }

    /// Live environments whose time is up, with their project's tenant.
    pub async fn expired_environments(&self) -> Result<Vec<(String, EnvironmentRow)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT p.tenant_id, {ENVIRONMENT_COLUMNS} FROM environments e
                     JOIN projects p ON p.id = e.project_id
                     WHERE e.expires_at <= now() AND e.deleted_at IS NULL
                     ORDER BY e.expires_at"
                ),
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), environment_from_row(r, 1)))
            .collect())
    }

    /// Soft-deletes an environment. Its variables stay sealed in place,
    /// unreachable, until the project itself is deleted.
    pub async fn delete_environment(&self, env_id: &str) -> Result<bool> {
        let client = self.client().await?;
        let project: Option<String> = client
            .query_opt(
                "UPDATE environments SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL
                 RETURNING project_id",
                &[&env_id],
            )
            .await?
            .map(|r| r.get(0));
        if let Some(project_id) = &project {
            self.forget_project(project_id);
        }
        Ok(project.is_some())
    }
}

async fn insert_environment(
    client: &impl deadpool_postgres::GenericClient,
    project_id: &str,
    env: &NewEnvironment,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO environments
                 (id, project_id, name, slug, kind, is_default, expires_at, data_copy, data_state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                     CASE WHEN $8::jsonb IS NULL THEN NULL ELSE 'copying' END)",
            &[
                &env.id,
                &project_id,
                &env.name,
                &env.slug,
                &env.kind,
                &env.is_default,
                &env.expires_at,
                &env.data_copy,
            ],
        )
        .await?;
    Ok(())
}

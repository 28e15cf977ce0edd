//! Runtime env (migration 0019): variables of the tenant, its workspace or
//! one project, for sandboxes, runtime instances or both. Values arrive
//! sealed; scopes and targets are the control layer's words, checked by
//! the table too.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use crate::{Result, Store};

#[derive(Debug, Clone)]
pub struct RuntimeEnvRow {
    pub id: String,
    pub tenant_id: String,
    pub scope: String,
    pub workspace_id: String,
    pub project_id: Option<String>,
    pub target: String,
    pub name: String,
    pub sealed_value: Vec<u8>,
    pub is_secret: bool,
    pub enabled: bool,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A variable to set; `id` is used only if its key is new.
pub struct NewRuntimeEnv<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub scope: &'a str,
    pub workspace_id: &'a str,
    pub project_id: Option<&'a str>,
    pub target: &'a str,
    pub name: &'a str,
    pub sealed_value: &'a [u8],
    pub is_secret: bool,
    pub enabled: bool,
    pub metadata: &'a Value,
}

/// What a list narrows to; `None` matches everything.
#[derive(Default)]
pub struct RuntimeEnvFilter<'a> {
    pub scope: Option<&'a str>,
    pub project_id: Option<&'a str>,
    pub target: Option<&'a str>,
}

const COLUMNS: &str = "id, tenant_id, scope, workspace_id, project_id, target, name, \
     sealed_value, is_secret, enabled, metadata, created_at, updated_at";

/// Broad before narrow: tenant < workspace < project, and within a scope
/// `all` before a named target, so the later (narrower) one wins a merge.
const PRECEDENCE: &str = "CASE scope WHEN 'tenant' THEN 0 WHEN 'workspace' THEN 1 ELSE 2 END, \
     (target <> 'all'), name";

fn from_row(r: &Row) -> RuntimeEnvRow {
    RuntimeEnvRow {
        id: r.get(0),
        tenant_id: r.get(1),
        scope: r.get(2),
        workspace_id: r.get(3),
        project_id: r.get(4),
        target: r.get(5),
        name: r.get(6),
        sealed_value: r.get(7),
        is_secret: r.get(8),
        enabled: r.get(9),
        metadata: r.get(10),
        created_at: r.get(11),
        updated_at: r.get(12),
    }
}

impl Store {
    /// Inserts the variable, or replaces the value, flags and metadata of
    /// the one with the same (scope, project, target, name).
    pub async fn upsert_runtime_env(&self, new: &NewRuntimeEnv<'_>) -> Result<RuntimeEnvRow> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO runtime_env (id, tenant_id, scope, workspace_id, project_id, \
                         target, name, sealed_value, is_secret, enabled, metadata)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (tenant_id, scope, (COALESCE(project_id, '')), target, name)
                     DO UPDATE SET sealed_value = EXCLUDED.sealed_value,
                         is_secret = EXCLUDED.is_secret, enabled = EXCLUDED.enabled,
                         metadata = EXCLUDED.metadata, workspace_id = EXCLUDED.workspace_id,
                         updated_at = now()
                     RETURNING {COLUMNS}"
                ),
                &[
                    &new.id,
                    &new.tenant_id,
                    &new.scope,
                    &new.workspace_id,
                    &new.project_id,
                    &new.target,
                    &new.name,
                    &new.sealed_value,
                    &new.is_secret,
                    &new.enabled,
                    new.metadata,
                ],
            )
            .await?;
        Ok(from_row(&row))
    }

    /// The tenant's variables that match `filter`, in precedence order.
    pub async fn runtime_env_list(
        &self,
        tenant_id: &str,
        filter: &RuntimeEnvFilter<'_>,
    ) -> Result<Vec<RuntimeEnvRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM runtime_env
                     WHERE tenant_id = $1 AND ($2::text IS NULL OR scope = $2)
                       AND ($3::text IS NULL OR project_id = $3)
                       AND ($4::text IS NULL OR target = $4)
                     ORDER BY {PRECEDENCE}"
                ),
                &[
                    &tenant_id,
                    &filter.scope,
                    &filter.project_id,
                    &filter.target,
                ],
            )
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    pub async fn runtime_env(&self, tenant_id: &str, id: &str) -> Result<Option<RuntimeEnvRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM runtime_env WHERE tenant_id = $1 AND id = $2"),
                &[&tenant_id, &id],
            )
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    pub async fn delete_runtime_env(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM runtime_env WHERE tenant_id = $1 AND id = $2",
                &[&tenant_id, &id],
            )
            .await?;
        Ok(deleted > 0)
    }

    /// The enabled variables a process of `project_id` (none: a sandbox of
    /// no project) with `target` boots with: the tenant's and workspace's,
    /// and the project's own; `all` and `target` alike. Broad first.
    pub async fn runtime_env_for_boot(
        &self,
        tenant_id: &str,
        project_id: Option<&str>,
        target: &str,
    ) -> Result<Vec<RuntimeEnvRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM runtime_env
                     WHERE tenant_id = $1 AND enabled AND target IN ('all', $3)
                       AND (project_id IS NULL OR project_id = $2)
                     ORDER BY {PRECEDENCE}"
                ),
                &[&tenant_id, &project_id, &target],
            )
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }
}

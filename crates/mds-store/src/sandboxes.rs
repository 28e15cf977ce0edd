//! Sandboxes (migration 0010): what each one is, its state, and its own
//! variables (sealed by the caller).

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use crate::{Result, Store};

#[derive(Debug, Clone)]
pub struct SandboxRow {
    pub id: String,
    pub tenant_id: String,
    pub project_id: Option<String>,
    pub project_slug: Option<String>,
    pub project_name: Option<String>,
    pub environment_id: Option<String>,
    pub environment: Option<String>,
    pub name: Option<String>,
    pub state: String,
    pub template_id: String,
    pub sealed_env: Vec<u8>,
    pub metadata: Value,
    pub tags: Vec<String>,
    pub last_error: Option<String>,
    pub boot_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ready_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "x.id, x.tenant_id, x.project_id, p.slug, p.name, x.environment_id, e.name, \
     x.name, x.state, x.template_id, x.sealed_env, x.metadata, x.tags, x.last_error, x.boot_ms, \
     x.created_at, x.updated_at, x.started_at, x.ready_at, x.stopped_at, x.destroyed_at";
const FROM: &str = "sandboxes x LEFT JOIN projects p ON p.id = x.project_id \
     LEFT JOIN environments e ON e.id = x.environment_id";

fn from_row(r: &Row) -> SandboxRow {
    SandboxRow {
        id: r.get(0),
        tenant_id: r.get(1),
        project_id: r.get(2),
        project_slug: r.get(3),
        project_name: r.get(4),
        environment_id: r.get(5),
        environment: r.get(6),
        name: r.get(7),
        state: r.get(8),
        template_id: r.get(9),
        sealed_env: r.get(10),
        metadata: r.get(11),
        tags: r.get(12),
        last_error: r.get(13),
        boot_ms: r.get(14),
        created_at: r.get(15),
        updated_at: r.get(16),
        started_at: r.get(17),
        ready_at: r.get(18),
        stopped_at: r.get(19),
        destroyed_at: r.get(20),
    }
}

pub struct NewSandbox<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub project_id: Option<&'a str>,
    pub environment_id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub template_id: &'a str,
    pub sealed_env: &'a [u8],
    pub metadata: &'a Value,
    pub tags: &'a [String],
}

impl Store {
    /// Records a new sandbox in state `creating`.
    pub async fn create_sandbox(&self, new: &NewSandbox<'_>) -> Result<SandboxRow> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO sandboxes (id, tenant_id, project_id, environment_id, name, state,
                     template_id, sealed_env, metadata, tags)
                 VALUES ($1, $2, $3, $4, $5, 'creating', $6, $7, $8, $9)",
                &[
                    &new.id,
                    &new.tenant_id,
                    &new.project_id,
                    &new.environment_id,
                    &new.name,
                    &new.template_id,
                    &new.sealed_env,
                    new.metadata,
                    &new.tags,
                ],
            )
            .await?;
        self.sandbox(new.tenant_id, new.id)
            .await?
            .ok_or_else(|| crate::StoreError::Config("sandbox vanished after insert".into()))
    }

    /// The tenant's sandbox with this id.
    pub async fn sandbox(&self, tenant_id: &str, id: &str) -> Result<Option<SandboxRow>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM {FROM} WHERE x.tenant_id = $1 AND x.id = $2"
            ))
            .await?;
        let row = client.query_opt(&statement, &[&tenant_id, &id]).await?;
        Ok(row.as_ref().map(from_row))
    }

    /// The tenant's live (not destroyed) sandbox with this name.
    pub async fn sandbox_by_name(&self, tenant_id: &str, name: &str) -> Result<Option<SandboxRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM {FROM}
                     WHERE x.tenant_id = $1 AND x.name = $2 AND x.state <> 'destroyed'"
                ),
                &[&tenant_id, &name],
            )
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    /// The tenant's sandboxes, newest first; of one state, carrying every
    /// tag, of one project, when given.
    pub async fn sandboxes(
        &self,
        tenant_id: &str,
        state: Option<&str>,
        tags: &[String],
        project_id: Option<&str>,
    ) -> Result<Vec<SandboxRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM {FROM}
                     WHERE x.tenant_id = $1 AND ($2::text IS NULL OR x.state = $2)
                       AND x.tags @> $3 AND ($4::text IS NULL OR x.project_id = $4)
                     ORDER BY x.created_at DESC, x.id DESC LIMIT 1000"
                ),
                &[&tenant_id, &state, &tags, &project_id],
            )
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// Ids of sandboxes that are not destroyed: their workspaces are kept.
    pub async fn kept_sandbox_ids(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id FROM sandboxes WHERE state <> 'destroyed'", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Points a sandbox at another environment (takes effect at its next
    /// boot).
    pub async fn set_sandbox_environment(
        &self,
        tenant_id: &str,
        id: &str,
        environment_id: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sandboxes SET environment_id = $3, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND state <> 'destroyed'",
                &[&tenant_id, &id, &environment_id],
            )
            .await?;
        Ok(())
    }

    /// Moves a sandbox to `state`, stamping when; `destroyed` is final and
    /// is never left. Returns the row as it is now.
    pub async fn set_sandbox_state(
        &self,
        tenant_id: &str,
        id: &str,
        state: &str,
        error: Option<&str>,
        boot_ms: Option<i32>,
    ) -> Result<Option<SandboxRow>> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sandboxes SET state = $3, last_error = $4,
                     boot_ms = coalesce($5, boot_ms),
                     updated_at = now(),
                     started_at = CASE WHEN $3 = 'running' THEN now() ELSE started_at END,
                     ready_at = CASE WHEN $3 = 'running' THEN now() ELSE ready_at END,
                     stopped_at = CASE WHEN $3 = 'stopped' THEN now() ELSE stopped_at END,
                     destroyed_at = CASE WHEN $3 = 'destroyed' THEN now() ELSE destroyed_at END
                 WHERE tenant_id = $1 AND id = $2 AND state <> 'destroyed'",
                &[&tenant_id, &id, &state, &error, &boot_ms],
            )
            .await?;
        self.sandbox(tenant_id, id).await
    }

    /// Replaces a sandbox's own variables (sealed).
    pub async fn set_sandbox_env(&self, tenant_id: &str, id: &str, sealed: &[u8]) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE sandboxes SET sealed_env = $3, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND state <> 'destroyed'",
                &[&tenant_id, &id, &sealed],
            )
            .await?;
        Ok(n > 0)
    }
}

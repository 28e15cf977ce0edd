//! API keys: only a hash of each key is stored.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use crate::{Result, Store};

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub token_prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub struct NewApiKeyRow<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub name: &'a str,
    pub token_hash: &'a [u8],
    pub token_prefix: &'a str,
    pub scopes: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, tenant_id, name, token_prefix, scopes, created_at, updated_at, last_used_at, expires_at";

fn from_row(row: &Row) -> ApiKeyRow {
    ApiKeyRow {
        id: row.get(0),
        tenant_id: row.get(1),
        name: row.get(2),
        token_prefix: row.get(3),
        scopes: row.get(4),
        created_at: row.get(5),
        updated_at: row.get(6),
        last_used_at: row.get(7),
        expires_at: row.get(8),
    }
}

impl Store {
    pub async fn insert_api_key(&self, key: &NewApiKeyRow<'_>) -> Result<ApiKeyRow> {
        self.write_api_key(key, "").await
    }

    /// Makes sure a key with this hash exists and is active, with these
    /// scopes (an operator-given key, such as `MDS_ADMIN_API_KEY`).
    pub async fn ensure_api_key(&self, key: &NewApiKeyRow<'_>) -> Result<ApiKeyRow> {
        self.write_api_key(
            key,
            "ON CONFLICT (token_hash) DO UPDATE
             SET revoked_at = NULL, scopes = EXCLUDED.scopes, expires_at = NULL, updated_at = now()",
        )
        .await
    }

    /// Inserts `key`; `on_conflict` (a fixed clause, never input) says what
    /// a taken hash does.
    async fn write_api_key(&self, key: &NewApiKeyRow<'_>, on_conflict: &str) -> Result<ApiKeyRow> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO api_keys (id, tenant_id, name, token_hash, token_prefix, scopes, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     {on_conflict}
                     RETURNING {COLUMNS}"
                ),
                &[
                    &key.id,
                    &key.tenant_id,
                    &key.name,
                    &key.token_hash,
                    &key.token_prefix,
                    &key.scopes,
                    &key.expires_at,
                ],
            )
            .await?;
        Ok(from_row(&row))
    }

    /// The active (not revoked, not expired) key with this hash: from the
    /// cache, else from the database (and then its use is recorded).
    pub async fn api_key_by_hash(&self, token_hash: &[u8]) -> Result<Option<Arc<ApiKeyRow>>> {
        if let Some(row) = self.cache.api_key(token_hash) {
            return Ok(Some(row));
        }
        let ticket = self.cache.ticket();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM api_keys
                 WHERE token_hash = $1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > now())"
            ))
            .await?;
        let Some(row) = client.query_opt(&stmt, &[&token_hash]).await? else {
            return Ok(None);
        };
        let row = Arc::new(from_row(&row));
        if let Some(ticket) = ticket {
            self.cache.put_api_key(ticket, token_hash, row.clone());
        }
        // Usage is recorded once per cache period, off the request path.
        let store = self.clone();
        let id = row.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&id).await {
                tracing::debug!(error = %e, "could not record API key use");
            }
        });
        Ok(Some(row))
    }

    fn forget_api_key(&self, id: &str) {
        self.cache.invalidate(&format!("api_key:{id}"));
    }

    pub async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL
                     ORDER BY created_at, id"
                ),
                &[&tenant_id],
            )
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    pub async fn api_key(&self, tenant_id: &str, id: &str) -> Result<Option<ApiKeyRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM api_keys
                     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL"
                ),
                &[&tenant_id, &id],
            )
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    pub async fn update_api_key(
        &self,
        tenant_id: &str,
        id: &str,
        name: Option<&str>,
        scopes: Option<&[String]>,
    ) -> Result<Option<ApiKeyRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE api_keys SET name = coalesce($3, name), scopes = coalesce($4, scopes),
                         updated_at = now()
                     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL
                     RETURNING {COLUMNS}"
                ),
                &[&tenant_id, &id, &name, &scopes],
            )
            .await?;
        self.forget_api_key(id);
        Ok(row.as_ref().map(from_row))
    }

    /// Replaces a key's secret: the old value stops working at once.
    pub async fn rotate_api_key(
        &self,
        tenant_id: &str,
        id: &str,
        token_hash: &[u8],
        token_prefix: &str,
    ) -> Result<Option<ApiKeyRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE api_keys SET token_hash = $3, token_prefix = $4, updated_at = now()
                     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL
                     RETURNING {COLUMNS}"
                ),
                &[&tenant_id, &id, &token_hash, &token_prefix],
            )
            .await?;
        self.forget_api_key(id);
        Ok(row.as_ref().map(from_row))
    }

    /// Revokes a key; the row stays for the audit trail.
    pub async fn revoke_api_key(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = now(), updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
                &[&tenant_id, &id],
            )
            .await?;
        self.forget_api_key(id);
        Ok(n > 0)
    }

    async fn touch_api_key(&self, id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE api_keys SET last_used_at = now() WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(())
    }
}

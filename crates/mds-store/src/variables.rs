//! Shared variables of an environment, stored sealed.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use crate::{Result, Store};

#[derive(Debug, Clone)]
pub struct VariableRow {
    pub environment_id: String,
    pub name: String,
    pub sealed_value: Vec<u8>,
    pub is_secret: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "environment_id, name, sealed_value, is_secret, created_at, updated_at";

fn from_row(row: &Row) -> VariableRow {
    VariableRow {
        environment_id: row.get(0),
        name: row.get(1),
        sealed_value: row.get(2),
        is_secret: row.get(3),
        created_at: row.get(4),
        updated_at: row.get(5),
    }
}

impl Store {
    /// The environment's variables, by name.
    pub async fn variables(&self, env_id: &str) -> Result<Vec<VariableRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM shared_variables WHERE environment_id = $1 ORDER BY name"
                ),
                &[&env_id],
            )
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    pub async fn variable(&self, env_id: &str, name: &str) -> Result<Option<VariableRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM shared_variables WHERE environment_id = $1 AND name = $2"
                ),
                &[&env_id, &name],
            )
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    /// Inserts or replaces `(name, sealed value, is_secret)` entries, all or
    /// none.
    pub async fn upsert_variables(
        &self,
        env_id: &str,
        variables: &[(String, Vec<u8>, bool)],
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare(
                "INSERT INTO shared_variables (environment_id, name, sealed_value, is_secret)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (environment_id, name) DO UPDATE
                 SET sealed_value = EXCLUDED.sealed_value, is_secret = EXCLUDED.is_secret,
                     updated_at = now()",
            )
            .await?;
        for (name, sealed, is_secret) in variables {
            tx.execute(&stmt, &[&env_id, name, sealed, is_secret])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_variable(&self, env_id: &str, name: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM shared_variables WHERE environment_id = $1 AND name = $2",
                &[&env_id, &name],
            )
            .await?;
        Ok(n > 0)
    }
}

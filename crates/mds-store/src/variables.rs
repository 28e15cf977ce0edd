//! Variables, stored sealed: shared ones of an environment, and a data
//! service's or a deployment's own in an environment. One set of queries
//! serves every scope.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
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

/// Whose variables.
#[derive(Debug, Clone, Copy)]
pub enum VariableScope<'a> {
    /// The environment's shared variables.
    Shared { environment_id: &'a str },
    /// A data service's own variables in an environment.
    Service {
        service_id: &'a str,
        environment_id: &'a str,
    },
    /// A deployment's variables in an environment.
    Deployment {
        deployment_id: &'a str,
        environment_id: &'a str,
    },
}

impl VariableScope<'_> {
    /// (table, condition on $1.., its parameters)
    fn target(&self) -> (&'static str, &'static str, Vec<&(dyn ToSql + Sync)>) {
        match self {
            VariableScope::Shared { environment_id } => (
                "shared_variables",
                "environment_id = $1",
                vec![environment_id],
            ),
            VariableScope::Service {
                service_id,
                environment_id,
            } => (
                "service_variables",
                "service_id = $1 AND environment_id = $2",
                vec![service_id, environment_id],
            ),
            VariableScope::Deployment {
                deployment_id,
                environment_id,
            } => (
                "deployment_variables",
                "deployment_id = $1 AND environment_id = $2",
                vec![deployment_id, environment_id],
            ),
        }
    }

    pub fn environment_id(&self) -> &str {
        match self {
            VariableScope::Shared { environment_id }
            | VariableScope::Service { environment_id, .. }
            | VariableScope::Deployment { environment_id, .. } => environment_id,
        }
    }
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
    /// The scope's variables, by name.
    pub async fn variables(&self, scope: VariableScope<'_>) -> Result<Vec<VariableRow>> {
        let (table, condition, params) = scope.target();
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM {table} WHERE {condition} ORDER BY name"),
                &params,
            )
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    pub async fn variable(
        &self,
        scope: VariableScope<'_>,
        name: &str,
    ) -> Result<Option<VariableRow>> {
        let (table, condition, mut params) = scope.target();
        let n = params.len() + 1;
        params.push(&name);
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM {table} WHERE {condition} AND name = ${n}"),
                &params,
            )
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    /// Inserts or replaces `(name, sealed value, is_secret)` entries, all or
    /// none.
    pub async fn upsert_variables(
        &self,
        scope: VariableScope<'_>,
        variables: &[(String, Vec<u8>, bool)],
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = match scope {
            VariableScope::Shared { .. } => {
                "INSERT INTO shared_variables (environment_id, name, sealed_value, is_secret)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (environment_id, name) DO UPDATE
                 SET sealed_value = EXCLUDED.sealed_value, is_secret = EXCLUDED.is_secret,
                     updated_at = now()"
            }
            VariableScope::Service { .. } => {
                "INSERT INTO service_variables (service_id, environment_id, name, sealed_value, is_secret)
                 VALUES ($5, $1, $2, $3, $4)
                 ON CONFLICT (service_id, environment_id, name) DO UPDATE
                 SET sealed_value = EXCLUDED.sealed_value, is_secret = EXCLUDED.is_secret,
                     updated_at = now()"
            }
            VariableScope::Deployment { .. } => {
                "INSERT INTO deployment_variables (deployment_id, environment_id, name, sealed_value, is_secret)
                 VALUES ($5, $1, $2, $3, $4)
                 ON CONFLICT (deployment_id, environment_id, name) DO UPDATE
                 SET sealed_value = EXCLUDED.sealed_value, is_secret = EXCLUDED.is_secret,
                     updated_at = now()"
            }
        };
        let stmt = tx.prepare(sql).await?;
        let environment_id = scope.environment_id();
        for (name, sealed, is_secret) in variables {
            match scope {
                VariableScope::Shared { .. } => {
                    tx.execute(&stmt, &[&environment_id, name, sealed, is_secret])
                        .await?
                }
                VariableScope::Service {
                    service_id: owner, ..
                }
                | VariableScope::Deployment {
                    deployment_id: owner,
                    ..
                } => {
                    tx.execute(&stmt, &[&environment_id, name, sealed, is_secret, &owner])
                        .await?
                }
            };
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_variable(&self, scope: VariableScope<'_>, name: &str) -> Result<bool> {
        let (table, condition, mut params) = scope.target();
        let n = params.len() + 1;
        params.push(&name);
        let client = self.client().await?;
        let deleted = client
            .execute(
                &format!("DELETE FROM {table} WHERE {condition} AND name = ${n}"),
                &params,
            )
            .await?;
        Ok(deleted > 0)
    }
}

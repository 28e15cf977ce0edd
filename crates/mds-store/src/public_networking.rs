//! Public networking of managed Postgres services: which are open on the
//! engine's public listener, and from where.

use chrono::{DateTime, Utc};

use crate::{Result, Store};

/// A service whose public networking is enabled.
#[derive(Debug, Clone)]
pub struct PublicEndpointRow {
    pub service_id: String,
    /// CIDRs; `None` admits any source.
    pub allowlist: Option<Vec<String>>,
    pub updated_at: DateTime<Utc>,
}

/// One binding the public listener admits: its database and role name,
/// and the sources it admits.
#[derive(Debug, Clone)]
pub struct PublicAccessRow {
    pub resource_name: String,
    pub allowlist: Option<Vec<String>>,
}

impl Store {
    pub async fn public_endpoint(&self, service_id: &str) -> Result<Option<PublicEndpointRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT service_id, allowlist, updated_at FROM public_endpoints WHERE service_id = $1",
                &[&service_id],
            )
            .await?;
        Ok(row.map(|r| PublicEndpointRow {
            service_id: r.get(0),
            allowlist: r.get(1),
            updated_at: r.get(2),
        }))
    }

    /// Enables, or replaces the allowlist of, a service's public endpoint.
    pub async fn set_public_endpoint(
        &self,
        service_id: &str,
        allowlist: Option<&[String]>,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO public_endpoints (service_id, allowlist) VALUES ($1, $2)
                 ON CONFLICT (service_id) DO UPDATE
                     SET allowlist = EXCLUDED.allowlist, updated_at = now()",
                &[&service_id, &allowlist],
            )
            .await?;
        Ok(())
    }

    /// Disables a service's public endpoint; false when it was not enabled.
    pub async fn delete_public_endpoint(&self, service_id: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM public_endpoints WHERE service_id = $1",
                &[&service_id],
            )
            .await?;
        Ok(n > 0)
    }

    /// What the public listener should admit: every binding, not being
    /// deleted, of each Postgres service with an endpoint.
    pub async fn public_access(&self) -> Result<Vec<PublicAccessRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT b.resource_name, p.allowlist
                 FROM public_endpoints p
                 JOIN data_services s ON s.id = p.service_id
                 JOIN bindings b ON b.service_id = s.id
                 WHERE s.kind = 'postgres' AND NOT s.deleting AND b.desired <> 'deleted'
                 ORDER BY b.resource_name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PublicAccessRow {
                resource_name: r.get(0),
                allowlist: r.get(1),
            })
            .collect())
    }
}

//! Volumes, their attachments (leases with fencing tokens) and snapshots
//! (migration 0011).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct VolumeRow {
    pub id: String,
    pub tenant_id: String,
    pub project_id: Option<String>,
    pub binding_id: Option<String>,
    pub name: String,
    pub size_bytes: i64,
    pub backend: String,
    pub created_at: DateTime<Utc>,
    /// The live attachment, if any.
    pub attachment: Option<AttachmentRow>,
}

#[derive(Debug, Clone)]
pub struct AttachmentRow {
    pub id: String,
    pub volume_id: String,
    pub holder_kind: String,
    pub holder_id: String,
    pub mount_path: String,
    pub fencing_token: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct SnapshotRow {
    pub id: String,
    pub volume_id: String,
    pub size_bytes: i64,
    pub created_at: DateTime<Utc>,
}

const VOLUME_COLUMNS: &str =
    "v.id, v.tenant_id, v.project_id, v.binding_id, v.name, v.size_bytes, \
     v.backend, v.created_at, a.id, a.volume_id, a.holder_kind, a.holder_id, a.mount_path, \
     a.fencing_token, a.created_at";
const VOLUME_FROM: &str = "volumes v LEFT JOIN volume_attachments a \
     ON a.volume_id = v.id AND a.released_at IS NULL";
const ATTACHMENT_COLUMNS: &str =
    "a.id, a.volume_id, a.holder_kind, a.holder_id, a.mount_path, a.fencing_token, a.created_at";

fn attachment_from_row(r: &Row, at: usize) -> Option<AttachmentRow> {
    let id: Option<String> = r.get(at);
    Some(AttachmentRow {
        id: id?,
        volume_id: r.get(at + 1),
        holder_kind: r.get(at + 2),
        holder_id: r.get(at + 3),
        mount_path: r.get(at + 4),
        fencing_token: r.get(at + 5),
        created_at: r.get(at + 6),
    })
}

fn volume_from_row(r: &Row) -> VolumeRow {
    VolumeRow {
        id: r.get(0),
        tenant_id: r.get(1),
        project_id: r.get(2),
        binding_id: r.get(3),
        name: r.get(4),
        size_bytes: r.get(5),
        backend: r.get(6),
        created_at: r.get(7),
        attachment: attachment_from_row(r, 8),
    }
}

pub struct NewVolume<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub project_id: Option<&'a str>,
    pub binding_id: Option<&'a str>,
    pub name: &'a str,
    pub size_bytes: i64,
    pub backend: &'a str,
}

/// Why an attach was refused.
#[derive(Debug)]
pub enum AttachError {
    /// Another holder has the lease.
    InUse(AttachmentRow),
    Store(StoreError),
}

impl From<StoreError> for AttachError {
    fn from(e: StoreError) -> Self {
        AttachError::Store(e)
    }
}

impl Store {
    pub async fn create_volume(&self, new: &NewVolume<'_>) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO volumes (id, tenant_id, project_id, binding_id, name, size_bytes, backend)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &new.id,
                    &new.tenant_id,
                    &new.project_id,
                    &new.binding_id,
                    &new.name,
                    &new.size_bytes,
                    &new.backend,
                ],
            )
            .await?;
        Ok(())
    }

    /// A tenant's volume by id or name.
    pub async fn volume(&self, tenant_id: &str, id_or_name: &str) -> Result<Option<VolumeRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {VOLUME_COLUMNS} FROM {VOLUME_FROM}
                     WHERE v.tenant_id = $1 AND (v.id = $2 OR v.name = $2)
                     ORDER BY v.id = $2 DESC LIMIT 1"
                ),
                &[&tenant_id, &id_or_name],
            )
            .await?;
        Ok(row.as_ref().map(volume_from_row))
    }

    /// The volume of a `volume` binding.
    pub async fn binding_volume(&self, binding_id: &str) -> Result<Option<VolumeRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {VOLUME_COLUMNS} FROM {VOLUME_FROM} WHERE v.binding_id = $1"),
                &[&binding_id],
            )
            .await?;
        Ok(row.as_ref().map(volume_from_row))
    }

    pub async fn volumes(
        &self,
        tenant_id: Option<&str>,
        project_id: Option<&str>,
    ) -> Result<Vec<VolumeRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {VOLUME_COLUMNS} FROM {VOLUME_FROM}
                     WHERE ($1::text IS NULL OR v.tenant_id = $1)
                       AND ($2::text IS NULL OR v.project_id = $2)
                     ORDER BY v.created_at DESC, v.id DESC"
                ),
                &[&tenant_id, &project_id],
            )
            .await?;
        Ok(rows.iter().map(volume_from_row).collect())
    }

    /// Deletes a volume that no one holds; false if it is held (or gone).
    pub async fn delete_volume(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM volumes v WHERE v.id = $1 AND NOT EXISTS (
                     SELECT 1 FROM volume_attachments a
                     WHERE a.volume_id = v.id AND a.released_at IS NULL)",
                &[&id],
            )
            .await?;
        Ok(n > 0)
    }

    /// Takes the volume's lease for a holder, with a new fencing token; if
    /// another holder has it, says who.
    pub async fn attach_volume(
        &self,
        attachment_id: &str,
        volume_id: &str,
        holder_kind: &str,
        holder_id: &str,
        mount_path: &str,
    ) -> std::result::Result<AttachmentRow, AttachError> {
        let client = self.client().await?;
        let inserted = client
            .query_one(
                &format!(
                    "INSERT INTO volume_attachments AS a (id, volume_id, holder_kind, holder_id,
                         mount_path)
                     VALUES ($1, $2, $3, $4, $5)
                     RETURNING {ATTACHMENT_COLUMNS}"
                ),
                &[
                    &attachment_id,
                    &volume_id,
                    &holder_kind,
                    &holder_id,
                    &mount_path,
                ],
            )
            .await
            .map_err(StoreError::from);
        match inserted {
            Ok(row) => Ok(attachment_from_row(&row, 0).expect("a returned row has an id")),
            Err(StoreError::Conflict { .. }) => {
                let row = client
                    .query_opt(
                        &format!(
                            "SELECT {ATTACHMENT_COLUMNS} FROM volume_attachments a
                             WHERE a.volume_id = $1 AND a.released_at IS NULL"
                        ),
                        &[&volume_id],
                    )
                    .await
                    .map_err(StoreError::from)?;
                match row.as_ref().and_then(|r| attachment_from_row(r, 0)) {
                    Some(holder) => Err(AttachError::InUse(holder)),
                    // Released meanwhile: the caller may retry.
                    None => Err(AttachError::Store(StoreError::Conflict {
                        constraint: "volume_attachments_one_holder".into(),
                    })),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Live attachments of a holder (what its commands mount).
    pub async fn holder_attachments(&self, holder_id: &str) -> Result<Vec<AttachmentRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ATTACHMENT_COLUMNS} FROM volume_attachments a
                     WHERE a.holder_id = $1 AND a.released_at IS NULL ORDER BY a.created_at"
                ),
                &[&holder_id],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| attachment_from_row(r, 0))
            .collect())
    }

    /// Ends one attachment of a holder; false if there was none live.
    pub async fn release_attachment(&self, holder_id: &str, attachment_id: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE volume_attachments SET released_at = now()
                 WHERE holder_id = $1 AND (id = $2 OR volume_id = $2) AND released_at IS NULL",
                &[&holder_id, &attachment_id],
            )
            .await?;
        Ok(n > 0)
    }

    /// Ends every lease of a holder (it stopped or was destroyed).
    pub async fn release_holder(&self, holder_id: &str) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE volume_attachments SET released_at = now()
                 WHERE holder_id = $1 AND released_at IS NULL",
                &[&holder_id],
            )
            .await?)
    }

    /// Removes a `volume` binding's volume row (its leases and snapshots
    /// with it); the server that holds the data removes that.
    pub async fn delete_binding_volume(&self, binding_id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM volumes WHERE binding_id = $1", &[&binding_id])
            .await?;
        Ok(())
    }

    /// The tenant a project belongs to.
    pub async fn project_tenant(&self, project_id: &str) -> Result<String> {
        let client = self.client().await?;
        Ok(client
            .query_one(
                "SELECT tenant_id FROM projects WHERE id = $1",
                &[&project_id],
            )
            .await?
            .get(0))
    }

    pub async fn add_snapshot(&self, id: &str, volume_id: &str, size_bytes: i64) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO volume_snapshots (id, volume_id, size_bytes) VALUES ($1, $2, $3)",
                &[&id, &volume_id, &size_bytes],
            )
            .await?;
        Ok(())
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM volume_snapshots WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    pub async fn snapshots(&self, volume_id: &str) -> Result<Vec<SnapshotRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, volume_id, size_bytes, created_at FROM volume_snapshots
                 WHERE volume_id = $1 ORDER BY created_at DESC",
                &[&volume_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SnapshotRow {
                id: r.get(0),
                volume_id: r.get(1),
                size_bytes: r.get(2),
                created_at: r.get(3),
            })
            .collect())
    }
}

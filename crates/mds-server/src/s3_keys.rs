//! Who may use the S3 endpoint: each storage binding's own key (its
//! binding id and password, opening only its bucket), and the server's
//! admin key (every bucket; written to `DIR/s3-admin.env`).

use mds_core::kinds::{Desired, ServiceKind};
use mds_storage::s3::{Grant, KeySource};
use mds_storage::StorageError;

use crate::state::AppState;

pub const ADMIN_CREDENTIALS_FILE: &str = "s3-admin.env";

/// The admin key pair, derived from the master key: stable across restarts
/// and replicas, and never stored anywhere else.
pub fn admin_credentials(master: &mds_crypto::MasterKey) -> (String, String) {
    let id = hex::encode(&master.derive("s3 admin access key id")[..8]).to_ascii_uppercase();
    let secret = hex::encode(&master.derive("s3 admin secret access key")[..20]);
    (format!("MDSADMIN{id}"), secret)
}

pub struct ServerKeys {
    pub state: AppState,
    pub admin: (String, String),
}

#[async_trait::async_trait]
impl KeySource for ServerKeys {
    async fn grant(&self, access_key: &str) -> Result<Option<Grant>, StorageError> {
        if access_key == self.admin.0 {
            return Ok(Some(Grant {
                secret: self.admin.1.clone(),
                bucket_id: None,
            }));
        }
        let Some((binding_id, generation)) = mds_provision::storage_key_binding(access_key) else {
            return Ok(None);
        };
        let unavailable =
            |_| StorageError::Store(mds_store::StoreError::Unavailable("starting".into()));
        let store = self.state.store().map_err(unavailable)?;
        let Some((service, binding)) = store.binding_with_service(&binding_id).await? else {
            return Ok(None);
        };
        // A stopped or deleted binding's key opens nothing.
        let storage = service.kind.parse() == Ok(ServiceKind::Storage);
        if !storage || binding.desired.parse() != Ok(Desired::Running) {
            return Ok(None);
        }
        let Some(bucket) = store.binding_bucket(&binding.id).await? else {
            return Ok(None);
        };
        // The current key pair; during a rotation also the pending one, and
        // in its grace period the replaced one. Any other generation's key
        // opens nothing.
        let current = binding.credential_generation;
        let sealed = match generation {
            g if g == current => Some(&binding.sealed_password),
            g if g == current - 1 => binding.previous_sealed_password.as_ref(),
            g if g == current + 1 => binding.pending_sealed_password.as_ref(),
            _ => None,
        };
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let reconciler = self.state.reconciler().map_err(unavailable)?;
        let secret = reconciler
            .open_password(&binding, sealed)
            .map_err(|e| StorageError::Io(std::io::Error::other(e.to_string())))?;
        Ok(Some(Grant {
            secret: secret.to_string(),
            bucket_id: Some(bucket.id),
        }))
    }
}

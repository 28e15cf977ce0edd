//! The Storage provisioner: a bucket per binding. Its S3 keys are the
//! binding's id and password, so nothing else needs making.

use mds_core::env::StorageAccess;
use mds_core::ids::IdKind;
use mds_core::kinds::{BindingState, Desired};
use mds_store::{BindingRow, DataServiceRow};

use crate::{url_host_port, Ctx, Injected, Metrics, ProvisionError, Provisioner};

/// The prefix of a storage binding's S3 access key id; the rest is the
/// binding's ULID, so the key names its binding without a lookup table.
pub const STORAGE_KEY_PREFIX: &str = "MDS";

/// A storage binding's S3 access key id at credential `generation`:
/// `MDS<ulid>`, then `MDS<ulid>R<n>` after the n-th rotation, so the old
/// and the new key pair of a rotation are told apart by their ids.
pub fn storage_access_key_id(binding_id: &str, generation: i32) -> String {
    let ulid = binding_id.strip_prefix("bnd_").unwrap_or(binding_id);
    match generation {
        ..=0 => format!("{STORAGE_KEY_PREFIX}{ulid}"),
        n => format!("{STORAGE_KEY_PREFIX}{ulid}R{n}"),
    }
}

/// The binding and generation an S3 access key id names, if it has the
/// shape of one.
pub fn storage_key_binding(access_key_id: &str) -> Option<(String, i32)> {
    let rest = access_key_id.strip_prefix(STORAGE_KEY_PREFIX)?;
    let (ulid, generation) = (rest.get(..26)?, rest.get(26..)?);
    let generation = match generation {
        "" => 0,
        n => n.strip_prefix('R')?.parse().ok().filter(|n: &i32| *n > 0)?,
    };
    let id = format!("bnd_{ulid}");
    IdKind::Binding.matches(&id).then_some((id, generation))
}

/// A storage binding's bucket: its resource name (unique on the server) in
/// bucket characters, `project--environment`.
pub fn binding_bucket(resource_name: &str) -> String {
    let name: String = resource_name
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.len() < 3 {
        format!("{name}-bucket")
    } else {
        name
    }
}

/// The bucket a storage binding owns: the name the client chose when it
/// made the bucket itself (`POST /storage/buckets`), else one from the
/// binding's resource name.
pub fn service_bucket(service: &DataServiceRow, binding: &BindingRow) -> String {
    match service.config["bucket"].as_str() {
        Some(chosen) => chosen.to_string(),
        None => binding_bucket(&binding.resource_name),
    }
}

pub(crate) struct StorageProvisioner {
    /// The S3 endpoint's URL, which storage bindings inject.
    pub s3_endpoint: String,
}

impl Provisioner for StorageProvisioner {
    /// The bucket's objects and bytes, from the object index.
    async fn metrics(
        &self,
        ctx: &Ctx,
        _service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Metrics, ProvisionError> {
        let Some(bucket) = ctx.store.binding_bucket(&binding.id).await? else {
            return Ok(Vec::new());
        };
        let (objects, bytes) = ctx.store.bucket_usage(&bucket.id).await?;
        Ok(vec![("objects", objects as f64), ("bytes", bytes as f64)])
    }

    /// Creates (or removes) the binding's bucket.
    async fn converge(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
        desired: Desired,
    ) -> Result<Option<BindingState>, ProvisionError> {
        let store = &ctx.store;
        let existing = store.binding_bucket(&binding.id).await?;
        let reached = match desired {
            Desired::Deleted => {
                if let Some(bucket) = existing {
                    // Its objects go too; their chunks are collected later.
                    store.delete_bucket(&bucket.id, true, 0.0).await?;
                }
                return Ok(None);
            }
            Desired::Running => BindingState::Running,
            Desired::Stopped => BindingState::Stopped,
        };
        if existing.is_none() {
            let id = IdKind::Bucket.mint();
            let name = service_bucket(service, binding);
            store
                .create_bucket(&mds_store::NewBucket {
                    id: &id,
                    name: &name,
                    // A standalone bucket belongs to no project until attached.
                    project_id: (!service.standalone).then_some(service.project_id.as_str()),
                    binding_id: Some(&binding.id),
                    visibility: "private",
                })
                .await?;
        }
        Ok(Some(reached))
    }

    fn endpoint(&self, _binding: &BindingRow) -> (String, u16) {
        url_host_port(&self.s3_endpoint)
    }

    fn variables(
        &self,
        ctx: &Ctx,
        service: &DataServiceRow,
        binding: &BindingRow,
    ) -> Result<Vec<Injected>, ProvisionError> {
        let password = ctx.password(binding)?;
        Ok(StorageAccess {
            bucket: &service_bucket(service, binding),
            endpoint: &self.s3_endpoint,
            key_id: &storage_access_key_id(&binding.id, binding.credential_generation),
            key_secret: &password,
        }
        .variables(&service.env_prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_binding_and_buckets_their_resource() {
        let id = "bnd_01J0000000000000000000000Z";
        let key = storage_access_key_id(id, 0);
        assert_eq!(key, "MDS01J0000000000000000000000Z");
        assert_eq!(storage_key_binding(&key), Some((id.to_string(), 0)));
        let rotated = storage_access_key_id(id, 12);
        assert_eq!(rotated, "MDS01J0000000000000000000000ZR12");
        assert_eq!(storage_key_binding(&rotated), Some((id.to_string(), 12)));
        for bad in [
            "AKIAXXXX",
            "MDS01J0000000000000000000000ZR",
            "MDS01J0000000000000000000000ZR0",
            "MDS01J0000000000000000000000ZX1",
            "MDS01J",
        ] {
            assert_eq!(storage_key_binding(bad), None, "{bad}");
        }
        assert_eq!(binding_bucket("Shop__production"), "shop--production");
        assert_eq!(binding_bucket("a"), "a-bucket");
    }
}
